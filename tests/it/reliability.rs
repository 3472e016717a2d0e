//! Unattended operation: kill -9 at random moments, SIGTERM, an SQS
//! outage, a Postgres restart, the redelivery limit, metrics that agree
//! with the database, and doctor.

use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;

use tokio_util::sync::CancellationToken;
use veil::sqs::{ProtocolChoice, ReceiveRequest};

use crate::fixtures::*;
use veil::metrics::Family;

#[tokio::test]
async fn kill_9_at_random_moments_loses_nothing_and_doubles_nothing() {
    let db = migrated_db().await;
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    let messages = queue.seed(600, 0.05, 61).await;
    let valid = messages.iter().filter(|m| m.valid).count() as i64;
    let mut args = run_args(&queue, &db, &key);
    args.extend(
        [
            "--until-empty",
            "--visibility-timeout-secs",
            "2",
            "--max-batch-rows",
            "40",
            "--max-batch-wait-ms",
            "20",
        ]
        .map(String::from),
    );

    kill_9_rounds(&db, &args, 4, 15..90).await;
    let finish = spawn_veil(&args).wait_with_output().unwrap();

    assert!(finish.status.success(), "{}", text(&finish.stderr));
    assert_exactly_once(&db, &queue, 600, valid).await;
}

#[tokio::test]
async fn sigterm_finishes_the_batch_in_hand_and_exits_0_in_time() {
    let db = migrated_db().await;
    let queue = TestQueue::create(&legacy_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    let messages = queue.seed(300, 0.1, 62).await;
    let valid = messages.iter().filter(|m| m.valid).count() as i64;
    let mut args = run_args(&queue, &db, &key);
    args.extend(["--shutdown-timeout-secs", "10", "--max-batch-rows", "20"].map(String::from));
    let child = spawn_veil(&args);
    wait_until("some rows", || async { recorded(&db).await >= 50 }).await;

    let signalled = std::time::Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();

    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(
        signalled.elapsed().as_secs() < 10,
        "exited within the shutdown timeout"
    );
    args.push("--until-empty".into());
    let rest = spawn_veil(&args).wait_with_output().unwrap();
    assert!(rest.status.success(), "{}", text(&rest.stderr));
    assert_exactly_once(&db, &queue, 300, valid).await;
}

#[tokio::test]
async fn sqs_outage_mid_drain_is_ridden_out() {
    let upstream = modern_endpoint()
        .trim_start_matches("http://")
        .replace("localhost", "127.0.0.1");
    let mut proxy = Proxy::start(&upstream).await;
    let db = TestDb::create().await;
    let direct = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let messages = direct.seed(400, 0.05, 63).await;
    let valid = messages.iter().filter(|m| m.valid).count() as i64;
    let name = direct.url.rsplit('/').next().unwrap().to_string();
    let through_proxy = TestQueue::attach(&format!(
        "http://127.0.0.1:{}/000000000000/{name}",
        proxy.port
    ))
    .await;
    let key = TestKey::create();
    let config = run_config(
        &through_proxy,
        &db,
        &key,
        &[
            "--until-empty",
            "--max-batch-rows",
            "20",
            "--visibility-timeout-secs",
            "5",
        ],
    );
    let (service, counters) = spawn_service(config);

    wait_until("some rows before the outage", || async {
        recorded(&db).await >= 60
    })
    .await;
    proxy.stop().await;
    wait_until("veil to notice the outage", || async {
        counters
            .family(Family::SqsErrors)
            .snapshot()
            .values()
            .sum::<u64>()
            >= 2
    })
    .await;
    assert!(
        !counters.sqs_ready.load(Ordering::Relaxed),
        "not ready during the outage"
    );
    proxy.resume().await;
    let report = tokio::time::timeout(TEST_TIMEOUT, service)
        .await
        .unwrap()
        .unwrap();

    assert!(report.is_ok(), "veil kept running: {:?}", report.err());
    assert!(counters.sqs_ready.load(Ordering::Relaxed));
    assert_exactly_once(&db, &direct, 400, valid).await;
}

/// A private Postgres cluster this test may restart without disturbing
/// the other tests.
struct PrivateCluster {
    dir: tempfile::TempDir,
    port: u16,
    bin: std::path::PathBuf,
}

impl PrivateCluster {
    fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries under /usr/lib/postgresql")
            .filter_map(Result::ok)
            .map(|entry| entry.path().join("bin"))
            .find(|bin| bin.join("initdb").exists())
            .expect("initdb");
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let as_postgres = |program: &str, args: &[&str]| {
            let status = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(bin.join(program))
                .args(args)
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "{program} {args:?}");
        };
        Command::new("chown")
            .args(["postgres", dir.path().to_str().unwrap()])
            .status()
            .unwrap();
        let data = dir.path().to_str().unwrap();
        as_postgres(
            "initdb",
            &["-D", data, "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        let cluster = PrivateCluster { dir, port, bin };
        cluster.pg_ctl(&["start"]);
        cluster
    }

    fn pg_ctl(&self, action: &[&str]) {
        let data = self.dir.path().to_str().unwrap();
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port, data
        );
        let log = format!("{data}/server.log");
        let mut args = vec!["-D", data, "-o", &options, "-l", &log, "-w", "-m", "fast"];
        args.extend_from_slice(action);
        let status = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(&args)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pg_ctl {action:?}");
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        self.pg_ctl(&["stop"]);
    }
}

#[tokio::test]
async fn postgres_restart_mid_drain_is_ridden_out() {
    let cluster = PrivateCluster::start();
    let db = TestDb {
        name: String::new(),
        url: cluster.url(),
    };
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    let messages = queue.seed(1000, 0.05, 64).await;
    let valid = messages.iter().filter(|m| m.valid).count() as i64;
    let config = run_config(
        &queue,
        &db,
        &key,
        &["--until-empty", "--max-batch-rows", "20"],
    );
    let (service, counters) = spawn_service(config);

    wait_until("some rows before the restart", || async {
        recorded(&db).await >= 60
    })
    .await;
    // Stop, and start again only once veil has seen the outage: a restart
    // alone can fall between two batches and go unnoticed.
    cluster.pg_ctl(&["stop"]);
    wait_until("veil to notice Postgres is gone", || async {
        counters
            .family(Family::PostgresErrors)
            .snapshot()
            .contains_key("transient")
    })
    .await;
    cluster.pg_ctl(&["start"]);
    let report = tokio::time::timeout(TEST_TIMEOUT, service)
        .await
        .unwrap()
        .unwrap();

    assert!(report.is_ok(), "veil kept running: {:?}", report.err());
    assert!(
        counters
            .family(Family::PostgresErrors)
            .snapshot()
            .get("transient")
            .copied()
            .unwrap_or(0)
            >= 1
    );
    assert_exactly_once(&db, &queue, 1000, valid).await;
    std::mem::forget(db); // the private cluster goes away whole
}

#[tokio::test]
async fn a_message_received_too_often_is_quarantined_not_looped() {
    let db = TestDb::create().await;
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    queue.seed(1, 0.0, 65).await;
    for _ in 0..3 {
        let request = ReceiveRequest {
            max_messages: 1,
            wait_secs: 1,
            visibility_timeout_secs: 0,
            message_attributes: false,
            first_receive_time: false,
        };
        assert_eq!(queue.client.receive(request).await.unwrap().len(), 1);
    }
    let config = run_config(&queue, &db, &key, &["--until-empty", "--max-receives", "2"]);

    let report = veil::commands::serve(&config, CancellationToken::new())
        .await
        .unwrap();

    assert_eq!(report.quarantined, 1);
    assert_eq!(
        db.strings("SELECT reason FROM veil.quarantine").await,
        ["too_many_receives"]
    );
    assert_eq!(queue.depth().await, Default::default());
}

/// The sum of the samples of metric `name` (all its label sets).
fn metric(text: &str, name: &str) -> u64 {
    let name = name.trim_end_matches('{');
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| line.split(['{', ' ']).next() == Some(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn metrics_agree_with_the_database_and_health_endpoints_answer() {
    let db = migrated_db().await;
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    queue.seed(200, 0.1, 66).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let mut args = run_args(&queue, &db, &key);
    args.extend([
        "--http-addr".to_string(),
        format!("127.0.0.1:{port}"),
        "--queue-depth-interval-secs".to_string(),
        "1".to_string(),
    ]);
    let child = spawn_veil(&args);
    let http = reqwest::Client::new();
    let get = |path: &'static str| {
        let request = http.get(format!("{base}{path}"));
        async move {
            let response = request.send().await.ok()?;
            Some((response.status().as_u16(), response.text().await.ok()?))
        }
    };

    wait_until("all 200 deleted, per /metrics", || async {
        get("/metrics")
            .await
            .is_some_and(|(_, text)| metric(&text, "veil_messages_deleted_total") == 200)
    })
    .await;
    // The queue's depth, read every second: empty once all are deleted.
    wait_until("the queue read as empty, per /metrics", || async {
        get("/metrics").await.is_some_and(|(_, text)| {
            text.contains("veil_queue_messages{state=\"visible\"} 0\n")
                && text.contains("veil_queue_messages{state=\"in_flight\"} 0\n")
        })
    })
    .await;
    let (_, metrics) = get("/metrics").await.unwrap();
    let health = get("/healthz").await.unwrap();
    let ready = get("/readyz").await.unwrap();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let output = child.wait_with_output().unwrap();

    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(metric(&metrics, "veil_messages_received_total"), 200);
    assert_eq!(
        metric(&metrics, "veil_rows_written_total") as i64,
        db.scalar("SELECT count(*) FROM user_logins").await
    );
    assert_eq!(
        metric(&metrics, "veil_messages_quarantined_total{") as i64,
        db.scalar("SELECT count(*) FROM veil.quarantine").await
    );
    assert_eq!(metric(&metrics, "veil_messages_in_flight"), 0);
    // The housekeeping pass at start (partitions already made by migrate).
    assert!(
        metrics.contains("veil_housekeeping_runs_total{result=\"done\"} 1\n"),
        "{metrics}"
    );
    assert!(metric(&metrics, "veil_housekeeping_last_success_timestamp_seconds") > 0);
    assert!(metric(&metrics, "veil_batch_duration_seconds_count") >= 1);
    assert_eq!(health.0, 200);
    assert_eq!(
        ready,
        (
            200,
            "state running\nsqs ok\npostgres ok\nhousekeeping here\n".to_string()
        )
    );
}

#[tokio::test]
async fn doctor_says_what_is_wrong_and_how_to_fix_it() {
    let db = migrated_db().await;
    let queue = TestQueue::create(&legacy_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    let key_file = key.path.to_str().unwrap();

    let healthy = veil(
        &[
            "doctor",
            "--queue-url",
            &queue.url,
            "--database-url",
            &db.url,
            "--key-file",
            key_file,
        ],
        "",
        &[],
    );
    let missing = format!("{}-missing", queue.url);
    let broken = veil(
        &[
            "doctor",
            "--queue-url",
            &missing,
            "--database-url",
            &db.url,
            "--key-file",
            "/nonexistent",
        ],
        "",
        &[],
    );

    assert!(healthy.status.success(), "{}", text(&healthy.stdout));
    let report = text(&healthy.stdout);
    assert!(
        report.contains("ok      sqs protocol: query") && report.contains("all checks passed"),
        "{report}"
    );
    assert_eq!(broken.status.code(), Some(1));
    let report = text(&broken.stdout);
    assert!(
        report.contains("PROBLEM key") && report.contains("PROBLEM queue"),
        "{report}"
    );
    assert!(
        report.contains("fix: create one with `veil keys new"),
        "{report}"
    );
}

#[tokio::test]
async fn cloudwatch_emf_lines_add_up_to_what_the_run_did() {
    let db = migrated_db().await;
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    queue.seed(300, 0.1, 67).await;
    let mut args = run_args(&queue, &db, &key);
    args.extend(
        ["--until-empty", "--cloudwatch-emf-interval-secs", "1"]
            .iter()
            .map(|arg| arg.to_string()),
    );
    let output = wait_for_exit(spawn_veil(&args), std::time::Duration::from_secs(120)).await;
    assert!(output.status.success(), "{}", text(&output.stderr));

    let stdout = text(&output.stdout);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).expect("each EMF line is one JSON object"))
        .filter(|line: &serde_json::Value| line.get("_aws").is_some())
        .collect();
    assert!(!lines.is_empty(), "no EMF line on stdout:\n{stdout}");
    let sum = |name: &str| -> i64 {
        lines
            .iter()
            .map(|line| line[name].as_i64().expect(name))
            .sum()
    };
    for line in &lines {
        let declared = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(declared["Namespace"], "veil");
        for metric in declared["Metrics"].as_array().unwrap() {
            let name = metric["Name"].as_str().unwrap();
            assert!(line[name].is_u64(), "{name} declared but not present");
        }
    }
    assert_eq!(sum("MessagesReceived"), 300);
    assert_eq!(sum("MessagesDeleted"), 300);
    assert_eq!(
        sum("RowsWritten"),
        db.scalar("SELECT count(*) FROM user_logins").await
    );
    assert_eq!(
        sum("MessagesQuarantined"),
        db.scalar("SELECT count(*) FROM veil.quarantine").await
    );
    assert_eq!(lines.last().unwrap()["MessagesInFlight"], 0);
}
