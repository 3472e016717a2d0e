//! Postgres over TLS, as libpq means sslmode, against the project's
//! TLS-only cluster (scripts/postgres-tls.sh: hostssl + scram only, plain
//! TCP rejected). Its databases are made and dropped with psql, that is
//! with libpq itself, so veil's TLS code checks nothing about itself.

use std::path::PathBuf;
use std::process::Command;

use veil::sqs::ProtocolChoice;

use crate::fixtures::*;

/// The TLS cluster's port and files (scripts/postgres-tls.sh defaults).
pub fn tls_port() -> u16 {
    std::env::var("VEIL_TEST_TLS_PORT")
        .ok()
        .and_then(|port| port.parse().ok())
        .unwrap_or(5439)
}

fn tls_file(name: &str) -> String {
    let dir = std::env::var("VEIL_TEST_TLS_DIR").unwrap_or_else(|_| "/tmp/veil-pg-tls".into());
    PathBuf::from(dir).join(name).display().to_string()
}

/// The CA that signed the cluster's certificate.
pub fn tls_ca() -> String {
    tls_file("ca.pem")
}

/// The cluster's superuser password.
pub const TLS_PASSWORD: &str = "veil-tls";

/// A database on the TLS cluster, made and dropped through libpq.
pub struct TlsDb {
    pub name: String,
}

impl TlsDb {
    pub fn create() -> Self {
        let name = format!("veil_tls_{}", rand::random::<u32>());
        psql("postgres", &format!("CREATE DATABASE {name}"));
        TlsDb { name }
    }

    /// A URL for this database as `postgres`, with these query parameters.
    pub fn url(&self, params: &str) -> String {
        format!(
            "postgres://postgres:{TLS_PASSWORD}@localhost:{}/{}?{params}",
            tls_port(),
            self.name
        )
    }

    /// The verified URL (verify-full with the right CA).
    pub fn verified_url(&self) -> String {
        self.url(&format!("sslmode=verify-full&sslrootcert={}", tls_ca()))
    }

    /// One value, through libpq.
    pub fn scalar(&self, sql: &str) -> String {
        psql(&self.name, sql)
    }
}

impl Drop for TlsDb {
    fn drop(&mut self) {
        psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// Runs one statement through libpq (verify-full); returns its output.
pub fn psql(database: &str, sql: &str) -> String {
    let url = format!(
        "postgres://postgres:{TLS_PASSWORD}@localhost:{}/{database}?sslmode=verify-full&sslrootcert={}",
        tls_port(),
        tls_ca()
    );
    let output = Command::new("psql")
        .args([&url, "-v", "ON_ERROR_STOP=1", "-Atqc", sql])
        .output()
        .expect("psql");
    assert!(
        output.status.success(),
        "psql {sql}: {} (scripts/services.sh up tls)",
        text(&output.stderr)
    );
    text(&output.stdout).trim().to_string()
}

fn drain_args(queue: &TestQueue, key: &TestKey, database_url: Option<&str>) -> Vec<String> {
    let mut args = vec![
        "run".to_string(),
        "--until-empty".into(),
        "--queue-url".into(),
        queue.url.clone(),
        "--key-file".into(),
        key.path.display().to_string(),
    ];
    if let Some(url) = database_url {
        args.extend(["--database-url".into(), url.to_string()]);
    }
    args
}

#[tokio::test]
async fn verify_full_drains_over_tls_and_says_so() {
    let db = TlsDb::create();
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    let messages = queue.seed(20, 0.1, 121).await;
    let valid = messages.iter().filter(|m| m.valid).count();

    let args = drain_args(&queue, &key, Some(&db.verified_url()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = veil(&args, "", &[]);

    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("Postgres connection encrypted")
            && stderr.contains("TLSv1.3")
            && stderr.contains("certificate and host name verified"),
        "{stderr}"
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM user_logins"),
        valid.to_string()
    );
}

#[tokio::test]
async fn a_wrong_ca_a_wrong_name_and_plain_tcp_are_refused_before_the_queue_is_touched() {
    let db = TlsDb::create();
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    queue.seed(10, 0.0, 122).await;
    let wrong_name = format!(
        "postgres://postgres:{TLS_PASSWORD}@wrong-name.invalid:{}/{}?hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={}",
        tls_port(),
        db.name,
        tls_ca()
    );
    let cases = [
        (
            db.url(&format!(
                "sslmode=verify-full&sslrootcert={}",
                tls_file("other-ca.pem")
            )),
            "unknown issuer",
        ),
        (wrong_name, "name mismatch"),
        (db.url("sslmode=disable"), "no encryption"),
    ];

    for (url, problem) in cases {
        let args = drain_args(&queue, &key, Some(&url));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = veil(&args, "", &[]);

        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{url}: {stderr}");
        assert!(stderr.contains(problem), "{url}: {stderr}");
        let last = stderr.trim_end().lines().last().unwrap_or_default();
        assert!(
            last.starts_with("fix: ") && (last.contains("sslrootcert") || last.contains("sslmode")),
            "{url}: {stderr}"
        );
        assert_eq!(
            queue.depth().await,
            veil::sqs::QueueDepth {
                visible: 10,
                in_flight: 0
            },
            "queue untouched"
        );
    }
    assert_eq!(
        db.scalar("SELECT count(*) FROM pg_tables WHERE tablename = 'user_logins'"),
        "0",
        "nothing created"
    );
}

#[tokio::test]
async fn verify_ca_checks_the_chain_but_not_the_name_and_prefer_encrypts_unverified() {
    let db = TlsDb::create();
    let key = TestKey::create();
    let chain_only = format!(
        "postgres://postgres:{TLS_PASSWORD}@wrong-name.invalid:{}/{}?hostaddr=127.0.0.1&sslmode=verify-ca&sslrootcert={}",
        tls_port(),
        db.name,
        tls_ca()
    );
    let key_file = key.path.display().to_string();

    let doctors: Vec<String> = [chain_only, db.url("sslmode=prefer")]
        .iter()
        .map(|url| {
            let output = veil(
                &["doctor", "--database-url", url, "--key-file", &key_file],
                "",
                &[],
            );
            text(&output.stdout)
        })
        .collect();

    assert!(
        doctors[0].contains("ok      tls: TLSv1.3")
            && doctors[0].contains("sslmode=verify-ca, certificate chain verified"),
        "{}",
        doctors[0]
    );
    assert!(
        doctors[1].contains("ok      tls: TLSv1.3")
            && doctors[1].contains("sslmode=prefer, certificate not verified"),
        "{}",
        doctors[1]
    );
}

#[tokio::test]
async fn pgsslmode_and_pgsslrootcert_apply_without_a_url() {
    let db = TlsDb::create();
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    queue.seed(5, 0.0, 123).await;
    let port = tls_port().to_string();
    let ca = tls_ca();
    let env = [
        ("PGHOST", "localhost"),
        ("PGPORT", port.as_str()),
        ("PGUSER", "postgres"),
        ("PGPASSWORD", TLS_PASSWORD),
        ("PGDATABASE", db.name.as_str()),
        ("PGSSLMODE", "verify-full"),
        ("PGSSLROOTCERT", ca.as_str()),
    ];

    let args = drain_args(&queue, &key, None);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = veil(&args, "", &env);

    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("certificate and host name verified"),
        "{stderr}"
    );
    assert_eq!(db.scalar("SELECT count(*) FROM user_logins"), "5");
}

/// One of the clusters for libpq's certificate rules (scripts/services.sh
/// up tls): the CN-only certificate's, or the self-signed one's.
struct RuleCluster {
    port: u16,
    dir: &'static str,
}

const CN_ONLY: RuleCluster = RuleCluster {
    port: 5441,
    dir: "/tmp/veil-pg-tls-cn-only",
};
const SELF_SIGNED: RuleCluster = RuleCluster {
    port: 5442,
    dir: "/tmp/veil-pg-tls-self-signed",
};

impl RuleCluster {
    /// `veil migrate` against a fresh database of this cluster, reached as
    /// `host` with `sslmode` and `sslrootcert` (a file of the cluster's
    /// directory); the database is dropped afterwards.
    fn migrate(&self, host: &str, sslmode: &str, root: &str) -> std::process::Output {
        let name = format!("veil_rule_{}", rand::random::<u32>());
        let admin = format!(
            "postgres://postgres:{TLS_PASSWORD}@localhost:{}/postgres?sslmode=require",
            self.port
        );
        let run = |sql: &str| {
            let status = Command::new("psql")
                .args([&admin, "-qc", sql])
                .status()
                .expect("psql");
            assert!(status.success(), "{sql} (scripts/services.sh up tls)");
        };
        run(&format!("CREATE DATABASE {name}"));
        let url = format!(
            "postgres://postgres:{TLS_PASSWORD}@{host}:{}/{name}?sslmode={sslmode}&sslrootcert={}/{root}",
            self.port, self.dir
        );
        let output = veil(&["migrate", "--database-url", &url], "", &[]);
        run(&format!("DROP DATABASE {name} WITH (FORCE)"));
        output
    }
}

#[test]
fn a_certificate_with_only_a_common_name_is_checked_against_it_as_libpq_does() {
    let named = CN_ONLY.migrate("localhost", "verify-full", "ca.pem");
    assert!(named.status.success(), "{}", text(&named.stderr));
    assert!(text(&named.stdout).contains("schema ready"));

    let other_name = CN_ONLY.migrate("127.0.0.1", "verify-full", "ca.pem");
    assert_eq!(
        other_name.status.code(),
        Some(1),
        "{}",
        text(&other_name.stderr)
    );
    assert!(
        text(&other_name.stderr).contains("name"),
        "{}",
        text(&other_name.stderr)
    );
    let chain_only = CN_ONLY.migrate("127.0.0.1", "verify-ca", "ca.pem");
    assert!(chain_only.status.success(), "{}", text(&chain_only.stderr));
}

#[test]
fn a_self_signed_server_certificate_that_is_its_own_trust_anchor_is_accepted() {
    for sslmode in ["verify-full", "verify-ca"] {
        let output = SELF_SIGNED.migrate("localhost", sslmode, "server.pem");
        assert!(
            output.status.success(),
            "{sslmode}: {}",
            text(&output.stderr)
        );
    }
    let other_name = SELF_SIGNED.migrate("127.0.0.1", "verify-full", "server.pem");
    assert_eq!(
        other_name.status.code(),
        Some(1),
        "{}",
        text(&other_name.stderr)
    );
    let chain_only = SELF_SIGNED.migrate("127.0.0.1", "verify-ca", "server.pem");
    assert!(chain_only.status.success(), "{}", text(&chain_only.stderr));
    // Trusting another certificate still refuses it.
    let wrong = SELF_SIGNED.migrate("localhost", "verify-full", "ca.pem");
    assert_eq!(wrong.status.code(), Some(1), "{}", text(&wrong.stderr));
}
