//! Old databases keep working: a database migrated and filled by the release
//! before the built-in login contract (`tests/fixtures/old-database/`, made
//! by its `make.sh`, plain and partitioned by month) runs under this one.
//! `veil migrate` changes nothing there, or only adds; then `run`, `find`,
//! `forget`, `reveal`, `rekey` and `maintain` work on its old rows.

use veil::keyring::Keyring;
use veil::sqs::ProtocolChoice;

use crate::fixtures::*;
use crate::golden::GOLDEN_KEYRING;

fn fixture(layout: &str, file: &str) -> String {
    format!(
        "{}/tests/fixtures/old-database/{layout}/{file}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// A fresh database holding the fixture of `layout`, restored with psql.
async fn restored(layout: &str) -> TestDb {
    let db = TestDb::create().await;
    for file in ["schema.sql", "rows.sql"] {
        let output = std::process::Command::new("psql")
            .args([&db.url, "-q", "-X", "-v", "ON_ERROR_STOP=1", "-f"])
            .arg(fixture(layout, file))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{layout}/{file}: {}",
            text(&output.stderr)
        );
    }
    db
}

/// What veil's tables are, as the catalog says (partitions aside, which
/// housekeeping adds and drops by date): each table's kind and partition
/// key, columns, defaults, constraints, indexes and comments, one per line.
async fn catalog(db: &TestDb) -> Vec<String> {
    db.strings(
        "WITH t(oid) AS (
             SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE (n.nspname, c.relname) IN (('public', 'user_logins'), ('veil', 'ledger'),
                    ('veil', 'quarantine'), ('veil', 'audit'), ('veil', 'ledger_unsent'),
                    ('veil', 'ledger_default'), ('public', 'user_logins_default')))
         SELECT oid::regclass::text || ' kind ' || (SELECT relkind::text FROM pg_class WHERE pg_class.oid = t.oid)
                || coalesce(' by ' || pg_get_partkeydef(oid), '')
                || coalesce(' comment ' || obj_description(oid, 'pg_class'), '') FROM t
         UNION ALL
         SELECT attrelid::regclass::text || ' column ' || attname || ' ' || format_type(atttypid, atttypmod)
                || CASE WHEN attnotnull THEN ' not null' ELSE '' END
                || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
                || coalesce(' collate ' || (SELECT collname FROM pg_collation WHERE oid = attcollation
                                             AND attcollation <> 100), '')
                || coalesce(' comment ' || col_description(attrelid, attnum), '')
           FROM pg_attribute a LEFT JOIN pg_attrdef d ON (d.adrelid, d.adnum) = (a.attrelid, a.attnum)
          WHERE attrelid IN (SELECT oid FROM t) AND attnum > 0 AND NOT attisdropped
         UNION ALL
         SELECT conrelid::regclass::text || ' constraint ' || conname || ' ' || pg_get_constraintdef(oid)
           FROM pg_constraint WHERE conrelid IN (SELECT oid FROM t)
         UNION ALL
         SELECT indrelid::regclass::text || ' index ' || indexrelid::regclass::text || ' '
                || regexp_replace(pg_get_indexdef(indexrelid), '^.* USING ', '')
           FROM pg_index WHERE indrelid IN (SELECT oid FROM t)
         ORDER BY 1",
    )
    .await
}

async fn old_database_runs_under_this_release(layout: &str) {
    let db = restored(layout).await;
    let key = TestKey::from_json(GOLDEN_KEYRING);
    let key_file = key.path.to_str().unwrap();
    let before = catalog(&db).await;
    let old_rows = db.scalar("SELECT count(*) FROM user_logins").await;
    assert_eq!(old_rows, 24, "the fixture's rows are there");

    veil_ok(&["migrate", "--database-url", &db.url]);
    let after = catalog(&db).await;
    let lost: Vec<&String> = before.iter().filter(|line| !after.contains(line)).collect();
    assert!(lost.is_empty(), "migrate only adds; it changed {lost:#?}");

    // New messages land beside the old rows, once each.
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let seeded = queue.seed(20, 0.25, 5).await;
    let valid = seeded.iter().filter(|m| m.valid).count() as i64;
    let mut run = run_args(&queue, &db, &key);
    run.push("--until-empty".into());
    veil_ok(&run.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(
        db.scalar("SELECT count(*) FROM user_logins").await,
        old_rows + valid
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM veil.quarantine").await,
        6 + 20 - valid
    );

    // An old row's values, opened with the key they were made with.
    let client = db.client().await;
    let row = client
        .query_one(
            "SELECT masked_ip, masked_device_id FROM user_logins ORDER BY user_id LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    let keyring = Keyring::from_json(GOLDEN_KEYRING, std::path::Path::new("golden")).unwrap();
    let ip = keyring.login_reveal(row.get(0)).unwrap().1;
    let device_id = keyring.login_reveal(row.get(1)).unwrap().1;
    let with_ip = db
        .scalar(&format!(
            "SELECT count(*) FROM user_logins WHERE masked_ip = '{}'",
            row.get::<_, String>(0)
        ))
        .await;

    // An audited command (find, reveal, forget) with the key and the database.
    let audited = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend([
            "--reason",
            "old rows",
            "--key-file",
            key_file,
            "--database-url",
            &db.url,
        ]);
        veil_ok(&all)
    };
    let found = audited(&["find", "--ip", &ip]);
    assert!(found.contains(&format!("({with_ip} row")), "{found}");

    let statement = format!(
        "SELECT masked_ip FROM user_logins WHERE masked_ip = '{}' LIMIT 1",
        row.get::<_, String>(0)
    );
    let revealed = audited(&["reveal", "--sql", &statement]);
    assert!(revealed.contains(&ip), "{revealed}");

    let rows_before = db.scalar("SELECT count(*) FROM user_logins").await;
    let with_device = db
        .scalar(&format!(
            "SELECT count(*) FROM user_logins WHERE masked_device_id = '{}'",
            row.get::<_, String>(1)
        ))
        .await;
    audited(&["forget", "--device-id", &device_id]);
    assert_eq!(
        db.scalar("SELECT count(*) FROM user_logins").await,
        rows_before - with_device
    );

    // A rotated key re-masks the old rows, and they still open.
    veil_ok(&["keys", "rotate", "--key-file", key_file]);
    let rotated = load_keyring_file(&key.path);
    veil_ok(&["rekey", "--key-file", key_file, "--database-url", &db.url]);
    let masks = db
        .strings(
            "SELECT masked_ip FROM user_logins UNION ALL SELECT masked_device_id FROM user_logins",
        )
        .await;
    let active = format!("siv1.{}.", rotated.active().id());
    assert!(masks.iter().all(|mask| mask.starts_with(&active)));
    assert!(masks.iter().all(|mask| rotated.login_reveal(mask).is_ok()));

    veil_ok(&["maintain", "--database-url", &db.url]);
}

#[tokio::test]
async fn a_plain_old_database_runs_under_this_release_after_a_migrate_that_only_adds() {
    old_database_runs_under_this_release("plain").await;
}

#[tokio::test]
async fn a_monthly_partitioned_old_database_runs_under_this_release_after_a_migrate_that_only_adds()
{
    old_database_runs_under_this_release("monthly").await;
}

/// A fresh database migrated by this release has the schema the release
/// before made (partitions aside, which depend on the day): the same
/// tables, columns, types, defaults, constraints, indexes and comments,
/// but two comments reworded on purpose: the quarantine's `contract`
/// column (the login path is now the built-in contract) and a partitioned
/// user_logins' (worded as every contract table's; housekeeping reads the
/// width from either).
async fn a_fresh_database_gets_the_schema_of_before(layout: &str, flags: &[&str]) {
    let old = restored(layout).await;
    let fresh = TestDb::create().await;
    let mut args = vec!["migrate", "--database-url", &fresh.url];
    args.extend(flags);
    veil_ok(&args);

    let (before, now) = (catalog(&old).await, catalog(&fresh).await);

    let differ = |a: &[String], b: &[String]| -> Vec<String> {
        a.iter().filter(|line| !b.contains(line)).cloned().collect()
    };
    let mut reworded = vec![(
        "veil.quarantine column contract text comment the contract the body was routed to (NULL: the built-in login path, or no contract took it)",
        "veil.quarantine column contract text comment the contract the body was routed to (NULL: no contract took it, or the built-in login contract, which names none)",
    )];
    if layout == "monthly" {
        reworded.insert(0, (
            "user_logins kind p by RANGE (create_date) comment login events with masked PII, partitioned by month on create_date; veil maintain keeps the partitions",
            "user_logins kind p by RANGE (create_date) comment contract login: partitioned by month on create_date; veil maintain keeps the partitions",
        ));
    }
    let (gone, new): (Vec<&str>, Vec<&str>) = reworded.into_iter().unzip();
    assert_eq!(differ(&before, &now), gone);
    assert_eq!(differ(&now, &before), new);
}

#[tokio::test]
async fn a_fresh_database_gets_the_plain_schema_of_before() {
    a_fresh_database_gets_the_schema_of_before("plain", &[]).await;
}

#[tokio::test]
async fn a_fresh_database_gets_the_monthly_schema_of_before() {
    a_fresh_database_gets_the_schema_of_before("monthly", &["--partition-by", "month"]).await;
}
