//! Sends COUNT bodies of BYTES bytes each (junk: `x` repeated, so veil
//! quarantines them as `too_large`) to a queue, for `scripts/bench-memory.sh`.
//! One body per call: ten large bodies exceed SendMessageBatch's size limit.
//!
//! `cargo run --release --example send_large -- QUEUE_URL COUNT BYTES`

use futures::stream::{self, StreamExt, TryStreamExt};
use veil::sqs::{ProtocolChoice, QueueSettings, SqsClient};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, queue_url, count, bytes] = args.as_slice() else {
        anyhow::bail!("usage: send_large QUEUE_URL COUNT BYTES");
    };
    let (count, bytes): (usize, usize) = (count.parse()?, bytes.parse()?);
    let sqs = SqsClient::connect(&QueueSettings::new(queue_url, ProtocolChoice::Auto)).await?;
    sqs.create_queue().await?;
    let body = "x".repeat(bytes);
    let sent: usize = stream::iter(0..count)
        .map(|_| {
            let (sqs, body) = (sqs.clone(), body.clone());
            async move { sqs.send(&[body]).await }
        })
        .buffer_unordered(8)
        .try_fold(0, |total, sent| async move { Ok(total + sent) })
        .await?;
    anyhow::ensure!(sent == count, "SQS accepted {sent} of {count}");
    println!("sent {count} bodies of {bytes} bytes to {queue_url}");
    Ok(())
}
