//! Lookup and erasure by value: `veil find` and `veil forget`, across a key
//! rotation and in HMAC mode, audited, never revealing another value.

use veil::sqs::ProtocolChoice;

use crate::fixtures::*;

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

/// Quarantined bodies that hold 203.0.113.80 or 2001:db8::50 in every shape
/// a producer or an envelope can give them, and one that holds neither.
fn hidden_bodies() -> Vec<String> {
    vec![
        serde_json::json!({"event": {"client": {"addresses": ["10.0.0.1", "203.0.113.80"]}}})
            .to_string(),
        serde_json::json!({"Type": "Notification",
                           "Message": "{\"user_id\": \"gina-1\", \"ip\": \"203.0.113.80\"}"})
        .to_string(),
        r#"{"IP": "203.0.113.80"}"#.to_string(),
        r#"{"ip": "10.9.9.9", "ip": "203.0.113.80"}"#.to_string(),
        "client ::FFFF:203.0.113.80 refused".to_string(),
        serde_json::json!({"ip": "2001:0DB8:0000:0000:0000:0000:0000:0050"}).to_string(),
        "from [2001:DB8::50]:443".to_string(),
        serde_json::json!({"ip": "203.0.113.81", "note": "203.0.113.800"}).to_string(),
    ]
}

#[tokio::test]
async fn forget_finds_the_value_wherever_a_quarantined_body_holds_it() {
    let mut bodies = hidden_bodies();
    bodies.push(login("gina-1", "203.0.113.80", "999-99-9999"));
    let (db, _queue, key) = recorded(&bodies, &[]).await;
    assert_eq!(db.scalar("SELECT count(*) FROM veil.quarantine").await, 8);

    let mut find = with_key_and_db("find", &key, &db);
    find.extend(["--ip", "203.0.113.80", "--reason", "DSR-1"]);
    let found = veil(&find, "", &[]);
    assert!(found.status.success(), "{}", text(&found.stderr));
    assert!(
        text(&found.stdout).contains("5 quarantined message(s) hold it"),
        "{}",
        text(&found.stdout)
    );

    let mut v4 = with_key_and_db("forget", &key, &db);
    v4.extend(["--ip", "203.0.113.80", "--reason", "DSR-1"]);
    let output = veil(&v4, "", &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout)
            .contains("deleted 1 row(s) of user_logins and 5 quarantined message(s)"),
        "{}",
        text(&output.stdout)
    );
    let mut v6 = with_key_and_db("forget", &key, &db);
    v6.extend(["--ip", "2001:db8::50", "--reason", "DSR-2"]);
    let output = veil(&v6, "", &[]);
    assert!(
        text(&output.stdout).contains("and 2 quarantined message(s)"),
        "{}",
        text(&output.stdout)
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM veil.quarantine").await,
        1,
        "only the body with other addresses is left"
    );
}

#[tokio::test]
async fn a_quarantined_body_forget_cannot_open_is_reported_by_id_and_fails() {
    let (db, _queue, key) = recorded(&["not json 203.0.113.90".to_string()], &[]).await;
    let id = db.strings("SELECT message_id FROM veil.quarantine").await[0].clone();
    db.client()
        .await
        .batch_execute("UPDATE veil.quarantine SET body_sealed = '\\x00010203'")
        .await
        .unwrap();

    let mut forget = with_key_and_db("forget", &key, &db);
    forget.extend(["--ip", "203.0.113.90", "--reason", "DSR-3"]);
    let output = veil(&forget, "", &[]);

    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains(&id) && text(&output.stderr).contains("could not be checked"),
        "{}",
        text(&output.stderr)
    );
}

#[tokio::test]
async fn the_audit_of_find_and_forget_holds_no_reversible_form_and_no_user_id() {
    let (db, _queue, key) = recorded(
        &[
            login("hana-1", "203.0.113.70", "123-12-1234"),
            "junk for hana-1".to_string(),
        ],
        &[],
    )
    .await;
    for lookup in [
        vec!["find", "--ip", "203.0.113.70"],
        vec!["forget", "--device-id", "123-12-1234", "--dry-run"],
        vec!["forget", "--user-id", "hana-1"],
    ] {
        let mut args = with_key_and_db(lookup[0], &key, &db);
        args.extend(&lookup[1..]);
        args.extend(["--reason", "DSR-4"]);
        let output = veil(&args, "", &[]);
        assert!(output.status.success(), "{}", text(&output.stderr));
    }

    let keyring = load_keyring_file(&key.path);
    let queries = db.strings("SELECT query FROM veil.audit ORDER BY id").await;
    assert_eq!(queries.len(), 3);
    for query in &queries {
        assert!(query.contains("fingerprint fp1."), "{query}");
        for secret in ["hana-1", "203.0.113.70", "123-12-1234", "siv1.", "hmac1."] {
            assert!(!query.contains(secret), "{secret} in {query}");
        }
        for token in query.split_whitespace() {
            assert!(keyring.login_reveal(token).is_err(), "{token} opens");
        }
    }
    assert_eq!(
        queries[2],
        format!(
            "user_id fingerprint {}",
            keyring.audit_fingerprint("user_id", "hana-1")
        ),
        "a key holder can check which value was looked up"
    );
}

#[tokio::test]
async fn find_and_forget_refuse_a_keyring_that_lacks_a_key_in_use() {
    let (db, _queue, key) = recorded(&[login("ivan-1", "203.0.113.60", "321-32-4321")], &[]).await;
    let other = TestKey::create();
    let old_id = key.keyring.active().id().to_string();

    for command in ["find", "forget"] {
        let mut args = with_key_and_db(command, &other, &db);
        args.extend(["--ip", "203.0.113.60", "--reason", "DSR-5"]);
        let output = veil(&args, "", &[]);

        assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
        assert!(
            text(&output.stderr).contains(&old_id),
            "names the missing key: {}",
            text(&output.stderr)
        );
    }
    assert_eq!(db.scalar("SELECT count(*) FROM user_logins").await, 1);
    assert_eq!(db.scalar("SELECT count(*) FROM veil.audit").await, 0);
}
