//! Recording one batch, whoever collected it (the poller's writers, the
//! Lambda handler): one statement bounded by a deadline, and the bisection
//! that isolates a value Postgres refuses.

use std::time::Duration;

use futures::future::BoxFuture;

use super::prepare::Item;
use crate::contract::Plan;
use crate::keyring::Keyring;
use crate::metrics::Metrics;
use crate::postgres::{record_batch, GenericClient, WriteError, WriterStatements};
use crate::record::{Prepared, Record, Recorded};

/// What recording a batch needs beside the connection: shared by the
/// poller's writers and the Lambda handler.
#[derive(Clone, Copy)]
pub struct Recorder<'a> {
    /// Masks and seals (a `db_rejected` body is sealed with it).
    pub keyring: &'a Keyring,
    /// The contracts (a `db_rejected` entry is named as its contract says).
    pub plan: &'a Plan,
    /// Where observations go.
    pub metrics: &'a Metrics,
    /// How long one batch statement may take: a socket that stopped
    /// answering, or a lock held past it, cannot hold the batch.
    pub deadline: Duration,
}

impl Recorder<'_> {
    /// One batch statement, bounded by the deadline.
    async fn record_within_deadline(
        &self,
        client: &mut (impl GenericClient + Send),
        statements: &WriterStatements,
        items: &[Item],
    ) -> Result<Vec<Recorded>, WriteError> {
        let prepared: Vec<&Prepared> = items.iter().map(|item| &item.prepared).collect();
        tokio::time::timeout(self.deadline, record_batch(client, statements, &prepared))
            .await
            .unwrap_or(Err(WriteError::Deadline(self.deadline.as_secs())))
    }

    /// Writes a batch; when Postgres rejects a value, bisects so the other
    /// messages commit and only the culprit is quarantined (`db_rejected`).
    pub fn write_isolating<'a, C: GenericClient + Send + Sync>(
        &'a self,
        client: &'a mut C,
        statements: &'a WriterStatements,
        items: &'a mut [Item],
    ) -> BoxFuture<'a, Result<Vec<Recorded>, WriteError>> {
        Box::pin(async move {
            match self.record_within_deadline(client, statements, items).await {
                Err(WriteError::Data(error)) if items.len() > 1 => {
                    tracing::debug!(error = %crate::error::std_error_chain(&error), size = items.len(), "value rejected; splitting batch");
                    let (first, second) = items.split_at_mut(items.len() / 2);
                    let mut results = self.write_isolating(client, statements, first).await?;
                    results.extend(self.write_isolating(client, statements, second).await?);
                    Ok(results)
                }
                Err(WriteError::Data(_)) if matches!(items[0].prepared.record, Record::Row(_)) => {
                    let culprit = &mut items[0];
                    self.metrics.value_rejected(&culprit.receipt.message_id);
                    culprit.reject_by_database(self.keyring, self.plan);
                    self.record_within_deadline(client, statements, items).await
                }
                other => other,
            }
        })
    }
}
