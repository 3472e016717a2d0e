//! `veil keys new|rotate|list|retire` and `veil keygen`: keyring files,
//! plain or KMS-enveloped. Rotation and retirement rewrite the file
//! atomically and keep its protection (a KMS keyring stays under KMS).

use std::path::Path;

use zeroize::Zeroizing;

use crate::cli::{KeyFileArgs, KeysCommand, KeysNewArgs, RetireArgs};
use crate::config::ConfigError;
use crate::keys::{self, Protection};
use crate::mask::{read_key_file, KeyFileError, Keyring};
use crate::report::psql_table;

/// Dispatches `veil keys ...`.
pub async fn keys(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::New(args) => new(args).await,
        KeysCommand::Rotate(args) => rotate(args).await,
        KeysCommand::List(args) => list(args),
        KeysCommand::Retire(args) => retire(args).await,
    }
}

/// `veil keys new` (and `veil keygen`).
pub async fn new(args: KeysNewArgs) -> anyhow::Result<()> {
    if args.out.exists() {
        return Err(ConfigError(KeyFileError::Exists(args.out.clone()).to_string()).into());
    }
    let keyring = Keyring::generate();
    let protection = match args.kms_key_id {
        Some(arn) => Protection::Kms(arn),
        None => Protection::Plain,
    };
    let text = keys::render(&keyring, &protection).await?;
    keys::write_new(&args.out, &text).map_err(|error| match error {
        KeyFileError::Exists(_) => anyhow::Error::new(ConfigError(error.to_string())),
        other => other.into(),
    })?;
    println!(
        "wrote a new keyring to {} (key id {}, mode 0600, {}); keep it secret and backed up",
        args.out.display(),
        keyring.active().id(),
        describe(&protection)
    );
    Ok(())
}

fn describe(protection: &Protection) -> String {
    match protection {
        Protection::Plain => "plain: the file is the secret".into(),
        Protection::Kms(arn) => format!("key material encrypted under KMS key {arn}"),
    }
}

async fn read(path: &Path) -> anyhow::Result<(Zeroizing<String>, Protection, Keyring)> {
    let text = read_key_file(path)?;
    let protection = keys::protection_of(&text, path)?;
    let keyring = keys::parse(&text, path).await?;
    Ok((text, protection, keyring))
}

async fn rotate(args: KeyFileArgs) -> anyhow::Result<()> {
    let (_, protection, mut keyring) = read(&args.key_file).await?;
    let previous = keyring.active().id().to_string();
    let fresh = keyring.rotate();
    keys::replace(&args.key_file, &keys::render(&keyring, &protection).await?)?;
    println!(
        "key {fresh} is now active in {} (was {previous}; kept to open old masks). \
         Restart veil run, then run veil rekey.",
        args.key_file.display()
    );
    Ok(())
}

fn list(args: KeyFileArgs) -> anyhow::Result<()> {
    let text = read_key_file(&args.key_file)?;
    let protection = keys::protection_of(&text, &args.key_file)?;
    let rows: Vec<Vec<String>> = keys::list(&text, &args.key_file)?
        .into_iter()
        .map(|key| {
            vec![
                key.id,
                key.created_at,
                if key.active { "yes" } else { "" }.to_string(),
            ]
        })
        .collect();
    println!("{} ({})", args.key_file.display(), describe(&protection));
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
    let (_, protection, mut keyring) = read(&args.file.key_file).await?;
    keyring.retire(&args.key_id).map_err(ConfigError)?;
    keys::replace(
        &args.file.key_file,
        &keys::render(&keyring, &protection).await?,
    )?;
    println!(
        "key {} removed from {}; masks it made can no longer be opened",
        args.key_id,
        args.file.key_file.display()
    );
    Ok(())
}
