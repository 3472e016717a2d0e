//! `veil keys new|rotate|list|retire` and `veil keygen`: keyring files,
//! plain or KMS-enveloped, at the same location every other command reads
//! (--key-file / VEIL_KEY_FILE, else the per-user default). Rotation and
//! retirement rewrite the file atomically and keep its protection (a KMS
//! keyring stays under KMS).

use std::path::{Path, PathBuf};

use crate::cli::{KeyArgs, KeysCommand, KeysNewArgs, RetireArgs};
use crate::config::{default_key_file, key_location};
use crate::error::ConfigError;
use crate::keyring::{self as keys, KeyFileError, KeyLocation, Keyring, Protection};
use crate::report::psql_table;

/// Dispatches `veil keys ...`.
pub async fn keys(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::New(args) => new(args).await,
        KeysCommand::Rotate(args) => rotate(args).await,
        KeysCommand::List(args) => list(args).await,
        KeysCommand::Retire(args) => retire(args).await,
    }
}

/// `veil keys new` (and `veil keygen`).
pub async fn new(args: KeysNewArgs) -> anyhow::Result<()> {
    if let Some(secret) = &args.secret_id {
        return new_in_secret(secret, args.kms_key_id).await;
    }
    let out = match args.out {
        Some(path) => path,
        None => default_key_file()?,
    };
    if out.exists() {
        return Err(ConfigError(KeyFileError::Exists(out).to_string()).into());
    }
    let keyring = Keyring::generate();
    let protection = match args.kms_key_id {
        Some(arn) => Protection::Kms(arn),
        None => Protection::Plain,
    };
    let text = keys::render(&keyring, &protection, &crate::aws::KeyServices).await?;
    keys::write_private_file(&out, text.as_bytes()).map_err(|error| match error {
        KeyFileError::Exists(_) => anyhow::Error::new(ConfigError(error.to_string())),
        other => other.into(),
    })?;
    println!(
        "wrote a new keyring to {} (key id {}, mode 0600, {}); keep it secret and backed up",
        out.display(),
        keyring.active().id(),
        describe(&protection)
    );
    Ok(())
}

/// `veil keys new --secret-id`: the keyring goes into an empty secret.
async fn new_in_secret(secret: &str, kms_key_id: Option<String>) -> anyhow::Result<()> {
    let keyring = Keyring::generate();
    let protection = match kms_key_id {
        Some(arn) => Protection::Kms(arn),
        None => Protection::Plain,
    };
    let text = keys::render(&keyring, &protection, &crate::aws::KeyServices).await?;
    crate::aws::secrets::put_first_value(secret, &text).await?;
    println!(
        "stored a new keyring in secret {secret} (key id {}, {}); read it with --key-secret-id {secret}",
        keyring.active().id(),
        describe(&protection)
    );
    Ok(())
}

/// How many masks of the contracts' tables (`user_logins` without
/// `--contract`) and quarantined bodies key `args.key_id` made.
async fn masks_made_by(args: &RetireArgs) -> anyhow::Result<i64> {
    let plan = crate::config::plan_from_args(&args.contracts)?;
    let settings = crate::config::database_from_args(&args.database)?;
    let mut database = crate::postgres::Database::connect(settings).await?;
    let client = database.client().await?;
    let made = crate::postgres::privacy::masks_by_key(&*client, &plan).await?;
    Ok(made.get(&args.key_id).copied().unwrap_or(0))
}

fn describe(protection: &Protection) -> String {
    match protection {
        Protection::Plain => "plain: the file is the secret".into(),
        Protection::Kms(arn) => format!("key material encrypted under KMS key {arn}"),
    }
}

/// The keyring file that `rotate` and `retire` rewrite. A keyring injected
/// as VEIL_KEY cannot be rewritten in place.
fn keyring_file(args: &KeyArgs) -> Result<PathBuf, ConfigError> {
    match key_location(args)? {
        KeyLocation::Secret(id) => Err(ConfigError(format!(
            "the keyring comes from secret {id}, which veil does not rewrite: write its value to \
             a file, run this command with --key-file on it, and put the result back \
             (aws secretsmanager put-secret-value --secret-id {id} --secret-string file://keys.json)"
        ))),
        KeyLocation::Env => Err(ConfigError(format!(
            "the keyring comes from {env}, which veil cannot rewrite: decode it to a file \
             (echo \"${env}\" | base64 -d > keys.json), run this command with --key-file keys.json, \
             and inject the result again",
            env = keys::VEIL_KEY_ENV
        ))),
        KeyLocation::File(path) | KeyLocation::Default(path) => Ok(path),
    }
}

async fn read(path: &Path) -> anyhow::Result<(Protection, Keyring)> {
    let (text, origin) = keys::read_text(
        &KeyLocation::File(path.to_path_buf()),
        &crate::aws::KeyServices,
    )
    .await?;
    let protection = keys::protection_of(&text, &origin)?;
    let keyring = keys::parse(&text, &origin, &crate::aws::KeyServices).await?;
    Ok((protection, keyring))
}

async fn rotate(args: KeyArgs) -> anyhow::Result<()> {
    let path = keyring_file(&args)?;
    let (protection, mut keyring) = read(&path).await?;
    let previous = keyring.active().id().to_string();
    let fresh = keyring.rotate();
    keys::replace(
        &path,
        &keys::render(&keyring, &protection, &crate::aws::KeyServices).await?,
    )?;
    println!(
        "key {fresh} is now active in {} (was {previous}; kept to open old masks). \
         Restart veil run, then run veil rekey.",
        path.display()
    );
    Ok(())
}

async fn list(args: KeyArgs) -> anyhow::Result<()> {
    let location = key_location(&args)?;
    let (text, origin) = keys::read_text(&location, &crate::aws::KeyServices).await?;
    let protection = keys::protection_of(&text, &origin)?;
    let rows: Vec<Vec<String>> = keys::list(&text, &origin)?
        .into_iter()
        .map(|key| {
            vec![
                key.id,
                key.created_at,
                if key.active { "yes" } else { "" }.to_string(),
            ]
        })
        .collect();
    println!("{} ({})", location.describe(), describe(&protection));
    print!(
        "{}",
        psql_table(
            &["id", "created_at", "active"],
            &rows,
            &[],
            rows.len() as u64
        )
    );
    Ok(())
}

async fn retire(args: RetireArgs) -> anyhow::Result<()> {
    let path = keyring_file(&args.key)?;
    let (protection, mut keyring) = read(&path).await?;
    keyring.retire(&args.key_id).map_err(ConfigError)?;
    if !args.force {
        let still = masks_made_by(&args).await.map_err(|error| {
            ConfigError(format!(
                "cannot count what key {} still masks ({}); fix --database-url, or pass --force \
                 to retire it without checking",
                args.key_id,
                crate::error::error_chain(&error)
            ))
        })?;
        if still > 0 {
            return Err(ConfigError(format!(
                "key {} still made {still} mask(s) and quarantined bodies in the database: retired, \
                 they could never be revealed, found or forgotten. Run `veil rekey` first (it moves \
                 them to the active key), or pass --force",
                args.key_id
            ))
            .into());
        }
    }
    keys::replace(
        &path,
        &keys::render(&keyring, &protection, &crate::aws::KeyServices).await?,
    )?;
    println!(
        "key {} removed from {}; masks it made can no longer be opened",
        args.key_id,
        path.display()
    );
    Ok(())
}
