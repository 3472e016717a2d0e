//! Database credentials and the keyring from AWS Secrets Manager
//! (LocalStack 4.7), against the TLS-only cluster, whose scram logins
//! really check passwords. A rotation (the secret and the role's password
//! changed under a running veil) is followed: veil reads the secret again
//! when Postgres refuses the old password.

use veil::sqs::ProtocolChoice;

use crate::cli::text;
use crate::helpers::*;
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
        key.keyring.reveal(&mask).unwrap().1,
        "10.9.8.7",
        "masked with the keyring from the secret"
    );
    drop(db);
    drop_role(&role);
}

#[tokio::test]
async fn a_rotated_password_is_followed_by_reading_the_secret_again() {
    let db = TlsDb::create();
    let role = owner_role(&db, "before-rotation");
    let key = TestKey::create();
    let suffix = rand::random::<u32>();
    let secret_name = format!("veil/db-{suffix}");
    let db_secret = put_secret(&secret_name, &rds_secret(&role, "before-rotation", &db)).await;
    let key_secret = put_secret(
        &format!("veil/keyring-{suffix}"),
        &std::fs::read_to_string(&key.path).unwrap(),
    )
    .await;
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let messages = queue.seed(600, 0.05, 131).await;
    let valid = messages.iter().filter(|m| m.valid).count();
    let mut args = secret_args(&queue, &db_secret, &key_secret);
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
    let child = std::process::Command::new(veil_binary())
        .args(&args)
        .envs(secrets_endpoint())
        .env_remove("VEIL_KEY")
        .env_remove("DATABASE_URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let recorded = || {
        psql(&db.name, "SELECT count(*) FROM veil.ledger")
            .parse::<i64>()
            .unwrap_or(0)
    };
    wait_until("some rows before the rotation", || async {
        psql(
            &db.name,
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'veil' AND tablename = 'ledger'",
        ) == "1"
            && recorded() >= 40
    })
    .await;

    // RDS's rotation: a new password in the secret and on the role; the
    // sessions veil holds end.
    put_secret(&secret_name, &rds_secret(&role, "after-rotation", &db)).await;
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
    drop(db);
    drop_role(&role);
}
