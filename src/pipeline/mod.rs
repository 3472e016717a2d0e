//! The pipeline, one file per step:
//!
//! ```text
//! receive --(bounded channel)--> write --> Postgres (one transaction per batch)
//!  |  prepare: parse, mask, seal      |--> ack: delete after commit, or release
//!  +-- flight: bound in messages and bytes, freed by ack --+
//! heartbeat: extends the visibility of slow messages; supervisor: owns it all
//! ```
//!
//! This file only wires them: it builds what they share, spawns them under
//! the supervisor and returns what the run did. Shutdown is a parameter:
//! receivers stop, writers finish what is in hand.

mod ack;
mod budget;
mod depth;
mod flight;
mod heartbeat;
mod housekeeping;
pub mod lambda;
mod prepare;
mod progress;
mod receive;
mod recorder;
mod shared;
mod supervisor;
mod write;

use std::sync::Arc;

use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;

use crate::keyring::Keyring;
use crate::metrics::{Metrics, ServiceState};
use crate::ops::OpsServer;
use crate::postgres::{DatabaseSettings, Writer};
use crate::sqs::SqsClient;

pub use budget::Budget;
pub use flight::{Delivery, InFlight};
pub use housekeeping::pass as housekeeping_pass;
pub use prepare::{prepare, Item};
pub use shared::{PipelineSettings, RunReport, SampleTable};

/// Runs until `shutdown` fires (or the queue is drained, with
/// `until_empty`), or until a fatal error has been wound down. `metrics`
/// may be watched while it runs; `ops`, when given, is stopped at the end.
pub async fn run(
    sqs: &SqsClient,
    database: DatabaseSettings,
    keyring: Arc<Keyring>,
    settings: &PipelineSettings,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
    ops: Option<OpsServer>,
) -> anyhow::Result<RunReport> {
    let settings = &settings.clone().fitted()?;
    let mut writers = Vec::with_capacity(settings.writers);
    for _ in 0..settings.writers {
        writers.push(
            Writer::connect(
                database.clone(),
                settings.session_limits,
                settings.plan.clone(),
            )
            .await?,
        );
    }
    let stop_receiving = shutdown.child_token();
    let shared = Arc::new(shared::Shared::new(
        sqs.clone(),
        keyring,
        settings.clone(),
        metrics.clone(),
        stop_receiving.clone(),
    ));
    // Each writer's connection keeps buffers as large as its largest
    // statement: that room is counted while the writers run, taken before
    // any receive can fill the bound (see `budget`).
    let statement_rooms = shared
        .flight
        .reserve(0, settings.writers * settings.budget().statement_room())
        .await;
    let (sender, receiver) = mpsc::channel(settings.max_in_flight);
    let receiver = Arc::new(Mutex::new(receiver));
    let mut supervisor = supervisor::Supervisor::new();
    for connection in writers {
        let step = write::write_loop(
            shared.clone(),
            receiver.clone(),
            connection,
            shutdown.clone(),
        );
        supervisor.spawn_step(step);
    }
    for _ in 0..settings.receivers {
        let running = shared.receivers.start();
        let step = receive::receive_loop(shared.clone(), sender.clone(), stop_receiving.clone());
        supervisor.spawn_step(async move {
            step.await;
            drop(running);
        });
    }
    drop(sender);
    supervisor.spawn_background("heartbeat", |stop| {
        heartbeat::heartbeat_loop(shared.clone(), stop)
    });
    if settings.progress {
        supervisor.spawn_background("progress bar", |stop| progress::show(shared.clone(), stop));
    }
    if let Some(interval) = settings.cloudwatch_emf_interval {
        let metrics = metrics.clone();
        supervisor.spawn_background("CloudWatch metrics", |stop| {
            crate::metrics::write_emf_lines(metrics, interval, stop)
        });
    }
    if let Some(interval) = settings.queue_depth_interval {
        supervisor.spawn_background("queue depth", |stop| {
            depth::queue_depth_loop(shared.clone(), interval, stop)
        });
    }
    if let Some(interval) = settings.housekeeping_interval {
        let (database, policy, metrics) = (
            database.clone(),
            settings.housekeeping.clone(),
            metrics.clone(),
        );
        supervisor.spawn_background("housekeeping", move |stop| {
            housekeeping::housekeeping_loop(database, policy, interval, metrics, stop)
        });
    }
    if let Some(ops) = ops {
        supervisor.spawn_background("operations endpoint", |stop| ops.supervised(stop));
    }
    metrics.set_state(ServiceState::Running);
    let ended = supervisor.wait(&shared, &shutdown).await;
    shared.flight.cancel(statement_rooms);
    ended?;
    Ok(shared.report())
}
