//! Housekeeping under the roles production uses: the least-privilege
//! pipeline role parks it and keeps recording, `doctor` says which role
//! must run what, `maintain` heals missing partitions while writers insert
//! rows of those days, finds `user_logins` through `search_path`, keeps
//! past partitions to what a message can need, and tells "skipped" apart.

use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use veil::postgres::maintain::{maintain, HousekeepingPolicy};
use veil::postgres::partitions;
use veil::sqs::ProtocolChoice;

use crate::fixtures::*;
use crate::lifecycle::{ledger_day, partition_names};

/// A database with veil's schema and the roles of sql/roles.sql.
async fn db_with_roles() -> (TestDb, String, String, String) {
    let db = migrated_db().await;
    let (pipeline, analyst, revealer) = role_names(&db);
    apply_roles(&db, &pipeline, &analyst, &revealer).await;
    (db, pipeline, analyst, revealer)
}

#[tokio::test]
async fn the_pipeline_role_parks_housekeeping_keeps_recording_and_exits_0() {
    let (db, pipeline, analyst, revealer) = db_with_roles().await;
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    let port = free_port();
    let mut args = run_args(&queue, &db, &key);
    let owner_url = args.iter().position(|a| a == "--database-url").unwrap() + 1;
    args[owner_url] = url_as(&db, &pipeline);
    args.extend(
        [
            "--housekeeping-interval-secs",
            "1",
            "--http-addr",
            &format!("127.0.0.1:{port}"),
        ]
        .map(String::from),
    );
    let child = spawn_veil(&args);

    // Waves of messages across several housekeeping intervals: each one
    // recorded means veil is still running (on today's code it exited 1 at
    // the second pass).
    let started = std::time::Instant::now();
    let mut sent = 0;
    let mut valid = 0;
    let mut wave = 0u64;
    while started.elapsed() < Duration::from_secs(6) || wave < 3 {
        let messages = queue.seed(20, 0.1, 700 + wave).await;
        sent += messages.len() as i64;
        valid += messages.iter().filter(|m| m.valid).count() as i64;
        wave += 1;
        wait_until("the wave recorded", || async {
            recorded(&db).await == sent
        })
        .await;
    }
    let http = reqwest::Client::new();
    let ready = http
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200, "delegated is still ready");
    let ready = ready.text().await.unwrap();
    let metrics = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let output = stop_with_sigterm(child).await;
    let stderr = text(&output.stderr);

    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(ready.contains("housekeeping delegated"), "{ready}");
    assert!(
        metrics.contains("\nveil_housekeeping_delegated 1\n"),
        "{metrics}"
    );
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("housekeeping delegated"))
        .collect();
    assert_eq!(warnings.len(), 1, "one WARN at start: {stderr}");
    assert!(warnings[0].contains("WARN"), "{}", warnings[0]);
    assert!(
        warnings[0].contains("ownership of veil.ledger") && warnings[0].contains("veil maintain"),
        "names what it lacks and who must run what: {}",
        warnings[0]
    );
    assert!(!stderr.contains("ERROR"), "{stderr}");
    assert_exactly_once(&db, &queue, sent, valid).await;
    drop_roles(&db, &[&pipeline, &analyst, &revealer]).await;
}

fn doctor_as(db: &TestDb, role: &str, queue: &TestQueue, key: &TestKey) -> std::process::Output {
    veil(
        &[
            "doctor",
            "--queue-url",
            &queue.url,
            "--database-url",
            &url_as(db, role),
            "--key-file",
            key.path.to_str().unwrap(),
        ],
        "",
        &[],
    )
}

#[tokio::test]
async fn doctor_checks_each_features_rights_and_names_who_must_run_what() {
    let (db, pipeline, analyst, revealer) = db_with_roles().await;
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();

    let as_pipeline = doctor_as(&db, &pipeline, &queue, &key);
    let out = text(&as_pipeline.stdout);
    assert!(as_pipeline.status.success(), "{out}");
    assert!(out.contains("ok      permissions (run)"), "{out}");
    let housekeeping = out
        .lines()
        .find(|line| line.starts_with("note    permissions (housekeeping)"))
        .unwrap_or_else(|| panic!("a housekeeping note: {out}"));
    assert!(
        housekeeping.contains("ownership of veil.ledger")
            && housekeeping.contains("CREATE on schema veil")
            && housekeeping.contains("DELETE on veil.ledger_default")
            && housekeeping
                .contains("`veil maintain`, which must run as the tables' owner (postgres)"),
        "{housekeeping}"
    );
    assert!(
        out.contains("note    permissions (reveal, find, forget)"),
        "{out}"
    );

    let as_revealer = doctor_as(&db, &revealer, &queue, &key);
    let out = text(&as_revealer.stdout);
    assert!(!as_revealer.status.success(), "{out}");
    assert!(out.contains("PROBLEM permissions (run)"), "{out}");
    assert!(
        out.contains("ok      permissions (reveal, find, forget)"),
        "{out}"
    );
    assert!(!out.contains("all checks passed"), "{out}");

    let as_analyst = doctor_as(&db, &analyst, &queue, &key);
    assert!(!as_analyst.status.success());
    let out = text(&as_analyst.stdout);
    assert!(
        out.contains("PROBLEM schema") && out.contains("permission denied for schema veil"),
        "{out}"
    );

    // Nobody maintains the partitions: the pipeline's setup now fails.
    db.client()
        .await
        .batch_execute(&format!("DROP TABLE {}", ledger_day(1)))
        .await
        .unwrap();
    let unmaintained = doctor_as(&db, &pipeline, &queue, &key);
    let out = text(&unmaintained.stdout);
    assert!(!unmaintained.status.success(), "{out}");
    assert!(out.contains("PROBLEM partitions"), "{out}");
    assert!(!out.contains("all checks passed"), "{out}");
    drop_roles(&db, &[&pipeline, &analyst, &revealer]).await;
}

#[tokio::test]
async fn maintain_as_the_pipeline_role_is_refused_naming_the_owner() {
    let (db, pipeline, analyst, revealer) = db_with_roles().await;

    let output = veil(
        &["maintain", "--database-url", &url_as(&db, &pipeline)],
        "",
        &[],
    );

    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("ownership of veil.ledger") && stderr.contains("owner (postgres)"),
        "{stderr}"
    );
    drop_roles(&db, &[&pipeline, &analyst, &revealer]).await;
}

/// A writer as the pipeline's: batches of today's entries through veil's
/// batch SQL, each retried while the failure is transient. Returns how many
/// it recorded and how many attempts were transient; panics on any other
/// failure (the pipeline would have bisected a valid event into the
/// quarantine as `db_rejected`).
async fn keep_writing(db_url: String, writer: usize, stop: CancellationToken) -> (usize, usize) {
    let (mut client, connection) = tokio_postgres::connect(&db_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let statements =
        veil::postgres::WriterStatements::prepare(&client, &veil::contract::builtin_login())
            .await
            .unwrap();
    let (mut recorded, mut transient) = (0, 0);
    for batch in 0..2_000 {
        if stop.is_cancelled() {
            break;
        }
        let now_ms = Utc::now().timestamp_millis();
        let rows: Vec<veil::record::Prepared> = (0..20)
            .map(|i| prepared_row(&format!("w{writer}-b{batch}-{i}"), now_ms))
            .collect();
        let refs: Vec<&veil::record::Prepared> = rows.iter().collect();
        loop {
            match veil::postgres::record_batch(&mut client, &statements, &refs).await {
                Ok(outcomes) => {
                    recorded += outcomes.len();
                    break;
                }
                Err(error) if error.is_transient() => transient += 1,
                Err(error) => panic!("a valid batch failed as {}: {error:?}", error.kind()),
            }
        }
    }
    (recorded, transient)
}

#[tokio::test]
async fn missing_days_heal_while_writers_insert_rows_of_those_days() {
    let db = migrated_db().await;
    let dropped: Vec<String> = (0..4).map(ledger_day).collect();
    let mut owner = db.client().await;
    for name in &dropped {
        owner
            .batch_execute(&format!("DROP TABLE {name}"))
            .await
            .unwrap();
    }
    let stop = CancellationToken::new();
    let writers: Vec<_> = (0..2)
        .map(|writer| tokio::spawn(keep_writing(db.url.clone(), writer, stop.clone())))
        .collect();
    wait_until("entries landing in the default partition", || async {
        db.scalar("SELECT count(*) FROM veil.ledger_default").await > 200
    })
    .await;

    let policy = HousekeepingPolicy::default();
    let mut passes = 0;
    loop {
        passes += 1;
        let report = maintain(&mut owner, &policy, Duration::ZERO).await.unwrap();
        let names = partition_names(&db, "veil.ledger").await;
        if dropped.iter().all(|name| names.contains(name)) {
            break;
        }
        assert!(
            passes < 4,
            "partitions back within a few passes: {:?}",
            report.failures
        );
    }
    // Writers go on into the attached partitions for a while.
    let attached_at = db.scalar("SELECT count(*) FROM veil.ledger").await;
    wait_until("more entries after the attach", || async {
        db.scalar("SELECT count(*) FROM veil.ledger").await > attached_at + 200
    })
    .await;
    stop.cancel();
    let mut written = 0;
    for writer in writers {
        let (recorded, transient) = writer.await.unwrap();
        written += recorded as i64;
        eprintln!("writer: {recorded} recorded, {transient} transient attempts");
    }

    assert_eq!(
        db.scalar("SELECT count(*) FROM veil.ledger").await,
        written,
        "every entry recorded once"
    );
    assert_eq!(
        db.scalar("SELECT count(DISTINCT message_id) FROM veil.ledger")
            .await,
        written
    );
    assert_eq!(db.scalar("SELECT count(*) FROM user_logins").await, written);
    assert_eq!(
        db.scalar(&format!(
            "SELECT count(*) FROM veil.ledger_default WHERE sent_ms >= {}",
            partitions::day_start_ms(Utc::now().date_naive())
        ))
        .await,
        0,
        "nothing of today's left in the default partition"
    );
    assert!(
        db.scalar(&format!("SELECT count(*) FROM {}", dropped[0]))
            .await
            > 200
    );
}

#[tokio::test]
async fn housekeeping_finds_user_logins_through_search_path() {
    let db = TestDb::create().await;
    db.client()
        .await
        .batch_execute(&format!(
            "CREATE SCHEMA analytics; ALTER DATABASE {} SET search_path = analytics, public",
            db.name
        ))
        .await
        .unwrap();
    let migrated = veil(
        &[
            "migrate",
            "--database-url",
            &db.url,
            "--partition-by",
            "month",
        ],
        "",
        &[],
    );
    assert!(migrated.status.success(), "{}", text(&migrated.stderr));
    let month = format!(
        "analytics.user_logins_m{}",
        Utc::now().date_naive().format("%Y%m")
    );
    // A month's partition gone: maintain makes it again, in analytics.
    db.client()
        .await
        .batch_execute(&format!("DROP TABLE IF EXISTS {month}"))
        .await
        .unwrap();

    let output = veil(&["maintain", "--database-url", &db.url], "", &[]);

    assert!(output.status.success(), "{}", text(&output.stderr));
    let names = partition_names(&db, "analytics.user_logins").await;
    assert!(names.contains(&month), "{names:?}");
    assert_eq!(
        db.scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            .await,
        0,
        "nothing made in public"
    );
}

#[tokio::test]
async fn past_ledger_partitions_go_back_only_as_far_as_a_message_can() {
    let db = TestDb::create().await;

    let output = veil(
        &[
            "migrate",
            "--database-url",
            &db.url,
            "--ledger-retention-days",
            "365",
        ],
        "",
        &[],
    );

    assert!(output.status.success(), "{}", text(&output.stderr));
    let ranged = partitions::existing(&db.client().await, "veil.ledger")
        .await
        .unwrap()
        .into_iter()
        .filter(|p| {
            matches!(
                p.bound,
                Some(partitions::Bound::Millis {
                    from_ms: Some(_),
                    ..
                })
            )
        })
        .count();
    // 15 days back, today, 7 ahead.
    assert_eq!(ranged, 23);
}

#[tokio::test]
async fn migrate_refuses_a_ledger_retention_the_queue_outlives() {
    let db = TestDb::create().await;
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;

    let output = veil(
        &[
            "migrate",
            "--database-url",
            &db.url,
            "--ledger-retention-days",
            "1",
            "--queue-url",
            &queue.url,
        ],
        "",
        &[],
    );

    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("shorter than this queue keeps a message"),
        "{}",
        text(&output.stderr)
    );
    assert_eq!(
        db.try_scalar("SELECT count(*) FROM veil.ledger").await,
        None,
        "nothing was touched"
    );
}

#[tokio::test]
async fn maintain_that_skipped_exits_75_and_wait_secs_waits_for_the_lock() {
    let db = migrated_db().await;
    let holder = db.client().await;
    holder
        .query_one("SELECT pg_advisory_lock(hashtext('veil.maintain'))", &[])
        .await
        .unwrap();

    let skipped = veil(&["maintain", "--database-url", &db.url], "", &[]);

    assert_eq!(skipped.status.code(), Some(75), "{}", text(&skipped.stderr));
    assert!(text(&skipped.stderr).contains("--wait-secs"));

    let waiting =
        spawn_veil(&["maintain", "--database-url", &db.url, "--wait-secs", "60"].map(String::from));
    let others = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND pid <> pg_backend_pid()",
        db.name
    );
    wait_until("maintain connected and waiting", || async {
        holder
            .query_one(&others, &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
            >= 1
    })
    .await;
    holder
        .query_one("SELECT pg_advisory_unlock(hashtext('veil.maintain'))", &[])
        .await
        .unwrap();
    let done = wait_for_exit(waiting, TEST_TIMEOUT).await;
    assert_eq!(done.status.code(), Some(0), "{}", text(&done.stderr));
}
