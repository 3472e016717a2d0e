//! Throughput machinery under test: several processes on one queue, the
//! in-flight bound, the visibility heartbeat, analyst indexes.

use std::process::{Command, Stdio};

use tokio_util::sync::CancellationToken;
use veil::sqs::ProtocolChoice;

use crate::fixtures::*;
use veil::metrics::Number;

#[tokio::test]
async fn two_processes_on_one_queue_record_each_event_exactly_once() {
    let db = migrated_db().await;
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    let messages = queue.seed(400, 0.05, 31).await;
    let valid = messages.iter().filter(|m| m.valid).count() as i64;
    let mut args = run_args(&queue, &db, &key);
    args.extend([
        "--until-empty".into(),
        "--max-batch-rows".into(),
        "50".into(),
    ]);

    // One process on the default one-thread runtime, one on two threads.
    let children: Vec<_> = ["1", "2"]
        .iter()
        .map(|threads| {
            Command::new(veil_binary())
                .args(&args)
                .args(["--worker-threads", threads])
                .env_remove("VEIL_KEY")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();

    for output in &outputs {
        assert!(output.status.success(), "{}", text(&output.stderr));
    }
    assert_eq!(db.scalar("SELECT count(*) FROM user_logins").await, valid);
    assert_eq!(
        db.scalar("SELECT count(*) FROM veil.quarantine").await,
        400 - valid
    );
    assert_eq!(db.scalar("SELECT count(*) FROM veil.ledger").await, 400);
    assert_eq!(queue.depth().await, Default::default());
}

#[tokio::test]
async fn messages_in_flight_never_exceed_the_bound() {
    let db = TestDb::create().await;
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    queue.seed(300, 0.0, 41).await;
    let config = run_config(
        &queue,
        &db,
        &key,
        &[
            "--until-empty",
            "--max-in-flight",
            "20",
            "--receivers",
            "4",
            "--max-batch-rows",
            "15",
        ],
    );

    let report = veil::commands::serve(&config, CancellationToken::new())
        .await
        .unwrap();

    assert_eq!(report.written, 300);
    assert!(
        report.peak_in_flight <= 20,
        "peak {}",
        report.peak_in_flight
    );
    assert!(
        report.peak_in_flight >= 10,
        "peak {}",
        report.peak_in_flight
    );
    assert_eq!(queue.depth().await, Default::default());
}

#[tokio::test]
async fn a_batch_held_longer_than_the_visibility_timeout_is_not_redelivered() {
    let db = migrated_db().await;
    let queue = TestQueue::create(&legacy_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    queue.seed(20, 0.0, 51).await;
    // Block every insert into user_logins until the heartbeat has kept the
    // messages hidden for more than their 2 s visibility timeout.
    let mut blocker = db.client().await;
    let lock = blocker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE user_logins IN EXCLUSIVE MODE")
        .await
        .unwrap();
    let config = run_config(
        &queue,
        &db,
        &key,
        &[
            "--until-empty",
            "--visibility-timeout-secs",
            "2",
            "--receivers",
            "2",
        ],
    );
    let (service, counters) = spawn_service(config);

    // Each message is extended about once a second; three rounds means it
    // has been held past the 2 s timeout at least once over.
    wait_until("three rounds of visibility extensions", || async {
        counters.get(Number::VisibilityExtensions) >= 60
    })
    .await;
    lock.rollback().await.unwrap();
    let report = tokio::time::timeout(TEST_TIMEOUT, service)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    assert_eq!(report.received, 20, "no message was redelivered");
    assert_eq!(report.duplicates, 0);
    assert_eq!(db.scalar("SELECT count(*) FROM user_logins").await, 20);
    assert_eq!(queue.depth().await, Default::default());
}

async fn analyst_indexes(db: &TestDb) -> Vec<String> {
    db.strings("SELECT indexname::text FROM pg_indexes WHERE tablename = 'user_logins' ORDER BY 1")
        .await
}

#[tokio::test]
async fn a_table_veil_creates_gets_analyst_indexes_an_existing_one_only_on_request() {
    let created = TestDb::create().await;
    let output = veil(&["migrate", "--database-url", &created.url], "", &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(analyst_indexes(&created).await.len(), 3);

    let existing = TestDb::create().await;
    existing
        .client()
        .await
        .batch_execute(REFERENCE_USER_LOGINS)
        .await
        .unwrap();
    let plain = veil(&["migrate", "--database-url", &existing.url], "", &[]);
    assert!(plain.status.success());
    assert!(analyst_indexes(&existing).await.is_empty());
    let indexed = veil(
        &["migrate", "--indexes", "--database-url", &existing.url],
        "",
        &[],
    );
    assert!(indexed.status.success(), "{}", text(&indexed.stderr));
    assert_eq!(
        analyst_indexes(&existing).await,
        [
            "user_logins_create_date_idx",
            "user_logins_masked_device_id_idx",
            "user_logins_masked_ip_idx"
        ]
    );
}

#[test]
fn max_in_flight_below_the_receive_size_is_refused() {
    let output = veil(
        &["run", "--max-in-flight", "5", "--batch-size", "10"],
        "",
        &[],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("--max-in-flight"));
}
