//! Keys and recovery: rotation and rekey, KMS keyrings, VEIL_KEY, audited
//! reveal, irreversible HMAC mode, least-privilege roles.

use std::collections::HashSet;

use base64::Engine;
use veil::sqs::ProtocolChoice;

use crate::fixtures::*;

pub fn login(ip: &str, device_id: &str) -> String {
    serde_json::json!({"user_id": "u-1", "app_version": "3.1.4", "device_type": "ios",
                       "ip": ip, "locale": "DE", "device_id": device_id})
    .to_string()
}

fn drain_with_binary(
    queue: &TestQueue,
    db: &TestDb,
    key: &TestKey,
    extra: &[&str],
    envs: &[(&str, &str)],
) {
    let mut args = run_args(queue, db, key);
    args.push("--until-empty".into());
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = veil(&args, "", envs);
    assert!(
        output.status.success(),
        "veil run failed: {}",
        text(&output.stderr)
    );
}

#[tokio::test]
async fn rotation_then_rekey_makes_masks_that_straddle_it_equal_again() {
    let db = TestDb::create().await;
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    let key_file = key.path.to_str().unwrap();
    let old_id = key.keyring.active().id().to_string();
    queue
        .send(&[login("10.1.1.1", "111-22-3333"), "junk".into()])
        .await;
    drain_with_binary(&queue, &db, &key, &[], &[]);

    let rotated = veil(&["keys", "rotate", "--key-file", key_file], "", &[]);
    assert!(rotated.status.success(), "{}", text(&rotated.stderr));
    queue.send(&[login("10.1.1.1", "111-22-3333")]).await;
    drain_with_binary(&queue, &db, &key, &[], &[]);

    let ips = db.strings("SELECT masked_ip FROM user_logins").await;
    assert_eq!(
        ips.iter().collect::<HashSet<_>>().len(),
        2,
        "two keys, two masks"
    );
    let both = format!("{}\n{}\n", ips[0], ips[1]);
    let revealed = veil(&reveal_args(&key, &db, "rotation test"), &both, &[]);
    assert_eq!(
        text(&revealed.stdout),
        "10.1.1.1\n10.1.1.1\n",
        "{}",
        text(&revealed.stderr)
    );

    // Retiring the old key now would strand its masks: refused.
    let retire = || {
        veil(
            &[
                "keys",
                "retire",
                "--key-file",
                key_file,
                "--key-id",
                &old_id,
                "--database-url",
                &db.url,
            ],
            "",
            &[],
        )
    };
    let early = retire();
    assert_eq!(early.status.code(), Some(2), "{}", text(&early.stderr));
    assert!(
        text(&early.stderr).contains("still made 3 mask(s)")
            && text(&early.stderr).contains("veil rekey"),
        "{}",
        text(&early.stderr)
    );
    assert!(load_keyring_file(&key.path).find(&old_id).is_some(), "kept");

    let rekeyed = veil(
        &["rekey", "--key-file", key_file, "--database-url", &db.url],
        "",
        &[],
    );
    let summary = text(&rekeyed.stdout);
    assert!(rekeyed.status.success(), "{}", text(&rekeyed.stderr));
    assert!(
        summary.contains("rekeyed 1 of 2 rows read and 1 quarantine bodies"),
        "{summary}"
    );
    assert!(
        summary.contains(&old_id) && summary.contains("can be retired"),
        "{summary}"
    );

    let current = load_keyring_file(&key.path);
    let new_id = current.active().id().to_string();
    let ips = db
        .strings("SELECT DISTINCT masked_ip FROM user_logins")
        .await;
    let devices = db
        .strings("SELECT DISTINCT masked_device_id FROM user_logins")
        .await;
    assert_eq!(ips, [current.login_mask("ip", "10.1.1.1")]);
    assert_eq!(devices, [current.login_mask("device_id", "111-22-3333")]);
    assert_eq!(
        db.strings("SELECT key_id FROM veil.quarantine").await,
        std::slice::from_ref(&new_id)
    );

    let retired = retire();
    assert!(retired.status.success(), "{}", text(&retired.stderr));
    let listed = text(&veil(&["keys", "list", "--key-file", key_file], "", &[]).stdout);
    assert!(
        listed.contains(&new_id) && !listed.contains(&old_id),
        "{listed}"
    );
    let again = veil(
        &reveal_args(&key, &db, "after retire"),
        &format!("{}\n", ips[0]),
        &[],
    );
    assert_eq!(text(&again.stdout), "10.1.1.1\n");
}

#[tokio::test]
async fn keys_list_shows_ids_and_the_active_key_but_no_material() {
    let key = TestKey::create();
    let output = veil(
        &["keys", "list", "--key-file", key.path.to_str().unwrap()],
        "",
        &[],
    );
    let listing = text(&output.stdout);
    assert!(
        listing.contains(key.keyring.active().id()) && listing.contains("yes"),
        "{listing}"
    );
    let material = &key_material(&key.path);
    assert!(!listing.contains(material));
}

pub async fn kms_key(endpoint: &str) -> String {
    let config = veil::aws::sdk_config(Some(endpoint), true, None).await;
    let kms = aws_sdk_kms::Client::new(&config);
    let created = kms
        .create_key()
        .send()
        .await
        .expect("KMS in LocalStack (SERVICES=sqs,kms)");
    created.key_metadata.unwrap().arn.unwrap()
}

#[tokio::test]
async fn kms_keyring_masks_and_reveals_and_holds_no_usable_key_without_kms() {
    let endpoint = modern_endpoint();
    let arn = kms_key(&endpoint).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kms-keyring.json");
    let path_text = path.to_str().unwrap();
    let kms_env = [("AWS_ENDPOINT_URL_KMS", endpoint.as_str())];

    let created = veil(
        &["keys", "new", "--kms-key-id", &arn, "--out", path_text],
        "",
        &kms_env,
    );

    assert!(created.status.success(), "{}", text(&created.stderr));
    let file = std::fs::read_to_string(&path).unwrap();
    assert!(
        file.contains(&arn) && !file.contains("material_base64"),
        "{file}"
    );
    // The data key is bound to veil's EncryptionContext: KMS opens it with
    // the context and refuses without it.
    let envelope: serde_json::Value = serde_json::from_str(&file).unwrap();
    assert_eq!(envelope["version"], 2);
    let data_key = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        envelope["encrypted_data_key_base64"].as_str().unwrap(),
    )
    .unwrap();
    let kms = aws_sdk_kms::Client::new(&veil::aws::sdk_config(Some(&endpoint), true, None).await);
    let decrypt = |context: Option<std::collections::HashMap<String, String>>| {
        kms.decrypt()
            .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(data_key.clone()))
            .set_encryption_context(context)
            .send()
    };
    let context = veil::keyring::ENCRYPTION_CONTEXT
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert!(decrypt(Some(context)).await.is_ok());
    assert!(
        decrypt(None).await.is_err(),
        "no data key without the context"
    );
    let listed = veil(&["keys", "list", "--key-file", path_text], "", &[]);
    assert!(listed.status.success() && text(&listed.stdout).contains("yes"));

    let db = TestDb::create().await;
    let queue = TestQueue::create(&endpoint, ProtocolChoice::Auto).await;
    let key = TestKey::at(path.clone());
    queue.send(&[login("10.2.2.2", "222-33-4444")]).await;
    drain_with_binary(&queue, &db, &key, &[], &kms_env);
    let masks = db.strings("SELECT masked_ip FROM user_logins").await;
    let revealed = veil(
        &reveal_args(&key, &db, "kms test"),
        &format!("{}\n", masks[0]),
        &kms_env,
    );
    assert_eq!(
        text(&revealed.stdout),
        "10.2.2.2\n",
        "{}",
        text(&revealed.stderr)
    );

    let rotated = veil(&["keys", "rotate", "--key-file", path_text], "", &kms_env);
    assert!(rotated.status.success(), "{}", text(&rotated.stderr));
    assert!(!std::fs::read_to_string(&path)
        .unwrap()
        .contains("material_base64"));
}

#[tokio::test]
async fn wrong_or_missing_kms_key_stops_start_up_before_any_message_is_read() {
    let endpoint = modern_endpoint();
    let right = kms_key(&endpoint).await;
    let other = kms_key(&endpoint).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.json");
    let kms_env = [("AWS_ENDPOINT_URL_KMS", endpoint.as_str())];
    let created = veil(
        &[
            "keys",
            "new",
            "--kms-key-id",
            &right,
            "--out",
            path.to_str().unwrap(),
        ],
        "",
        &kms_env,
    );
    assert!(created.status.success(), "{}", text(&created.stderr));
    let original = std::fs::read_to_string(&path).unwrap();
    let db = TestDb::create().await;
    let queue = TestQueue::create(&endpoint, ProtocolChoice::Auto).await;
    queue.send(&[login("10.3.3.3", "333-44-5555")]).await;
    let missing =
        right.rsplit_once('/').unwrap().0.to_string() + "/00000000-0000-0000-0000-000000000000";

    for (case, substitute) in [
        ("wrong key", other.as_str()),
        ("missing key", missing.as_str()),
    ] {
        std::fs::write(&path, original.replace(&right, substitute)).unwrap();
        let key = TestKey::at(path.clone());
        let mut args = run_args(&queue, &db, &key);
        args.push("--until-empty".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();

        let output = veil(&args, "", &kms_env);

        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{case}: {stderr}");
        assert!(
            stderr.contains("KMS Decrypt") && stderr.contains(substitute),
            "{case}: {stderr}"
        );
        assert_eq!(
            queue.depth().await.visible,
            1,
            "{case}: no message was read"
        );
    }
}

#[tokio::test]
async fn veil_key_variable_and_key_file_give_the_same_masks() {
    let key = TestKey::create();
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(&key.path).unwrap());
    let mut masks = Vec::new();
    for use_variable in [false, true] {
        let db = TestDb::create().await;
        let queue = TestQueue::create(&legacy_endpoint(), ProtocolChoice::Auto).await;
        queue.send(&[login("10.4.4.4", "444-55-6666")]).await;
        let mut args = run_args(&queue, &db, &key);
        if use_variable {
            let at = args.iter().position(|a| a == "--key-file").unwrap();
            args.drain(at..at + 2);
        }
        args.push("--until-empty".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let envs: Vec<(&str, &str)> = if use_variable {
            vec![("VEIL_KEY", &encoded)]
        } else {
            vec![]
        };
        let output = veil(&args, "", &envs);
        assert!(output.status.success(), "{}", text(&output.stderr));
        masks.push(
            db.strings("SELECT masked_ip || masked_device_id FROM user_logins")
                .await,
        );
    }
    assert_eq!(masks[0], masks[1]);

    let both = veil(
        &["run", "--key-file", key.path.to_str().unwrap()],
        "",
        &[("VEIL_KEY", &encoded)],
    );
    assert_eq!(both.status.code(), Some(2));
    assert!(text(&both.stderr).contains("use one"));

    // An empty VEIL_KEY (compose's `${VEIL_KEY:-}` when unset) is no keyring.
    let empty = veil(
        &["keys", "list", "--key-file", key.path.to_str().unwrap()],
        "",
        &[("VEIL_KEY", "")],
    );
    assert!(empty.status.success(), "{}", text(&empty.stderr));
    assert!(text(&empty.stdout).contains(key.path.to_str().unwrap()));
}

#[tokio::test]
async fn veil_key_leaves_the_process_environment_once_read() {
    let key = TestKey::create();
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(&key.path).unwrap());
    let db = crate::fixtures::migrated_db().await;
    let queue = TestQueue::create(&legacy_endpoint(), ProtocolChoice::Auto).await;
    let mut args = run_args(&queue, &db, &key);
    let at = args.iter().position(|a| a == "--key-file").unwrap();
    args.drain(at..at + 2);
    let child = std::process::Command::new(veil_binary())
        .args(&args)
        .env("VEIL_KEY", &encoded)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    queue.send(&[login("10.4.4.5", "444-55-6667")]).await;
    wait_until("the event recorded with the key", || async {
        recorded(&db).await == 1
    })
    .await;

    let environ = std::fs::read(format!("/proc/{}/environ", child.id())).unwrap();
    let output = stop_with_sigterm(child).await;

    assert!(output.status.success(), "{}", text(&output.stderr));
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        !environ.contains(&encoded),
        "the value is gone from /proc/<pid>/environ"
    );
    assert!(
        !environ
            .split('\0')
            .any(|variable| variable.starts_with("VEIL_KEY=") && variable.len() > 9),
        "no VEIL_KEY with a value"
    );
    assert!(
        environ.contains("PATH="),
        "the rest of the environment is there"
    );
}

#[tokio::test]
async fn every_reveal_is_audited_and_a_reason_is_required() {
    let db = TestDb::create().await;
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    queue
        .send(&[login("10.5.5.5", "555-66-7777"), "not json at all".into()])
        .await;
    drain_with_binary(&queue, &db, &key, &[], &[]);
    let key_file = key.path.to_str().unwrap();

    let no_reason = veil(
        &["reveal", "--key-file", key_file, "--database-url", &db.url],
        "",
        &[],
    );
    assert_eq!(no_reason.status.code(), Some(2));
    assert!(text(&no_reason.stderr).contains("--reason"));
    let blank = veil(&reveal_args(&key, &db, "  "), "", &[]);
    assert_eq!(blank.status.code(), Some(2));
    assert_eq!(db.scalar("SELECT count(*) FROM veil.audit").await, 0);

    let masks = db
        .strings("SELECT masked_ip || E'\\n' || masked_device_id FROM user_logins")
        .await;
    let stdin = veil(
        &reveal_args(&key, &db, "TICKET-1"),
        &(masks[0].clone() + "\n"),
        &[],
    );
    assert_eq!(
        text(&stdin.stdout),
        "10.5.5.5\n555-66-7777\n",
        "{}",
        text(&stdin.stderr)
    );

    let mut sql = reveal_args(&key, &db, "TICKET-2");
    sql.extend([
        "--sql",
        "select user_id, masked_ip, app_version from user_logins",
    ]);
    let table = text(&veil(&sql, "", &[]).stdout);
    assert!(
        table.contains("10.5.5.5") && table.contains("u-1") && table.contains("(1 row)"),
        "{table}"
    );

    let message_id = db
        .strings("SELECT message_id FROM veil.quarantine")
        .await
        .remove(0);
    let mut quarantine = reveal_args(&key, &db, "TICKET-3");
    quarantine.extend(["--quarantine", &message_id]);
    let body = text(&veil(&quarantine, "", &[]).stdout);
    assert!(
        body.contains("not json at all") && body.contains("not_json"),
        "{body}"
    );

    let audit = db
        .client()
        .await
        .query("SELECT action, value_count, array_to_string(fields, ','), reason, db_role, os_user <> '', query FROM veil.audit ORDER BY id", &[])
        .await
        .unwrap();
    type AuditRow = (String, i32, String, String, String, bool, Option<String>);
    let rows: Vec<AuditRow> = audit
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
            )
        })
        .collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(
        (
            rows[0].0.as_str(),
            rows[0].1,
            rows[0].2.as_str(),
            rows[0].3.as_str()
        ),
        ("masks", 2, "device_id,ip", "TICKET-1")
    );
    assert_eq!(
        (rows[1].0.as_str(), rows[1].1, rows[1].2.as_str()),
        ("sql", 1, "ip")
    );
    assert_eq!(
        rows[1].6.as_deref(),
        Some("select user_id, masked_ip, app_version from user_logins")
    );
    assert_eq!(
        (rows[2].0.as_str(), rows[2].1, rows[2].2.as_str()),
        ("quarantine", 1, "quarantine_body")
    );
    assert!(rows.iter().all(|r| r.4 == "postgres" && r.5));
}

#[tokio::test]
async fn sql_reveal_cannot_write() {
    let db = migrated_db().await;
    let key = TestKey::create();
    let mut args = reveal_args(&key, &db, "attempt");
    args.extend(["--sql", "delete from user_logins returning user_id"]);

    let output = veil(&args, "", &[]);

    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("read-only"),
        "{}",
        text(&output.stderr)
    );
}

#[tokio::test]
async fn hmac_mode_is_deterministic_irreversible_and_marked() {
    let db = TestDb::create().await;
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    queue
        .send(&[
            login("10.6.6.6", "666-77-8888"),
            login("10.6.6.6", "666-77-8888"),
        ])
        .await;

    drain_with_binary(&queue, &db, &key, &["--mask-mode", "hmac"], &[]);

    let masks = db
        .strings("SELECT DISTINCT masked_ip FROM user_logins")
        .await;
    assert_eq!(masks, [key.keyring.login_hmac("ip", "10.6.6.6")]);
    assert!(masks[0].starts_with("hmac1."));
    let output = veil(
        &reveal_args(&key, &db, "try"),
        &format!("{}\n", masks[0]),
        &[],
    );
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("cannot be reversed"),
        "{}",
        text(&output.stderr)
    );
}

#[tokio::test]
async fn least_privilege_roles_can_do_their_job_and_nothing_more() {
    let db = migrated_db().await;
    let (pipeline, analyst, revealer) = role_names(&db);
    apply_roles(&db, &pipeline, &analyst, &revealer).await;
    let client = db.client().await;
    let url_as = |role: &str| url_as(&db, role);

    // The pipeline role drains the queue.
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    queue
        .send(&[login("10.7.7.7", "777-88-9999"), "junk".into()])
        .await;
    let mut args = run_args(&queue, &db, &key);
    let at = args.iter().position(|a| a == "--database-url").unwrap();
    args[at + 1] = url_as(&pipeline);
    args.push("--until-empty".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = veil(&args, "", &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(db.scalar("SELECT count(*) FROM user_logins").await, 1);
    // Housekeeping is the owner's: the pipeline role says so and carries on.
    assert!(
        text(&output.stderr).contains("housekeeping delegated"),
        "{}",
        text(&output.stderr)
    );
    // A redelivery takes the writer's other path (ON CONFLICT), which reads
    // the ledger's key: the role can do that too.
    let mut database = login_writer(&url_as(&pipeline)).await;
    let batch = [prepared_row("redelivered", 1_764_000_000_000)];
    for expected_duplicates in [0, 1] {
        let (client, statements) = database.ready().await.unwrap();
        let outcome = veil::postgres::record_batch(client, statements, &[&batch[0]])
            .await
            .unwrap();
        let duplicates = outcome
            .iter()
            .filter(|r| **r == veil::record::Recorded::Duplicate)
            .count();
        assert_eq!(duplicates, expected_duplicates);
    }
    assert_eq!(db.scalar("SELECT count(*) FROM user_logins").await, 2);

    let try_as = |role: String, sql: &'static str| {
        let url = url_as(&role);
        async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(connection);
            client.simple_query(sql).await.is_ok()
        }
    };
    assert!(try_as(analyst.clone(), "SELECT masked_ip FROM user_logins").await);
    assert!(!try_as(analyst.clone(), "SELECT * FROM veil.quarantine").await);
    assert!(!try_as(analyst.clone(), "SELECT * FROM veil.audit").await);
    assert!(!try_as(pipeline.clone(), "SELECT * FROM veil.audit").await);
    assert!(!try_as(pipeline.clone(), "SELECT * FROM user_logins").await);
    assert!(!try_as(pipeline.clone(), "DELETE FROM user_logins").await);
    assert!(!try_as(revealer.clone(), "DELETE FROM veil.audit").await);

    // The revealer can reveal (and is audited under its own role).
    let mut reveal = reveal_args(&key, &db, "role test");
    let revealer_url = url_as(&revealer);
    let at = reveal.iter().position(|a| *a == "--database-url").unwrap();
    reveal[at + 1] = &revealer_url;
    reveal.extend(["--sql", "select masked_ip from user_logins"]);
    let revealed = veil(&reveal, "", &[]);
    assert!(
        text(&revealed.stdout).contains("10.7.7.7"),
        "{}",
        text(&revealed.stderr)
    );
    assert_eq!(
        db.strings("SELECT db_role FROM veil.audit").await,
        std::slice::from_ref(&revealer)
    );

    drop(client);
    drop_roles(&db, &[&pipeline, &analyst, &revealer]).await;
}

#[tokio::test]
async fn sql_reveal_opens_only_mask_columns_and_reports_masks_that_do_not_open() {
    let key = TestKey::create();
    let db = migrated_db().await;
    let ip_mask = key.keyring.login_mask("ip", "10.1.1.1");
    let device_mask = key.keyring.login_mask("device_id", "555-66-7777");
    let mut tampered = ip_mask.clone().into_bytes();
    let inside = tampered.len() - 5;
    tampered[inside] = if tampered[inside] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    // A producer controls user_id: it may plant a mask-shaped value, even a
    // real mask, and none is opened outside the mask columns.
    db.client()
        .await
        .execute(
            "INSERT INTO user_logins (user_id, device_type, masked_ip, masked_device_id, app_version, create_date)
             VALUES ('hmac1.a.b', 'ios', $1, $2, 1, '2026-11-25'),
                    ($1, 'ios', $3, $2, 1, '2026-11-25')",
            &[&ip_mask, &device_mask, &tampered],
        )
        .await
        .unwrap();
    let mut args = reveal_args(&key, &db, "SEC-9");
    args.extend([
        "--sql",
        "select user_id, masked_ip, masked_device_id as device from user_logins order by masked_ip = $$x$$",
        "--mask-column",
        "device",
    ]);

    let output = veil(&args, "", &[]);

    let stdout = text(&output.stdout);
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "not fatal: {stderr}");
    assert!(stdout.contains("hmac1.a.b"), "{stdout}");
    assert!(
        stdout.contains(&ip_mask),
        "a mask as user_id stays closed: {stdout}"
    );
    assert!(stdout.contains("10.1.1.1"), "{stdout}");
    assert_eq!(
        stdout.matches("555-66-7777").count(),
        2,
        "the alias is opened: {stdout}"
    );
    assert!(stdout.contains(&tampered), "{stdout}");
    assert!(
        stderr.contains("1 cell(s) looked like masks but did not open")
            && stderr.contains("column masked_ip")
            && stderr.contains("does not authenticate"),
        "{stderr}"
    );
    assert_eq!(
        db.scalar("SELECT value_count::int8 FROM veil.audit").await,
        3
    );
}

#[tokio::test]
async fn rekey_reaches_every_row_of_a_table_many_pages_long() {
    // Thousands of rows span pages (10,x) and beyond, where the text of a
    // ctid no longer sorts like the ctid: the walk must not skip any.
    let db = migrated_db().await;
    let key = TestKey::create();
    let count = 3000;
    let users: Vec<String> = (0..count).map(|n| format!("user-{n}")).collect();
    let ips: Vec<String> = (0..count)
        .map(|n| {
            key.keyring
                .login_mask("ip", &format!("10.0.{}.{}", n / 250, n % 250))
        })
        .collect();
    db.client()
        .await
        .execute(
            "INSERT INTO user_logins SELECT u, 'ios', i, i, 'DE', 3, current_date
               FROM unnest($1::text[], $2::text[]) AS t(u, i)",
            &[&users, &ips],
        )
        .await
        .unwrap();
    assert!(
        db.scalar("SELECT max((ctid::text::point)[0])::int8 FROM user_logins")
            .await
            >= 10
    );
    let key_file = key.path.to_str().unwrap();
    assert!(veil(&["keys", "rotate", "--key-file", key_file], "", &[])
        .status
        .success());

    let rekeyed = veil(
        &["rekey", "--key-file", key_file, "--database-url", &db.url],
        "",
        &[],
    );
    assert!(rekeyed.status.success(), "{}", text(&rekeyed.stderr));
    assert!(
        text(&rekeyed.stdout).contains(&format!("rekeyed {count} of ")),
        "{}",
        text(&rekeyed.stdout)
    );
    assert_eq!(
        db.scalar("SELECT count(DISTINCT split_part(masked_ip, '.', 2)) FROM user_logins")
            .await,
        1
    );
}
