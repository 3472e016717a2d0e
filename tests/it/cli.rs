//! The binary as users run it: exit codes, help, reveal, keygen, logs.

use std::collections::HashMap;

use veil::sqs::ProtocolChoice;

use crate::fixtures::*;

#[tokio::test]
async fn until_empty_run_prints_summary_and_table_and_reveal_round_trips() {
    let db = TestDb::create().await;
    let queue = TestQueue::create(&legacy_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    let messages = queue.seed(25, 0.2, 21).await;
    let mut args = run_args(&queue, &db, &key);
    args.extend(["--until-empty".into(), "--show-rows".into(), "3".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    let output = veil(&args, "", &[]);

    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        stdout.contains("received 25, written 20, quarantined 5"),
        "{stdout}"
    );
    assert!(stdout.contains("masked_device_id"), "{stdout}");
    assert!(stdout.contains("(20 rows; first 3 shown"), "{stdout}");

    // Reveal every mask in the table and compare with what was sent.
    let expected: HashMap<String, (String, String)> = messages
        .iter()
        .filter(|m| m.valid)
        .map(|m| {
            let event: serde_json::Value = serde_json::from_str(&m.body).unwrap();
            let text = |field: &str| event[field].as_str().unwrap().to_string();
            let ip = veil::contract::values::canonical_ip(&text("ip")).unwrap();
            (text("user_id"), (ip, text("device_id")))
        })
        .collect();
    let client = db.client().await;
    let rows = client
        .query(
            "SELECT user_id, masked_ip, masked_device_id FROM user_logins ORDER BY user_id",
            &[],
        )
        .await
        .unwrap();
    let masks: String = rows
        .iter()
        .flat_map(|r| [r.get::<_, String>(1), r.get::<_, String>(2)])
        .map(|m| m + "\n")
        .collect();
    let revealed = veil(&reveal_args(&key, &db, "round trip test"), &masks, &[]);
    assert!(revealed.status.success(), "{}", text(&revealed.stderr));
    let values: Vec<String> = text(&revealed.stdout).lines().map(String::from).collect();
    assert_eq!(values.len(), rows.len() * 2);
    for (row, pair) in rows.iter().zip(values.chunks(2)) {
        let user_id: String = row.get(0);
        assert_eq!(expected[&user_id], (pair[0].clone(), pair[1].clone()));
    }
}

#[tokio::test]
async fn reveal_refuses_a_mask_it_cannot_open() {
    let key = TestKey::create();
    let db = migrated_db().await;
    let good = key.keyring.login_mask("ip", "10.0.0.1");
    let other = TestKey::create().keyring.login_mask("ip", "10.0.0.1");
    let input = format!("{good}\n{other}\n{good}\n");

    let output = veil(&reveal_args(&key, &db, "test"), &input, &[]);

    assert!(!output.status.success());
    assert_eq!(
        text(&output.stdout),
        "10.0.0.1\n",
        "stops before the bad line"
    );
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("line 2") && stderr.contains("not in the keyring"),
        "{stderr}"
    );
}

#[test]
fn keygen_writes_a_private_file_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.json");
    let path = path.to_str().unwrap();

    let first = veil(&["keygen", "--out", path], "", &[]);
    let second = veil(&["keygen", "--out", path], "", &[]);

    assert!(first.status.success(), "{}", text(&first.stderr));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(second.status.code(), Some(2));
    assert!(text(&second.stderr).contains("refusing to overwrite"));
    let secret = &key_material(std::path::Path::new(path));
    assert!(!text(&first.stdout).contains(secret) && !text(&first.stderr).contains(secret));
}

#[test]
fn missing_key_file_is_a_configuration_error() {
    let output = veil(
        &["run", "--key-file", "/nonexistent/veil/key.json"],
        "",
        &[],
    );

    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("veil keys new --out /nonexistent/veil/key.json"));
}

#[test]
fn help_explains_every_option() {
    let output = veil(&["run", "--help"], "", &[]);
    let help = text(&output.stdout);
    for option in [
        "--queue-url",
        "VEIL_QUEUE_URL",
        "--database-url",
        "DATABASE_URL",
        "--key-file",
        "VEIL_KEY_FILE",
        "--sqs-protocol",
        "VEIL_SQS_PROTOCOL",
        "--visibility-timeout-secs",
        "--wait-secs",
        "--batch-size",
        "--until-empty",
        "--show-rows",
        "--log-format",
    ] {
        assert!(help.contains(option), "run --help lacks {option}");
    }
    for command in [
        "run", "reveal", "keygen", "seed", "rekey", "migrate", "keys",
    ] {
        let output = veil(&[command, "--help"], "", &[]);
        assert!(output.status.success(), "{command} --help");
    }
}

#[tokio::test]
async fn no_pii_reaches_the_output_even_at_trace_level() {
    for level in ["debug", "trace"] {
        let db = TestDb::create().await;
        let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
        let key = TestKey::create();
        let messages = queue.seed(20, 0.2, 8).await;
        let mut secrets: Vec<String> = Vec::new();
        for message in &messages {
            let value: serde_json::Value = match serde_json::from_str(&message.body) {
                Ok(value) => value,
                Err(_) => continue,
            };
            for field in ["ip", "device_id"] {
                if let Some(text) = value.get(field).and_then(|v| v.as_str()) {
                    secrets.push(text.to_string());
                    if let Some(canonical) = veil::contract::values::canonical_ip(text) {
                        secrets.push(canonical);
                    }
                }
            }
        }
        let mut args = run_args(&queue, &db, &key);
        args.push("--until-empty".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();

        let output = veil(&args, "", &[("RUST_LOG", level)]);

        assert!(output.status.success(), "{}", text(&output.stderr));
        let all = text(&output.stdout) + &text(&output.stderr);
        assert!(all.lines().count() > 5, "{level} produced output");
        for secret in &secrets {
            assert!(
                !all.contains(secret.as_str()),
                "PII {secret:?} leaked at {level}"
            );
        }
        let material = &key_material(&key.path);
        assert!(!all.contains(material), "key leaked at {level}");
    }
}

#[tokio::test]
async fn aws_endpoint_variables_redirect_an_aws_queue_url() {
    for (variable, endpoint) in [
        ("AWS_ENDPOINT_URL_SQS", modern_endpoint()),
        ("AWS_ENDPOINT_URL", legacy_endpoint()),
    ] {
        let name = format!("veil-endpoint-{}", rand::random::<u32>());
        let aws_url = format!("https://sqs.us-east-1.amazonaws.com/000000000000/{name}");

        let output = veil(
            &["seed", "--count", "3", "--queue-url", &aws_url],
            "",
            &[(variable, endpoint.as_str())],
        );

        assert!(
            output.status.success(),
            "{variable}: {}",
            text(&output.stderr)
        );
        let local = TestQueue::attach(&format!("{endpoint}/000000000000/{name}")).await;
        assert_eq!(local.depth().await.visible, 3, "{variable}");
    }
}
