//! Lookup and erasure by value: `veil find` and `veil forget`, across a key
//! rotation and in HMAC mode, audited, never revealing another value.

use veil::sqs::ProtocolChoice;

use crate::cli::{text, veil};
use crate::helpers::*;

fn login(user_id: &str, ip: &str, device_id: &str) -> String {
    serde_json::json!({"user_id": user_id, "app_version": "3.1.4", "device_type": "ios",
                       "ip": ip, "locale": "DE", "device_id": device_id})
    .to_string()
}

fn drain_binary(queue: &TestQueue, db: &TestDb, key: &TestKey, extra: &[&str]) {
    let mut args = run_args(queue, db, key);
    args.push("--until-empty".into());
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = veil(&args, "", &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
}

/// A fresh database, queue and key, with these bodies recorded by `veil run`.
async fn recorded(bodies: &[String], extra: &[&str]) -> (TestDb, TestQueue, TestKey) {
    let db = TestDb::create().await;
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    queue.send(bodies).await;
    drain_binary(&queue, &db, &key, extra);
    (db, queue, key)
}

/// `veil keys rotate` on the test key.
fn rotate(key: &TestKey) {
    let rotated = veil(
        &["keys", "rotate", "--key-file", key.path.to_str().unwrap()],
        "",
        &[],
    );
    assert!(rotated.status.success(), "{}", text(&rotated.stderr));
}

fn with_key_and_db<'a>(command: &'a str, key: &'a TestKey, db: &'a TestDb) -> Vec<&'a str> {
    vec![
        command,
        "--key-file",
        key.path.to_str().unwrap(),
        "--database-url",
        &db.url,
    ]
}

#[tokio::test]
async fn find_lists_a_persons_rows_across_a_key_rotation_and_reveals_nothing_else() {
    let (db, queue, key) = recorded(
        &[
            login("alice-1", "203.0.113.7", "111-11-1111"),
            login("bob-2", "198.51.100.9", "222-22-2222"),
        ],
        &[],
    )
    .await;
    rotate(&key);
    // After the rotation the same address, written another way.
    queue
        .send(&[login("alice-3", "::ffff:203.0.113.7", "333-33-3333")])
        .await;
    drain_binary(&queue, &db, &key, &[]);
    assert_eq!(
        db.scalar("SELECT count(DISTINCT split_part(masked_ip, '.', 2)) FROM user_logins")
            .await,
        2,
        "two keys made the masks"
    );

    let mut args = with_key_and_db("find", &key, &db);
    args.extend(["--ip", "203.0.113.7", "--reason", "SEC-42"]);
    let output = veil(&args, "", &[]);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        stdout.contains("alice-1") && stdout.contains("alice-3"),
        "{stdout}"
    );
    assert!(stdout.contains("(2 rows)"), "{stdout}");
    for secret in [
        "bob-2",
        "111-11-1111",
        "333-33-3333",
        "198.51.100.9",
        "siv1.",
    ] {
        assert!(!stdout.contains(secret), "{secret} shown:\n{stdout}");
    }
    assert_eq!(
        db.strings("SELECT action || ' ' || fields::text || ' ' || value_count || ' ' || reason FROM veil.audit")
            .await,
        ["find {ip} 2 SEC-42"]
    );
    let recorded = db.strings("SELECT query FROM veil.audit").await;
    assert!(
        !recorded[0].contains("203.0.113.7"),
        "the audit keeps the mask, not the address: {}",
        recorded[0]
    );

    let mut device = with_key_and_db("find", &key, &db);
    device.extend(["--device-id", "222-22-2222", "--reason", "SEC-43"]);
    let found = text(&veil(&device, "", &[]).stdout);
    assert!(
        found.contains("bob-2") && found.contains("(1 row)"),
        "{found}"
    );

    // No reason, no lookup; an empty reason is a configuration error.
    let mut no_reason = with_key_and_db("find", &key, &db);
    no_reason.extend(["--ip", "203.0.113.7"]);
    assert_eq!(veil(&no_reason, "", &[]).status.code(), Some(2));
    let mut blank = with_key_and_db("find", &key, &db);
    blank.extend(["--ip", "203.0.113.7", "--reason", " "]);
    assert_eq!(veil(&blank, "", &[]).status.code(), Some(2));
    let mut not_ip = with_key_and_db("find", &key, &db);
    not_ip.extend(["--ip", "203.0.113", "--reason", "x"]);
    assert_eq!(veil(&not_ip, "", &[]).status.code(), Some(2));
    assert_eq!(db.scalar("SELECT count(*) FROM veil.audit").await, 2);
}

#[tokio::test]
async fn find_and_forget_work_on_irreversible_masks() {
    let (db, _queue, key) = recorded(
        &[
            login("carol-1", "192.0.2.44", "444-44-4444"),
            login("dan-2", "192.0.2.45", "555-55-5555"),
        ],
        &["--mask-mode", "hmac"],
    )
    .await;
    let mut args = with_key_and_db("find", &key, &db);
    args.extend(["--device-id", "444-44-4444", "--reason", "SEC-44"]);
    let output = veil(&args, "", &[]);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        stdout.contains("carol-1") && !stdout.contains("dan-2"),
        "{stdout}"
    );

    let mut forget = with_key_and_db("forget", &key, &db);
    forget.extend(["--ip", "192.0.2.44", "--reason", "GDPR-9"]);
    let output = veil(&forget, "", &[]);
    assert!(
        text(&output.stdout).contains("deleted 1 row(s)"),
        "{}",
        text(&output.stdout)
    );
    assert_eq!(
        db.strings("SELECT user_id FROM user_logins").await,
        ["dan-2"]
    );
    assert_eq!(
        db.strings("SELECT action FROM veil.audit ORDER BY id")
            .await,
        ["find", "forget"]
    );
}

#[tokio::test]
async fn forget_erases_rows_and_quarantined_bodies_holding_the_value_and_audits() {
    let (db, queue, key) = recorded(
        &[
            login("erin-1", "203.0.113.80", "666-66-6666"),
            login("frank-2", "203.0.113.81", "777-77-7777"),
            // Quarantined (bad version), holding erin's address.
            serde_json::json!({"user_id": "erin-1", "app_version": "x", "device_type": "ios",
                               "ip": "203.0.113.80", "locale": "DE", "device_id": "666-66-6666"})
            .to_string(),
            // Not JSON, holding it as text.
            "ip=203.0.113.80 device=666-66-6666 truncated".to_string(),
            // Quarantined, someone else's.
            serde_json::json!({"user_id": "frank-2", "app_version": "x", "device_type": "ios",
                               "ip": "203.0.113.81", "locale": "DE", "device_id": "777-77-7777"})
            .to_string(),
        ],
        &[],
    )
    .await;
    rotate(&key);
    queue
        .send(&[login("erin-3", "203.0.113.80", "888-88-8888")])
        .await;
    drain_binary(&queue, &db, &key, &[]);
    assert_eq!(db.scalar("SELECT count(*) FROM user_logins").await, 3);
    assert_eq!(db.scalar("SELECT count(*) FROM veil.quarantine").await, 3);

    let mut dry = with_key_and_db("forget", &key, &db);
    dry.extend(["--ip", "203.0.113.80", "--reason", "GDPR-7", "--dry-run"]);
    let output = veil(&dry, "", &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout)
            .contains("would delete 2 row(s) of user_logins and 2 quarantined message(s)"),
        "{}",
        text(&output.stdout)
    );
    assert_eq!(db.scalar("SELECT count(*) FROM user_logins").await, 3);
    assert_eq!(db.scalar("SELECT count(*) FROM veil.quarantine").await, 3);

    let mut real = with_key_and_db("forget", &key, &db);
    real.extend(["--ip", "203.0.113.80", "--reason", "GDPR-7"]);
    let output = veil(&real, "", &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout)
            .contains("deleted 2 row(s) of user_logins and 2 quarantined message(s)"),
        "{}",
        text(&output.stdout)
    );
    assert_eq!(
        db.strings("SELECT user_id FROM user_logins").await,
        ["frank-2"]
    );
    assert_eq!(db.scalar("SELECT count(*) FROM veil.quarantine").await, 1);
    assert_eq!(
        db.strings("SELECT action || ' ' || value_count || ' ' || reason || ' ' || (query LIKE 'dry run:%')::text FROM veil.audit ORDER BY id")
            .await,
        ["forget 4 GDPR-7 true", "forget 4 GDPR-7 false"]
    );

    // By user id: frank's row and his quarantined message.
    let mut by_user = with_key_and_db("forget", &key, &db);
    by_user.extend(["--user-id", "frank-2", "--reason", "GDPR-8"]);
    let output = veil(&by_user, "", &[]);
    assert!(
        text(&output.stdout)
            .contains("deleted 1 row(s) of user_logins and 1 quarantined message(s)"),
        "{}",
        text(&output.stdout)
    );
    assert_eq!(db.scalar("SELECT count(*) FROM user_logins").await, 0);
    assert_eq!(db.scalar("SELECT count(*) FROM veil.quarantine").await, 0);

    let mut no_reason = with_key_and_db("forget", &key, &db);
    no_reason.extend(["--user-id", "x"]);
    assert_eq!(veil(&no_reason, "", &[]).status.code(), Some(2));
}
