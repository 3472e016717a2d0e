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

pub use maintain::maintain;
pub use migrate::migrate;
pub use rekey::rekey;
pub use run::{run, serve, serve_observed};
pub use seed::seed;
