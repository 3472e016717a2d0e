//! veil streams events from Amazon SQS into PostgreSQL with the PII masked
//! by deterministic, keyed, reversible encryption (AES-SIV), each event
//! exactly once. With no configuration it runs the built-in login contract
//! (`user_logins`: device id and IP address masked); a contract file
//! describes any other event type.
//!
//! # Layout
//!
//! Three rings, imports pointing inward. The domain knows no I/O
//! (`contract`, `mask`, `record`, `outcome`, `privacy`, `keyring`, `seed`,
//! `error`, `backoff`); the adapters know one outside system each (`aws`,
//! `sqs`, `postgres`, `ops`); the application wires them (`pipeline`,
//! `commands`, `config`, `cli`, `metrics`, `report`, `telemetry`, `main`).
//! `src/layout.rs` holds the rings as data and a test that reads every
//! file with a Rust parser and fails on an import across them: the domain
//! imports no adapter and no driver crate; an adapter imports no
//! application module and uses only its own crates (and `aws`, shared by
//! every AWS caller); the application names no driver crate and takes
//! `postgres::GenericClient`, never a connection or transaction handle, in
//! its signatures. Where the domain needs the outside, it declares a trait
//! the application hands an adapter for: `keyring::KeyServices` (Secrets
//! Manager, KMS), `outcome::Fixer` (what an adapter's error means),
//! `ops::Observed` (what `/metrics` serves). The one exception: `error`,
//! the leaf every layer prints errors through, names the driver's `DbError`
//! to drop a server's DETAIL (it quotes row data, so PII) from every
//! message; it cannot import `postgres`, which imports it.
//!
//! - `cli`, `config`: the command line, then checked settings; `error`: the
//!   configuration error any layer may raise (exit code 2).
//! - `contract`: contracts, any event type's table and PII policy in one
//!   YAML file (the built-in login contract among them): the format, its
//!   checks, the compiled `Plan`, the parser by plan (body -> typed cells
//!   or a rejection), the JSON Schema export. Its SQL lives in
//!   `postgres::contract_sql`.
//! - `record`: what prepare hands to write (rows, quarantine entries with
//!   their reason codes) and what recording did.
//! - `mask`: masks (AES-SIV, HMAC, ipcrypt-pfx) and sealed quarantine
//!   bodies. Pure: no I/O.
//! - `keyring`: the keys, their file format, and where they come from
//!   (file, VEIL_KEY, a secret, a KMS envelope, through `KeyServices`).
//! - `aws`: every AWS SDK use: the SDK configuration, the one SigV4 signer
//!   (SQS requests, RDS IAM tokens), Secrets Manager, KMS, and the Lambda
//!   Runtime API.
//! - `privacy`: one person's value as it appears in the tables (`veil
//!   find`, `veil forget`).
//! - `sqs`: one client over the JSON and the query protocol (both our
//!   own small signed clients), with protocol detection, and the records
//!   of Lambda's SQS event source.
//! - `postgres`: schema, reconnecting connection, batch writer + ledger,
//!   the contract tables' SQL, the audit, the partitions of the growing
//!   tables and their housekeeping (`partitions`, `maintain`), find/forget
//!   SQL, and the rights each feature needs, read from the catalog
//!   (`rights`).
//! - `pipeline`: receive -> prepare (parse, mask, seal) -> write -> delete,
//!   with shutdown, and the loops beside it (heartbeat, queue depth,
//!   housekeeping); and `pipeline::lambda`, the same prepare and write path
//!   for the batches of Lambda's SQS event source.
//! - `commands`: one file per subcommand; `main.rs` only dispatches.
//! - `outcome`: exit codes and the fix printed under a failed command.
//! - `metrics`: every counter, gauge and histogram in one table, the
//!   service state, their Prometheus text and EMF lines; `ops` serves them
//!   (/metrics, /healthz, /readyz). Stages report through observations
//!   (`metrics::observe`): verbs that count and log in one call.
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
