//! Data that grows for years: the ledger partitioned by day with its
//! retention, the upgrade of older ledgers without losing a recorded id,
//! housekeeping by one veil at a time, a partitioned user_logins.

use chrono::{Days, Utc};
use veil::postgres::partitions::{self, Partitioned};
use veil::sqs::ProtocolChoice;

use crate::fixtures::*;

/// The name of the ledger partition of the day `days_from_today` away.
pub fn ledger_day(days_from_today: i64) -> String {
    let today = Utc::now().date_naive();
    let day = if days_from_today >= 0 {
        today + Days::new(days_from_today as u64)
    } else {
        today - Days::new(days_from_today.unsigned_abs())
    };
    format!("veil.ledger_d{}", day.format("%Y%m%d"))
}

/// The names of `parent`'s partitions.
pub async fn partition_names(db: &TestDb, parent: &str) -> Vec<String> {
    partitions::existing(&db.client().await, parent)
        .await
        .unwrap()
        .into_iter()
        .map(|partition| partition.name)
        .collect()
}

#[tokio::test]
async fn ledger_partitions_exist_ahead_and_days_past_the_retention_are_dropped() {
    let db = migrated_db().await;
    let names = partition_names(&db, "veil.ledger").await;
    for wanted in [ledger_day(-14), ledger_day(0), ledger_day(1), ledger_day(7)] {
        assert!(names.contains(&wanted), "{wanted} in {names:?}");
    }
    assert!(names.contains(&"veil.ledger_default".to_string()));
    assert!(names.contains(&"veil.ledger_unsent".to_string()));

    // A day 20 days back, with an entry in it: past the 15-day retention.
    let old_day = Utc::now().date_naive() - Days::new(20);
    let old = Partitioned::Ledger.partition_for(old_day);
    let mut client = db.client().await;
    partitions::create_partition(&mut client, &Partitioned::Ledger, &old)
        .await
        .unwrap();
    let old_ms = partitions::day_start_ms(old_day) + 1000;
    client
        .execute(
            "INSERT INTO veil.ledger (sent_ms, message_id, outcome) VALUES ($1, 'old', 'written'),
                    (0, 'unsent-recent', 'written')",
            &[&old_ms],
        )
        .await
        .unwrap();
    assert_eq!(
        db.scalar(&format!("SELECT count(*) FROM {}", old.name))
            .await,
        1
    );
    client
        .execute(
            "INSERT INTO veil.ledger (sent_ms, message_id, outcome, recorded_at)
             VALUES (0, 'unsent-old', 'written', now() - interval '30 days')",
            &[],
        )
        .await
        .unwrap();

    let output = veil(&["maintain", "--database-url", &db.url], "", &[]);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        stdout.contains(&format!("dropped {}", old.name)),
        "{stdout}"
    );

    let names = partition_names(&db, "veil.ledger").await;
    assert!(!names.contains(&old.name), "{names:?}");
    assert!(names.contains(&ledger_day(-14)), "{names:?}");
    assert!(names.contains(&ledger_day(1)), "{names:?}");
    assert_eq!(
        db.strings("SELECT message_id FROM veil.ledger WHERE sent_ms = 0")
            .await,
        ["unsent-recent"],
        "entries without a send time are pruned by age"
    );

    // A second pass has nothing left to do.
    let again = veil(&["maintain", "--database-url", &db.url], "", &[]);
    assert!(
        text(&again.stdout).contains("0 partition(s) created, 0 dropped"),
        "{}",
        text(&again.stdout)
    );
}

#[tokio::test]
async fn a_ledger_retention_shorter_than_the_queue_keeps_messages_is_refused() {
    let db = migrated_db().await;
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    // LocalStack keeps a message 4 days by default, as SQS does.
    let mut args = run_args(&queue, &db, &key);
    args.extend(["--until-empty", "--ledger-retention-days", "3"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let refused = veil(&args, "", &[]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    assert!(
        text(&refused.stderr).contains("--ledger-retention-days 5 or more"),
        "{}",
        text(&refused.stderr)
    );

    let maintain = veil(
        &[
            "maintain",
            "--database-url",
            &db.url,
            "--ledger-retention-days",
            "3",
            "--queue-url",
            &queue.url,
        ],
        "",
        &[],
    );
    assert_eq!(
        maintain.status.code(),
        Some(2),
        "{}",
        text(&maintain.stderr)
    );

    let mut args = run_args(&queue, &db, &key);
    args.extend(["--until-empty", "--ledger-retention-days", "5"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let accepted = veil(&args, "", &[]);
    assert!(accepted.status.success(), "{}", text(&accepted.stderr));
}

#[tokio::test]
async fn upgrading_a_plain_ledger_keeps_every_recorded_id_and_exactly_once() {
    let db = TestDb::create().await;
    // The second ledger layout: keyed on (sent_ms, message_id), not partitioned.
    db.client()
        .await
        .batch_execute(
            r#"CREATE SCHEMA veil;
             CREATE TABLE veil.ledger(
                 sent_ms bigint NOT NULL,
                 message_id text COLLATE "C" NOT NULL,
                 outcome text NOT NULL CHECK (outcome IN ('written', 'quarantined')),
                 recorded_at timestamptz NOT NULL DEFAULT now(),
                 PRIMARY KEY (sent_ms, message_id))"#,
        )
        .await
        .unwrap();
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    queue.seed(6, 0.0, 31).await;
    // An old veil recorded three of them, then stopped before deleting them.
    let received = receive_all(&queue, 6).await;
    let client = db.client().await;
    for message in received.iter().take(3) {
        client
            .execute(
                "INSERT INTO veil.ledger (sent_ms, message_id, outcome) VALUES ($1, $2, 'written')",
                &[
                    &message.sent_timestamp_ms.unwrap(),
                    &message.receipt.message_id,
                ],
            )
            .await
            .unwrap();
    }
    client
        .execute(
            "INSERT INTO veil.ledger (sent_ms, message_id, outcome) VALUES (0, 'no-send-time', 'written')",
            &[],
        )
        .await
        .unwrap();

    let migrate = veil(&["migrate", "--database-url", &db.url], "", &[]);
    assert!(migrate.status.success(), "{}", text(&migrate.stderr));
    assert!(
        text(&migrate.stdout).contains("the ledger is now partitioned by day"),
        "{}",
        text(&migrate.stdout)
    );
    let before: Vec<String> = partition_names(&db, "veil.ledger")
        .await
        .into_iter()
        .filter(|name| name.starts_with("veil.ledger_before_"))
        .collect();
    assert_eq!(before.len(), 1, "the old ledger is one partition");
    assert_eq!(
        db.scalar(&format!("SELECT count(*) FROM {}", before[0]))
            .await,
        3
    );
    assert_eq!(
        db.strings("SELECT message_id FROM veil.ledger_unsent")
            .await,
        ["no-send-time"]
    );

    let report = drain(&queue, &db, &key).await;

    assert_eq!(report.received, 6);
    assert_eq!(
        report.duplicates, 3,
        "ids recorded before the upgrade are skipped"
    );
    assert_eq!(report.written, 3);
    assert_eq!(db.scalar("SELECT count(*) FROM user_logins").await, 3);
    assert_eq!(db.scalar("SELECT count(*) FROM veil.ledger").await, 7);
    assert_eq!(queue.depth().await, Default::default());
}

#[tokio::test]
async fn one_veil_at_a_time_does_housekeeping() {
    let db = TestDb::create().await;
    let mut client = db.client().await;
    migrate_login(&mut client).await;
    assert!(
        !partition_names(&db, "veil.ledger")
            .await
            .contains(&ledger_day(0)),
        "migrate alone makes no day partitions"
    );

    // Another veil holds the lock: this one skips.
    client
        .query_one("SELECT pg_advisory_lock(hashtext('veil.maintain'))", &[])
        .await
        .unwrap();
    let skipped = veil(&["maintain", "--database-url", &db.url], "", &[]);
    assert_eq!(skipped.status.code(), Some(75), "{}", text(&skipped.stderr));
    assert!(
        text(&skipped.stderr).contains("another veil held the housekeeping lock"),
        "{}",
        text(&skipped.stderr)
    );
    client
        .query_one("SELECT pg_advisory_unlock(hashtext('veil.maintain'))", &[])
        .await
        .unwrap();

    // Two at once, the second waiting for the first: both succeed, and
    // each partition is made once.
    let spawn = || {
        std::process::Command::new(veil_binary())
            .args(["maintain", "--database-url", &db.url, "--wait-secs", "60"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (first, second) = (spawn(), spawn());
    let outputs = [
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    ];
    let mut created = Vec::new();
    for output in &outputs {
        assert!(output.status.success(), "{}", text(&output.stderr));
        created.extend(
            text(&output.stdout)
                .lines()
                .filter_map(|line| line.trim().strip_prefix("created ").map(String::from)),
        );
    }
    created.sort();
    let unique = {
        let mut unique = created.clone();
        unique.dedup();
        unique
    };
    assert_eq!(created, unique, "no partition made twice");
    assert_eq!(
        created.len(),
        23,
        "15 days back, today, 7 ahead: {created:?}"
    );
    assert!(created.contains(&ledger_day(0)));
}

#[tokio::test]
async fn a_partitioned_user_logins_has_the_contracts_columns_and_receives_rows() {
    let db = TestDb::create().await;
    let plain = TestDb::create().await;
    plain
        .client()
        .await
        .batch_execute(REFERENCE_USER_LOGINS)
        .await
        .unwrap();
    let output = veil(
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
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("created, partitioned by month"),
        "{}",
        text(&output.stdout)
    );
    let columns = "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum)
                     FROM pg_attribute WHERE attrelid = 'user_logins'::regclass AND attnum > 0 AND NOT attisdropped";
    assert_eq!(db.strings(columns).await, plain.strings(columns).await);
    assert_eq!(
        db.strings("SELECT relkind::text FROM pg_class WHERE oid = 'user_logins'::regclass")
            .await,
        ["p"]
    );
    let month = format!(
        "public.user_logins_m{}",
        Utc::now().date_naive().format("%Y%m")
    );
    assert!(partition_names(&db, "public.user_logins")
        .await
        .contains(&month));

    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    queue.seed(20, 0.0, 41).await;
    let report = drain(&queue, &db, &key).await;
    assert_eq!(report.written, 20);
    assert_eq!(
        db.scalar(&format!("SELECT count(*) FROM {month}")).await,
        20,
        "today's rows are in this month's partition"
    );

    // Retention: a partition three months back goes; this month stays.
    let old_day = Utc::now().date_naive() - chrono::Months::new(3);
    let granularity = veil::postgres::partitions::Granularity::Month;
    let table = Partitioned::Dated(partitions::DatedTable {
        schema: "public".into(),
        name: "user_logins".into(),
        column: "create_date".into(),
        granularity,
    });
    let old = table.partition_for(old_day);
    let mut client = db.client().await;
    partitions::create_partition(&mut client, &table, &old)
        .await
        .unwrap();
    let kept = veil(&["maintain", "--database-url", &db.url], "", &[]);
    assert!(kept.status.success(), "{}", text(&kept.stderr));
    assert!(
        partition_names(&db, "public.user_logins")
            .await
            .contains(&old.name),
        "no retention by default"
    );
    let dropped = veil(
        &[
            "maintain",
            "--database-url",
            &db.url,
            "--retention-months",
            "2",
        ],
        "",
        &[],
    );
    assert!(dropped.status.success(), "{}", text(&dropped.stderr));
    let names = partition_names(&db, "public.user_logins").await;
    assert!(!names.contains(&old.name), "{names:?}");
    assert!(names.contains(&month));
    assert_eq!(db.scalar("SELECT count(*) FROM user_logins").await, 20);

    // An existing plain table is never altered.
    let refused = veil(
        &[
            "migrate",
            "--database-url",
            &plain.url,
            "--partition-by",
            "day",
        ],
        "",
        &[],
    );
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    assert!(text(&refused.stderr).contains("never alters an existing table"));
}

#[tokio::test]
async fn rekey_walks_every_partition_of_a_partitioned_user_logins() {
    let db = TestDb::create().await;
    let output = veil(
        &[
            "migrate",
            "--database-url",
            &db.url,
            "--partition-by",
            "day",
        ],
        "",
        &[],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    queue.seed(5, 0.0, 51).await;
    drain(&queue, &db, &key).await;
    // A row of three days ago, in its own partition.
    let three_days_ago = Utc::now().date_naive() - Days::new(3);
    db.client()
        .await
        .execute(
            "INSERT INTO user_logins VALUES ('old', 'ios', $1, $2, 'DE', 3, $3)",
            &[
                &key.keyring.login_mask("ip", "10.9.9.9"),
                &key.keyring.login_mask("device_id", "999-99-9999"),
                &three_days_ago,
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        db.scalar(&format!(
            "SELECT count(*) FROM user_logins_d{}",
            three_days_ago.format("%Y%m%d")
        ))
        .await,
        1
    );
    let key_file = key.path.to_str().unwrap();
    let rotated = veil(&["keys", "rotate", "--key-file", key_file], "", &[]);
    assert!(rotated.status.success(), "{}", text(&rotated.stderr));

    let rekeyed = veil(
        &["rekey", "--key-file", key_file, "--database-url", &db.url],
        "",
        &[],
    );
    assert!(rekeyed.status.success(), "{}", text(&rekeyed.stderr));
    assert!(
        text(&rekeyed.stdout).contains("rekeyed 6 of "),
        "{}",
        text(&rekeyed.stdout)
    );
    assert_eq!(
        db.scalar("SELECT count(DISTINCT split_part(masked_ip, '.', 2)) FROM user_logins")
            .await,
        1
    );
}

#[tokio::test]
async fn a_message_without_a_send_time_is_still_recorded_once() {
    let db = migrated_db().await;
    let mut database = login_writer(&db.url).await;
    let row = prepared_row("no-sent-timestamp", 0);
    let mut outcomes = Vec::new();
    for _ in 0..2 {
        let (client, statements) = database.ready().await.unwrap();
        outcomes.extend(
            veil::postgres::record_batch(client, statements, &[&row])
                .await
                .unwrap(),
        );
    }
    assert_eq!(
        outcomes,
        [
            veil::record::Recorded::Written,
            veil::record::Recorded::Duplicate
        ]
    );
    assert_eq!(
        db.strings("SELECT message_id FROM veil.ledger_unsent")
            .await,
        ["no-sent-timestamp"]
    );
}
