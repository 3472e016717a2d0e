//! What veil prints: no data in logs (a Postgres error's DETAIL quotes the
//! failing row, user ids and masks, so errors are printed without it), and
//! nothing a producer sent can drive the operator's terminal (control
//! characters are escaped in every table).

use veil::sqs::ProtocolChoice;

use crate::fixtures::*;

/// The user ids of the valid seeded events.
fn user_ids(messages: &[veil::seed::SeedMessage]) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m.valid)
        .filter_map(|m| serde_json::from_str::<serde_json::Value>(&m.body).ok())
        .filter_map(|body| body["user_id"].as_str().map(str::to_string))
        .collect()
}

fn run_logged(args: &[String]) -> std::process::Output {
    std::process::Command::new(veil_binary())
        .args(args)
        .env_remove("VEIL_KEY")
        .env("RUST_LOG", "debug")
        .output()
        .unwrap()
}

#[tokio::test]
async fn postgres_errors_are_logged_without_their_detail() {
    let db = migrated_db().await;
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    // A rule that refuses every row (a data error: bisected, quarantined
    // as db_rejected), its DETAIL quoting the row.
    db.client()
        .await
        .batch_execute(
            "ALTER TABLE user_logins ADD CONSTRAINT no_rows_today CHECK (app_version < 0)",
        )
        .await
        .unwrap();
    let messages = queue.seed(6, 0.0, 31).await;
    let mut args = run_args(&queue, &db, &key);
    args.push("--until-empty".into());

    let rejected = run_logged(&args);

    let stderr = text(&rejected.stderr);
    assert!(rejected.status.success(), "{stderr}");
    assert!(
        stderr.contains("no_rows_today"),
        "the error is still named: {stderr}"
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM veil.quarantine WHERE reason = 'db_rejected'")
            .await,
        6
    );

    // A fatal error whose DETAIL carries the user id.
    db.client()
        .await
        .batch_execute(
            "ALTER TABLE user_logins DROP CONSTRAINT no_rows_today;
             CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 RAISE EXCEPTION 'permission denied for table user_logins (test trigger)'
                     USING ERRCODE = '42501', DETAIL = 'Failing row contains (' || NEW.user_id || ')';
             END $$;
             CREATE TRIGGER refuse BEFORE INSERT ON user_logins FOR EACH ROW EXECUTE FUNCTION refuse();",
        )
        .await
        .unwrap();
    let more = queue.seed(3, 0.0, 32).await;
    let fatal = run_logged(&args);

    let fatal_stderr = text(&fatal.stderr);
    assert_eq!(fatal.status.code(), Some(1), "{fatal_stderr}");
    assert!(
        fatal_stderr.contains("permission denied for table user_logins"),
        "{fatal_stderr}"
    );
    for output in [&stderr, &fatal_stderr] {
        assert!(!output.contains("Failing row"), "{output}");
        assert!(!output.contains("DETAIL"), "{output}");
        for user_id in user_ids(&messages).iter().chain(&user_ids(&more)) {
            assert!(
                !output.contains(user_id.as_str()),
                "user id {user_id} in: {output}"
            );
        }
    }
}

/// What a producer can put in a text field to take over a terminal.
const HOSTILE_USER_ID: &str = "mallory\u{1b}[2J\r\nfake | row\u{9b}31m\u{7}";

/// Whether `output` carries a control character other than line ends.
fn has_raw_controls(output: &str) -> bool {
    output.chars().any(|c| c.is_control() && c != '\n')
}

#[tokio::test]
async fn producers_control_characters_are_escaped_in_every_table_and_stored_as_sent() {
    let db = TestDb::create().await;
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    let body = serde_json::json!({"user_id": HOSTILE_USER_ID, "app_version": "1.0.0",
        "device_type": "ios\u{1b}]0;title\u{7}", "ip": "203.0.113.44", "locale": "RU",
        "device_id": "444-44-4444"})
    .to_string();
    queue.send(&[body]).await;
    let mut args = run_args(&queue, &db, &key);
    args.push("--until-empty".into());
    let drained = run_logged(&args);
    let key_file = key.path.to_str().unwrap();
    let find = crate::fixtures::veil(
        &[
            "find",
            "--key-file",
            key_file,
            "--database-url",
            &db.url,
            "--ip",
            "203.0.113.44",
            "--reason",
            "T-1",
        ],
        "",
        &[],
    );
    let reveal = crate::fixtures::veil(
        &[
            "reveal",
            "--key-file",
            key_file,
            "--database-url",
            &db.url,
            "--reason",
            "T-2",
            "--sql",
            "SELECT user_id, device_type, masked_ip FROM user_logins",
        ],
        "",
        &[],
    );

    for (command, output) in [
        ("run", &drained),
        ("find", &find),
        ("reveal --sql", &reveal),
    ] {
        let stdout = text(&output.stdout);
        assert!(
            output.status.success(),
            "{command}: {}",
            text(&output.stderr)
        );
        assert!(
            stdout.contains("mallory\\x1b[2J\\r\\nfake | row\\x9b31m\\x07"),
            "{command}: {stdout:?}"
        );
        assert!(!has_raw_controls(&stdout), "{command}: {stdout:?}");
    }
    assert_eq!(
        db.strings("SELECT user_id FROM user_logins").await,
        [HOSTILE_USER_ID],
        "stored as sent"
    );
}
