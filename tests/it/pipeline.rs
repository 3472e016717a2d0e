//! The service against real SQS and Postgres: counts, exactly-once,
//! masking, schema handling, poison isolation, shutdown.

use std::collections::HashSet;

use tokio_util::sync::CancellationToken;
use veil::mask::MaskMode;
use veil::pipeline::prepare;
use veil::postgres::record_batch;
use veil::record::{Prepared, Recorded};
use veil::sqs::{Protocol, ProtocolChoice, ReceiveRequest};

use crate::fixtures::*;

async fn drains_every_event_exactly_once(endpoint: &str, protocol: ProtocolChoice) {
    let db = TestDb::create().await;
    let queue = TestQueue::create(endpoint, protocol).await;
    let key = TestKey::create();
    let messages = queue.seed(60, 0.2, 11).await;
    let valid = messages.iter().filter(|m| m.valid).count() as i64;

    let report = drain(&queue, &db, &key).await;

    assert_eq!(report.received, 60);
    assert_eq!(report.written as i64, valid);
    assert_eq!(report.quarantined as i64, 60 - valid);
    assert_eq!(report.duplicates, 0);
    assert_eq!(db.scalar("SELECT count(*) FROM user_logins").await, valid);
    assert_eq!(
        db.scalar("SELECT count(*) FROM veil.quarantine").await,
        60 - valid
    );
    assert_eq!(db.scalar("SELECT count(*) FROM veil.ledger").await, 60);
    assert_eq!(
        queue.depth().await,
        Default::default(),
        "queue is empty afterwards"
    );
}

#[tokio::test]
async fn modern_localstack_with_json_protocol_drains_exactly_once() {
    drains_every_event_exactly_once(&modern_endpoint(), ProtocolChoice::Json).await;
}

#[tokio::test]
async fn modern_localstack_with_auto_protocol_drains_exactly_once() {
    drains_every_event_exactly_once(&modern_endpoint(), ProtocolChoice::Auto).await;
}

#[tokio::test]
async fn legacy_localstack_with_query_protocol_drains_exactly_once() {
    drains_every_event_exactly_once(&legacy_endpoint(), ProtocolChoice::Query).await;
}

#[tokio::test]
async fn legacy_localstack_with_auto_protocol_drains_exactly_once() {
    drains_every_event_exactly_once(&legacy_endpoint(), ProtocolChoice::Auto).await;
}

#[tokio::test]
async fn auto_detects_json_on_modern_and_query_on_legacy() {
    let modern = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let legacy = TestQueue::create(&legacy_endpoint(), ProtocolChoice::Auto).await;
    assert_eq!(modern.client.protocol(), Protocol::Json);
    assert_eq!(legacy.client.protocol(), Protocol::Query);
}

#[tokio::test]
async fn create_date_is_the_utc_day_the_message_was_sent() {
    for endpoint in [modern_endpoint(), legacy_endpoint()] {
        let db = TestDb::create().await;
        let queue = TestQueue::create(&endpoint, ProtocolChoice::Auto).await;
        let key = TestKey::create();
        let sent_from = chrono::Utc::now().date_naive();
        queue.seed(5, 0.0, 3).await;
        let sent_until = chrono::Utc::now().date_naive();
        drain(&queue, &db, &key).await;

        // Sent between the two readings of the clock: on that day, or on
        // either side of a UTC midnight the sending straddled.
        let on_a_sending_day = db
            .scalar(&format!(
                "SELECT count(*) FROM user_logins WHERE create_date IN ('{sent_from}', '{sent_until}')"
            ))
            .await;
        assert_eq!(on_a_sending_day, 5, "{endpoint}");
    }
}

#[tokio::test]
async fn masks_are_stable_across_runs_and_equal_addresses_mask_equally() {
    let db = TestDb::create().await;
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    let event = |ip: &str| {
        serde_json::json!({"user_id": "u", "app_version": "1.0", "device_type": "ios",
                           "ip": ip, "locale": null, "device_id": "123-45-6789"})
        .to_string()
    };
    queue.send(&[event("2001:DB8:0:0:0:0:0:1")]).await;
    drain(&queue, &db, &key).await;
    queue.send(&[event("2001:db8::1")]).await;
    drain(&queue, &db, &key).await;

    let ips: HashSet<String> = db
        .strings("SELECT masked_ip FROM user_logins")
        .await
        .into_iter()
        .collect();
    let devices: HashSet<String> = db
        .strings("SELECT masked_device_id FROM user_logins")
        .await
        .into_iter()
        .collect();
    assert_eq!(db.scalar("SELECT count(*) FROM user_logins").await, 2);
    assert_eq!(ips.len(), 1, "one address, one mask");
    assert_eq!(devices.len(), 1);
    assert!(ips.contains(&key.keyring.login_mask("ip", "2001:db8::1")));
    assert!(devices.contains(&key.keyring.login_mask("device_id", "123-45-6789")));
}

async fn redelivery_after_commit_adds_nothing(endpoint: &str) {
    let db = TestDb::create().await;
    let queue = TestQueue::create(endpoint, ProtocolChoice::Auto).await;
    let key = TestKey::create();
    queue.seed(10, 0.2, 5).await;

    // Record the messages but "crash" before deleting them: they stay on the
    // queue and come back once their 1 s visibility timeout runs out.
    migrate_login(&mut db.client().await).await;
    let mut database = login_writer(&db.url).await;
    let plan = veil::contract::builtin_login();
    let mut recorded = 0;
    while recorded < 10 {
        let request = ReceiveRequest {
            max_messages: 10,
            wait_secs: 1,
            visibility_timeout_secs: 1,
            message_attributes: false,
            first_receive_time: false,
        };
        let messages = queue.client.receive(request).await.unwrap();
        let items: Vec<_> = messages
            .into_iter()
            .map(|m| prepare(&key.keyring, MaskMode::Siv, None, &plan, m))
            .collect();
        let prepared: Vec<&Prepared> = items.iter().map(|item| &item.prepared).collect();
        let (client, statements) = database.ready().await.unwrap();
        let outcome = record_batch(client, statements, &prepared).await.unwrap();
        recorded += outcome
            .iter()
            .filter(|r| **r != Recorded::Duplicate)
            .count();
    }
    let rows_before = db.scalar("SELECT count(*) FROM user_logins").await;

    let report = drain(&queue, &db, &key).await;

    assert_eq!(report.received, 10, "all ten came back");
    assert_eq!(report.duplicates, 10);
    assert_eq!(report.written + report.quarantined, 0);
    assert_eq!(
        db.scalar("SELECT count(*) FROM user_logins").await,
        rows_before
    );
    assert_eq!(db.scalar("SELECT count(*) FROM veil.ledger").await, 10);
    assert_eq!(queue.depth().await, Default::default());
}

#[tokio::test]
async fn message_redelivered_after_its_row_committed_adds_nothing_on_modern() {
    redelivery_after_commit_adds_nothing(&modern_endpoint()).await;
}

#[tokio::test]
async fn message_redelivered_after_its_row_committed_adds_nothing_on_legacy() {
    redelivery_after_commit_adds_nothing(&legacy_endpoint()).await;
}

#[tokio::test]
async fn ids_in_a_first_layout_ledger_are_still_skipped_after_the_upgrade() {
    let db = TestDb::create().await;
    // The ledger as veil first laid it out: keyed on message_id alone.
    db.client()
        .await
        .batch_execute(
            "CREATE SCHEMA veil;
             CREATE TABLE veil.ledger(
                 message_id text PRIMARY KEY,
                 outcome text NOT NULL CHECK (outcome IN ('written', 'quarantined')),
                 recorded_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .unwrap();
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    queue.seed(6, 0.0, 21).await;
    // An old veil recorded three of them, then stopped before deleting them.
    let ids: Vec<String> = receive_all(&queue, 6)
        .await
        .into_iter()
        .map(|m| m.receipt.message_id)
        .collect();
    let old: Vec<&str> = ids.iter().take(3).map(String::as_str).collect();
    db.client()
        .await
        .execute(
            "INSERT INTO veil.ledger (message_id, outcome) SELECT unnest($1::text[]), 'written'",
            &[&old],
        )
        .await
        .unwrap();

    let report = drain(&queue, &db, &key).await;

    assert_eq!(report.received, 6);
    assert_eq!(report.duplicates, 3, "the old ledger's ids are skipped");
    assert_eq!(report.written, 3);
    assert_eq!(db.scalar("SELECT count(*) FROM veil.ledger_v1").await, 3);
    assert_eq!(
        db.scalar("SELECT count(*) FROM veil.ledger WHERE sent_ms > 0")
            .await,
        3
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM veil.ledger l JOIN veil.ledger_v1 v USING (message_id)")
            .await,
        0,
        "no id is in both"
    );
    assert_eq!(queue.depth().await, Default::default());

    // Dropped once nothing in it can come back: a writer that was checking
    // it carries on.
    let mut database = login_writer(&db.url).await;
    let (client, statements) = database.ready().await.unwrap();
    client
        .batch_execute("DROP TABLE veil.ledger_v1")
        .await
        .unwrap();
    let row = prepared_row(old[0], 1);
    let outcome = record_batch(client, statements, &[&row]).await.unwrap();
    assert_eq!(outcome, [Recorded::Written]);
}

#[tokio::test]
async fn existing_contract_table_is_used_as_it_is() {
    let db = TestDb::create().await;
    db.client()
        .await
        .batch_execute(REFERENCE_USER_LOGINS)
        .await
        .unwrap();
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    queue.seed(5, 0.0, 9).await;

    drain(&queue, &db, &key).await;

    assert_eq!(db.scalar("SELECT count(*) FROM user_logins").await, 5);
    let columns = db
        .strings("SELECT column_name::text FROM information_schema.columns WHERE table_name = 'user_logins' ORDER BY ordinal_position")
        .await;
    let login = veil::contract::builtin_login();
    let contract: Vec<&str> = login.contracts[0]
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(columns, contract, "the reference table, as it was");
}

#[tokio::test]
async fn a_table_with_columns_of_its_own_that_have_defaults_receives_rows() {
    let db = TestDb::create().await;
    let client = db.client().await;
    client.batch_execute(REFERENCE_USER_LOGINS).await.unwrap();
    client
        .batch_execute(
            "ALTER TABLE user_logins ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY,
                                     ADD COLUMN loaded_at timestamptz NOT NULL DEFAULT now()",
        )
        .await
        .unwrap();
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    queue.seed(5, 0.0, 9).await;

    drain(&queue, &db, &key).await;
    let doctor = crate::fixtures::veil(
        &[
            "doctor",
            "--database-url",
            &db.url,
            "--queue-url",
            &queue.url,
        ],
        "",
        &[],
    );

    assert_eq!(
        db.scalar(
            "SELECT count(*) FROM user_logins WHERE id IS NOT NULL AND loaded_at IS NOT NULL"
        )
        .await,
        5
    );
    let said = crate::fixtures::text(&doctor.stdout);
    assert!(
        said.contains("also has column(s) id, loaded_at, left to their default"),
        "{said}"
    );
}

#[tokio::test]
async fn table_of_another_shape_is_refused_with_a_clear_message() {
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    for (table, says) in [
        (
            "CREATE TABLE user_logins(user_id text, masked_ip text)",
            "column user_id is text in the table but varchar(128) in the contract",
        ),
        (
            "CREATE TABLE user_logins(user_id varchar(128), masked_ip varchar(256))",
            "lacks column(s) device_type, masked_device_id, locale, app_version, create_date. \
             `veil run` never alters a table: run `veil migrate`",
        ),
    ] {
        let db = TestDb::create().await;
        db.client().await.batch_execute(table).await.unwrap();
        let config = run_config(&queue, &db, &key, &["--until-empty"]);

        let error = veil::commands::serve(&config, CancellationToken::new())
            .await
            .unwrap_err();

        let message = format!("{error:#}");
        assert!(
            message.contains("table user_logins does not match contract \"login\" version 1"),
            "{message}"
        );
        assert!(message.contains(says), "{message}");
        assert!(
            error.downcast_ref::<veil::error::ConfigError>().is_some(),
            "a configuration error, exit 2: {message}"
        );
        let columns = db
            .scalar("SELECT count(*) FROM pg_attribute WHERE attrelid = 'user_logins'::regclass AND attnum > 0")
            .await;
        assert_eq!(columns, 2, "the table is left as it was");
    }
}

#[tokio::test]
async fn value_postgres_cannot_store_is_quarantined_and_the_rest_commit() {
    // A LATIN1 database cannot hold CJK text: Postgres rejects that one row.
    let db =
        TestDb::create_with("ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
            .await;
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    let mut bodies: Vec<String> = veil::seed::generate(9, 0.0, 2)
        .into_iter()
        .map(|m| m.body)
        .collect();
    let poison = serde_json::json!({"user_id": "u", "app_version": "1.0", "device_type": "手机",
                                    "ip": "10.0.0.1", "locale": null, "device_id": "123-45-6789"});
    bodies.insert(4, poison.to_string());
    queue.send(&bodies).await;

    let report = drain(&queue, &db, &key).await;

    assert_eq!(report.written, 9);
    assert_eq!(report.quarantined, 1);
    assert_eq!(db.scalar("SELECT count(*) FROM user_logins").await, 9);
    assert_eq!(
        db.strings("SELECT reason FROM veil.quarantine").await,
        ["db_rejected"]
    );
    assert_eq!(queue.depth().await, Default::default());
}

#[tokio::test]
async fn shutdown_stops_a_running_consumer_after_its_batch() {
    let db = TestDb::create().await;
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    queue.seed(30, 0.0, 4).await;
    let config = run_config(&queue, &db, &key, &["--wait-secs", "1"]);
    let shutdown = CancellationToken::new();
    let service = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { veil::commands::serve(&config, shutdown).await }
    });

    wait_until("all rows written", || async {
        db.try_scalar("SELECT count(*) FROM user_logins").await == Some(30)
    })
    .await;
    shutdown.cancel();
    let report = tokio::time::timeout(TEST_TIMEOUT, service)
        .await
        .expect("stopped in time")
        .unwrap()
        .unwrap();

    assert_eq!(report.written, 30);
    assert_eq!(queue.depth().await, Default::default());
}

#[tokio::test]
async fn quarantined_bodies_are_encrypted_and_open_with_the_key() {
    let db = TestDb::create().await;
    let queue = TestQueue::create(&legacy_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    let junk = r#"{"user_id": "u", "ip": "10.9.8.7", "device_id": "555-55-5555"}"#.to_string();
    queue.send(std::slice::from_ref(&junk)).await;

    drain(&queue, &db, &key).await;

    let row = db
        .client()
        .await
        .query_one(
            "SELECT reason, field, key_id, body_sealed FROM veil.quarantine",
            &[],
        )
        .await
        .unwrap();
    let (reason, field, key_id, sealed): (String, String, String, Vec<u8>) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(
        (reason.as_str(), field.as_str()),
        ("missing_field", "device_type")
    );
    assert!(!String::from_utf8_lossy(&sealed).contains("10.9.8.7"));
    assert_eq!(
        key.keyring.open_body(&key_id, &sealed).unwrap(),
        junk.as_bytes()
    );
}

#[tokio::test]
async fn hostile_bodies_are_quarantined_with_their_reasons_and_nothing_breaks() {
    let db = TestDb::create().await;
    // The legacy server returns bodies inside XML: the harsher path.
    let queue = TestQueue::create(&legacy_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    let (valid, cases) = hostile_cases();
    let bodies: Vec<String> = cases.iter().map(|(body, _)| body.clone()).collect();
    for body in &bodies {
        queue.send(std::slice::from_ref(body)).await;
    }
    queue.send(&[valid.to_string()]).await;

    let report = drain(&queue, &db, &key).await;

    assert_eq!(report.written, 1);
    let mut expected: Vec<&str> = cases.iter().map(|(_, reason)| *reason).collect();
    expected.sort();
    let found = db
        .strings("SELECT reason FROM veil.quarantine ORDER BY reason")
        .await;
    assert_eq!(found, expected);
    let sealed = db
        .client()
        .await
        .query("SELECT key_id, body_sealed FROM veil.quarantine", &[])
        .await
        .unwrap();
    let opened: Vec<Vec<u8>> = sealed
        .iter()
        .map(|row| key.keyring.open_body(row.get(0), row.get(1)).unwrap())
        .collect();
    for (body, reason) in &cases {
        assert!(
            opened.iter().any(|b| b == body.as_bytes()),
            "{reason} body kept byte for byte"
        );
    }
    assert_eq!(queue.depth().await, Default::default());
}
