//! `veil lambda` end to end: the real binary against a Runtime API of our
//! own (`runtime_api`), fed SQS events built from messages received from
//! both LocalStacks, writing to real Postgres. Exactly once under Lambda's
//! own duplicates, partial batch failures at the deadline, hostile
//! batches, and fatal errors at init and per invocation.

use std::process::{Child, Command};
use std::time::Duration;

use veil::sqs::{ProtocolChoice, QueueMessage, ReceiveRequest};

use crate::fixtures::*;
use crate::runtime_api::{failures, sqs_event, Answer, RuntimeApi};

const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// A `veil lambda` process (its logs in a file, read when asked).
struct Function {
    child: Child,
    logs: tempfile::NamedTempFile,
}

impl Function {
    /// Starts the binary as Lambda does (`bootstrap`, no arguments) when
    /// `args` is empty, else as `veil <args>`.
    fn start(api: &RuntimeApi, database_url: &str, key: &TestKey, args: &[&str]) -> Function {
        Function::start_with(api, database_url, &key.path, args, &[])
    }

    /// `start`, with the keyring at `key_file` and more environment.
    fn start_with(
        api: &RuntimeApi,
        database_url: &str,
        key_file: &std::path::Path,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Function {
        let logs = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(veil_binary())
            .args(args)
            .env_remove("VEIL_KEY")
            .env_remove("VEIL_QUEUE_URL")
            .env("AWS_LAMBDA_RUNTIME_API", &api.address)
            .env("AWS_LAMBDA_FUNCTION_NAME", "veil")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("DATABASE_URL", database_url)
            .env("VEIL_KEY_FILE", key_file)
            .envs(envs.iter().copied())
            .env("VEIL_LOG_FORMAT", "json")
            .stdout(append(&logs))
            .stderr(append(&logs))
            .spawn()
            .unwrap();
        Function { child, logs }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(self.logs.path()).unwrap()
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The log file opened for appending: stdout and stderr interleave by
/// line instead of overwriting each other.
fn append(logs: &tempfile::NamedTempFile) -> std::fs::File {
    std::fs::OpenOptions::new()
        .append(true)
        .open(logs.path())
        .unwrap()
}

/// Receives `count` messages with every attribute, hidden for a minute (as
/// the event source mapping holds a batch while the function runs).
async fn receive(queue: &TestQueue, count: usize) -> Vec<QueueMessage> {
    let mut received: Vec<QueueMessage> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while received.len() < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "received {} of {count}",
            received.len()
        );
        let request = ReceiveRequest {
            max_messages: 10,
            wait_secs: 1,
            visibility_timeout_secs: 60,
            message_attributes: true,
            first_receive_time: true,
        };
        received.extend(queue.client.receive(request).await.unwrap());
    }
    received
}

async fn invoke(api: &RuntimeApi, event: &serde_json::Value, timeout: Duration) -> Answer {
    let id = api.invoke(event, timeout);
    api.answer(&id, ANSWER_WITHIN).await
}

async fn lambda_records_a_real_batch_once_across_lambdas_duplicates(endpoint: &str) {
    let db = migrated_db().await;
    let key = TestKey::create();
    let queue = TestQueue::create(endpoint, ProtocolChoice::Auto).await;
    let seeded = queue.seed(10, 0.0, 19).await;
    let messages = receive(&queue, 10).await;
    let api = RuntimeApi::start().await;
    let function = Function::start(&api, &db.url, &key, &[]);
    let event = sqs_event(&queue.url, &messages);

    let first = invoke(&api, &event, ANSWER_WITHIN).await;
    assert_eq!(
        failures(&first),
        Vec::<String>::new(),
        "{}",
        function.logs()
    );
    assert_eq!(db.scalar("SELECT count(*) FROM user_logins").await, 10);

    // The same batch again (a retry after a timeout), and one message twice
    // in a batch: nothing written twice, every record done.
    let retried = invoke(&api, &event, ANSWER_WITHIN).await;
    assert_eq!(failures(&retried), Vec::<String>::new());
    let twice = sqs_event(
        &queue.url,
        &[
            messages[0].clone(),
            messages[0].clone(),
            messages[1].clone(),
        ],
    );
    assert_eq!(
        failures(&invoke(&api, &twice, ANSWER_WITHIN).await),
        Vec::<String>::new()
    );
    assert_eq!(db.scalar("SELECT count(*) FROM user_logins").await, 10);
    assert_eq!(db.scalar("SELECT count(*) FROM veil.ledger").await, 10);

    // A record without SentTimestamp is recorded once, as in the poller.
    queue.seed(1, 0.0, 23).await;
    let mut unsent = receive(&queue, 1).await;
    unsent[0].sent_timestamp_ms = None;
    let unsent = sqs_event(&queue.url, &unsent);
    for _ in 0..2 {
        assert_eq!(
            failures(&invoke(&api, &unsent, ANSWER_WITHIN).await),
            Vec::<String>::new()
        );
    }
    assert_eq!(db.scalar("SELECT count(*) FROM user_logins").await, 11);
    assert_eq!(
        db.scalar("SELECT count(*) FROM veil.ledger_unsent").await,
        1
    );

    // veil never deletes here: the mapping does. Every message is still in
    // flight on the queue.
    let depth = queue.depth().await;
    assert_eq!(depth.visible + depth.in_flight, 11, "{depth:?}");
    // The same JSON lines as the poller, without a value of the events,
    // and one EMF line per invocation.
    let logs = function.logs();
    assert!(logs.contains("\"veil lambda ready\""), "{logs}");
    assert!(logs.contains("\"batch committed\""), "{logs}");
    assert_eq!(logs.matches("\"_aws\"").count(), 5, "{logs}");
    for message in &seeded {
        let body: serde_json::Value = serde_json::from_str(&message.body).unwrap();
        for field in ["ip", "device_id"] {
            let value = body[field].as_str().unwrap();
            assert!(!logs.contains(value), "{field} {value} in the logs");
        }
    }
}

#[tokio::test]
async fn lambda_records_a_modern_localstack_batch_once_across_retries_and_duplicates() {
    lambda_records_a_real_batch_once_across_lambdas_duplicates(&modern_endpoint()).await;
}

#[tokio::test]
async fn lambda_records_a_legacy_localstack_batch_once_across_retries_and_duplicates() {
    lambda_records_a_real_batch_once_across_lambdas_duplicates(&legacy_endpoint()).await;
}

#[tokio::test]
async fn a_hostile_batch_is_quarantined_whole_and_answered_as_done() {
    let db = migrated_db().await;
    let key = TestKey::create();
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let (_, cases) = hostile_cases();
    let bodies: Vec<String> = cases.iter().map(|(body, _)| body.clone()).collect();
    for body in &bodies {
        queue.send(std::slice::from_ref(body)).await;
    }
    let messages = receive(&queue, bodies.len()).await;
    let api = RuntimeApi::start().await;
    let _function = Function::start(&api, &db.url, &key, &["lambda"]);

    let answer = invoke(&api, &sqs_event(&queue.url, &messages), ANSWER_WITHIN).await;

    assert_eq!(failures(&answer), Vec::<String>::new());
    let mut expected: Vec<&str> = cases.iter().map(|(_, reason)| *reason).collect();
    expected.sort();
    assert_eq!(
        db.strings("SELECT reason FROM veil.quarantine ORDER BY reason")
            .await,
        expected
    );
    assert_eq!(db.scalar("SELECT count(*) FROM user_logins").await, 0);
}

#[tokio::test]
async fn two_concurrent_environments_record_one_batch_once() {
    let db = migrated_db().await;
    let key = TestKey::create();
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    queue.seed(40, 0.1, 29).await;
    let messages = receive(&queue, 40).await;
    let api = RuntimeApi::start().await;
    let _a = Function::start(&api, &db.url, &key, &["lambda"]);
    let _b = Function::start(&api, &db.url, &key, &["lambda"]);
    wait_until("both environments wait for work", || async {
        api.next_calls() >= 2
    })
    .await;

    let event = sqs_event(&queue.url, &messages);
    let (one, other) = (
        api.invoke(&event, ANSWER_WITHIN),
        api.invoke(&event, ANSWER_WITHIN),
    );
    let (one, other) = tokio::join!(
        api.answer(&one, ANSWER_WITHIN),
        api.answer(&other, ANSWER_WITHIN)
    );

    assert_eq!(failures(&one), Vec::<String>::new());
    assert_eq!(failures(&other), Vec::<String>::new());
    assert_eq!(db.scalar("SELECT count(*) FROM veil.ledger").await, 40);
    assert_eq!(
        db.scalar("SELECT count(*) FROM user_logins").await
            + db.scalar("SELECT count(*) FROM veil.quarantine").await,
        40
    );
}

#[tokio::test]
async fn a_write_held_past_the_deadline_reports_exactly_its_records_and_their_retry_records_them_once(
) {
    let db = migrated_db().await;
    let key = TestKey::create();
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    queue.seed(10, 0.0, 31).await;
    let messages = receive(&queue, 10).await;
    let api = RuntimeApi::start().await;
    // On Lambda settings arrive as variables: batches of five.
    let function = Function::start_with(
        &api,
        &db.url,
        &key.path,
        &[],
        &[("VEIL_MAX_BATCH_ROWS", "5")],
    );
    // Another session holds the ledger entry of the eighth record: the
    // second batch of five waits on it past the invocation's deadline.
    let blocker = db.client().await;
    blocker.batch_execute("BEGIN").await.unwrap();
    let held = &messages[7];
    blocker
        .execute(
            "INSERT INTO veil.ledger (sent_ms, message_id, outcome) VALUES ($1, $2, 'written')",
            &[&held.sent_timestamp_ms.unwrap(), &held.receipt.message_id],
        )
        .await
        .unwrap();
    let event = sqs_event(&queue.url, &messages);

    let started = std::time::Instant::now();
    let answer = invoke(&api, &event, Duration::from_secs(4)).await;
    let answered_in = started.elapsed();

    let mut second_half: Vec<String> = messages[5..]
        .iter()
        .map(|m| m.receipt.message_id.clone())
        .collect();
    second_half.sort();
    assert_eq!(failures(&answer), second_half, "{}", function.logs());
    assert!(
        answered_in < Duration::from_secs(4),
        "answered after the deadline: {answered_in:?}"
    );
    assert_eq!(db.scalar("SELECT count(*) FROM user_logins").await, 5);

    // The lock goes; the mapping retries just those records.
    blocker.batch_execute("ROLLBACK").await.unwrap();
    let retry = sqs_event(&queue.url, &messages[5..]);
    assert_eq!(
        failures(&invoke(&api, &retry, ANSWER_WITHIN).await),
        Vec::<String>::new()
    );
    assert_eq!(db.scalar("SELECT count(*) FROM user_logins").await, 10);
    assert_eq!(db.scalar("SELECT count(*) FROM veil.ledger").await, 10);
}

#[tokio::test]
async fn a_fatal_error_fails_init_or_the_invocation_never_reporting_success() {
    let db = migrated_db().await;
    let key = TestKey::create();
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    queue.seed(3, 0.0, 37).await;
    let messages = receive(&queue, 3).await;
    let event = sqs_event(&queue.url, &messages);

    // A keyring that is not there: init fails, reported, exit code 2.
    let api = RuntimeApi::start().await;
    let missing = TestKey::at(std::env::temp_dir().join("veil-no-such-dir/keyring.json"));
    let mut broken = Function::start(&api, &db.url, &missing, &[]);
    let status = wait_for_child(&mut broken.child, Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(2), "{}", broken.logs());
    let init_error = api.init_error().expect("init error reported");
    assert_eq!(init_error["errorType"], "veil.ConfigError", "{init_error}");

    // A table gone after init: the invocation fails (every record retried).
    let function = Function::start(&api, &db.url, &key, &[]);
    wait_until("the function is ready", || async {
        function.logs().contains("veil lambda ready")
    })
    .await;
    db.client()
        .await
        .batch_execute("DROP TABLE user_logins")
        .await
        .unwrap();
    let failed = invoke(&api, &event, ANSWER_WITHIN).await;
    let Answer::Error(error) = &failed else {
        panic!("a missing table must fail the invocation: {failed:?}");
    };
    assert!(
        error["errorMessage"]
            .as_str()
            .unwrap()
            .contains("user_logins"),
        "{error}"
    );
    assert_eq!(db.scalar("SELECT count(*) FROM veil.ledger").await, 0);

    // Fixed by the owner: the same environment records the retry.
    let migrate = crate::fixtures::veil(&["migrate", "--database-url", &db.url], "", &[]);
    assert!(migrate.status.success());
    assert_eq!(
        failures(&invoke(&api, &event, ANSWER_WITHIN).await),
        Vec::<String>::new()
    );
    assert_eq!(db.scalar("SELECT count(*) FROM user_logins").await, 3);
}

#[tokio::test]
async fn veil_lambda_outside_lambda_says_what_to_do() {
    let output = crate::fixtures::veil(&["lambda"], "", &[]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = crate::fixtures::text(&output.stderr);
    assert!(
        stderr.contains("AWS_LAMBDA_RUNTIME_API is not set"),
        "{stderr}"
    );
}

async fn wait_for_child(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still running after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_maintain_handler_does_one_housekeeping_pass_per_invocation() {
    let db = migrated_db().await;
    let key = TestKey::create();
    // Yesterday's ledger partition goes missing; the scheduled pass makes it again.
    let yesterday = chrono::Utc::now().date_naive() - chrono::Days::new(1);
    let partition = format!("veil.ledger_d{}", yesterday.format("%Y%m%d"));
    db.client()
        .await
        .batch_execute(&format!("DROP TABLE {partition}"))
        .await
        .unwrap();
    let api = RuntimeApi::start().await;
    let function = Function::start(&api, &db.url, &key, &["lambda", "--handler", "maintain"]);

    let answer = invoke(
        &api,
        &serde_json::json!({"source": "aws.scheduler"}),
        ANSWER_WITHIN,
    )
    .await;

    let Answer::Response(report) = &answer else {
        panic!("{answer:?}\n{}", function.logs());
    };
    assert_eq!(
        report["created"],
        serde_json::json!([partition]),
        "{report}"
    );
    assert!(
        report["summary"]
            .as_str()
            .unwrap()
            .contains("1 partition(s) created"),
        "{report}"
    );
    assert_eq!(
        db.scalar(&format!(
            "SELECT count(*) FROM pg_class WHERE oid = to_regclass('{partition}')"
        ))
        .await,
        1
    );
}

#[tokio::test]
async fn contracts_route_a_lambda_batch_into_each_contracts_table() {
    use crate::contracts::{purchase, signup, SHOP};
    let db = TestDb::create().await;
    let migrate = crate::fixtures::veil(
        &["migrate", "--database-url", &db.url, "--contract", SHOP],
        "",
        &[],
    );
    assert!(
        migrate.status.success(),
        "{}",
        crate::fixtures::text(&migrate.stderr)
    );
    let key = TestKey::create();
    let queue = TestQueue::create(&legacy_endpoint(), ProtocolChoice::Auto).await;
    let mut bodies: Vec<String> = (0..4).map(|i| signup(i, "ann@example.com")).collect();
    bodies.extend((0..3).map(|i| purchase(i, "ann@example.com")));
    bodies.push(r#"{"type": "refund"}"#.to_string());
    queue.send(&bodies).await;
    let messages = receive(&queue, bodies.len()).await;
    let api = RuntimeApi::start().await;
    let _function = Function::start(&api, &db.url, &key, &["lambda", "--contract", SHOP]);

    let answer = invoke(&api, &sqs_event(&queue.url, &messages), ANSWER_WITHIN).await;

    assert_eq!(failures(&answer), Vec::<String>::new());
    assert_eq!(db.scalar("SELECT count(*) FROM analytics.signups").await, 4);
    assert_eq!(
        db.scalar("SELECT count(*) FROM analytics.purchases").await,
        3
    );
    assert_eq!(
        db.strings("SELECT reason || '|' || coalesce(contract, '-') FROM veil.quarantine")
            .await,
        ["unknown_type|-"]
    );
}

#[tokio::test]
async fn postgres_unavailable_reports_the_batch_as_failed_and_its_retry_records_it_once() {
    let db = migrated_db().await;
    let key = TestKey::create();
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    queue.seed(20, 0.0, 43).await;
    let messages = receive(&queue, 20).await;
    let mut proxy = Proxy::start("127.0.0.1:5432").await;
    let through_proxy = db.url.replace(":5432/", &format!(":{}/", proxy.port));
    assert_ne!(through_proxy, db.url);
    let api = RuntimeApi::start().await;
    let function = Function::start(&api, &through_proxy, &key, &[]);
    let first = sqs_event(&queue.url, &messages[..10]);
    assert_eq!(
        failures(&invoke(&api, &first, ANSWER_WITHIN).await),
        Vec::<String>::new()
    );

    // The database goes away (open connections cut, new ones refused): a
    // passing failure, retried until the deadline, then every record of
    // the batch is reported, never success and never a failed invocation.
    proxy.stop().await;
    let second = sqs_event(&queue.url, &messages[10..]);
    let answer = invoke(&api, &second, Duration::from_secs(3)).await;
    let mut expected: Vec<String> = messages[10..]
        .iter()
        .map(|m| m.receipt.message_id.clone())
        .collect();
    expected.sort();
    assert_eq!(failures(&answer), expected, "{}", function.logs());
    assert!(function.logs().contains("database unavailable"));

    // Back: the same environment reconnects and the retry records them once.
    proxy.resume().await;
    assert_eq!(
        failures(&invoke(&api, &second, ANSWER_WITHIN).await),
        Vec::<String>::new()
    );
    assert_eq!(
        failures(&invoke(&api, &second, ANSWER_WITHIN).await),
        Vec::<String>::new()
    );
    assert_eq!(db.scalar("SELECT count(*) FROM user_logins").await, 20);
    assert_eq!(db.scalar("SELECT count(*) FROM veil.ledger").await, 20);
}

#[tokio::test]
async fn a_kms_enveloped_keyring_is_opened_once_at_init_and_serves_every_invocation() {
    let endpoint = modern_endpoint();
    let arn = crate::keyring::kms_key(&endpoint).await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("kms-keyring.json");
    let kms_env = [("AWS_ENDPOINT_URL_KMS", endpoint.as_str())];
    let created = crate::fixtures::veil(
        &[
            "keys",
            "new",
            "--kms-key-id",
            &arn,
            "--out",
            key_file.to_str().unwrap(),
        ],
        "",
        &kms_env,
    );
    assert!(
        created.status.success(),
        "{}",
        crate::fixtures::text(&created.stderr)
    );
    let db = migrated_db().await;
    let queue = TestQueue::create(&endpoint, ProtocolChoice::Auto).await;
    queue.seed(20, 0.0, 47).await;
    let messages = receive(&queue, 20).await;
    let api = RuntimeApi::start().await;
    let function = Function::start_with(&api, &db.url, &key_file, &[], &kms_env);

    for batch in messages.chunks(5) {
        let event = sqs_event(&queue.url, batch);
        assert_eq!(
            failures(&invoke(&api, &event, ANSWER_WITHIN).await),
            Vec::<String>::new()
        );
    }

    assert_eq!(db.scalar("SELECT count(*) FROM user_logins").await, 20);
    let logs = function.logs();
    assert_eq!(logs.matches("keyring opened with KMS").count(), 1, "{logs}");
}

/// Sends SIGTERM to a function, as Lambda does at the end of an execution
/// environment.
fn sigterm(function: &Function) {
    let status = Command::new("kill")
        .args(["-TERM", &function.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn sigterm_ends_the_function_with_0_in_its_budget_and_an_abandoned_batch_is_retried_once() {
    let db = migrated_db().await;
    let key = TestKey::create();
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    queue.seed(10, 0.0, 33).await;
    let messages = receive(&queue, 10).await;
    let api = RuntimeApi::start().await;

    // Idle: it exits 0 at once.
    let mut idle = Function::start(&api, &db.url, &key, &[]);
    wait_until("the function is ready", || async { api.next_calls() >= 1 }).await;
    sigterm(&idle);
    let status = wait_for_child(&mut idle.child, Duration::from_secs(2)).await;
    assert_eq!(status.code(), Some(0), "{}", idle.logs());

    // Busy: the second batch of five waits on a lock past the budget, so
    // the invocation is abandoned; the first batch committed whole.
    let mut busy = Function::start_with(
        &api,
        &db.url,
        &key.path,
        &[],
        &[("VEIL_MAX_BATCH_ROWS", "5")],
    );
    let blocker = db.client().await;
    blocker.batch_execute("BEGIN").await.unwrap();
    let held = &messages[7];
    blocker
        .execute(
            "INSERT INTO veil.ledger (sent_ms, message_id, outcome) VALUES ($1, $2, 'written')",
            &[&held.sent_timestamp_ms.unwrap(), &held.receipt.message_id],
        )
        .await
        .unwrap();
    let first = api.invoke(&sqs_event(&queue.url, &messages), Duration::from_secs(60));
    wait_until("the second batch waits on the lock", || async {
        db.scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()",
        )
        .await
            > 0
    })
    .await;
    let signalled = std::time::Instant::now();
    sigterm(&busy);
    let status = wait_for_child(&mut busy.child, Duration::from_secs(2)).await;
    let took = signalled.elapsed();

    assert_eq!(status.code(), Some(0), "{}", busy.logs());
    assert!(took < Duration::from_millis(1500), "exited after {took:?}");
    assert!(busy.logs().contains("abandoned"), "{}", busy.logs());
    assert!(
        api.answered(&first).is_none(),
        "an abandoned invocation is not answered"
    );
    assert_eq!(db.scalar("SELECT count(*) FROM user_logins").await, 5);

    // The event source retries the whole batch: each record once.
    blocker.batch_execute("ROLLBACK").await.unwrap();
    let _next = Function::start(&api, &db.url, &key, &[]);
    let retry = invoke(&api, &sqs_event(&queue.url, &messages), ANSWER_WITHIN).await;
    assert_eq!(failures(&retry), Vec::<String>::new());
    assert_eq!(db.scalar("SELECT count(*) FROM user_logins").await, 10);
    assert_eq!(db.scalar("SELECT count(*) FROM veil.ledger").await, 10);
}
