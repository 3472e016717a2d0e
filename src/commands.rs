//! One function per subcommand: wires configuration, keys, SQS and Postgres
//! together and reports. The work itself lives in the other modules.

use std::io::{BufRead, Write};
use std::time::Instant;

use anyhow::Context;
use futures::stream::{self, StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;

use crate::cli::{KeygenArgs, RevealArgs, RunArgs, SeedArgs};
use crate::config::{key_location, ConfigError, KeyLocation, RunConfig};
use crate::mask::{KeyFileError, Keyring};
use crate::pipeline::{self, PipelineSettings, RunReport};
use crate::postgres::{self, Database};
use crate::sqs::{SqsClient, SQS_BATCH_LIMIT};
use crate::{report, seed};

/// `veil run`.
pub async fn run(args: RunArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let config = RunConfig::from_args(&args)?;
    let report = serve(&config, shutdown).await?;
    if config.until_empty {
        print!("{}", report::render(&report));
    }
    Ok(())
}

/// Runs the service with checked settings until shutdown (or an empty
/// queue) and returns what it did. Tests call this in-process.
pub async fn serve(config: &RunConfig, shutdown: CancellationToken) -> anyhow::Result<RunReport> {
    let keyring = load_keyring(&config.key, true)?;
    let sqs = SqsClient::connect(&config.queue_url, config.protocol).await?;
    let mut database = Database::connect(config.database.clone()).await?;
    let schema = postgres::migrate(database.client().await?).await?;
    tracing::info!(
        queue = %config.queue_url,
        database = %postgres::describe(&config.database),
        key_id = %keyring.active().id(),
        created_user_logins = schema.created_user_logins,
        until_empty = config.until_empty,
        "veil started"
    );
    let settings = PipelineSettings {
        receive: config.receive,
        until_empty: config.until_empty,
        keep_rows: if config.until_empty {
            config.show_rows
        } else {
            0
        },
    };
    let report = pipeline::run(&sqs, &mut database, &keyring, &settings, shutdown).await?;
    tracing::info!(
        received = report.received,
        written = report.written,
        quarantined = report.quarantined,
        duplicates = report.duplicates,
        elapsed_ms = report.elapsed.as_millis() as u64,
        "veil stopped"
    );
    Ok(report)
}

/// Loads the keyring; with `create_default`, makes the per-user default
/// keyring on first use and says where.
pub fn load_keyring(location: &KeyLocation, create_default: bool) -> anyhow::Result<Keyring> {
    let path = location.path();
    match (location, path.exists()) {
        (_, true) => Ok(Keyring::load(path)?),
        (KeyLocation::Default(_), false) if create_default => {
            let keyring = Keyring::generate();
            keyring.write_new(path)?;
            tracing::warn!(
                path = %path.display(),
                key_id = %keyring.active().id(),
                "created a new masking key; back it up: masks can only be revealed with it"
            );
            Ok(keyring)
        }
        (KeyLocation::File(_), false) => Err(ConfigError(format!(
            "key file {} does not exist; create one with: veil keygen --out {}",
            path.display(),
            path.display()
        ))
        .into()),
        (KeyLocation::Default(_), false) => Err(ConfigError(format!(
            "no key: {} does not exist; pass --key-file or set VEIL_KEY_FILE",
            path.display()
        ))
        .into()),
    }
}

/// `veil reveal`: masks on stdin, values on stdout, same order. Blank lines
/// (NULL masks) stay blank. The first mask that cannot be opened stops it
/// with an error naming the line; nothing is ever guessed.
pub fn reveal(args: RevealArgs) -> anyhow::Result<()> {
    let keyring = load_keyring(&key_location(&args.key)?, false)?;
    let stdin = std::io::stdin().lock();
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    for (index, line) in stdin.lines().enumerate() {
        let line = line.context("reading stdin")?;
        let mask = line.trim();
        if mask.is_empty() {
            writeln!(stdout)?;
            continue;
        }
        match keyring.reveal(mask) {
            Ok((_field, value)) => writeln!(stdout, "{value}")?,
            Err(error) => {
                stdout.flush()?;
                anyhow::bail!("line {}: cannot reveal: {error}", index + 1);
            }
        }
    }
    stdout.flush()?;
    Ok(())
}

/// `veil keygen`.
pub fn keygen(args: KeygenArgs) -> anyhow::Result<()> {
    let keyring = Keyring::generate();
    keyring.write_new(&args.out).map_err(|error| match error {
        KeyFileError::Exists(_) => anyhow::Error::new(ConfigError(error.to_string())),
        other => other.into(),
    })?;
    println!(
        "wrote a new keyring to {} (key id {}, mode 0600); keep it secret and backed up",
        args.out.display(),
        keyring.active().id()
    );
    Ok(())
}

/// `veil seed`.
pub async fn seed(args: SeedArgs) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&args.bad_ratio) {
        return Err(ConfigError("--bad-ratio must be between 0.0 and 1.0".into()).into());
    }
    let sqs = SqsClient::connect(&args.queue.queue_url, args.queue.sqs_protocol).await?;
    sqs.create_queue()
        .await
        .context("creating the queue (if missing)")?;
    let rng_seed = args.rng_seed.unwrap_or_else(rand::random);
    let messages = seed::generate(args.count, args.bad_ratio, rng_seed);
    let junk = messages.iter().filter(|m| !m.valid).count();
    let started = Instant::now();
    let bodies: Vec<Vec<String>> = messages
        .chunks(SQS_BATCH_LIMIT)
        .map(|chunk| chunk.iter().map(|m| m.body.clone()).collect())
        .collect();
    let sent: usize = stream::iter(bodies)
        .map(|chunk| {
            let sqs = sqs.clone();
            async move { sqs.send_batch(&chunk).await }
        })
        .buffer_unordered(8)
        .try_fold(0, |total, sent| async move { Ok(total + sent) })
        .await
        .context("sending messages")?;
    println!(
        "sent {sent} messages ({junk} junk) to {} in {:.2} s (rng seed {rng_seed})",
        args.queue.queue_url,
        started.elapsed().as_secs_f64()
    );
    if sent != messages.len() {
        anyhow::bail!("SQS accepted only {sent} of {} messages", messages.len());
    }
    Ok(())
}
