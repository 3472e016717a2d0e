//! The progress bar of `veil run --until-empty` on a terminal: messages
//! done, the rate, and what SQS says is left.

use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

use super::shared::Shared;
use crate::metrics::Number;

/// Draws the bar until `stop`.
pub async fn show(shared: Arc<Shared>, stop: CancellationToken) {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4));
    bar.set_style(
        ProgressStyle::with_template("{spinner} {pos}/{len} messages [{bar:30}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut ticks = 0u64;
    let mut remaining = 0;
    loop {
        let received = shared.metrics.get(Number::Received);
        bar.set_position(received);
        // Ask SQS for the remaining depth every two seconds, not every tick.
        if ticks.is_multiple_of(8) {
            if let Ok(depth) = shared.sqs.depth().await {
                remaining = depth.visible + depth.in_flight;
                bar.set_length(received + depth.visible);
            }
        }
        let rate = received as f64 / shared.started.elapsed().as_secs_f64().max(0.001);
        bar.set_message(format!("{rate:.0} msg/s, {remaining} left in the queue"));
        ticks += 1;
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
    bar.finish_and_clear();
}
