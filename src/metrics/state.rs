//! Where the service is in its life, and what `/readyz` says of it.

use std::sync::atomic::Ordering;

use super::Metrics;

/// Where the service is in its life; `/readyz` is 200 only while running
/// with both dependencies answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceState {
    /// Checking the key, the queue and the database.
    Starting,
    /// Receiving and recording.
    Running,
    /// Asked to stop: finishing the batches in hand.
    Stopping,
    /// A fatal error: giving messages back, then exiting non-zero.
    Failed,
}

impl ServiceState {
    /// Every state, in the order `veil_state` lists them.
    pub const ALL: [ServiceState; 4] = [
        ServiceState::Starting,
        ServiceState::Running,
        ServiceState::Stopping,
        ServiceState::Failed,
    ];

    /// The label value of `veil_state`.
    pub fn name(self) -> &'static str {
        match self {
            ServiceState::Starting => "starting",
            ServiceState::Running => "running",
            ServiceState::Stopping => "stopping",
            ServiceState::Failed => "failed",
        }
    }
}

impl Metrics {
    /// Moves the service to `state`.
    pub fn set_state(&self, state: ServiceState) {
        let index = ServiceState::ALL
            .iter()
            .position(|s| *s == state)
            .unwrap_or(0);
        self.state.store(index as u8, Ordering::SeqCst);
    }

    /// The current state.
    pub fn state(&self) -> ServiceState {
        ServiceState::ALL[usize::from(self.state.load(Ordering::SeqCst)) % ServiceState::ALL.len()]
    }

    /// Whether `/readyz` says 200, and its body (the state, each
    /// dependency, and whether housekeeping is delegated to `veil
    /// maintain`, which does not make veil unready).
    pub fn readiness(&self) -> (bool, String) {
        let state = self.state();
        let sqs = self.sqs_ready.load(Ordering::Relaxed);
        let postgres = self.postgres_ready.load(Ordering::Relaxed);
        let up = |ok: bool| if ok { "ok" } else { "unavailable" };
        let housekeeping = if self.housekeeping_delegated.load(Ordering::Relaxed) {
            "delegated (this role may not; `veil maintain` as the tables' owner does it)"
        } else {
            "here"
        };
        (
            state == ServiceState::Running && sqs && postgres,
            format!(
                "state {}\nsqs {}\npostgres {}\nhousekeeping {housekeeping}\n",
                state.name(),
                up(sqs),
                up(postgres)
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_while_running_with_both_dependencies_up() {
        let metrics = Metrics::default();
        assert!(!metrics.readiness().0, "starting is not ready");
        metrics.set_state(ServiceState::Running);
        assert_eq!(
            metrics.readiness(),
            (
                true,
                "state running\nsqs ok\npostgres ok\nhousekeeping here\n".into()
            )
        );
        metrics.postgres_ready.store(false, Ordering::Relaxed);
        assert!(!metrics.readiness().0);
        metrics.postgres_ready.store(true, Ordering::Relaxed);
        metrics.set_state(ServiceState::Failed);
        assert_eq!(
            metrics.readiness(),
            (
                false,
                "state failed\nsqs ok\npostgres ok\nhousekeeping here\n".into()
            )
        );
    }
}
