//! `veil doctor`: every check a first run would trip over, each reported
//! as ok or as a problem with its fix. Read-only: it creates nothing.

use std::time::Duration;

use crate::cli::DoctorArgs;
use crate::config::{database_from_args, key_location};
use crate::keys;
use crate::postgres::{self, Database};
use crate::sqs::SqsClient;

struct Report {
    problems: usize,
}

impl Report {
    fn ok(&self, what: &str, detail: impl std::fmt::Display) {
        println!("ok      {what}: {detail}");
    }

    fn problem(&mut self, what: &str, detail: impl std::fmt::Display, fix: &str) {
        self.problems += 1;
        println!("PROBLEM {what}: {detail}\n        fix: {fix}");
    }
}

/// `veil doctor`.
pub async fn doctor(args: DoctorArgs) -> anyhow::Result<()> {
    let mut report = Report { problems: 0 };
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
    match keys::load(&location, false).await {
        Ok(keyring) => report.ok(
            "key",
            format!(
                "{} key(s), active {} ({})",
                keyring.keys().count(),
                keyring.active().id(),
                location.path().display()
            ),
        ),
        Err(error) => report.problem(
            "key",
            format!("{error:#}"),
            "create one with `veil keys new --out FILE` (veil run creates the default one), or fix KMS access",
        ),
    }
}

async fn check_queue(args: &DoctorArgs, report: &mut Report) {
    let url = &args.queue.queue_url;
    let connected = tokio::time::timeout(
        Duration::from_secs(45),
        SqsClient::connect(url, args.queue.sqs_protocol),
    )
    .await;
    let sqs = match connected {
        Ok(Ok(sqs)) => sqs,
        Ok(Err(error)) => return report.problem(
            "queue",
            format!("{error:#}"),
            "check --queue-url and that the endpoint is up (scripts/services.sh up for LocalStack)",
        ),
        Err(_) => {
            return report.problem(
                "queue",
                "no answer in 45 s",
                "check the endpoint and the network",
            )
        }
    };
    report.ok("sqs protocol", sqs.protocol());
    match sqs.depth().await {
        Ok(depth) => report.ok(
            "queue",
            format!("{url}: {} visible, {} in flight", depth.visible, depth.in_flight),
        ),
        Err(error) => report.problem(
            "queue",
            error,
            "create the queue, fix the URL, or grant sqs:GetQueueAttributes/ReceiveMessage/DeleteMessage/ChangeMessageVisibility",
        ),
    }
}

async fn check_database(args: &DoctorArgs, report: &mut Report) {
    let config = match database_from_args(&args.database) {
        Ok(config) => config,
        Err(error) => {
            return report.problem("database", error, "fix --database-url / DATABASE_URL")
        }
    };
    let target = postgres::describe(&config);
    let mut database = match Database::connect(config).await {
        Ok(database) => database,
        Err(error) => {
            return report.problem(
                "database",
                format!("{error:#}"),
                "check host, port, credentials (DATABASE_URL or PGHOST/PGUSER/PGPASSWORD) and that Postgres runs",
            )
        }
    };
    report.ok("database", &target);
    let Ok(client) = database.client().await else {
        return;
    };
    let checks = [
        ("table user_logins", "SELECT to_regclass('user_logins') IS NOT NULL", "run `veil migrate` (or veil run, which creates it)"),
        ("schema veil", "SELECT to_regclass('veil.ledger') IS NOT NULL AND to_regclass('veil.quarantine') IS NOT NULL AND to_regclass('veil.audit') IS NOT NULL
            AND EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('veil.ledger') AND attname = 'sent_ms')",
         "run `veil migrate` as the database owner (it also upgrades a first-layout ledger)"),
    ];
    for (what, sql, fix) in checks {
        match client
            .query_one(sql, &[])
            .await
            .map(|row| row.get::<_, bool>(0))
        {
            Ok(true) => report.ok(what, "present"),
            Ok(false) => report.problem(what, "missing", fix),
            Err(error) => report.problem(what, error, fix),
        }
    }
    match postgres::check_user_logins_shape(client).await {
        Ok(()) => report.ok("user_logins shape", "matches the contract"),
        Err(error) => report.problem(
            "user_logins shape",
            format!("{error:#}"),
            "point veil at a table with the contract's columns",
        ),
    }
    let privileges = "SELECT has_table_privilege('user_logins', 'INSERT')
        AND has_table_privilege('veil.ledger', 'INSERT')
        AND has_column_privilege('veil.ledger', 'sent_ms', 'SELECT')
        AND has_column_privilege('veil.ledger', 'message_id', 'SELECT')
        AND has_table_privilege('veil.quarantine', 'INSERT')";
    match client
        .query_one(privileges, &[])
        .await
        .map(|row| row.get::<_, bool>(0))
    {
        Ok(true) => report.ok(
            "permissions",
            "can insert into user_logins, veil.ledger, veil.quarantine and read the ledger's key",
        ),
        Ok(false) => report.problem(
            "permissions",
            "this role cannot insert everywhere veil writes, or cannot read the ledger's key",
            "apply sql/roles.sql and use the pipeline role",
        ),
        Err(_) => {} // tables missing: already reported
    }
}
