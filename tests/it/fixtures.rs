//! The integration tests' fixtures, in one module: a fresh database, a
//! fresh queue and a key per test, ways to drain a queue in-process or
//! through the binary, the binary run as users run it, the login
//! contract's masks, least-privilege roles, a TCP proxy to cut.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use veil::cli::{Cli, Command};
use veil::config::RunConfig;
use veil::keyring::Keyring;
use veil::metrics::Metrics;
use veil::pipeline::RunReport;
use veil::seed::{self, SeedMessage};
use veil::sqs::{ProtocolChoice, QueueDepth, QueueSettings, SqsClient};

/// Modern LocalStack (JSON and query protocols).
pub fn modern_endpoint() -> String {
    std::env::var("VEIL_TEST_MODERN_ENDPOINT").unwrap_or_else(|_| "http://localhost:4566".into())
}

/// Legacy LocalStack (query protocol only, like the reference image).
pub fn legacy_endpoint() -> String {
    std::env::var("VEIL_TEST_LEGACY_ENDPOINT").unwrap_or_else(|_| "http://localhost:4510".into())
}

fn admin_url() -> String {
    std::env::var("VEIL_TEST_ADMIN_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".into())
}

/// Upper bound for any wait in these tests.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(90);

pub fn unique_suffix() -> String {
    let bytes: [u8; 6] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn admin_client() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls)
        .await
        .expect("Postgres on 127.0.0.1:5432 (run scripts/services.sh up)");
    tokio::spawn(connection);
    client
}

/// A database created for one test and dropped after it.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    /// A fresh UTF-8 database.
    pub async fn create() -> Self {
        Self::create_with("").await
    }

    /// A fresh database with extra CREATE DATABASE options.
    pub async fn create_with(options: &str) -> Self {
        let name = format!("veil_test_{}", unique_suffix());
        admin_client()
            .await
            .batch_execute(&format!("CREATE DATABASE {name} {options}"))
            .await
            .expect("create test database");
        let mut url = url::Url::parse(&admin_url()).unwrap();
        url.set_path(&name);
        TestDb {
            name,
            url: url.to_string(),
        }
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .expect("connect to test database");
        tokio::spawn(connection);
        client
    }

    /// The single number a query returns.
    pub async fn scalar(&self, sql: &str) -> i64 {
        self.client()
            .await
            .query_one(sql, &[])
            .await
            .unwrap()
            .get(0)
    }

    /// The number a query returns, or `None` while it fails (e.g. the table
    /// does not exist yet).
    pub async fn try_scalar(&self, sql: &str) -> Option<i64> {
        self.client()
            .await
            .query_one(sql, &[])
            .await
            .ok()
            .map(|row| row.get(0))
    }

    /// Every row of a one-column text query.
    pub async fn strings(&self, sql: &str) -> Vec<String> {
        self.client()
            .await
            .query(sql, &[])
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside async context; use a private runtime on a thread.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let _ = admin_client()
                    .await
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
            });
        })
        .join();
    }
}

/// A queue created for one test.
pub struct TestQueue {
    pub url: String,
    pub client: SqsClient,
    pub protocol: ProtocolChoice,
}

impl TestQueue {
    pub async fn create(endpoint: &str, protocol: ProtocolChoice) -> Self {
        let url = format!("{endpoint}/000000000000/veil-test-{}", unique_suffix());
        let client = SqsClient::connect(&QueueSettings::new(&url, protocol))
            .await
            .expect("SQS endpoint (run scripts/services.sh up)");
        client.create_queue().await.expect("create queue");
        TestQueue {
            url,
            client,
            protocol,
        }
    }

    /// A client for an existing queue (auto protocol).
    pub async fn attach(url: &str) -> Self {
        TestQueue {
            url: url.to_string(),
            client: SqsClient::connect(&QueueSettings::new(url, ProtocolChoice::Auto))
                .await
                .unwrap(),
            protocol: ProtocolChoice::Auto,
        }
    }

    pub async fn send(&self, bodies: &[String]) {
        let sent = self.client.send(bodies).await.expect("send");
        assert_eq!(sent, bodies.len());
    }

    /// Sends generated events; returns them with their valid/junk labels.
    pub async fn seed(&self, count: usize, bad_ratio: f64, rng_seed: u64) -> Vec<SeedMessage> {
        let messages = seed::generate(count, bad_ratio, rng_seed);
        let bodies: Vec<String> = messages.iter().map(|m| m.body.clone()).collect();
        self.send(&bodies).await;
        messages
    }

    pub async fn depth(&self) -> QueueDepth {
        self.client.depth().await.expect("queue depth")
    }
}

/// A keyring file in a temporary directory.
pub struct TestKey {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
    pub keyring: Keyring,
}

impl TestKey {
    /// A key file made elsewhere (e.g. by `veil keys new --kms-key-id`).
    pub fn at(path: PathBuf) -> Self {
        TestKey {
            _dir: tempfile::tempdir().unwrap(),
            path,
            keyring: Keyring::generate(),
        }
    }

    pub fn create() -> Self {
        Self::of(Keyring::generate())
    }

    /// A key file holding this keyring's JSON (a fixed key of a fixture).
    pub fn from_json(json: &str) -> Self {
        Self::of(Keyring::from_json(json, std::path::Path::new("fixture")).unwrap())
    }

    fn of(keyring: Keyring) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        veil::keyring::write_private_file(&path, keyring.to_json().as_bytes()).unwrap();
        TestKey {
            _dir: dir,
            path,
            keyring,
        }
    }
}

fn protocol_name(protocol: ProtocolChoice) -> &'static str {
    match protocol {
        ProtocolChoice::Auto => "auto",
        ProtocolChoice::Json => "json",
        ProtocolChoice::Query => "query",
    }
}

/// The `veil run` arguments for this queue, database and key.
pub fn run_args(queue: &TestQueue, db: &TestDb, key: &TestKey) -> Vec<String> {
    [
        "run",
        "--queue-url",
        &queue.url,
        "--database-url",
        &db.url,
        "--key-file",
        key.path.to_str().unwrap(),
        "--sqs-protocol",
        protocol_name(queue.protocol),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Checked settings, through the real command-line parser.
pub fn run_config(queue: &TestQueue, db: &TestDb, key: &TestKey, extra: &[&str]) -> RunConfig {
    let mut argv = vec!["veil".to_string()];
    argv.extend(run_args(queue, db, key));
    argv.extend(extra.iter().map(|s| s.to_string()));
    let Command::Run(args) = Cli::try_parse_from(argv).unwrap().command else {
        unreachable!("parsed a run command")
    };
    RunConfig::from_args(&args).unwrap()
}

/// Runs `veil run --until-empty` in-process and returns its report.
pub async fn drain(queue: &TestQueue, db: &TestDb, key: &TestKey) -> RunReport {
    let config = run_config(queue, db, key, &["--until-empty"]);
    tokio::time::timeout(
        TEST_TIMEOUT,
        veil::commands::serve(&config, CancellationToken::new()),
    )
    .await
    .expect("drain finished in time")
    .expect("drain succeeded")
}

/// Starts `veil run` in-process in the background; its live metrics can
/// be watched while it runs.
pub fn spawn_service(
    config: RunConfig,
) -> (
    tokio::task::JoinHandle<anyhow::Result<RunReport>>,
    std::sync::Arc<Metrics>,
) {
    let counters = std::sync::Arc::new(Metrics::default());
    let watched = counters.clone();
    let service = tokio::spawn(async move {
        veil::commands::serve_observed(&config, CancellationToken::new(), watched).await
    });
    (service, counters)
}

/// Polls `condition` every 50 ms until it holds or the test timeout passes.
pub async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The base64 key material in a plain keyring file (to check it never
/// shows up in output).
pub fn key_material(path: &std::path::Path) -> String {
    let file = std::fs::read_to_string(path).unwrap();
    let after = file
        .split("\"material_base64\": \"")
        .nth(1)
        .expect("a plain keyring");
    after.split('"').next().unwrap().to_string()
}

/// The path of the built `veil` binary.
pub fn veil_binary() -> &'static str {
    env!("CARGO_BIN_EXE_veil")
}

/// A valid, already masked row of `user_logins` for the batch writer, as
/// message `message_id` sent at `sent_ms`.
pub fn prepared_row(message_id: &str, sent_ms: i64) -> veil::record::Prepared {
    use veil::contract::Cell;
    veil::record::Prepared {
        message_id: message_id.into(),
        sent_ms,
        record: veil::record::Record::Row(veil::record::Row {
            contract: 0,
            cells: vec![
                Cell::Text("u".into()),
                Cell::Text("ios".into()),
                Cell::Text("m1".into()),
                Cell::Text("m2".into()),
                Cell::Null,
                Cell::Integer(1),
                Cell::Date(chrono::NaiveDate::from_ymd_opt(2026, 11, 24).unwrap()),
            ],
        }),
    }
}

/// `user_logins` exactly as the reference Postgres ships it.
pub const REFERENCE_USER_LOGINS: &str = include_str!("../../sql/user_logins.sql");

/// veil's schema and the built-in login contract's table, as `veil
/// migrate` makes them.
pub async fn migrate_login(client: &mut tokio_postgres::Client) {
    veil::postgres::contract_sql::migrate(client, &veil::contract::builtin_login())
        .await
        .expect("migrate");
}

/// A batch writer's connection for the built-in login contract.
pub async fn login_writer(database_url: &str) -> veil::postgres::Writer {
    let settings = veil::postgres::database_config(Some(database_url), |_| None).unwrap();
    let limits = veil::postgres::SessionLimits {
        statement_timeout: Duration::from_secs(30),
        lock_timeout: Duration::from_secs(5),
    };
    let plan = std::sync::Arc::new(veil::contract::builtin_login());
    veil::postgres::Writer::connect(settings, limits, plan)
        .await
        .unwrap()
}

/// Masks and reveals as the built-in login contract makes them, in its
/// domains `ip` and `device_id`.
pub trait LoginMasks {
    /// The AES-SIV mask of `value` in `domain`.
    fn login_mask(&self, domain: &str, value: &str) -> String;
    /// The irreversible HMAC mask (`--mask-mode hmac`) of `value` in `domain`.
    fn login_hmac(&self, domain: &str, value: &str) -> String;
    /// The domain and the value of a login mask.
    fn login_reveal(&self, mask: &str) -> Result<(String, String), veil::mask::RevealError>;
}

fn login_domain(domain: &str) -> Vec<u8> {
    format!("veil/{domain}/v1").into_bytes()
}

impl LoginMasks for Keyring {
    fn login_mask(&self, domain: &str, value: &str) -> String {
        self.mask(veil::mask::MaskMode::Siv, &login_domain(domain), value)
    }

    fn login_hmac(&self, domain: &str, value: &str) -> String {
        self.mask(veil::mask::MaskMode::Hmac, &login_domain(domain), value)
    }

    fn login_reveal(&self, mask: &str) -> Result<(String, String), veil::mask::RevealError> {
        let names = ["ip", "device_id"];
        let domains = names.map(login_domain);
        let data: Vec<&[u8]> = domains.iter().map(Vec::as_slice).collect();
        self.reveal(mask, &data)
            .map(|(index, value)| (names[index].to_string(), value))
    }
}

/// Creates the least-privilege roles of sql/roles.sql in `db` (named
/// after it, so tests do not collide), each with LOGIN and the password
/// `test`. Drop them with `drop_roles`.
pub async fn apply_roles(db: &TestDb, pipeline: &str, analyst: &str, revealer: &str) {
    let roles_sql = concat!(env!("CARGO_MANIFEST_DIR"), "/sql/roles.sql");
    let status = std::process::Command::new("psql")
        .args([&db.url, "-q", "-v", "ON_ERROR_STOP=1", "-f", roles_sql])
        .args([
            "-v",
            &format!("pipeline={pipeline}"),
            "-v",
            &format!("analyst={analyst}"),
            "-v",
            &format!("revealer={revealer}"),
        ])
        .status()
        .unwrap();
    assert!(status.success(), "sql/roles.sql applies");
    let client = db.client().await;
    for role in [pipeline, analyst, revealer] {
        client
            .batch_execute(&format!("ALTER ROLE {role} LOGIN PASSWORD 'test'"))
            .await
            .unwrap();
    }
}

/// Drops roles made by `apply_roles` (roles outlive databases).
pub async fn drop_roles(db: &TestDb, roles: &[&str]) {
    let client = db.client().await;
    for role in roles {
        client
            .batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
            .await
            .unwrap();
    }
}

/// `db`'s URL, logging in as `role` with the password `test`.
pub fn url_as(db: &TestDb, role: &str) -> String {
    let mut url = url::Url::parse(&db.url).unwrap();
    url.set_username(role).unwrap();
    url.set_password(Some("test")).unwrap();
    url.to_string()
}

/// Starts the `veil` binary with these arguments, output piped.
pub fn spawn_veil(args: &[String]) -> std::process::Child {
    std::process::Command::new(veil_binary())
        .args(args)
        .env_remove("VEIL_KEY")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for a child to exit, at most `limit`; returns its output.
pub async fn wait_for_exit(
    mut child: std::process::Child,
    limit: Duration,
) -> std::process::Output {
    let deadline = tokio::time::Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if tokio::time::Instant::now() >= deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "veil did not exit within {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.wait_with_output().unwrap()
}

/// Messages recorded in the ledger so far (0 before veil created it).
pub async fn recorded(db: &TestDb) -> i64 {
    db.try_scalar("SELECT count(*) FROM veil.ledger")
        .await
        .unwrap_or(0)
}

/// Every one of `total` messages is in the table (`valid` of them) or the
/// quarantine (the rest), once, and the queue is empty.
pub async fn assert_exactly_once(db: &TestDb, queue: &TestQueue, total: i64, valid: i64) {
    assert_eq!(db.scalar("SELECT count(*) FROM user_logins").await, valid);
    assert_eq!(
        db.scalar("SELECT count(*) FROM veil.quarantine").await,
        total - valid
    );
    assert_eq!(db.scalar("SELECT count(*) FROM veil.ledger").await, total);
    assert_eq!(queue.depth().await, Default::default(), "queue ends empty");
}

/// Names for the three least-privilege roles of a test, after its database.
pub fn role_names(db: &TestDb) -> (String, String, String) {
    let suffix = &db.name["veil_test_".len()..];
    (
        format!("veil_pipe_{suffix}"),
        format!("veil_analyst_{suffix}"),
        format!("veil_reveal_{suffix}"),
    )
}

/// The keyring in a plain keyring file.
pub fn load_keyring_file(path: &std::path::Path) -> Keyring {
    let text = veil::keyring::read_key_file(path).unwrap();
    Keyring::from_json(&text, path).unwrap()
}

/// Receives until `count` messages came back (each hidden for a second),
/// as an old veil that recorded them and stopped would have.
pub async fn receive_all(queue: &TestQueue, count: usize) -> Vec<veil::sqs::QueueMessage> {
    let mut received = Vec::new();
    while received.len() < count {
        let request = veil::sqs::ReceiveRequest {
            max_messages: 10,
            wait_secs: 1,
            visibility_timeout_secs: 1,
            message_attributes: false,
            first_receive_time: false,
        };
        received.extend(queue.client.receive(request).await.unwrap());
    }
    received
}

/// A port nobody listens on now (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends SIGTERM to a running `veil` and waits for it to exit.
pub async fn stop_with_sigterm(child: std::process::Child) -> std::process::Output {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -TERM");
    wait_for_exit(child, TEST_TIMEOUT).await
}

/// `rounds` times: starts `veil` with `args`, lets it record about `step`
/// more messages (or end by itself), and kills it with SIGKILL. Nothing
/// recorded before a kill may be lost.
pub async fn kill_9_rounds(
    db: &TestDb,
    args: &[String],
    rounds: usize,
    step: std::ops::Range<i64>,
) {
    for round in 0..rounds {
        let before = recorded(db).await;
        let target = before + rand::random_range(step.clone());
        let mut child = spawn_veil(args);
        let child_id = child.id();
        wait_until("some progress before the kill", || async {
            // /proc/<pid> gone or a zombie: the run ended by itself.
            let exited = std::fs::read_to_string(format!("/proc/{child_id}/stat"))
                .map_or(true, |stat| stat.contains(") Z "));
            recorded(db).await >= target || exited
        })
        .await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(recorded(db).await >= before, "round {round}");
    }
}

/// A valid login body, and bodies that break every quarantine rule of the
/// login path, each with its reason.
pub fn hostile_cases() -> (&'static str, Vec<(String, &'static str)>) {
    let valid = r#"{"user_id": "u", "app_version": "1.2.3", "device_type": "ios", "ip": "10.0.0.1", "locale": null, "device_id": "123-45-6789"}"#;
    let with = |field: &str, raw_json: &str| {
        valid.replacen(
            &format!("\"{field}\": "),
            &format!("\"{field}\": {raw_json}, \"was_{field}\": "),
            1,
        )
    };
    let cases: Vec<(String, &'static str)> = vec![
        ("this is not json <&>".into(), "not_json"),
        ("[".repeat(5_000) + &"]".repeat(5_000), "not_json"),
        (format!("{valid} trailing"), "not_json"),
        (with("user_id", r#""\ud800""#), "not_json"),
        (with("ip", "1e999999"), "not_json"),
        (format!("\u{feff}{valid}"), "not_json"),
        ("[1, 2, 3]".into(), "wrong_shape"),
        (r#"{"foo": "x", "bar": "1"}"#.into(), "wrong_shape"),
        (with("app_version", "2"), "bad_type"),
        (with("device_id", r#"{"nested": "object"}"#), "bad_type"),
        (with("user_id", r#""a\u0000b""#), "bad_char"),
        (
            with("locale", &format!("\"{}\"", "x".repeat(33))),
            "too_long",
        ),
        (with("ip", r#""<script>&amp;</script>""#), "bad_ip"),
        (
            with("locale", &format!("\"{}\"", "y".repeat(250 * 1024))),
            "too_large",
        ),
    ];
    (valid, cases)
}

/// A TCP proxy in front of a server (LocalStack, Postgres) that can be taken down (connections
/// refused, open ones cut) and brought back on the same port.
pub struct Proxy {
    pub port: u16,
    upstream: String,
    running: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

impl Proxy {
    pub async fn start(upstream: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut proxy = Proxy {
            port,
            upstream: upstream.to_string(),
            running: None,
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let stop = CancellationToken::new();
        let upstream = self.upstream.clone();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let (mut inbound, _) = tokio::select! {
                    _ = token.cancelled() => break,
                    accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => continue },
                };
                let upstream = upstream.clone();
                connections.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
            connections.abort_all();
        });
        self.running = Some((stop, task));
    }

    pub async fn stop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            stop.cancel();
            task.await.unwrap();
        }
    }

    pub async fn resume(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        self.serve(listener);
    }
}

/// `veil reveal` arguments for this key and database.
pub fn reveal_args<'a>(key: &'a TestKey, db: &'a TestDb, reason: &'a str) -> Vec<&'a str> {
    vec![
        "reveal",
        "--key-file",
        key.path.to_str().unwrap(),
        "--database-url",
        &db.url,
        "--reason",
        reason,
    ]
}

/// A database with veil's schema, for commands that do not migrate.
pub async fn migrated_db() -> TestDb {
    let db = TestDb::create().await;
    let output = veil(&["migrate", "--database-url", &db.url], "", &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    db
}

/// Runs the `veil` binary with these arguments and stdin, in an
/// environment without veil's variables (plus `envs`), and waits for it.
pub fn veil(args: &[&str], stdin: &str, envs: &[(&str, &str)]) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(veil_binary())
        .args(args)
        .env_remove("VEIL_KEY_FILE")
        .env_remove("DATABASE_URL")
        .env_remove("VEIL_QUEUE_URL")
        .env_remove("VEIL_KEY")
        .envs(envs.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("veil binary runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Output bytes as text (lossy), for messages and `contains`.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Fails the test unless `output` holds `needle`, showing it all.
pub fn says(output: &[u8], needle: &str) {
    let output = text(output);
    assert!(output.contains(needle), "expected {needle:?} in:\n{output}");
}

/// `veil` with these arguments, which must exit 0; its stdout.
pub fn veil_ok(args: &[&str]) -> String {
    let output = veil(args, "", &[]);
    assert!(
        output.status.success(),
        "veil {}: {}{}",
        args.join(" "),
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}
