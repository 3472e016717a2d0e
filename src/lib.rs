//! veil streams user-login events from Amazon SQS into PostgreSQL with the
//! PII (device id, IP address) masked by deterministic, keyed, reversible
//! encryption (AES-SIV), each event exactly once.
//!
//! # Layout
//! - `cli`, `config`: the command line, then checked settings; `error`: the
//!   configuration error any layer may raise (exit code 2).
//! - `contract`: contracts, any event type's table and PII policy in one
//!   YAML file: the format, its checks, the compiled `Plan`, the parser by
//!   plan (body -> typed cells or a rejection), the JSON Schema export.
//!   Domain code: no I/O but reading the files. Its SQL lives in
//!   `postgres::contract_sql`.
//! - `event`: message body -> validated `LoginEvent` or a `Rejection` (the
//!   built-in login path, which the built-in contract reproduces).
//! - `mask`: masks (AES-SIV, or HMAC when irreversible) and sealed
//!   quarantine bodies. Pure: no I/O.
//! - `keyring`: the keys, their file format, and where they come from
//!   (file, VEIL_KEY, Secrets Manager, KMS envelope); `secrets`: Secrets
//!   Manager reads; `aws`: SDK configuration shared with SQS; `sigv4`: the
//!   one SigV4 signer (SQS requests, RDS IAM tokens).
//! - `rekey`: re-masking after a key rotation; `privacy`: one person's
//!   value as it appears in the tables (`veil find`, `veil forget`).
//! - `sqs`: one client over the JSON and the query protocol (both our
//!   own small signed clients), with protocol detection.
//! - `postgres`: schema, reconnecting connection, batch writer + ledger,
//!   the audit, the partitions of the growing tables and their
//!   housekeeping (`partitions`, `maintain`), find/forget SQL, and the
//!   rights each feature needs, read from the catalog (`rights`).
//! - `pipeline`: receive -> parse -> mask -> write -> delete, with shutdown,
//!   and the loops beside it (heartbeat, queue depth, housekeeping).
//! - `commands`: one function per subcommand; `main.rs` only dispatches.
//! - `outcome`: exit codes and the fix printed under a failed command.
//! - `metrics`: every counter, gauge and histogram, the service state, and
//!   their Prometheus text; `ops` serves them (/metrics, /healthz, /readyz).
//! - `seed`, `report`, `telemetry`, `backoff`: demo data, the end-of-run
//!   table, logging, retry delays.

pub mod aws;
pub mod backoff;
pub mod cli;
pub mod commands;
pub mod config;
pub mod contract;
pub mod error;
pub mod event;
pub mod keyring;
pub mod mask;
pub mod metrics;
pub mod ops;
pub mod outcome;
pub mod pipeline;
pub mod postgres;
pub mod privacy;
pub mod rekey;
pub mod report;
pub mod secrets;
pub mod seed;
pub mod sigv4;
pub mod sqs;
pub mod telemetry;
