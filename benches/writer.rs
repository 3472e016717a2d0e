//! Writer throughput: rows per second into `user_logins` through veil's
//! batch writer (ledger claim + rows, one transaction per batch), side by
//! side with `psql \copy` of the same rows into the same table shape (no
//! ledger), in one run, on a fresh database each. Prints the ratio.
//!
//! Message ids are random UUIDs, as SQS hands them out, and SentTimestamp
//! grows a millisecond every few messages. Before each timed write the
//! ledger already holds `VEIL_BENCH_HISTORY` entries of earlier messages
//! (default 1 000 000, about a day of a modest stream) and a CHECKPOINT has
//! run, as in a database that has been up for a while: that is where the
//! ledger's index costs most.
//!
//! Needs Postgres on 127.0.0.1:5432 (scripts/services.sh up postgres).
//! `cargo bench --bench writer` (VEIL_BENCH_ROWS, VEIL_BENCH_BATCH,
//! VEIL_BENCH_HISTORY, VEIL_BENCH_ROUNDS, VEIL_BENCH_WRITERS=1,2 to vary).

use std::io::Write;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use rand::Rng;
use tokio_postgres::NoTls;
use veil::contract::Cell;
use veil::keyring::Keyring;
use veil::mask::MaskMode;
use veil::postgres::{record_batch, WriterStatements};
use veil::record::{Prepared, Record, Row};

/// `user_logins` exactly as the reference Postgres ships it.
const REFERENCE_USER_LOGINS: &str = include_str!("../sql/user_logins.sql");

const ADMIN_URL: &str = "postgres://postgres:postgres@127.0.0.1:5432/postgres";

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A random version-4 UUID in text form, like an SQS message id.
fn message_id(rng: &mut impl Rng) -> String {
    let b: [u8; 16] = rng.random();
    let hex = hex::encode(b);
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..]
    )
}

/// Messages sent from this time on; the ledger history comes before it.
const FIRST_SENT_MS: i64 = 1_764_000_000_000;

fn rows(count: usize) -> Vec<Prepared> {
    let keyring = Keyring::generate();
    let mut rng = rand::rng();
    (0..count)
        .map(|i| Prepared {
            message_id: message_id(&mut rng),
            sent_ms: FIRST_SENT_MS + (i / 3) as i64,
            // a row of the built-in login contract, in its column order
            record: Record::Row(Row {
                contract: 0,
                cells: vec![
                    Cell::Text(format!("424cdd21-063a-43a7-b91b-{i:012}")),
                    Cell::Text(if i % 2 == 0 { "android" } else { "ios" }.into()),
                    Cell::Text(keyring.mask(
                        MaskMode::Siv,
                        b"veil/ip/v1",
                        &format!("10.{}.{}.{}", i % 200, i % 250, i % 240),
                    )),
                    Cell::Text(keyring.mask(
                        MaskMode::Siv,
                        b"veil/device_id/v1",
                        &format!("{:03}-{:02}-{:04}", i % 900, i % 99, i % 9999),
                    )),
                    Cell::Text("RU".into()),
                    Cell::Integer((i % 6) as i64),
                    Cell::Date(NaiveDate::from_ymd_opt(2026, 11, 24).unwrap()),
                ],
            }),
        })
        .collect()
}

/// Fills the ledger with `count` earlier messages, then checkpoints, so the
/// timed writes pay what they pay on a database that has been up a while.
async fn ledger_history(client: &tokio_postgres::Client, count: usize) {
    client
        .execute(
            "INSERT INTO veil.ledger (sent_ms, message_id, outcome)
             SELECT $1::int8 - $2::int8 + n / 3, gen_random_uuid()::text, 'written'
               FROM generate_series(0, $2::int8 - 1) n",
            &[&FIRST_SENT_MS, &(count as i64)],
        )
        .await
        .unwrap();
    client
        .batch_execute("VACUUM ANALYZE veil.ledger")
        .await
        .unwrap();
}

async fn checkpoint(client: &tokio_postgres::Client) {
    client.batch_execute("CHECKPOINT").await.unwrap();
}

async fn fresh_database(name: &str) -> String {
    let (admin, connection) = tokio_postgres::connect(ADMIN_URL, NoTls)
        .await
        .expect("Postgres");
    tokio::spawn(connection);
    // Separate statements: DROP/CREATE DATABASE refuse to run in a transaction block.
    for statement in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        admin.batch_execute(&statement).await.unwrap();
    }
    format!("postgres://postgres:postgres@127.0.0.1:5432/{name}")
}

/// Writes all rows in batches through `writers` connections in parallel,
/// as `veil run --writers N` does.
async fn veil_writer(
    prepared: &[Prepared],
    batch: usize,
    writers: usize,
    history: usize,
) -> Duration {
    let url = fresh_database("veil_bench_writer").await;
    let (mut client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(connection);
    // The contract table as the reference environment ships it (no
    // indexes), so veil and \copy write into the same shape.
    client.batch_execute(REFERENCE_USER_LOGINS).await.unwrap();
    let plan = veil::contract::builtin_login();
    veil::postgres::contract_sql::migrate(&mut client, &plan)
        .await
        .unwrap();
    ledger_history(&client, history).await;
    let batches: Vec<Vec<Prepared>> = prepared.chunks(batch).map(<[Prepared]>::to_vec).collect();
    let mut lanes: Vec<Vec<Vec<Prepared>>> = vec![Vec::new(); writers];
    for (index, chunk) in batches.into_iter().enumerate() {
        lanes[index % writers].push(chunk);
    }
    let mut clients = Vec::new();
    for _ in 0..writers {
        let (lane_client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
        tokio::spawn(connection);
        let statements = WriterStatements::prepare(&lane_client, &plan)
            .await
            .unwrap();
        clients.push((lane_client, statements));
    }
    checkpoint(&client).await;
    let started = Instant::now();
    let tasks: Vec<_> = lanes
        .into_iter()
        .zip(clients)
        .map(|(lane, (mut lane_client, statements))| {
            tokio::spawn(async move {
                for chunk in lane {
                    let items: Vec<&Prepared> = chunk.iter().collect();
                    record_batch(&mut lane_client, &statements, &items)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    let count: i64 = client
        .query_one("SELECT count(*) FROM user_logins", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count as usize, prepared.len());
    elapsed
}

fn psql_copy(prepared: &[Prepared], url: &str) -> Duration {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    for item in prepared {
        let Record::Row(row) = &item.record else {
            continue;
        };
        let cells: Vec<String> = row
            .cells
            .iter()
            .map(|cell| cell.sql_text().unwrap_or_default())
            .collect();
        writeln!(file, "{}", cells.join(",")).unwrap();
    }
    file.flush().unwrap();
    let command = format!(
        "\\copy user_logins FROM '{}' WITH (FORMAT csv)",
        file.path().display()
    );
    let started = Instant::now();
    let status = std::process::Command::new("psql")
        .args([url, "-q", "-c", &command])
        .status()
        .expect("psql");
    let elapsed = started.elapsed();
    assert!(status.success());
    elapsed
}

#[tokio::main]
async fn main() {
    let count = env_number("VEIL_BENCH_ROWS", 100_000);
    let batch = env_number("VEIL_BENCH_BATCH", 500);
    let prepared = rows(count);
    let rounds = env_number("VEIL_BENCH_ROUNDS", 5);
    let history = env_number("VEIL_BENCH_HISTORY", 1_000_000);
    // Writer counts to measure (`--writers`; veil's default is 2).
    let writers: Vec<usize> = std::env::var("VEIL_BENCH_WRITERS")
        .unwrap_or_else(|_| "1,2".into())
        .split(',')
        .map(|n| {
            n.trim()
                .parse()
                .expect("VEIL_BENCH_WRITERS: numbers, e.g. 1,2,4")
        })
        .collect();
    let mut veil: Vec<Vec<Duration>> = vec![Vec::new(); writers.len()];
    let mut copy = Vec::new();
    // Interleaved rounds, so drift on the machine hits every variant alike.
    for _ in 0..rounds {
        for (times, &n) in veil.iter_mut().zip(&writers) {
            times.push(veil_writer(&prepared, batch, n, history).await);
        }
        let url = fresh_database("veil_bench_copy").await;
        let (client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
        tokio::spawn(connection);
        client.batch_execute(REFERENCE_USER_LOGINS).await.unwrap();
        checkpoint(&client).await;
        copy.push(psql_copy(&prepared, &url));
    }
    let median = |times: &mut Vec<Duration>| {
        times.sort();
        times[times.len() / 2]
    };
    let copy = median(&mut copy);
    let rate = |d: Duration| count as f64 / d.as_secs_f64();
    println!(
        "writer: {count} rows, batches of {batch}, ledger history {history}, median of {rounds} interleaved rounds"
    );
    let mut ratios = Vec::new();
    for (times, n) in veil.iter_mut().zip(&writers) {
        let time = median(times);
        println!(
            "  veil, {n} writer{} (ledger + rows): {:>9.0} rows/s ({:.3} s)",
            if *n == 1 { " " } else { "s" },
            rate(time),
            time.as_secs_f64()
        );
        ratios.push(format!("{:.2} with {n}", rate(time) / rate(copy)));
    }
    println!(
        "  psql \\copy (rows only, baseline):{:>10.0} rows/s ({:.3} s)",
        rate(copy),
        copy.as_secs_f64()
    );
    println!(
        "  ratio veil / psql \\copy, by writers: {}",
        ratios.join(", ")
    );
}
