//! Golden: with no configuration, veil records a fixed file of login bodies
//! (`tests/fixtures/golden/login-bodies.json`: valid events in every form,
//! and bodies breaking each quarantine rule) under a fixed key exactly as
//! the release before the built-in contract did. The rows of `user_logins`
//! (every column but `create_date`, which is the day of sending and is
//! checked apart), the quarantine entries, the ledger, the end-of-run report
//! and the metrics' names are compared with `login.expected`, made by that
//! release. `VEIL_BLESS=1` rewrites the fixture: only ever with the release
//! the fixture pins (the fixture's header names it).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use veil::keyring::Keyring;
use veil::metrics::Metrics;
use veil::sqs::ProtocolChoice;

use crate::fixtures::{modern_endpoint, run_config, TestDb, TestKey, TestQueue, TEST_TIMEOUT};

const BODIES: &str = include_str!("../fixtures/golden/login-bodies.json");
/// The fixed key the fixture's masks were made with.
pub const GOLDEN_KEYRING: &str = include_str!("../fixtures/golden/keyring.json");

fn fixture_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/golden")
        .join(name)
}

/// Compares `document` with the fixture `name`, or rewrites it under
/// `VEIL_BLESS=1`. The failure shows the first differing line.
pub fn compare_or_bless(name: &str, document: &str) {
    let path = fixture_path(name);
    if std::env::var_os("VEIL_BLESS").is_some() {
        std::fs::write(&path, document).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap();
    if expected != document {
        let first = expected
            .lines()
            .zip(document.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| expected.lines().count().min(document.lines().count()));
        panic!(
            "{} differs from what veil recorded now, first at line {}:\n  expected: {:?}\n  now:      {:?}",
            path.display(),
            first + 1,
            expected.lines().nth(first),
            document.lines().nth(first)
        );
    }
}

/// The rows of `user_logins`, sorted, every column but `create_date`.
async fn user_logins(db: &TestDb) -> Vec<String> {
    let client = db.client().await;
    let rows = client
        .query(
            "SELECT user_id, device_type, masked_ip, masked_device_id, locale, app_version::text
               FROM user_logins",
            &[],
        )
        .await
        .unwrap();
    let mut lines: Vec<String> = rows
        .iter()
        .map(|row| {
            (0..row.len())
                .map(|i| format!("{:?}", row.get::<_, Option<String>>(i)))
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .collect();
    lines.sort();
    lines
}

/// The quarantine, one line per entry in body order: the body it holds
/// (by its index in the file, after opening it with the key), then every
/// column veil wrote but the message id, the times and the random seal.
async fn quarantine(db: &TestDb, keyring: &Keyring, bodies: &[String]) -> Vec<String> {
    let client = db.client().await;
    let rows = client
        .query(
            "SELECT key_id, body_sealed, reason, field, receive_count, body_bytes, contract,
                    sent_at IS NOT NULL
               FROM veil.quarantine",
            &[],
        )
        .await
        .unwrap();
    let mut lines: Vec<(usize, String)> = rows
        .iter()
        .map(|row| {
            let body = keyring
                .open_body(row.get(0), row.get::<_, Vec<u8>>(1).as_slice())
                .expect("the golden key opens every quarantined body");
            let index = bodies
                .iter()
                .position(|sent| sent.as_bytes() == body)
                .expect("every quarantined body is one that was sent");
            let line = format!(
                "body {index} | {} | {:?} | {:?} | {} | {:?} | sent_at {}",
                row.get::<_, String>(2),
                row.get::<_, Option<String>>(3),
                row.get::<_, Option<i32>>(4),
                row.get::<_, i32>(5),
                row.get::<_, Option<String>>(6),
                row.get::<_, bool>(7),
            );
            (index, line)
        })
        .collect();
    lines.sort();
    lines.into_iter().map(|(_, line)| line).collect()
}

/// The ledger: how many entries of each outcome, and whether each
/// quarantined entry is one of the quarantine's.
async fn ledger(db: &TestDb) -> Vec<String> {
    let client = db.client().await;
    let rows = client
        .query(
            "SELECT outcome, count(*), count(*) FILTER (WHERE sent_ms > 0),
                    count(q.message_id)
               FROM veil.ledger l LEFT JOIN veil.quarantine q USING (message_id)
              GROUP BY outcome ORDER BY outcome",
            &[],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|row| {
            format!(
                "{} | {} entries | {} with a send time | {} in the quarantine",
                row.get::<_, String>(0),
                row.get::<_, i64>(1),
                row.get::<_, i64>(2),
                row.get::<_, i64>(3)
            )
        })
        .collect()
}

/// Every metric's name, type and label set (not its value), sorted.
fn metric_names(metrics: &Metrics) -> Vec<String> {
    let mut names: Vec<String> = metrics
        .render_prometheus()
        .lines()
        .filter(|line| line.starts_with("# TYPE") || !line.starts_with('#'))
        .map(|line| match line.starts_with('#') {
            true => line.to_string(),
            false => line
                .rsplit_once(' ')
                .map_or(line, |(series, _)| series)
                .to_string(),
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The end-of-run report without its times and rates, its table's rows
/// sorted (the sample is in the order batches committed).
fn report_lines(rendered: &str) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut rows: Vec<String> = Vec::new();
    for (index, line) in rendered.lines().enumerate() {
        match index {
            0 => lines.push(line.split(", in ").next().unwrap_or(line).to_string()),
            // the receive calls: as many as LocalStack's batches
            1 if line.contains("receive calls") => {}
            _ if line.starts_with(' ') && line.contains(" | ") && !line.contains("user_id") => {
                rows.push(line.to_string())
            }
            _ => lines.push(line.to_string()),
        }
    }
    rows.sort();
    let footer = lines.pop();
    lines.extend(rows);
    lines.extend(footer);
    lines
}

fn section(out: &mut String, title: &str, lines: &[String]) {
    out.push_str(&format!("## {title} ({} lines)\n", lines.len()));
    for line in lines {
        out.push_str(line);
        out.push('\n');
    }
}

#[tokio::test]
async fn the_builtin_login_contract_records_what_the_login_path_recorded() {
    let bodies: Vec<String> = serde_json::from_str(BODIES).unwrap();
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Json).await;
    let db = TestDb::create().await;
    let key = TestKey::from_json(GOLDEN_KEYRING);
    queue.send(&bodies).await;
    let day_before = chrono::Utc::now().date_naive();

    let config = run_config(&queue, &db, &key, &["--until-empty", "--show-rows", "1000"]);
    let metrics = Arc::new(Metrics::default());
    let report = tokio::time::timeout(
        TEST_TIMEOUT,
        veil::commands::serve_observed(&config, CancellationToken::new(), metrics.clone()),
    )
    .await
    .expect("drained in time")
    .expect("drained");

    let day_after = chrono::Utc::now().date_naive();
    let off_days = db
        .scalar(&format!(
            "SELECT count(*) FROM user_logins WHERE create_date NOT IN ('{day_before}', '{day_after}')"
        ))
        .await;
    assert_eq!(off_days, 0, "create_date is the day the message was sent");
    let mut document = String::from(
        "# veil golden fixture: the zero-flag login pipeline on tests/fixtures/golden/login-bodies.json\n\
         # under tests/fixtures/golden/keyring.json; made by the release at 03d7b07 (the login path\n\
         # before the built-in contract). Compared byte for byte by tests/it/golden.rs.\n",
    );
    section(&mut document, "user_logins", &user_logins(&db).await);
    section(
        &mut document,
        "veil.quarantine",
        &quarantine(&db, &key.keyring, &bodies).await,
    );
    section(&mut document, "veil.ledger", &ledger(&db).await);
    section(
        &mut document,
        "report",
        &report_lines(&veil::report::render(&report)),
    );
    section(&mut document, "metrics", &metric_names(&metrics));
    compare_or_bless("login.expected", &document);
}
