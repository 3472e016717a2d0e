//! Supervisor: owns every task of a run and decides when it is over.
//!
//! - Steps (receivers, writers) run until their work ends: the channel
//!   closes once every receiver stopped, and writers stop once it is empty.
//!   Delete tasks of committed batches are waited for next. Background tasks
//!   (heartbeat, progress bar, the operations endpoint) run until then.
//! - A fatal error anywhere is reported once (`Failure`): receiving stops,
//!   writers give what they hold back to the queue, deletes finish.
//! - From a shutdown signal or a fatal error on, the wind-down has
//!   `--shutdown-timeout-secs`; past it, veil exits anyway (messages not yet
//!   recorded return when their visibility timeout ends).
//! - A background task that ends on its own, or any task that panics, is a
//!   fatal error too: veil never runs on half-alive.

use std::future::Future;

use anyhow::anyhow;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::shared::Shared;
use crate::metrics::ServiceState;

/// The tasks of one run.
pub struct Supervisor {
    steps: JoinSet<()>,
    background: JoinSet<&'static str>,
    background_stop: CancellationToken,
}

impl Supervisor {
    /// No tasks yet.
    pub fn new() -> Self {
        Supervisor {
            steps: JoinSet::new(),
            background: JoinSet::new(),
            background_stop: CancellationToken::new(),
        }
    }

    /// Spawns a step (a receiver or a writer).
    pub fn spawn_step(&mut self, step: impl Future<Output = ()> + Send + 'static) {
        self.steps.spawn(step);
    }

    /// Spawns a background task; it gets a token that says when to stop,
    /// and must not end before.
    pub fn spawn_background<F>(
        &mut self,
        name: &'static str,
        task: impl FnOnce(CancellationToken) -> F,
    ) where
        F: Future<Output = ()> + Send + 'static,
    {
        let future = task(self.background_stop.clone());
        self.background.spawn(async move {
            future.await;
            name
        });
    }

    /// Waits until the run is over: `Ok` after a clean end, the first fatal
    /// error otherwise, or a timeout error if the wind-down overran.
    pub async fn wait(
        mut self,
        shared: &Shared,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let timeout = shared.settings.shutdown_timeout;
        let failure = shared.failure.token().clone();
        let winding_down = async {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    if !shared.failure.happened() {
                        shared.metrics.set_state(ServiceState::Stopping);
                    }
                }
                _ = failure.cancelled() => {}
            }
            tokio::time::sleep(timeout).await;
        };
        tokio::pin!(winding_down);
        loop {
            tokio::select! {
                joined = self.steps.join_next() => match joined {
                    Some(Ok(())) => {}
                    Some(Err(panic)) => shared.fail(anyhow!("a pipeline task failed: {panic}")),
                    None => break,
                },
                Some(ended) = self.background.join_next() => {
                    let what = ended.map_or_else(|panic| panic.to_string(), |name| format!("{name} stopped"));
                    shared.fail(anyhow!("a background task ended early: {what}"));
                }
                _ = &mut winding_down => return Err(self.overran(shared, timeout)),
            }
        }
        shared.deletes.close();
        tokio::select! {
            _ = shared.deletes.wait() => {}
            _ = &mut winding_down => return Err(self.overran(shared, timeout)),
        }
        self.background_stop.cancel();
        while self.background.join_next().await.is_some() {}
        match shared.failure.take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    fn overran(mut self, shared: &Shared, timeout: std::time::Duration) -> anyhow::Error {
        self.steps.abort_all();
        self.background.abort_all();
        let overran = anyhow!(
            "stopping took longer than --shutdown-timeout-secs ({} s); messages not yet recorded return to the queue when their visibility timeout ends",
            timeout.as_secs()
        );
        match shared.failure.take() {
            Some(error) => error.context(overran),
            None => overran,
        }
    }
}
