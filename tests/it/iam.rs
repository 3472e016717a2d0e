//! RDS IAM authentication tokens, checked against an oracle: botocore's
//! `generate_db_auth_token` (from the LocalStack 4.7 venv, which carries
//! botocore) for the same fixed credentials, region, host, user and time.
//! And veil refuses to send a token where TLS may be off.

use crate::fixtures::{text, veil};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;

/// The Python of the modern LocalStack's venv (it has botocore).
fn botocore_python() -> String {
    if let Ok(python) = std::env::var("VEIL_TEST_BOTOCORE_PYTHON") {
        return python;
    }
    let port = crate::fixtures::modern_endpoint()
        .rsplit(':')
        .next()
        .unwrap_or("4566")
        .to_string();
    let venv = std::fs::read_to_string(format!("/tmp/veil-ls-modern-run-{port}/venv"))
        .expect("the modern LocalStack's venv (scripts/services.sh up modern)");
    format!("{}/bin/python", venv.trim())
}

const ORACLE: &str = r#"
import datetime, json, sys
import botocore.auth, botocore.session

cases = json.loads(sys.argv[1])
class Fixed(datetime.datetime):
    now_value = None
    @classmethod
    def utcnow(cls):
        return cls.now_value
class Clock:
    timezone = datetime.timezone
    datetime = Fixed
botocore.auth.datetime = Clock
try:  # with awscrt installed, botocore signs through the CRT, which reads the clock itself
    import botocore.crt.auth
    botocore.crt.auth.datetime = Clock
except ImportError:
    pass
for case in cases:
    Fixed.now_value = datetime.datetime.fromtimestamp(case["epoch"], datetime.timezone.utc).replace(tzinfo=None)
    session = botocore.session.Session()
    session.set_credentials(case["key"], case["secret"], case.get("token"))
    client = session.create_client("rds", region_name=case["region"])
    print(client.generate_db_auth_token(case["host"], case["port"], case["user"], Region=case["region"]))
"#;

#[test]
fn iam_tokens_equal_botocores_for_fixed_inputs() {
    let cases = serde_json::json!([
        {"key": "AKIDEXAMPLE", "secret": "wJalrXUtnFEMI/K7MDENG", "token": null,
         "region": "eu-west-1", "host": "veil.abc123.eu-west-1.rds.amazonaws.com",
         "port": 5432, "user": "veil_pipeline", "epoch": 1_764_072_000},
        {"key": "ASIAEXAMPLE", "secret": "s3cr3t+/=", "token": "IQoJb3JpZ2luX2VjE/+=token",
         "region": "us-east-1", "host": "db.cluster-xyz.us-east-1.rds.amazonaws.com",
         "port": 6543, "user": "veil user@x", "epoch": 1_790_000_123},
    ]);

    let output = std::process::Command::new(botocore_python())
        .args(["-c", ORACLE, &cases.to_string()])
        .output()
        .expect("botocore's Python");

    assert!(output.status.success(), "{}", text(&output.stderr));
    let expected: Vec<String> = text(&output.stdout).lines().map(String::from).collect();
    assert_eq!(expected.len(), 2);
    for (case, expected) in cases.as_array().unwrap().iter().zip(expected) {
        let credentials = Credentials::new(
            case["key"].as_str().unwrap(),
            case["secret"].as_str().unwrap(),
            case["token"].as_str().map(String::from),
            None,
            "test",
        );
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(case["epoch"].as_u64().unwrap());

        let ours = veil::aws::sigv4::rds_auth_token(
            &credentials,
            case["region"].as_str().unwrap(),
            case["host"].as_str().unwrap(),
            case["port"].as_u64().unwrap() as u16,
            case["user"].as_str().unwrap(),
            now,
        );

        assert_eq!(*ours, expected, "case {case}");
    }
}

#[test]
fn iam_authentication_is_refused_unless_the_server_is_verified() {
    for sslmode in ["disable", "allow", "prefer", "require"] {
        let url = format!("postgres://veil@db.example:5432/d?sslmode={sslmode}");

        let output = veil(
            &["doctor", "--database-url", &url, "--database-iam-auth"],
            "",
            &[],
        );

        let stdout = text(&output.stdout);
        assert!(
            stdout.contains("must go only to a verified server") && stdout.contains("verify-full"),
            "{sslmode}: {stdout}"
        );
    }
    let output = veil(
        &[
            "run",
            "--database-iam-auth",
            "--database-url",
            "postgres://veil@db.example/d?sslmode=require",
        ],
        "",
        &[],
    );
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
}
