//! The baseline for `scripts/bench-e2e.sh`: drains a queue with N
//! concurrent receive+delete loops and no processing at all, through
//! veil's own SQS client, so the comparison isolates what veil adds
//! (parsing, masking, Postgres, bookkeeping).
//!
//! `cargo run --release --example raw_drain -- QUEUE_URL RECEIVERS EXPECTED`
//! prints `raw_drain messages=N seconds=S rate=R`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use veil::sqs::{ProtocolChoice, QueueSettings, Receipt, ReceiveRequest, SqsClient};

// One thread, like `veil run` by default, so the CPU per event of the two
// compares like with like.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, queue_url, receivers, expected] = args.as_slice() else {
        anyhow::bail!("usage: raw_drain QUEUE_URL RECEIVERS EXPECTED");
    };
    let receivers: usize = receivers.parse()?;
    let expected: u64 = expected.parse()?;
    let sqs = SqsClient::connect(&QueueSettings::new(queue_url, ProtocolChoice::Auto)).await?;
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..receivers)
        .map(|_| {
            let (sqs, done) = (sqs.clone(), done.clone());
            tokio::spawn(async move {
                let request = ReceiveRequest {
                    max_messages: 10,
                    wait_secs: 1,
                    visibility_timeout_secs: 60,
                    message_attributes: false,
                    first_receive_time: false,
                };
                while done.load(Ordering::Relaxed) < expected {
                    let messages = sqs.receive(request).await?;
                    let receipts: Vec<&Receipt> = messages.iter().map(|m| &m.receipt).collect();
                    let outcome = sqs.delete(&receipts).await;
                    if let Some(error) = outcome.error {
                        return Err(error.into());
                    }
                    done.fetch_add(outcome.done() as u64, Ordering::Relaxed);
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let messages = done.load(Ordering::Relaxed);
    println!(
        "raw_drain messages={messages} seconds={seconds:.3} rate={:.1}",
        messages as f64 / seconds
    );
    Ok(())
}
