//! Sends COUNT bodies of BYTES bytes each (junk, so veil quarantines them
//! as `too_large`) to a queue, for `scripts/bench-memory.sh`. BODY says of
//! what: `x` (the default: `x` repeated), `escapes` (a JSON object whose
//! string is JSON escapes, `\u00e9` and `\"`: text a reply escapes again),
//! or `unicode` (`é` repeated: two bytes each, that a JSON reply may send
//! as a six-byte `\u00e9`).
//! One body per call: ten large bodies exceed SendMessageBatch's size limit.
//! Bodies over 256 KiB need a queue that takes them: it is created with
//! `MaximumMessageSize` 1 MiB (SQS's largest) through LocalStack's JSON
//! protocol (LocalStack does not check signatures).
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
    let body = body_of(&std::env::var("BODY").unwrap_or_else(|_| "x".into()), bytes)?;
    if bytes > 256 * 1024 {
        // SendMessageBatch is limited to 256 KiB whatever the queue takes.
        create_for_large_bodies(queue_url).await?;
        for _ in 0..count {
            local_call(
                queue_url,
                "SendMessage",
                serde_json::json!({"QueueUrl": queue_url, "MessageBody": body}),
            )
            .await?;
        }
        println!("sent {count} bodies of {bytes} bytes to {queue_url}");
        return Ok(());
    }
    let sqs = SqsClient::connect(&QueueSettings::new(queue_url, ProtocolChoice::Auto)).await?;
    sqs.create_queue().await?;
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

/// A body of `bytes` bytes (within a few) of the kind `kind` names.
fn body_of(kind: &str, bytes: usize) -> anyhow::Result<String> {
    Ok(match kind {
        "x" => "x".repeat(bytes),
        "escapes" => {
            let unit = r#"\u00e9\""#;
            let inner = unit.repeat(bytes.saturating_sub(12) / unit.len());
            format!(r#"{{"note": "{inner}"}}"#)
        }
        "unicode" => "é".repeat(bytes / 2),
        other => anyhow::bail!("BODY {other:?} is not x, escapes or unicode"),
    })
}

/// CreateQueue with a 1 MiB MaximumMessageSize, on LocalStack.
async fn create_for_large_bodies(queue_url: &str) -> anyhow::Result<()> {
    let name = queue_url.rsplit('/').next().unwrap_or_default();
    local_call(
        queue_url,
        "CreateQueue",
        serde_json::json!({"QueueName": name, "Attributes": {"MaximumMessageSize": "1048576"}}),
    )
    .await
}

/// One JSON-protocol SQS call to LocalStack, which does not check signatures.
async fn local_call(queue_url: &str, action: &str, body: serde_json::Value) -> anyhow::Result<()> {
    let url = url::Url::parse(queue_url)?;
    let endpoint = format!("{}/", url.origin().ascii_serialization());
    let reply = reqwest::Client::new()
        .post(endpoint)
        .header("content-type", "application/x-amz-json-1.0")
        .header("x-amz-target", format!("AmazonSQS.{action}"))
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=0",
        )
        .body(body.to_string())
        .send()
        .await?;
    anyhow::ensure!(
        reply.status().is_success(),
        "{action}: {}",
        reply.text().await?
    );
    Ok(())
}
