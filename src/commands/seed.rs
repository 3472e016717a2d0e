//! `veil seed`: generated events (login, or a contract's) sent to the
//! queue, which it creates if missing.

use std::time::Instant;

use anyhow::Context;
use futures::stream::{self, StreamExt, TryStreamExt};

use crate::cli::SeedArgs;
use crate::config::queue_settings;
use crate::error::ConfigError;
use crate::seed;
use crate::sqs::{SqsClient, SQS_BATCH_LIMIT};

/// `veil seed`.
pub async fn seed(args: SeedArgs) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&args.bad_ratio) {
        return Err(ConfigError("--bad-ratio must be between 0.0 and 1.0".into()).into());
    }
    let rng_seed = args.rng_seed.unwrap_or_else(rand::random);
    // Without --contract: login events shaped like the reference
    // environment's (demo data; they pass the built-in login contract).
    let messages = match &args.contracts.contract {
        Some(_) => {
            let plan = crate::config::plan_from_args(&args.contracts)?;
            seed::generate_by_contract(&plan, args.count, args.bad_ratio, rng_seed)?
        }
        None => seed::generate(args.count, args.bad_ratio, rng_seed),
    };
    let queue = queue_settings(&args.queue)?;
    let sqs = SqsClient::connect(&queue).await?;
    sqs.create_queue()
        .await
        .context("creating the queue (if missing)")?;
    let junk = messages.iter().filter(|m| !m.valid).count();
    let started = Instant::now();
    let bodies: Vec<String> = messages.iter().map(|m| m.body.clone()).collect();
    // Eight senders, each with its share of calls of ten.
    let shares = bodies.chunks(SQS_BATCH_LIMIT * bodies.len().div_ceil(SQS_BATCH_LIMIT * 8).max(1));
    let sent: usize = stream::iter(shares)
        .map(|share| {
            let sqs = sqs.clone();
            async move { sqs.send(share).await }
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
