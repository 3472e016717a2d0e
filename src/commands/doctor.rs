//! `veil doctor`: every check a first run would trip over, each reported
//! as ok or as a problem with its fix. Read-only: it creates nothing.
//! Checks that depend on a failed one are skipped rather than reported as
//! more problems, and a fix that applies to several problems is printed
//! once.

use crate::postgres::maintain::HousekeepingPolicy;
use std::collections::HashSet;
use std::time::Duration;

use crate::cli::DoctorArgs;
use crate::config::{database_from_args, key_location, queue_settings};
use crate::keyring as keys;
use crate::outcome::specific_fix;
use crate::postgres::{self, Database};
use crate::sqs::SqsClient;

/// How long the queue check may take, endpoint wait included.
const QUEUE_CHECK_TIMEOUT: Duration = Duration::from_secs(45);

#[derive(Default)]
struct Report {
    problems: usize,
    fixes_printed: HashSet<String>,
}

impl Report {
    fn ok(&self, what: &str, detail: impl std::fmt::Display) {
        println!("ok      {what}: {detail}");
    }

    /// Something that is fine for this role but needs another: not a
    /// problem, and printed so the operator knows who must do it.
    fn note(&self, what: &str, detail: impl std::fmt::Display) {
        println!("note    {what}: {detail}");
    }

    fn problem(&mut self, what: &str, detail: impl std::fmt::Display, fix: &str) {
        self.problems += 1;
        println!("PROBLEM {what}: {detail}");
        if self.fixes_printed.insert(fix.to_string()) {
            println!("        fix: {fix}");
        } else {
            println!("        fix: as above");
        }
    }

    /// A problem whose fix is the error's own when veil knows it.
    fn failed(&mut self, what: &str, error: &anyhow::Error, fallback: &str) {
        let fix = specific_fix(error, &super::FIXERS).unwrap_or_else(|| fallback.to_string());
        self.problem(what, crate::error::error_chain(error), &fix);
    }
}

/// `veil doctor`.
pub async fn doctor(args: DoctorArgs) -> anyhow::Result<()> {
    let mut report = Report::default();
    check_key(&args, &mut report).await;
    check_queue(&args, &mut report).await;
    check_database(&args, &mut report).await;
    if report.problems == 0 {
        println!("all checks passed");
        Ok(())
    } else {
        anyhow::bail!("{} problem(s) found", report.problems)
    }
}

async fn check_key(args: &DoctorArgs, report: &mut Report) {
    let location = match key_location(&args.key) {
        Ok(location) => location,
        Err(error) => return report.problem("key", error, "pass --key-file or set VEIL_KEY_FILE"),
    };
    match keys::load(&location, false, &crate::aws::KeyServices).await {
        Ok(keyring) => report.ok(
            "key",
            format!(
                "{} key(s), active {} ({})",
                keyring.keys().count(),
                keyring.active().id(),
                location.describe()
            ),
        ),
        Err(error) => report.failed(
            "key",
            &error,
            "create one with `veil keys new` (veil run creates the default one), fix the file, or fix KMS access",
        ),
    }
}

async fn check_queue(args: &DoctorArgs, report: &mut Report) {
    let queue = match queue_settings(&args.queue) {
        Ok(queue) => queue,
        Err(error) => return report.problem("queue", error, "fix --queue-url / VEIL_QUEUE_URL"),
    };
    let fallback =
        "check --queue-url and that the endpoint is up (scripts/services.sh up for LocalStack)";
    let sqs = match tokio::time::timeout(QUEUE_CHECK_TIMEOUT, SqsClient::connect(&queue)).await {
        Ok(Ok(sqs)) => sqs,
        Ok(Err(error)) => return report.failed("queue", &error, fallback),
        Err(_) => {
            let waited = QUEUE_CHECK_TIMEOUT.as_secs();
            return report.problem("queue", format!("no answer in {waited} s"), fallback);
        }
    };
    report.ok("sqs protocol", sqs.protocol());
    match sqs.depth().await {
        Ok(depth) => report.ok(
            "queue",
            format!(
                "{}: {} visible, {} in flight",
                queue.url, depth.visible, depth.in_flight
            ),
        ),
        Err(error) => report.failed("queue", &error.into(), fallback),
    }
}

async fn check_database(args: &DoctorArgs, report: &mut Report) {
    let config = match database_from_args(&args.database) {
        Ok(config) => config,
        Err(error) => {
            return report.problem("database", error, "fix --database-url / DATABASE_URL")
        }
    };
    let target = config.describe();
    let config_tls = config.tls.clone();
    let local = config.is_local();
    let mut database = match Database::connect(config).await {
        Ok(database) => database,
        Err(error) => {
            return report.failed(
                "database",
                &error,
                "check host, port, credentials (DATABASE_URL or PGHOST/PGUSER/PGPASSWORD) and that Postgres runs",
            )
        }
    };
    report.ok("database", &target);
    let Ok(client) = database.client().await else {
        return;
    };
    check_tls(&config_tls, local, client, report).await;
    let plan = match crate::config::plan_from_args(&args.contracts) {
        Ok(plan) => plan,
        Err(error) => {
            return report.problem(
                "contracts",
                error,
                "fix the contract file (veil contract check)",
            )
        }
    };
    if !check_tables(client, &plan, report).await {
        return; // privileges on missing tables cannot be checked
    }
    let tables: Vec<String> = plan
        .contracts
        .iter()
        .map(|contract| crate::postgres::contract_sql::table_sql(&contract.table))
        .collect();
    let policy = HousekeepingPolicy::default().with_contracts(&plan);
    check_rights(client, &tables, &policy, report).await;
    check_partitions(client, &policy, report).await;
}

/// veil's schema, and each contract's table against its contract; true
/// when every table is there.
async fn check_tables(
    client: &impl crate::postgres::GenericClient,
    plan: &crate::contract::Plan,
    report: &mut Report,
) -> bool {
    use crate::postgres::contract_sql::{table_state, TableState};
    let mut all_there = true;
    match postgres::missing_veil_tables(client).await {
        Ok(missing) if missing.is_empty() => {
            report.ok("schema", "veil (ledger, quarantine, audit) present")
        }
        Ok(missing) => {
            all_there = false;
            report.problem(
                "schema",
                format!("missing: {}", missing.join(", ")),
                MIGRATE_FIX,
            );
        }
        Err(error) => {
            all_there = false;
            report.failed("schema", &error.into(), MIGRATE_FIX);
        }
    }
    for contract in &plan.contracts {
        let what = format!("table {} (contract {})", contract.table, contract.name);
        match table_state(client, contract).await {
            Ok(TableState::Fits(extra)) if extra.is_empty() => {
                report.ok(&what, "matches the contract")
            }
            Ok(TableState::Fits(extra)) => report.ok(
                &what,
                format!(
                    "matches the contract; also has column(s) {}, left to their default",
                    extra.join(", ")
                ),
            ),
            Ok(TableState::Missing) => {
                all_there = false;
                report.problem(&what, "missing", MIGRATE_FIX)
            }
            Ok(TableState::Lacks(columns)) => report.problem(
                &what,
                format!("lacks column(s) {} of the contract", columns.join(", ")),
                MIGRATE_FIX,
            ),
            Ok(TableState::Refused(reason)) => report.problem(
                &what,
                reason,
                "change the table or the contract (docs/contracts.md, Migrations)",
            ),
            Err(error) => {
                all_there = false;
                report.failed(&what, &error, MIGRATE_FIX)
            }
        }
    }
    all_there
}

/// The rights of the connected role, feature by feature, and which role
/// must run what. Recording is the job of any role `veil run` uses; the
/// others are reported as notes when this role lacks them, with the role
/// that must do them, and as a problem where nobody else does (missing
/// partitions: see `check_partitions`).
async fn check_rights(
    client: &impl crate::postgres::GenericClient,
    tables: &[String],
    policy: &HousekeepingPolicy,
    report: &mut Report,
) {
    match postgres::rights::pipeline(client, tables).await {
        Ok(lacking) if lacking.is_empty() => report.ok(
            "permissions (run)",
            format!(
                "role {} can insert into {}, veil.ledger, veil.quarantine and read the ledger's key",
                lacking.role,
                tables.join(", ")
            ),
        ),
        Ok(lacking) => report.problem(
            "permissions (run)",
            format!("role {} lacks {}: `veil run` would stop at its first batch", lacking.role, lacking.list()),
            "apply sql/roles.sql (as the owner) and run veil as its pipeline role",
        ),
        Err(error) => return report.failed("permissions (run)", &error.into(), "apply sql/roles.sql"),
    }
    match crate::postgres::maintain::missing_rights(client, policy).await {
        Ok(lacking) if lacking.is_empty() => report.ok(
            "permissions (housekeeping)",
            format!("role {} may create, attach, drop and prune partitions (veil run does it every --housekeeping-interval-secs)", lacking.role),
        ),
        Ok(lacking) => report.note(
            "permissions (housekeeping)",
            format!(
                "role {} lacks {}: `veil run` under it leaves housekeeping to `veil maintain`, which must run as {} \
                 (a cron job, the Kubernetes CronJob, the stack's scheduled task); set --housekeeping-interval-secs 0 to say so",
                lacking.role,
                lacking.list(),
                lacking.who_may()
            ),
        ),
        Err(error) => report.failed("permissions (housekeeping)", &error, HOUSEKEEPING_FIX),
    }
    match postgres::rights::audited_reads(client, tables).await {
        Ok(lacking) if lacking.is_empty() => report.ok(
            "permissions (reveal, find, forget)",
            format!(
                "role {} can read the rows and the quarantine and append to veil.audit",
                lacking.role
            ),
        ),
        Ok(lacking) => report.note(
            "permissions (reveal, find, forget)",
            format!(
                "role {} lacks {}: run them as the revealer role of sql/roles.sql (forget: as {})",
                lacking.role,
                lacking.list(),
                lacking.who_may()
            ),
        ),
        Err(error) => report.failed(
            "permissions (reveal, find, forget)",
            &error.into(),
            "apply sql/roles.sql",
        ),
    }
}

const HOUSEKEEPING_FIX: &str =
    "run `veil maintain` as the tables' owner (cron or a Kubernetes CronJob), \
     or let `veil run` do it under the owner role (--housekeeping-interval-secs)";

/// Whether today's and the coming days' partitions exist (housekeeping
/// runs), for the ledger and the tables partitioned on a date
/// (`user_logins`, the contracts' tables of `policy`).
async fn check_partitions(
    client: &impl crate::postgres::GenericClient,
    policy: &HousekeepingPolicy,
    report: &mut Report,
) {
    use postgres::partitions::{existing, is_partitioned, Bound, Partitioned};
    let today = chrono::Utc::now().date_naive();
    let mut tables = Vec::new();
    match is_partitioned(client, "veil.ledger").await {
        Ok(true) => tables.push(Partitioned::Ledger),
        Ok(false) => {
            return report.problem(
                "partitions",
                "veil.ledger is not partitioned (an older layout): old entries cannot be dropped by day",
                "run `veil migrate` as the owner: it upgrades the ledger in place and keeps every recorded id",
            )
        }
        Err(error) => return report.failed("partitions", &error, MIGRATE_FIX),
    }
    match policy.dated_tables(client).await {
        Ok(dated) => tables.extend(
            dated
                .into_iter()
                .map(|(table, _)| Partitioned::Dated(table)),
        ),
        Err(error) => return report.failed("partitions", &error, HOUSEKEEPING_FIX),
    }
    for table in tables {
        let parent = table.parent();
        let present = match existing(client, &parent).await {
            Ok(present) => present,
            Err(error) => return report.failed("partitions", &error, HOUSEKEEPING_FIX),
        };
        let covered = |day| {
            let wanted: Bound = table.partition_for(day).bound;
            present
                .iter()
                .any(|p| p.bound.as_ref().is_some_and(|b| b.overlaps(&wanted)))
        };
        let tomorrow = today.succ_opt().unwrap_or(today);
        if covered(today) && covered(tomorrow) {
            report.ok(
                "partitions",
                format!(
                    "{parent}: today's and tomorrow's exist ({} in all)",
                    present.len()
                ),
            );
        } else {
            report.problem(
                "partitions",
                format!(
                    "{parent} has no partition for today or tomorrow: new rows land in its default partition, and nothing old is dropped"
                ),
                HOUSEKEEPING_FIX,
            );
        }
    }
}

async fn check_tls(
    tls: &crate::postgres::TlsSettings,
    local: bool,
    client: &impl crate::postgres::GenericClient,
    report: &mut Report,
) {
    match postgres::tls_in_use(client).await {
        Ok(Some(version)) => report.ok("tls", format!("{version}, {}", tls.describe())),
        Ok(None) if local => report.ok("tls", "off (a database on this machine)"),
        Ok(None) => report.problem(
            "tls",
            format!(
                "the connection is not encrypted (sslmode={}): the password and the data travel in clear",
                tls.mode.name()
            ),
            "set sslmode=verify-full and sslrootcert (RDS: global-bundle.pem) in DATABASE_URL, or PGSSLMODE and PGSSLROOTCERT",
        ),
        Err(error) => report.failed("tls", &error.into(), "grant SELECT on pg_stat_ssl (a default)"),
    }
}

const MIGRATE_FIX: &str =
    "run `veil migrate` as the database owner (veil run also creates what is missing when it may, \
     but never adds columns to a table)";
