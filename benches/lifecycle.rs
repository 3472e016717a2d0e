//! Data-lifecycle benchmarks, each side by side with its baseline in one
//! run, reported as ratios (docs/performance.md, "Data that grows"):
//!
//! - writer: rows/s through veil's batch writer into a partitioned ledger
//!   whose current day already holds `VEIL_BENCH_LEDGER_ROWS` entries
//!   (10 000 000), against an empty one. Interleaved rounds, each on a copy
//!   of a prepared template database, checkpointed before timing.
//! - maintain: one housekeeping pass that drops a day of 10 000 000
//!   entries, while a writer keeps inserting; the writer's worst batch
//!   during the pass against its worst batch before it.
//! - find: `veil find`'s lookup on a `user_logins` of `VEIL_BENCH_USER_ROWS`
//!   rows (10 000 000) with the analyst indexes, against the same query with
//!   index scans disabled.
//! - rekey: rows/s re-masked after a rotation on `VEIL_BENCH_REKEY_ROWS`
//!   rows (1 000 000), against one bare UPDATE that rewrites every row.
//!
//! Needs Postgres on 127.0.0.1:5432. `cargo bench --bench lifecycle`
//! (`VEIL_BENCH_ONLY=writer,maintain,find,rekey` to pick; the sizes above
//! to shrink). Templates are built once per run and dropped at the end.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio_postgres::{Client, NoTls};
use veil::contract::Cell;
use veil::keyring::Keyring;
use veil::mask::MaskMode;
use veil::postgres::maintain::{maintain, HousekeepingPolicy};
use veil::postgres::partitions::{self, day_of_ms, Partitioned};
use veil::postgres::{record_batch, WriterStatements};
use veil::record::{Prepared, Record, Row};

/// `user_logins` exactly as the reference Postgres ships it.
const REFERENCE_USER_LOGINS: &str = include_str!("../sql/user_logins.sql");
const IP: &[u8] = b"veil/ip/v1";
const DEVICE_ID: &[u8] = b"veil/device_id/v1";

const ADMIN_URL: &str = "postgres://postgres:postgres@127.0.0.1:5432/postgres";
/// The timed messages' send time; the ledger's history fills the hour before.
const FIRST_SENT_MS: i64 = 1_764_000_000_000;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn wanted(name: &str) -> bool {
    std::env::var("VEIL_BENCH_ONLY").map_or(true, |only| only.split(',').any(|o| o.trim() == name))
}

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.expect("Postgres");
    tokio::spawn(connection);
    client
}

fn url_of(name: &str) -> String {
    format!("postgres://postgres:postgres@127.0.0.1:5432/{name}")
}

/// A fresh database, empty or copied from `template`.
async fn database(name: &str, template: Option<&str>) -> String {
    let admin = connect(ADMIN_URL).await;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .unwrap();
    let from = template.map_or(String::new(), |t| format!(" TEMPLATE {t}"));
    admin
        .batch_execute(&format!("CREATE DATABASE {name}{from}"))
        .await
        .unwrap();
    url_of(name)
}

async fn drop_database(name: &str) {
    connect(ADMIN_URL)
        .await
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .unwrap();
}

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

fn events(count: usize, first_sent_ms: i64) -> Vec<Prepared> {
    let keyring = Keyring::generate();
    let mut rng = rand::rng();
    (0..count)
        .map(|i| Prepared {
            message_id: message_id(&mut rng),
            sent_ms: first_sent_ms + (i / 3) as i64,
            // a row of the built-in login contract, in its column order
            record: Record::Row(Row {
                contract: 0,
                cells: vec![
                    Cell::Text(format!("{:08x}-0000-4000-8000-000000000000", i)),
                    Cell::Text("android".into()),
                    Cell::Text(keyring.mask(
                        MaskMode::Siv,
                        IP,
                        &format!("10.{}.{}.{}", i % 250, i % 200, i % 199),
                    )),
                    Cell::Text(keyring.mask(MaskMode::Siv, DEVICE_ID, &format!("{i:03}-00-0000"))),
                    Cell::Text("DE".into()),
                    Cell::Integer(3),
                    Cell::Date(day_of_ms(first_sent_ms)),
                ],
            }),
        })
        .collect()
}

/// The schema, the ledger's partitions around FIRST_SENT_MS, and
/// `history` entries in its day.
/// How the benchmark's ledger is laid out.
#[derive(Clone, Copy, PartialEq)]
enum Layout {
    /// Partitioned by day, as `veil migrate` makes it.
    Partitioned,
    /// One plain table keyed on (sent_ms, message_id), as before issue 14.
    Plain,
}

async fn ledger_template(name: &str, history: usize, layout: Layout) {
    let url = database(name, None).await;
    let mut client = connect(&url).await;
    client.batch_execute(REFERENCE_USER_LOGINS).await.unwrap();
    veil::postgres::contract_sql::migrate(&mut client, &veil::contract::builtin_login())
        .await
        .unwrap();
    if layout == Layout::Plain {
        client
            .batch_execute(
                r#"DROP TABLE veil.ledger;
                   CREATE TABLE veil.ledger(
                       sent_ms bigint NOT NULL,
                       message_id text COLLATE "C" NOT NULL,
                       outcome text NOT NULL CHECK (outcome IN ('written', 'quarantined')),
                       recorded_at timestamptz NOT NULL DEFAULT now(),
                       PRIMARY KEY (sent_ms, message_id))"#,
            )
            .await
            .unwrap();
    }
    let day = day_of_ms(FIRST_SENT_MS);
    for offset in [-1i64, 0, 1] {
        if layout == Layout::Plain {
            break;
        }
        let spec = Partitioned::Ledger.partition_for(day + chrono::Duration::days(offset));
        partitions::create_partition(&mut client, &Partitioned::Ledger, &spec)
            .await
            .unwrap();
    }
    if history > 0 {
        // Evenly over the part of the day before the timed messages.
        let day_start = partitions::day_start_ms(day);
        client
            .execute(
                "INSERT INTO veil.ledger (sent_ms, message_id, outcome)
                 SELECT $1::int8 + (n * ($2::int8 - $1::int8)) / $3::int8, gen_random_uuid()::text, 'written'
                   FROM generate_series(0, $3::int8 - 1) n",
                &[&day_start, &FIRST_SENT_MS, &(history as i64)],
            )
            .await
            .unwrap();
    }
    client
        .batch_execute("VACUUM ANALYZE veil.ledger")
        .await
        .unwrap();
}

async fn write_all(url: &str, prepared: &[Prepared], batch: usize) -> Duration {
    let mut client = connect(url).await;
    let statements = WriterStatements::prepare(&client, &veil::contract::builtin_login())
        .await
        .unwrap();
    client.batch_execute("CHECKPOINT").await.unwrap();
    let started = Instant::now();
    for chunk in prepared.chunks(batch) {
        let items: Vec<&Prepared> = chunk.iter().collect();
        record_batch(&mut client, &statements, &items)
            .await
            .unwrap();
    }
    started.elapsed()
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

async fn bench_writer() {
    let history = env_number("VEIL_BENCH_LEDGER_ROWS", 10_000_000);
    let count = env_number("VEIL_BENCH_ROWS", 100_000);
    let batch = env_number("VEIL_BENCH_BATCH", 500);
    let rounds = env_number("VEIL_BENCH_ROUNDS", 3);
    let started = Instant::now();
    ledger_template("veil_bench_t_ledger_full", history, Layout::Partitioned).await;
    ledger_template("veil_bench_t_ledger_empty", 0, Layout::Partitioned).await;
    ledger_template("veil_bench_t_ledger_plain", history, Layout::Plain).await;
    println!(
        "writer: templates ready in {:.0} s ({history} ledger entries in the current day)",
        started.elapsed().as_secs_f64()
    );
    let prepared = events(count, FIRST_SENT_MS);
    let (mut full, mut empty, mut plain) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        for (template, times) in [
            ("veil_bench_t_ledger_full", &mut full),
            ("veil_bench_t_ledger_empty", &mut empty),
            ("veil_bench_t_ledger_plain", &mut plain),
        ] {
            let url = database("veil_bench_ledger_round", Some(template)).await;
            times.push(write_all(&url, &prepared, batch).await);
        }
    }
    let rate = |d: Duration| count as f64 / d.as_secs_f64();
    let (full, empty, plain) = (median(&mut full), median(&mut empty), median(&mut plain));
    println!(
        "writer: {count} rows, batches of {batch}, 1 writer, median of {rounds} interleaved rounds"
    );
    println!(
        "  ledger day holding {history:>9} entries: {:>8.0} rows/s",
        rate(full)
    );
    println!(
        "  empty ledger:                          {:>8.0} rows/s",
        rate(empty)
    );
    println!(
        "  plain ledger (before partitioning), {history:>9} entries: {:>8.0} rows/s",
        rate(plain)
    );
    println!("  ratio full / empty: {:.2}", rate(full) / rate(empty));
    println!(
        "  ratio partitioned / plain, same entries: {:.2}",
        rate(full) / rate(plain)
    );
    drop_database("veil_bench_ledger_round").await;
    drop_database("veil_bench_t_ledger_empty").await;
    drop_database("veil_bench_t_ledger_plain").await;
}

async fn bench_maintain() {
    let history = env_number("VEIL_BENCH_LEDGER_ROWS", 10_000_000);
    if wanted("writer") {
        // Reuses the writer's full template.
    } else {
        ledger_template("veil_bench_t_ledger_full", history, Layout::Partitioned).await;
    }
    let url = database("veil_bench_maintain", Some("veil_bench_t_ledger_full")).await;
    let mut client = connect(&url).await;
    // Today's partitions, so the concurrent writer writes where a live
    // veil would; the benchmark's day (a year back) is past the retention.
    let policy = HousekeepingPolicy::default();
    let today = chrono::Utc::now().date_naive();
    for spec in Partitioned::Ledger.wanted(today, 0, 1) {
        partitions::create_partition(&mut client, &Partitioned::Ledger, &spec)
            .await
            .unwrap();
    }
    client.batch_execute("CHECKPOINT").await.unwrap();
    let writing = Arc::new(AtomicBool::new(true));
    let phase = Arc::new(AtomicBool::new(false));
    let writer = {
        let (url, writing, phase) = (url.clone(), writing.clone(), phase.clone());
        tokio::spawn(async move {
            let mut client = connect(&url).await;
            let statements = WriterStatements::prepare(&client, &veil::contract::builtin_login())
                .await
                .unwrap();
            let now_ms = chrono::Utc::now().timestamp_millis();
            let (mut before, mut during) = (Vec::new(), Vec::new());
            let mut sent = now_ms;
            while writing.load(Ordering::Relaxed) {
                let batch = events(100, sent);
                sent += 100;
                let items: Vec<&Prepared> = batch.iter().collect();
                let started = Instant::now();
                record_batch(&mut client, &statements, &items)
                    .await
                    .unwrap();
                let took = started.elapsed();
                if phase.load(Ordering::Relaxed) {
                    during.push(took);
                } else {
                    before.push(took);
                }
            }
            (before, during)
        })
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    phase.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let report = maintain(&mut client, &policy, std::time::Duration::ZERO)
        .await
        .unwrap();
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    writing.store(false, Ordering::Relaxed);
    let (mut before, mut during) = writer.await.unwrap();
    let dropped: i64 = report.dropped.iter().map(|(_, rows)| rows).sum();
    let worst = |times: &mut Vec<Duration>| times.iter().max().copied().unwrap_or_default();
    let p50 = |times: &mut Vec<Duration>| median(times);
    println!(
        "maintain: one pass dropped {} partitions (about {dropped} entries) and created {} in {:.2} s",
        report.dropped.len(),
        report.created.len(),
        took.as_secs_f64()
    );
    println!(
        "  concurrent writer, batches of 100: before the pass p50 {:.1} ms, worst {:.1} ms ({} batches); during it p50 {:.1} ms, worst {:.1} ms ({} batches)",
        p50(&mut before).as_secs_f64() * 1e3,
        worst(&mut before).as_secs_f64() * 1e3,
        before.len(),
        p50(&mut during).as_secs_f64() * 1e3,
        worst(&mut during).as_secs_f64() * 1e3,
        during.len()
    );
    println!(
        "  ratio worst batch during / before: {:.2}",
        worst(&mut during).as_secs_f64() / worst(&mut before).as_secs_f64().max(1e-9)
    );
    drop_database("veil_bench_maintain").await;
    drop_database("veil_bench_t_ledger_full").await;
}

/// `veil find`'s statement for one place.
async fn find_place(
    client: &impl tokio_postgres::GenericClient,
    place: &veil::privacy::Place,
) -> (Vec<Vec<Option<String>>>, i64) {
    veil::postgres::privacy::find_rows(
        client,
        &place.table,
        &place.column,
        &place.values,
        &place.shown,
        place.order_by.as_deref(),
        1000,
    )
    .await
    .unwrap()
}

async fn bench_find() {
    let rows = env_number("VEIL_BENCH_USER_ROWS", 10_000_000);
    let url = database("veil_bench_find", None).await;
    let mut client = connect(&url).await;
    client.batch_execute(REFERENCE_USER_LOGINS).await.unwrap();
    let started = Instant::now();
    // Mask-shaped random values for the crowd (AES-SIV of ten million
    // values would only slow the set-up); the person's rows carry real
    // masks under two keys.
    client
        .execute(
            "INSERT INTO user_logins
             SELECT gen_random_uuid()::text, 'android',
                    'siv1.0000aaaa.' || encode(sha256(n::text::bytea), 'base64'),
                    'siv1.0000aaaa.' || encode(sha256((n + 1)::text::bytea), 'base64'),
                    'DE', 3, date '2026-01-01' + (n % 300)::int
               FROM generate_series(1, $1::int8) n",
            &[&(rows as i64)],
        )
        .await
        .unwrap();
    let mut keyring = Keyring::generate();
    let ip = "203.0.113.7";
    let mut person = Vec::new();
    for round in 0..2 {
        for n in 0..10 {
            person.push((
                format!("person-{round}-{n}"),
                keyring.mask(MaskMode::Siv, IP, ip),
                keyring.mask(MaskMode::Siv, DEVICE_ID, &format!("device-{n}")),
            ));
        }
        keyring.rotate();
    }
    for (user, masked_ip, masked_device) in &person {
        client
            .execute(
                "INSERT INTO user_logins VALUES ($1, 'ios', $2, $3, 'DE', 3, date '2026-06-01')",
                &[user, masked_ip, masked_device],
            )
            .await
            .unwrap();
    }
    veil::postgres::contract_sql::create_indexes(&client, &veil::contract::builtin_login())
        .await
        .unwrap();
    client
        .batch_execute("VACUUM ANALYZE user_logins")
        .await
        .unwrap();
    println!(
        "find: {rows} rows with the analyst indexes loaded in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let plan = veil::contract::builtin_login();
    let (_, places) = veil::privacy::resolve(&plan, &keyring, "ip", ip).unwrap();
    let place = &places[0];
    let masks = &place.values;

    let rounds = env_number("VEIL_BENCH_ROUNDS", 5);
    let (mut indexed, mut scanned) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let started = Instant::now();
        let (found, total) = find_place(&client, place).await;
        indexed.push(started.elapsed());
        assert_eq!((found.len(), total), (20, 20));
        let transaction = client.transaction().await.unwrap();
        transaction
            .batch_execute("SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off;")
            .await
            .unwrap();
        let started = Instant::now();
        let (_, total) = find_place(&transaction, place).await;
        scanned.push(started.elapsed());
        assert_eq!(total, 20);
        transaction.rollback().await.unwrap();
    }
    let (indexed, scanned) = (median(&mut indexed), median(&mut scanned));
    println!(
        "find: one IP, {} masks ({} keys x 3 kinds), 20 matching rows of {rows}, median of {rounds}",
        masks.len(),
        masks.len() / 3
    );
    println!(
        "  with the analyst indexes: {:>9.2} ms",
        indexed.as_secs_f64() * 1e3
    );
    println!(
        "  full scan (indexes off):  {:>9.2} ms",
        scanned.as_secs_f64() * 1e3
    );
    println!(
        "  ratio full scan / indexed: {:.0}",
        scanned.as_secs_f64() / indexed.as_secs_f64()
    );
    drop_database("veil_bench_find").await;
}

async fn bench_rekey() {
    let rows = env_number("VEIL_BENCH_REKEY_ROWS", 1_000_000);
    let url = database("veil_bench_rekey", None).await;
    let mut client = connect(&url).await;
    client.batch_execute(REFERENCE_USER_LOGINS).await.unwrap();
    veil::postgres::contract_sql::migrate(&mut client, &veil::contract::builtin_login())
        .await
        .unwrap();
    let mut keyring = Keyring::generate();
    let started = Instant::now();
    for chunk in events(rows, FIRST_SENT_MS).chunks(5000) {
        let (mut users, mut ips, mut devices) = (Vec::new(), Vec::new(), Vec::new());
        for item in chunk {
            if let Record::Row(row) = &item.record {
                let user = row.cells[0].sql_text().unwrap_or_default();
                ips.push(keyring.mask(MaskMode::Siv, IP, &user[..8]));
                devices.push(keyring.mask(MaskMode::Siv, DEVICE_ID, &user[..8]));
                users.push(user);
            }
        }
        client
            .execute(
                "INSERT INTO user_logins SELECT u, 'ios', i, d, 'DE', 3, date '2026-01-01'
                   FROM unnest($1::text[], $2::text[], $3::text[]) AS t(u, i, d)",
                &[&users, &ips, &devices],
            )
            .await
            .unwrap();
    }
    for statement in ["VACUUM ANALYZE user_logins", "CHECKPOINT"] {
        client.batch_execute(statement).await.unwrap();
    }
    println!(
        "rekey: {rows} rows masked under the old key in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    keyring.rotate();
    let started = Instant::now();
    let report = veil::postgres::rekey::rekey(
        &mut client,
        &keyring,
        &veil::postgres::rekey::MaskedTable::of_plan(&veil::contract::builtin_login()),
        1000,
        |_| {},
    )
    .await
    .unwrap();
    let rekey = started.elapsed();
    assert_eq!(report.rows_rekeyed as usize, rows, "{report:?}");
    for statement in ["VACUUM user_logins", "CHECKPOINT"] {
        client.batch_execute(statement).await.unwrap();
    }
    let started = Instant::now();
    client
        .batch_execute("UPDATE user_logins SET masked_ip = masked_ip || '', masked_device_id = masked_device_id || ''")
        .await
        .unwrap();
    let bare = started.elapsed();
    let rate = |d: Duration| rows as f64 / d.as_secs_f64();
    println!("rekey: {rows} rows, pages of 1000");
    println!(
        "  veil rekey (open + re-mask + update): {:>9.0} rows/s ({:.1} s)",
        rate(rekey),
        rekey.as_secs_f64()
    );
    println!(
        "  one bare UPDATE of every row:         {:>9.0} rows/s ({:.1} s)",
        rate(bare),
        bare.as_secs_f64()
    );
    println!(
        "  ratio rekey / bare update: {:.2}",
        rate(rekey) / rate(bare)
    );
    drop_database("veil_bench_rekey").await;
}

#[tokio::main]
async fn main() {
    if wanted("writer") {
        bench_writer().await;
    }
    if wanted("maintain") {
        bench_maintain().await;
    } else {
        drop_database("veil_bench_t_ledger_full").await;
    }
    if wanted("find") {
        bench_find().await;
    }
    if wanted("rekey") {
        bench_rekey().await;
    }
}
