//! What a new user meets first, through the binary: one default keyring for
//! every command, exit codes (2 for configuration, 1 at run time), no colour
//! unless on a terminal (and never with NO_COLOR), and a start-up failure
//! that ends with its fix.

use std::process::{Command, Output};

use veil::sqs::ProtocolChoice;

use crate::fixtures::*;

/// `veil` with its per-user data directory in `home`.
fn veil_at(home: &std::path::Path, args: &[&str], stdin: &str) -> Output {
    veil(args, stdin, &[("XDG_DATA_HOME", home.to_str().unwrap())])
}

fn last_line(bytes: &[u8]) -> String {
    text(bytes)
        .trim_end()
        .lines()
        .last()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn every_keyring_command_uses_the_same_default_keyring() {
    let home = tempfile::tempdir().unwrap();
    let default = home.path().join("veil/keyring.json");
    let db = migrated_db().await;
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    queue.seed(5, 0.0, 101).await;

    let created = veil_at(home.path(), &["keys", "new"], "");
    let listed = veil_at(home.path(), &["keys", "list"], "");
    let rotated = veil_at(home.path(), &["keys", "rotate"], "");
    let drained = veil_at(
        home.path(),
        &[
            "run",
            "--until-empty",
            "--queue-url",
            &queue.url,
            "--database-url",
            &db.url,
        ],
        "",
    );
    let masks = db
        .strings("SELECT masked_ip FROM user_logins")
        .await
        .join("\n");
    let revealed = veil_at(
        home.path(),
        &["reveal", "--database-url", &db.url, "--reason", "test"],
        &masks,
    );
    let doctor = veil_at(
        home.path(),
        &[
            "doctor",
            "--queue-url",
            &queue.url,
            "--database-url",
            &db.url,
        ],
        "",
    );

    for (what, output) in [
        ("keys new", &created),
        ("keys list", &listed),
        ("keys rotate", &rotated),
        ("run", &drained),
        ("reveal", &revealed),
        ("doctor", &doctor),
    ] {
        assert!(output.status.success(), "{what}: {}", text(&output.stderr));
    }
    assert!(text(&created.stdout).contains(default.to_str().unwrap()));
    assert!(text(&listed.stdout).contains(default.to_str().unwrap()));
    let keyring = load_keyring_file(&default);
    assert_eq!(keyring.keys().count(), 2, "rotate rewrote the default file");
    let active = keyring.active().id().to_string();
    assert!(
        masks
            .lines()
            .all(|mask| mask.starts_with(&format!("siv1.{active}."))),
        "run masked with the rotated default keyring: {masks}"
    );
    assert_eq!(text(&revealed.stdout).lines().count(), 5);
    assert!(text(&doctor.stdout).contains(&format!("active {active}")));
}

#[tokio::test]
async fn bad_configuration_exits_2_with_what_is_wrong() {
    let home = tempfile::tempdir().unwrap();
    let broken = home.path().join("broken.json");
    veil::keyring::write_private_file(&broken, br#"{"version": 1, "keyz": []}"#).unwrap();
    let broken = broken.to_str().unwrap();
    let open = home.path().join("open.json");
    let keyring = veil::keyring::Keyring::generate();
    std::fs::write(&open, keyring.to_json().as_bytes()).unwrap(); // mode 644
    let open = open.to_str().unwrap();
    let chmod = format!("chmod 600 {open}");
    let db = migrated_db().await;
    let cases: [(&[&str], &str); 10] = [
        (&["keys", "list", "--key-file", open], &chmod),
        (&["run", "--queue-url", "login-queue"], "must be http(s)://"),
        (
            &["seed", "--queue-url", "ftp://x/1/q"],
            "must be http(s)://",
        ),
        (&["run", "--key-file", broken], "not a keyring's fields"),
        (
            &["keys", "list", "--key-file", broken],
            "not a keyring's fields",
        ),
        (
            &["keys", "rotate", "--key-file", broken],
            "not a keyring's fields",
        ),
        (
            &[
                "reveal",
                "--key-file",
                broken,
                "--reason",
                "x",
                "--database-url",
                &db.url,
            ],
            "not a keyring's fields",
        ),
        (&["run", "--batch-size", "11"], "--batch-size"),
        (&["seed", "--bad-ratio", "2"], "--bad-ratio"),
        (
            &["run", "--database-url", "postgres://u:pw@h:notaport/d"],
            "DATABASE_URL",
        ),
    ];

    for (args, expected) in cases {
        let output = veil_at(home.path(), args, "");

        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn start_up_failures_end_with_their_fix() {
    let home = tempfile::tempdir().unwrap();
    let db = migrated_db().await;
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let missing_modern = format!("{}/000000000000/veil-missing-queue", modern_endpoint());
    let missing_legacy = format!("{}/000000000000/veil-missing-queue", legacy_endpoint());
    let no_database = format!("{}_missing", db.url);
    let no_role = db.url.replace("postgres:postgres@", "veil_no_such_role:x@");
    let cases = [
        (
            missing_modern.as_str(),
            db.url.as_str(),
            "`veil seed` creates the demo queue",
        ),
        (
            missing_legacy.as_str(),
            db.url.as_str(),
            "`veil seed` creates the demo queue",
        ),
        (
            "http://127.0.0.1:1/000000000000/q",
            db.url.as_str(),
            "scripts/services.sh up modern",
        ),
        (
            queue.url.as_str(),
            "postgres://postgres@127.0.0.1:1/postgres",
            "DATABASE_URL or PGHOST / PGPORT",
        ),
        (queue.url.as_str(), no_database.as_str(), "createdb NAME"),
        (queue.url.as_str(), no_role.as_str(), "PGUSER / PGPASSWORD"),
    ];

    for (queue_url, database_url, fix) in cases {
        let output = veil_at(
            home.path(),
            &[
                "run",
                "--until-empty",
                "--endpoint-wait-secs",
                "0",
                "--queue-url",
                queue_url,
                "--database-url",
                database_url,
            ],
            "",
        );

        let stderr = text(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{queue_url} {database_url}: {stderr}"
        );
        let last = last_line(&output.stderr);
        assert!(
            last.starts_with("fix: ") && last.contains(fix) && last.contains("veil doctor"),
            "{queue_url} {database_url}: {stderr}"
        );
    }
}

/// Runs `veil seed` against a closed port (it logs a warning, then fails)
/// in a pseudo-terminal, as `script` provides one; returns what the
/// terminal showed.
fn on_a_terminal(no_color: Option<&str>) -> String {
    let command = format!(
        "{} seed --count 1 --endpoint-wait-secs 1 --queue-url http://127.0.0.1:1/000000000000/q",
        veil_binary()
    );
    let mut script = Command::new("script");
    script
        .args(["-qec", &command, "/dev/null"])
        .env_remove("NO_COLOR");
    if let Some(value) = no_color {
        script.env("NO_COLOR", value);
    }
    let output = script.output().expect("script(1) from util-linux");
    text(&output.stdout)
}

#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    let piped = veil(
        &[
            "seed",
            "--count",
            "1",
            "--endpoint-wait-secs",
            "1",
            "--queue-url",
            "http://127.0.0.1:1/000000000000/q",
        ],
        "",
        &[],
    );
    let terminal = on_a_terminal(None);
    let terminal_no_color = on_a_terminal(Some("1"));

    let piped = text(&piped.stderr);
    assert!(piped.contains("WARN"), "{piped}");
    assert!(!piped.contains('\x1b'), "ANSI in piped stderr: {piped:?}");
    assert!(terminal.contains("WARN"), "{terminal}");
    assert!(
        terminal.contains('\x1b'),
        "colour on a terminal: {terminal:?}"
    );
    assert!(terminal_no_color.contains("WARN"), "{terminal_no_color}");
    assert!(
        !terminal_no_color.contains('\x1b'),
        "NO_COLOR honoured: {terminal_no_color:?}"
    );
}
