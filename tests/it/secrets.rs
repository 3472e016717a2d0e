//! Database credentials and the keyring from AWS Secrets Manager
//! (LocalStack 4.7), against the TLS-only cluster, whose scram logins
//! really check passwords. A rotation (the secret and the role's password
//! changed under a running veil) is followed: veil reads the secret again
//! when Postgres refuses the old password.

use veil::sqs::ProtocolChoice;

use crate::fixtures::*;
use crate::tls::{psql, tls_ca, tls_port, TlsDb};

async fn secrets_client() -> aws_sdk_secretsmanager::Client {
    let config = veil::aws::sdk_config(Some(&modern_endpoint()), true, None).await;
    aws_sdk_secretsmanager::Client::new(&config)
}

/// Creates (or replaces the value of) a secret; returns its ARN.
async fn put_secret(name: &str, value: &str) -> String {
    let client = secrets_client().await;
    match client
        .create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
    {
        Ok(created) => created.arn.unwrap(),
        Err(_) => client
            .put_secret_value()
            .secret_id(name)
            .secret_string(value)
            .send()
            .await
            .expect("Secrets Manager in LocalStack (SERVICES=...,secretsmanager)")
            .arn
            .unwrap(),
    }
}

fn rds_secret(role: &str, password: &str, db: &TlsDb) -> String {
    serde_json::json!({"engine": "postgres", "host": "localhost", "port": tls_port(),
        "username": role, "password": password, "dbname": db.name,
        "dbInstanceIdentifier": "veil-test"})
    .to_string()
}

/// A login role owning `db` on the TLS cluster; dropped with the database.
fn owner_role(db: &TlsDb, password: &str) -> String {
    let role = format!("{}_owner", db.name);
    psql(
        "postgres",
        &format!("CREATE ROLE {role} LOGIN PASSWORD '{password}'"),
    );
    psql(
        "postgres",
        &format!("ALTER DATABASE {} OWNER TO {role}", db.name),
    );
    psql(&db.name, &format!("GRANT ALL ON SCHEMA public TO {role}"));
    role
}

fn drop_role(role: &str) {
    psql("postgres", &format!("DROP ROLE IF EXISTS {role}"));
}

/// A database on the TLS cluster owned by a login role whose password is
/// in an RDS-format secret, and a keyring in a secret of its own.
struct Secrets {
    db: TlsDb,
    role: String,
    db_secret_name: String,
    db_secret: String,
    key_secret: String,
}

impl Secrets {
    async fn create(password: &str) -> Self {
        let db = TlsDb::create();
        let role = owner_role(&db, password);
        let key = TestKey::create();
        let suffix = rand::random::<u32>();
        let db_secret_name = format!("veil/db-{suffix}");
        let db_secret = put_secret(&db_secret_name, &rds_secret(&role, password, &db)).await;
        let key_secret = put_secret(
            &format!("veil/keyring-{suffix}"),
            &std::fs::read_to_string(&key.path).unwrap(),
        )
        .await;
        Secrets {
            db,
            role,
            db_secret_name,
            db_secret,
            key_secret,
        }
    }

    /// Drops the database, then its owner (roles outlive databases).
    fn finish(self) {
        let role = self.role.clone();
        drop(self.db);
        drop_role(&role);
    }

    /// Puts `password` into the database secret.
    async fn rotate_secret_to(&self, password: &str) {
        put_secret(
            &self.db_secret_name,
            &rds_secret(&self.role, password, &self.db),
        )
        .await;
    }
}

/// `veil run` arguments that take the login and the keyring from secrets;
/// only TLS comes from the URL.
fn secret_args(queue: &TestQueue, db_secret: &str, key_secret: &str) -> Vec<String> {
    [
        "run",
        "--until-empty",
        "--queue-url",
        &queue.url,
        "--database-url",
        &format!(
            "postgres://localhost/?sslmode=verify-full&sslrootcert={}",
            tls_ca()
        ),
        "--database-secret-id",
        db_secret,
        "--key-secret-id",
        key_secret,
    ]
    .map(String::from)
    .to_vec()
}

/// Starts `veil` with these arguments, Secrets Manager on LocalStack, and
/// neither VEIL_KEY nor DATABASE_URL; output piped.
fn spawn_with_secrets(args: &[String]) -> std::process::Child {
    std::process::Command::new(veil_binary())
        .args(args)
        .envs(secrets_endpoint())
        .env_remove("VEIL_KEY")
        .env_remove("DATABASE_URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Entries in the ledger of `db` (0 before veil made it).
fn ledger_entries(db: &TlsDb) -> i64 {
    let made = psql(
        &db.name,
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'veil' AND tablename = 'ledger'",
    );
    if made != "1" {
        return 0;
    }
    psql(&db.name, "SELECT count(*) FROM veil.ledger")
        .parse()
        .unwrap_or(0)
}

fn secrets_endpoint() -> Vec<(String, String)> {
    vec![(
        "AWS_ENDPOINT_URL_SECRETS_MANAGER".to_string(),
        modern_endpoint(),
    )]
}

#[tokio::test]
async fn the_login_and_the_keyring_come_from_secrets_end_to_end() {
    let db = TlsDb::create();
    let role = owner_role(&db, "first-password");
    let key = TestKey::create();
    let suffix = rand::random::<u32>();
    let db_secret = put_secret(
        &format!("veil/db-{suffix}"),
        &rds_secret(&role, "first-password", &db),
    )
    .await;
    let keyring_text = std::fs::read_to_string(&key.path).unwrap();
    let key_secret = put_secret(&format!("veil/keyring-{suffix}"), &keyring_text).await;
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    queue
        .send(&[crate::keyring::login("10.9.8.7", "123-45-6789")])
        .await;

    let mut child = std::process::Command::new(veil_binary());
    child
        .args(secret_args(&queue, &db_secret, &key_secret))
        .envs(secrets_endpoint())
        .env_remove("VEIL_KEY")
        .env_remove("VEIL_KEY_FILE")
        .env_remove("DATABASE_URL");
    let output = child.output().unwrap();

    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("login from secret {db_secret}")),
        "{stderr}"
    );
    assert!(
        !stderr.contains("first-password"),
        "the password is never logged"
    );
    let mask = db.scalar("SELECT masked_ip FROM user_logins");
    assert_eq!(
        key.keyring.login_reveal(&mask).unwrap().1,
        "10.9.8.7",
        "masked with the keyring from the secret"
    );
    drop(db);
    drop_role(&role);
}

#[tokio::test]
async fn a_rotated_password_is_followed_by_reading_the_secret_again() {
    let setup = Secrets::create("before-rotation").await;
    let (db, role) = (&setup.db, &setup.role);
    let (db_secret, key_secret) = (&setup.db_secret, &setup.key_secret);
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let messages = queue.seed(600, 0.05, 131).await;
    let valid = messages.iter().filter(|m| m.valid).count();
    let mut args = secret_args(&queue, db_secret, key_secret);
    // Slow enough that the rotation falls in the middle of the drain.
    args.extend(
        [
            "--batch-size",
            "2",
            "--receivers",
            "1",
            "--max-batch-rows",
            "10",
        ]
        .map(String::from),
    );
    let child = spawn_with_secrets(&args);
    let recorded = || ledger_entries(db);
    wait_until("some rows before the rotation", || async {
        recorded() >= 40
    })
    .await;

    // RDS's rotation: a new password in the secret and on the role; the
    // sessions veil holds end.
    setup.rotate_secret_to("after-rotation").await;
    psql(
        "postgres",
        &format!("ALTER ROLE {role} PASSWORD 'after-rotation'"),
    );
    psql(
        "postgres",
        &format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"),
    );
    let before_rotation = recorded();
    let output = wait_for_exit(child, TEST_TIMEOUT).await;

    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        before_rotation < 600,
        "the rotation came mid-drain ({before_rotation})"
    );
    assert!(stderr.contains("reading the secret again"), "{stderr}");
    assert!(!stderr.contains("after-rotation") && !stderr.contains("before-rotation"));
    assert_eq!(
        db.scalar("SELECT count(*) FROM user_logins"),
        valid.to_string()
    );
    assert_eq!(db.scalar("SELECT count(*) FROM veil.ledger"), "600");
    setup.finish();
}

#[tokio::test]
async fn a_secrets_host_and_port_replace_the_urls_and_the_log_names_them() {
    let db = TlsDb::create();
    let role = owner_role(&db, "endpoint-password");
    let secret = put_secret(
        &format!("veil/db-{}", rand::random::<u32>()),
        &rds_secret(&role, "endpoint-password", &db),
    )
    .await;
    // The URL names a server of the test's own: a veil that tries it first
    // (as it did when the secret's host was appended) is seen connecting.
    let decoy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let decoy_port = decoy.local_addr().unwrap().port();
    let attempts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = attempts.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = decoy.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(stream);
        }
    });
    let url = format!(
        "postgres://127.0.0.1:{decoy_port}/?sslmode=verify-full&sslrootcert={}",
        tls_ca()
    );

    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(veil_binary())
            .args([
                "migrate",
                "--database-url",
                &url,
                "--database-secret-id",
                &secret,
            ])
            .envs(secrets_endpoint())
            .env_remove("DATABASE_URL")
            .output()
            .unwrap()
    })
    .await
    .unwrap();

    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        attempts.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the URL's host was never tried"
    );
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains(&format!(
            "schema ready on localhost:{}/{} as {role}",
            tls_port(),
            db.name
        )),
        "{stdout}"
    );
    drop(db);
    drop_role(&role);
}

#[tokio::test]
async fn a_rotation_seen_before_the_secret_changes_is_ridden_out_and_fatal_only_at_start() {
    let setup = Secrets::create("old-password").await;
    let (db, role) = (&setup.db, &setup.role);
    let (db_secret, key_secret) = (&setup.db_secret, &setup.key_secret);
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let port = free_port();
    let mut args = secret_args(&queue, db_secret, key_secret);
    args.retain(|arg| arg != "--until-empty");
    args.extend(["--http-addr".into(), format!("127.0.0.1:{port}")]);
    let child = spawn_with_secrets(&args);
    let recorded = || ledger_entries(db);
    let ready = || async {
        reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
            .await
            .ok()
            .map(|response| response.status().as_u16())
    };
    queue.seed(10, 0.0, 151).await;
    wait_until("the first wave", || async { recorded() == 10 }).await;

    // The role's password changes first; the secret lags behind (RDS sets
    // the password, then finishes the secret). The sessions end.
    psql(
        "postgres",
        &format!("ALTER ROLE {role} PASSWORD 'new-password'"),
    );
    psql(
        "postgres",
        &format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"),
    );
    queue.seed(10, 0.0, 152).await;
    wait_until("/readyz 503 while the login is refused", || async {
        ready().await == Some(503)
    })
    .await;
    setup.rotate_secret_to("new-password").await;
    wait_until("the second wave, once the secret caught up", || async {
        recorded() == 20
    })
    .await;
    wait_until("/readyz 200 again", || async { ready().await == Some(200) }).await;
    let output = stop_with_sigterm(child).await;

    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("refused the login from secret"), "{stderr}");
    assert!(!stderr.contains("new-password") && !stderr.contains("old-password"));
    assert_eq!(db.scalar("SELECT count(*) FROM user_logins"), "20");

    // At start the same refusal is fatal, and the fix names the secret.
    setup.rotate_secret_to("wrong-password").await;
    let start = secret_args(&queue, db_secret, key_secret);
    let refused = std::process::Command::new(veil_binary())
        .args(&start)
        .envs(secrets_endpoint())
        .env_remove("VEIL_KEY")
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    let stderr = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    let fix = stderr
        .lines()
        .find(|line| line.starts_with("fix:"))
        .unwrap_or("");
    assert!(fix.contains(&format!("secret {db_secret}")), "{stderr}");
    assert!(
        !fix.contains("set the user and password with DATABASE_URL"),
        "{fix}"
    );
    setup.finish();
}
