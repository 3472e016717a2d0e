//! A veil that cannot go on says so once, gives every message back and
//! exits in time; a passing failure (a lock, a read-only database, a
//! connection that stops answering) is ridden out exactly once; memory
//! stays bounded in bytes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use veil::metrics::{Metrics, ServiceState};
use veil::ops::OpsServer;
use veil::sqs::ProtocolChoice;

use crate::fixtures::*;
use veil::metrics::Family;
use veil::metrics::Number;

/// What a revoked privilege, a DBA's new rule or a failover can do to an
/// insert: SQLSTATE 42501 on every write to user_logins.
const DENY_TRIGGER: &str = "
    CREATE FUNCTION deny_logins() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'permission denied for table user_logins (test trigger)'
            USING ERRCODE = '42501';
    END $$;
    CREATE TRIGGER deny_logins BEFORE INSERT ON user_logins
        FOR EACH STATEMENT EXECUTE FUNCTION deny_logins();";

/// Well below the 60 s visibility timeout: messages visible again within
/// this were given back, not left to expire. (A long poll abandoned at the
/// stop keeps them hidden until its `--wait-secs` end: the tests that
/// count on this pass `--wait-secs 2`.)
const RELEASE_WITHIN: Duration = Duration::from_secs(15);

async fn transient_errors(metrics: &Metrics) -> u64 {
    metrics
        .family(Family::PostgresErrors)
        .snapshot()
        .get("transient")
        .copied()
        .unwrap_or(0)
}

/// Polls until `visible` messages are visible and none in flight, for at
/// most `limit`.
async fn assert_visible_again(queue: &TestQueue, visible: u64, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let depth = queue.depth().await;
        if depth.visible == visible && depth.in_flight == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{visible} messages not visible again within {limit:?}: {depth:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn error_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|line| line.contains(" ERROR "))
        .collect()
}

#[tokio::test]
async fn a_fatal_error_is_logged_once_gives_every_message_back_and_exits_in_time() {
    let db = migrated_db().await;
    db.client().await.batch_execute(DENY_TRIGGER).await.unwrap();
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    queue.seed(300, 0.0, 111).await;
    let mut args = run_args(&queue, &db, &key);
    args.extend(
        [
            "--shutdown-timeout-secs",
            "10",
            "--max-batch-rows",
            "50",
            "--wait-secs",
            "2",
        ]
        .map(String::from),
    );

    let started = Instant::now();
    let output = wait_for_exit(spawn_veil(&args), TEST_TIMEOUT).await;

    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "daemon mode exits within the shutdown timeout: {:?}",
        started.elapsed()
    );
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 1, "logged once: {stderr}");
    assert!(
        errors[0].contains("fatal") && errors[0].contains("permission denied"),
        "{stderr}"
    );
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("fix:") && last.contains("sql/roles.sql"),
        "{stderr}"
    );
    assert_eq!(recorded(&db).await, 0);
    assert_visible_again(&queue, 300, RELEASE_WITHIN).await;

    db.client()
        .await
        .batch_execute("DROP TRIGGER deny_logins ON user_logins")
        .await
        .unwrap();
    args.push("--until-empty".into());
    let next = wait_for_exit(spawn_veil(&args), TEST_TIMEOUT).await;
    assert!(next.status.success(), "{}", text(&next.stderr));
    assert_exactly_once(&db, &queue, 300, 300).await;
}

#[tokio::test]
async fn a_fatal_error_turns_readyz_503_and_the_state_metric_failed() {
    let db = migrated_db().await;
    db.client().await.batch_execute(DENY_TRIGGER).await.unwrap();
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    queue.seed(50, 0.0, 112).await;
    let config = run_config(
        &queue,
        &db,
        &key,
        &["--shutdown-timeout-secs", "10", "--wait-secs", "2"],
    );
    let (service, metrics) = spawn_service(config);
    let ops = OpsServer::start("127.0.0.1:0".parse().unwrap(), metrics.clone())
        .await
        .unwrap();
    let base = format!("http://{}", ops.address());
    let http = reqwest::Client::new();
    let get = |path: &'static str| {
        let request = http.get(format!("{base}{path}"));
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };

    wait_until("the failed state", || async {
        metrics.state() == ServiceState::Failed
    })
    .await;
    let ready = get("/readyz").await;
    let outcome = tokio::time::timeout(TEST_TIMEOUT, service)
        .await
        .unwrap()
        .unwrap();
    let exported = get("/metrics").await.1;

    assert_eq!(ready.0, 503, "{}", ready.1);
    assert!(ready.1.starts_with("state failed\n"), "{}", ready.1);
    let error = format!("{:#}", outcome.unwrap_err());
    assert!(error.contains("permission denied"), "{error}");
    assert!(exported.contains("veil_state{state=\"failed\"} 1\n"));
    assert_visible_again(&queue, 50, RELEASE_WITHIN).await;
}

#[tokio::test]
async fn a_privilege_revoked_mid_run_stops_veil_and_the_next_run_is_exact() {
    let db = migrated_db().await;
    let (pipeline, analyst, revealer) = role_names(&db);
    apply_roles(&db, &pipeline, &analyst, &revealer).await;
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    let messages = queue.seed(600, 0.05, 113).await;
    let valid = messages.iter().filter(|m| m.valid).count() as i64;
    let mut args = run_args(&queue, &db, &key);
    let at = args.iter().position(|a| a == "--database-url").unwrap();
    args[at + 1] = url_as(&db, &pipeline);
    args.extend(["--shutdown-timeout-secs", "10", "--max-batch-rows", "20"].map(String::from));
    let child = spawn_veil(&args);
    wait_until("some rows before the revoke", || async {
        recorded(&db).await >= 60
    })
    .await;

    db.client()
        .await
        .batch_execute(&format!("REVOKE INSERT ON user_logins FROM {pipeline}"))
        .await
        .unwrap();
    let revoked = Instant::now();
    let output = wait_for_exit(child, TEST_TIMEOUT).await;

    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        revoked.elapsed() < Duration::from_secs(10),
        "{:?}",
        revoked.elapsed()
    );
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("permission denied for table user_logins"),
        "{stderr}"
    );
    let done = recorded(&db).await;
    assert_visible_again(&queue, 600 - done as u64, RELEASE_WITHIN).await;

    db.client()
        .await
        .batch_execute(&format!("GRANT INSERT ON user_logins TO {pipeline}"))
        .await
        .unwrap();
    args.push("--until-empty".into());
    let next = wait_for_exit(spawn_veil(&args), TEST_TIMEOUT).await;
    assert!(next.status.success(), "{}", text(&next.stderr));
    assert_exactly_once(&db, &queue, 600, valid).await;
    drop_roles(&db, &[&pipeline, &analyst, &revealer]).await;
}

#[tokio::test]
async fn a_lock_held_past_lock_timeout_is_retried_until_released() {
    let db = migrated_db().await;
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    let messages = queue.seed(200, 0.05, 114).await;
    let valid = messages.iter().filter(|m| m.valid).count() as i64;
    let locker = db.client().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE user_logins IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let config = run_config(
        &queue,
        &db,
        &key,
        &[
            "--until-empty",
            "--lock-timeout-ms",
            "200",
            "--max-batch-rows",
            "50",
        ],
    );
    let (service, metrics) = spawn_service(config);

    wait_until("lock timeouts, retried", || async {
        transient_errors(&metrics).await >= 2
    })
    .await;
    assert_eq!(recorded(&db).await, 0, "nothing written past the lock");
    locker.batch_execute("COMMIT").await.unwrap();
    let report = tokio::time::timeout(TEST_TIMEOUT, service)
        .await
        .unwrap()
        .unwrap();

    assert!(report.is_ok(), "{:?}", report.err());
    assert_exactly_once(&db, &queue, 200, valid).await;
}

#[tokio::test]
async fn a_read_only_database_is_waited_out_then_written_exactly_once() {
    let db = migrated_db().await;
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    let messages = queue.seed(400, 0.05, 115).await;
    let valid = messages.iter().filter(|m| m.valid).count() as i64;
    let admin = db.client().await;
    let config = run_config(
        &queue,
        &db,
        &key,
        &["--until-empty", "--max-batch-rows", "20"],
    );
    let (service, metrics) = spawn_service(config);
    wait_until("some rows first", || async { recorded(&db).await >= 60 }).await;

    // As after a failover onto a reader: every new session refuses writes
    // (25006), and the old sessions are gone.
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {name} SET default_transaction_read_only = on;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE datname = '{name}' AND pid <> pg_backend_pid();",
            name = db.name
        ))
        .await
        .unwrap();
    wait_until("writes refused and retried", || async {
        transient_errors(&metrics).await >= 3
    })
    .await;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {} SET default_transaction_read_only = off",
            db.name
        ))
        .await
        .unwrap();
    let report = tokio::time::timeout(TEST_TIMEOUT, service)
        .await
        .unwrap()
        .unwrap();

    assert!(report.is_ok(), "{:?}", report.err());
    assert_exactly_once(&db, &queue, 400, valid).await;
}

/// A TCP proxy in front of Postgres that can stop forwarding without
/// closing anything (a peer that vanished, a black-holed route), then let
/// new connections through again; stalled connections stay stalled.
struct StallingProxy {
    port: u16,
    frozen: Arc<AtomicBool>,
    epoch: Arc<AtomicU64>,
}

impl StallingProxy {
    async fn start(upstream: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicBool::new(false));
        let epoch = Arc::new(AtomicU64::new(0));
        let (frozen_flag, epochs) = (frozen.clone(), epoch.clone());
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                let Ok(outbound) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let born = epochs.load(Ordering::SeqCst);
                let (in_read, in_write) = inbound.into_split();
                let (out_read, out_write) = outbound.into_split();
                for (from, to) in [(in_read, out_write), (out_read, in_write)] {
                    let (frozen, epochs) = (frozen_flag.clone(), epochs.clone());
                    tokio::spawn(forward(from, to, frozen, epochs, born));
                }
            }
        });
        StallingProxy {
            port,
            frozen,
            epoch,
        }
    }

    fn freeze(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.frozen.store(true, Ordering::SeqCst);
    }

    fn thaw(&self) {
        self.frozen.store(false, Ordering::SeqCst);
    }
}

async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
    epoch: Arc<AtomicU64>,
    born: u64,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let Ok(read) = from.read(&mut buffer).await else {
            return;
        };
        if read == 0 {
            return;
        }
        if frozen.load(Ordering::SeqCst) || epoch.load(Ordering::SeqCst) > born {
            // Swallow everything, answer nothing, close nothing.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn a_connection_that_stops_answering_is_dropped_within_the_write_deadline() {
    let db = migrated_db().await;
    let proxy = StallingProxy::start("127.0.0.1:5432").await;
    let through_proxy = TestDb {
        name: db.name.clone(),
        url: db.url.replace(":5432/", &format!(":{}/", proxy.port)),
    };
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    let messages = queue.seed(400, 0.05, 116).await;
    let valid = messages.iter().filter(|m| m.valid).count() as i64;
    // statement_timeout 500 ms: a batch write is abandoned after 2 x 0.5 + 5 s.
    let write_deadline = Duration::from_secs(6);
    let config = run_config(
        &queue,
        &through_proxy,
        &key,
        &[
            "--until-empty",
            "--max-batch-rows",
            "20",
            "--statement-timeout-ms",
            "500",
        ],
    );
    let (service, metrics) = spawn_service(config);
    wait_until("some rows first", || async { recorded(&db).await >= 60 }).await;

    proxy.freeze();
    let frozen_at = Instant::now();
    wait_until("the stall noticed", || async {
        transient_errors(&metrics).await >= 1
    })
    .await;
    let noticed_after = frozen_at.elapsed();
    proxy.thaw();
    let report = tokio::time::timeout(TEST_TIMEOUT, service)
        .await
        .unwrap()
        .unwrap();

    assert!(
        noticed_after <= write_deadline + Duration::from_secs(3),
        "noticed after {noticed_after:?}"
    );
    assert!(report.is_ok(), "{:?}", report.err());
    assert_exactly_once(&db, &queue, 400, valid).await;
    std::mem::forget(through_proxy); // the same database as `db`
}

#[tokio::test]
async fn bytes_in_flight_never_exceed_the_bound() {
    let db = migrated_db().await;
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    let big = "x".repeat(200_000);
    for _ in 0..80 {
        // One at a time: ten of these exceed SendMessageBatch's size limit.
        queue.send(std::slice::from_ref(&big)).await;
    }
    let events = queue.seed(100, 0.0, 117).await;
    let limit: u64 = 11 << 20;
    let config = run_config(
        &queue,
        &db,
        &key,
        &[
            "--until-empty",
            "--max-in-flight-bytes",
            "11MiB",
            "--max-batch-rows",
            "50",
        ],
    );
    let (service, metrics) = spawn_service(config);
    let watched = metrics.clone();
    let sampler = tokio::spawn(async move {
        let mut most = 0;
        while !service.is_finished() {
            most = most.max(watched.get(Number::InFlightBytes));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        (most, service.await.unwrap())
    });

    let (sampled_most, report) = tokio::time::timeout(TEST_TIMEOUT, sampler)
        .await
        .unwrap()
        .unwrap();

    let report = report.unwrap();
    assert!(
        report.peak_in_flight_bytes as u64 <= limit,
        "{}",
        report.peak_in_flight_bytes
    );
    assert!(sampled_most <= limit, "sampled {sampled_most}");
    assert!(
        report.peak_in_flight_bytes as u64 >= limit / 2,
        "the bound was reached, so the test says something: {}",
        report.peak_in_flight_bytes
    );
    assert_eq!(metrics.get(Number::InFlightBytes), 0);
    assert_exactly_once(&db, &queue, 180, events.len() as i64).await;
    assert_eq!(
        db.scalar("SELECT count(*) FROM veil.quarantine WHERE reason = 'too_large'")
            .await,
        80
    );
}

#[tokio::test]
async fn a_fatal_error_gives_each_held_message_back_once_so_no_receive_count_passes_two() {
    let db = migrated_db().await;
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    queue.seed(400, 0.0, 26).await;
    let mut args = run_args(&queue, &db, &key);
    args.extend(
        [
            "--max-batch-rows",
            "20",
            "--max-batch-wait-ms",
            "50",
            "--shutdown-timeout-secs",
            "10",
        ]
        .map(String::from),
    );

    let veil = spawn_veil(&args);
    wait_until("some batches recorded", || async {
        recorded(&db).await >= 40
    })
    .await;
    db.client()
        .await
        .batch_execute("DROP TABLE user_logins")
        .await
        .unwrap();
    let output = wait_for_exit(veil, TEST_TIMEOUT).await;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));

    // Every message left, received once more here: at most once by veil
    // before, whatever it held when it failed.
    let left = 400 - recorded(&db).await as usize;
    let mut held = std::collections::HashMap::new();
    while held.len() < left {
        let request = veil::sqs::ReceiveRequest {
            max_messages: 10,
            wait_secs: 1,
            visibility_timeout_secs: 60,
            message_attributes: false,
            first_receive_time: false,
        };
        for message in queue.client.receive(request).await.unwrap() {
            held.insert(message.receipt.message_id.clone(), message);
        }
    }
    let most = held.values().filter_map(|m| m.receive_count).max();
    assert!(
        most <= Some(2),
        "receive counts reached {most:?}: a re-delivery storm"
    );
    let back: Vec<_> = held
        .values()
        .map(|m| veil::sqs::VisibilityChange {
            receipt: &m.receipt,
            timeout_secs: 0,
        })
        .collect();
    assert!(queue.client.change_visibility(&back).await.error.is_none());

    veil_ok(&["migrate", "--database-url", &db.url]);
    args.push("--until-empty".into());
    let next = wait_for_exit(spawn_veil(&args), TEST_TIMEOUT).await;
    assert!(next.status.success(), "{}", text(&next.stderr));
    assert_eq!(recorded(&db).await, 400, "every message recorded once");
    assert_eq!(queue.depth().await, Default::default(), "queue ends empty");
}
