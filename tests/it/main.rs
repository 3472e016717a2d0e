//! Integration tests against real servers: PostgreSQL on 127.0.0.1:5432 and
//! two LocalStacks (modern, JSON + query, on 4566; legacy, query only, on
//! 4510). `scripts/services.sh up` starts them; `make test` does it for you.
//! Every test creates its own database and queue.

mod cli;
mod contracts;
mod deploy;
mod docs;
mod fake_sqs;
mod first_run;
mod fixtures;
mod golden;
mod housekeeping;
mod iam;
mod keyring;
mod lambda;
mod lifecycle;
mod logs;
mod memory;
mod old_database;
mod pipeline;
mod privacy;
mod reliability;
mod runtime_api;
mod scale;
mod secrets;
mod supervision;
mod tls;
