//! One file per subcommand: each wires configuration, keys, SQS and
//! Postgres together and reports. The work itself lives in the other
//! modules. This file declares them and re-exports the entry points.

pub mod contract;
pub mod doctor;
pub mod find;
pub mod forget;
pub mod keys;
pub mod lambda;
pub mod lookup;
pub mod maintain;
pub mod migrate;
pub mod rekey;
pub mod reveal;
pub mod run;
pub mod seed;

/// What each adapter says of its own errors, for the fix printed under a
/// failed command (`outcome::fix_for`) and `veil doctor`.
pub const FIXERS: [crate::outcome::Fixer; 2] = [crate::sqs::fix, crate::postgres::fix_of];

pub use maintain::maintain;
pub use migrate::migrate;
pub use rekey::rekey;
pub use run::{run, serve, serve_observed};
pub use seed::seed;
