//! Queue depth for /metrics: reads `GetQueueAttributes` every interval, so
//! an alert can say "messages wait and nothing is recorded" from veil's own
//! metrics. Only observes: a failed read is counted and retried at the next
//! tick, and never stops the pipeline.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::shared::Shared;

/// Publishes the queue's depth every `interval` (the first at once) until `stop`.
pub async fn queue_depth_loop(shared: Arc<Shared>, interval: Duration, stop: CancellationToken) {
    loop {
        match shared.sqs.depth().await {
            Ok(depth) => {
                *shared.metrics.queue_depth.lock().expect("queue depth lock") = Some(depth);
            }
            Err(error) => shared.metrics.sqs_failed(
                "depth",
                &error,
                false,
                "could not read the queue's depth; trying again at the next tick",
            ),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
