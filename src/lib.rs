//! veil streams user-login events from Amazon SQS into PostgreSQL with the
//! PII (device id, IP address) masked by deterministic, keyed, reversible
//! encryption (AES-SIV), each event exactly once.
//!
//! # Layout
//!
//! Three rings, imports pointing inward: the domain knows no I/O
//! (`contract`, `event`, `mask`, `record`, the keyring's format), the
//! adapters know one outside system each (`sqs`, `postgres`, `aws`, `ops`),
//! the application wires them (`pipeline`, `commands`, `config`). Checked
//! by the tests of this file, as these greps would:
//! `grep -rln aws_sdk_ src | grep -v ^src/aws/` finds nothing, and
//! `grep -rln tokio_postgres src | grep -v ^src/postgres/` finds only
//! `src/error.rs` (and this file's words). Every statement, catalog read
//! and error rule is under `postgres/`; the application holds its handles
//! as `postgres::{Client, Transaction, GenericClient, Error}`. The one
//! exception: `error`, the leaf every layer prints errors through, names
//! the driver's `DbError` to drop a server's DETAIL (it quotes row data,
//! so PII) from every message; it cannot import `postgres`, which
//! imports it.
//!
//! - `cli`, `config`: the command line, then checked settings; `error`: the
//!   configuration error any layer may raise (exit code 2).
//! - `contract`: contracts, any event type's table and PII policy in one
//!   YAML file: the format, its checks, the compiled `Plan`, the parser by
//!   plan (body -> typed cells or a rejection), the JSON Schema export.
//!   Domain code: no I/O but reading the files. Its SQL lives in
//!   `postgres::contract_sql`.
//! - `event`: message body -> validated `LoginEvent` or a `Rejection` (the
//!   built-in login path, which the built-in contract reproduces).
//! - `record`: what prepare hands to write (rows, quarantine entries) and
//!   what recording did; domain types, written by `postgres::batch`.
//! - `mask`: masks (AES-SIV, or HMAC when irreversible) and sealed
//!   quarantine bodies. Pure: no I/O.
//! - `keyring`: the keys, their file format, and where they come from
//!   (file, VEIL_KEY, Secrets Manager, KMS envelope); the AWS calls they
//!   need are in `aws`.
//! - `aws`: every AWS SDK use: the SDK configuration shared with SQS, the
//!   one SigV4 signer (SQS requests, RDS IAM tokens), Secrets Manager, KMS.
//! - `privacy`: one person's value as it appears in the tables (`veil
//!   find`, `veil forget`).
//! - `sqs`: one client over the JSON and the query protocol (both our
//!   own small signed clients), with protocol detection.
//! - `postgres`: schema, reconnecting connection, batch writer + ledger,
//!   the audit, the partitions of the growing tables and their
//!   housekeeping (`partitions`, `maintain`), find/forget SQL, and the
//!   rights each feature needs, read from the catalog (`rights`).
//! - `pipeline`: receive -> parse -> mask -> write -> delete, with shutdown,
//!   and the loops beside it (heartbeat, queue depth, housekeeping); and
//!   `pipeline::lambda`, the same prepare and write path for the batches of
//!   Lambda's SQS event source (`sqs::event_source` reads their records).
//! - `commands`: one function per subcommand; `main.rs` only dispatches.
//! - `outcome`: exit codes and the fix printed under a failed command.
//! - `metrics`: every counter, gauge and histogram, the service state, and
//!   their Prometheus text; `ops` serves them (/metrics, /healthz, /readyz).
//!   Stages report through its observations (`metrics::observe`): verbs
//!   that count and log in one call (`batch_committed`, `sqs_failed`, ...).
//! - `seed`, `report`, `telemetry`, `backoff`: demo data, the end-of-run
//!   table, logging, retry delays.

pub mod aws;
pub mod backoff;
pub mod cli;
pub mod commands;
pub mod config;
pub mod contract;
pub mod error;
pub mod keyring;
#[cfg(test)]
mod layout;
pub mod mask;
pub mod metrics;
pub mod ops;
pub mod outcome;
pub mod pipeline;
pub mod postgres;
pub mod privacy;
pub mod record;
pub mod report;
pub mod seed;
pub mod sqs;
pub mod telemetry;
