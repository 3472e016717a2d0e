//! Contracts end to end: a routed queue of signups and purchases (the
//! examples in examples/contracts/shop) through both LocalStacks into
//! their tables, every rule quarantining with its column, masks that
//! compare equal across contracts of one domain, exactly once under
//! kill -9, and migrations that add a column or refuse a destructive one.

use veil::sqs::ProtocolChoice;

use crate::fixtures::*;

/// Asserts that a command's output holds `needle`, printing it if not.
pub const SHOP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/contracts/shop");

pub fn signup(id: u32, email: &str) -> String {
    serde_json::json!({
        "type": "signup",
        "user": {
            "id": format!("424cdd21-063a-43a7-b91b-{id:012}"),
            "email": email,
            "phone": "+44 20 7946 0958",
            "address": {"street": "1 High St", "postcode": "SW1A 1AA", "country": "GB"}
        },
        "plan": "pro",
        "marketing_opt_in": id.is_multiple_of(2),
        "signed_up_at": "2026-12-04T09:30:00Z"
    })
    .to_string()
}

pub fn purchase(id: u32, email: &str) -> String {
    serde_json::json!({
        "type": "purchase",
        "order_id": format!("A-{id}"),
        "email": email,
        "card": {"fingerprint": format!("fp_{}", id % 3)},
        "amount": "49.90",
        "currency": "EUR",
        "items": 3,
        "cart": [{"sku": "X1", "qty": 3}],
        "client_ip": format!("203.0.113.{}", id % 250)
    })
    .to_string()
}

/// Bodies a contract refuses, each with the reason and column expected.
fn refused() -> Vec<(
    String,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
)> {
    let with = |body: String, pointer: &str, value: serde_json::Value| {
        let mut json: serde_json::Value = serde_json::from_str(&body).unwrap();
        *json.pointer_mut(pointer).unwrap() = value;
        json.to_string()
    };
    use serde_json::json;
    vec![
        (
            with(signup(1, "a@b.c"), "/plan", json!("gold")),
            "bad_value",
            Some("plan"),
            Some("signups"),
        ),
        (
            with(signup(2, "a@b.c"), "/user/address/country", json!("gb")),
            "bad_format",
            Some("country"),
            Some("signups"),
        ),
        (
            with(signup(3, "a@b.c"), "/user/id", json!("nope")),
            "bad_format",
            Some("user_id"),
            Some("signups"),
        ),
        (
            with(signup(4, "a@b.c"), "/user/email", json!("")),
            "missing_field",
            Some("masked_email"),
            Some("signups"),
        ),
        (
            with(signup(5, "a@b.c"), "/signed_up_at", json!(5)),
            "bad_type",
            Some("signed_up_at"),
            Some("signups"),
        ),
        (
            with(purchase(6, "a@b.c"), "/items", json!(0)),
            "out_of_range",
            Some("items"),
            Some("purchases"),
        ),
        (
            with(purchase(7, "a@b.c"), "/amount", json!("lots")),
            "bad_format",
            Some("amount"),
            Some("purchases"),
        ),
        (
            with(purchase(8, "a@b.c"), "/currency", json!("BTC")),
            "bad_value",
            Some("currency"),
            Some("purchases"),
        ),
        (
            with(purchase(9, "a@b.c"), "/order_id", json!("x".repeat(65))),
            "too_long",
            Some("order_id"),
            Some("purchases"),
        ),
        (
            json!({"type": "refund", "order_id": "A-1"}).to_string(),
            "unknown_type",
            None,
            None,
        ),
        ("not json".to_string(), "not_json", None, None),
        (
            json!({"type": "purchase"}).to_string(),
            "wrong_shape",
            None,
            Some("purchases"),
        ),
    ]
}

async fn routed_queue_lands_each_event_in_its_table(endpoint: &str) {
    let db = TestDb::create().await;
    let queue = TestQueue::create(endpoint, ProtocolChoice::Auto).await;
    let key = TestKey::create();
    let mut bodies: Vec<String> = (0..20).map(|i| signup(i, "Ann@Example.com")).collect();
    bodies.extend((0..15).map(|i| purchase(i, "ann@example.com")));
    let refused = refused();
    bodies.extend(refused.iter().map(|(body, ..)| body.clone()));
    queue.send(&bodies).await;

    let mut args = run_args(&queue, &db, &key);
    args.extend(["--until-empty", "--contract", SHOP].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = veil(&args, "", &[]);

    assert!(output.status.success(), "{}", text(&output.stderr));
    let total = bodies.len() as i64;
    says(&output.stdout, &format!("received {total}, written 35"));
    assert_eq!(
        db.scalar("SELECT count(*) FROM analytics.signups").await,
        20
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM analytics.purchases").await,
        15
    );
    assert_eq!(db.scalar("SELECT count(*) FROM veil.ledger").await, total);
    assert_eq!(queue.depth().await, Default::default(), "queue ends empty");
    // Every reason, with its column and contract; nothing holds a value.
    let quarantined = db
        .strings(
            "SELECT reason || '|' || coalesce(field, '-') || '|' || coalesce(contract, '-')
               FROM veil.quarantine ORDER BY 1",
        )
        .await;
    let mut expected: Vec<String> = refused
        .iter()
        .map(|(_, reason, field, contract)| {
            format!(
                "{reason}|{}|{}",
                field.unwrap_or("-"),
                contract.unwrap_or("-")
            )
        })
        .collect();
    expected.sort();
    assert_eq!(quarantined, expected);
    // One email in two spellings, in two contracts of one domain: one mask.
    let emails = db
        .strings(
            "SELECT DISTINCT masked_email FROM analytics.signups
             UNION SELECT DISTINCT masked_email FROM analytics.purchases",
        )
        .await;
    assert_eq!(emails.len(), 1, "{emails:?}");
    assert!(emails[0].starts_with("siv1.") && !emails[0].contains("example"));
    assert_eq!(
        db.scalar("SELECT count(DISTINCT masked_card) FROM analytics.purchases")
            .await,
        3
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM analytics.purchases WHERE masked_card LIKE 'hmac1.%'")
            .await,
        15
    );
    assert_eq!(db.scalar("SELECT count(*) FROM analytics.purchases WHERE amount = 49.90 AND cart->0->>'sku' = 'X1'").await, 15);
    // Prefix-preserving: every client of 203.0.113.0/24 keeps one masked /24.
    let client_ips = db
        .strings("SELECT masked_client_ip FROM analytics.purchases ORDER BY order_id")
        .await;
    let networks: std::collections::HashSet<String> = client_ips
        .iter()
        .map(|mask| {
            assert!(
                mask.starts_with("pfx1.") && !mask.contains("203.0.113"),
                "{mask}"
            );
            let address = mask.splitn(3, '.').nth(2).unwrap();
            address.rsplit_once('.').unwrap().0.to_string()
        })
        .collect();
    assert_eq!(
        (
            networks.len(),
            client_ips
                .iter()
                .collect::<std::collections::HashSet<_>>()
                .len()
        ),
        (1, 15)
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM analytics.signups WHERE marketing_opt_in")
            .await,
        10
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM analytics.signups WHERE received_on = current_date")
            .await,
        20
    );
    // Purchases are partitioned by month (the contract's `partition:`): the
    // run's first housekeeping pass made this month's partition, so no row
    // waits in the default one.
    let this_month = chrono::Utc::now().format("%Y%m");
    assert_eq!(
        db.scalar(&format!(
            "SELECT count(*) FROM analytics.purchases_m{this_month}"
        ))
        .await,
        15
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM analytics.purchases_default")
            .await,
        0
    );
    // The key opens the reversible masks of the contract's domains, audited.
    let key_file = key.path.to_str().unwrap();
    let reveal = |extra: &[&str], stdin: &str| {
        let mut args = vec![
            "reveal",
            "--key-file",
            key_file,
            "--reason",
            "T-1",
            "--database-url",
            &db.url,
            "--contract",
            SHOP,
        ];
        args.extend_from_slice(extra);
        veil(&args, stdin, &[])
    };
    let opened = reveal(&[], &format!("{}\n", emails[0]));
    assert!(opened.status.success(), "{}", text(&opened.stderr));
    assert_eq!(text(&opened.stdout), "ann@example.com\n");
    let query = reveal(&["--sql", "select order_id, masked_email, masked_card, masked_client_ip from analytics.purchases where order_id = 'A-1'"], "");
    assert!(query.status.success(), "{}", text(&query.stderr));
    says(&query.stdout, "ann@example.com");
    assert!(
        text(&query.stdout).contains("| 203.0.113.1\n"),
        "the prefix-preserving mask opens in its column's domain: {}",
        text(&query.stdout)
    );
    assert!(
        text(&query.stdout).contains("hmac1."),
        "an HMAC mask stays as it is"
    );
    says(&query.stderr, "irreversible");
    assert_eq!(
        db.strings(
            "SELECT action || ':' || array_to_string(fields, ',') FROM veil.audit ORDER BY id"
        )
        .await,
        ["masks:email", "sql:client_ip,email"]
    );
}

#[tokio::test]
async fn a_routed_queue_on_modern_localstack_lands_each_event_in_its_contracts_table() {
    routed_queue_lands_each_event_in_its_table(&modern_endpoint()).await;
}

#[tokio::test]
async fn a_routed_queue_on_legacy_localstack_lands_each_event_in_its_contracts_table() {
    routed_queue_lands_each_event_in_its_table(&legacy_endpoint()).await;
}

#[tokio::test]
async fn a_routed_queue_is_recorded_exactly_once_across_kill_9() {
    let db = TestDb::create().await;
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    let bodies: Vec<String> = (0..400)
        .map(|i| match i % 5 {
            0 => signup(i, &format!("u{i}@example.com")),
            1 => "junk".to_string(),
            _ => purchase(i, &format!("u{i}@example.com")),
        })
        .collect();
    queue.send(&bodies).await;
    let mut args = run_args(&queue, &db, &key);
    args.extend(
        [
            "--until-empty",
            "--contract",
            SHOP,
            "--visibility-timeout-secs",
            "2",
            "--max-batch-rows",
            "30",
            "--max-batch-wait-ms",
            "20",
        ]
        .map(String::from),
    );

    kill_9_rounds(&db, &args, 3, 30..60).await;
    let finish = spawn_veil(&args).wait_with_output().unwrap();

    assert!(finish.status.success(), "{}", text(&finish.stderr));
    assert_eq!(
        db.scalar("SELECT count(*) FROM analytics.signups").await,
        80
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM analytics.purchases").await,
        240
    );
    assert_eq!(
        db.scalar("SELECT count(DISTINCT order_id) FROM analytics.purchases")
            .await,
        240
    );
    assert_eq!(db.scalar("SELECT count(*) FROM veil.quarantine").await, 80);
    assert_eq!(db.scalar("SELECT count(*) FROM veil.ledger").await, 400);
    assert_eq!(queue.depth().await, Default::default(), "queue ends empty");
}

fn contract_file(dir: &tempfile::TempDir, name: &str, columns: &str) -> String {
    let path = dir.path().join(name);
    let text =
        format!("contract: tickets\nversion: 1\ntable: support.tickets\ncolumns:\n{columns}");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[tokio::test]
async fn migrate_adds_a_new_nullable_column_and_refuses_a_destructive_change() {
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let base = "  - {name: ticket_id, from: /id, type: text, max_chars: 32, required: true}\n  - {name: masked_email, from: /email, type: text, pii: siv, domain: email}\n";
    let v1 = contract_file(&dir, "v1.yaml", base);
    let v2 = contract_file(
        &dir,
        "v2.yaml",
        &format!("{base}  - {{name: priority, from: /priority, type: integer}}\n"),
    );
    let narrowed = contract_file(
        &dir,
        "v3.yaml",
        &base.replace("max_chars: 32", "max_chars: 16"),
    );
    let dropped = contract_file(
        &dir,
        "v4.yaml",
        "  - {name: ticket_id, from: /id, type: text, max_chars: 32, required: true}\n",
    );

    let first = veil(
        &["migrate", "--database-url", &db.url, "--contract", &v1],
        "",
        &[],
    );
    let again = veil(
        &["migrate", "--database-url", &db.url, "--contract", &v1],
        "",
        &[],
    );
    let added = veil(
        &["migrate", "--database-url", &db.url, "--contract", &v2],
        "",
        &[],
    );
    let doctor = |contract: &str| {
        veil(
            &["doctor", "--database-url", &db.url, "--contract", contract],
            "",
            &[],
        )
    };
    let doctor_fits = doctor(&v2);
    let doctor_refuses = doctor(&narrowed);
    let type_change = veil(
        &[
            "migrate",
            "--database-url",
            &db.url,
            "--contract",
            &narrowed,
        ],
        "",
        &[],
    );
    let removal = veil(
        &["migrate", "--database-url", &db.url, "--contract", &dropped],
        "",
        &[],
    );

    assert!(first.status.success(), "{}", text(&first.stderr));
    says(&first.stdout, "table support.tickets: created");
    says(&again.stdout, "already there");
    says(&added.stdout, "added column(s) priority");
    assert_eq!(
        db.strings("SELECT attname::text FROM pg_attribute WHERE attrelid = 'support.tickets'::regclass AND attnum > 0 ORDER BY attnum").await,
        ["ticket_id", "masked_email", "priority"]
    );
    let fits = text(&doctor_fits.stdout);
    assert!(
        fits.contains("ok      table support.tickets (contract tickets): matches the contract"),
        "{fits}"
    );
    let refuses = text(&doctor_refuses.stdout);
    assert!(
        refuses.contains("PROBLEM table support.tickets (contract tickets)"),
        "{refuses}"
    );
    assert!(
        refuses.contains("changing a type is destructive"),
        "{refuses}"
    );
    assert_eq!(
        type_change.status.code(),
        Some(2),
        "{}",
        text(&type_change.stderr)
    );
    says(
        &type_change.stderr,
        "column ticket_id is character varying(32) in the table but varchar(16) in the contract",
    );
    assert_eq!(removal.status.code(), Some(2));
    assert!(
        text(&removal.stderr)
            .contains("column masked_email (character varying(256)) is not in the contract"),
        "{}",
        text(&removal.stderr)
    );
}

/// A contract whose table is partitioned by month on its send date,
/// keeping `retention` months, in `dir/name`.
fn partitioned_contract(dir: &tempfile::TempDir, name: &str, partition: &str) -> String {
    let path = dir.path().join(name);
    let text = format!(
        "contract: tickets\nversion: 1\ntable: support.tickets\npartition: {partition}\ncolumns:\n  \
         - {{name: ticket_id, from: /id, type: text, max_chars: 32, required: true}}\n  \
         - {{name: opened_on, sqs: sent_timestamp, type: date}}\n"
    );
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[tokio::test]
async fn a_partitioned_contract_table_gets_its_partitions_and_maintain_drops_those_past_retention()
{
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let monthly = partitioned_contract(
        &dir,
        "monthly.yaml",
        "{by: opened_on, every: month, retention_months: 2}",
    );
    let daily = partitioned_contract(&dir, "daily.yaml", "{by: opened_on, every: day}");
    let plain = contract_file(
        &dir,
        "plain.yaml",
        "  - {name: ticket_id, from: /id, type: text, max_chars: 32, required: true}\n  - {name: opened_on, sqs: sent_timestamp, type: date}\n",
    );
    let ddl = veil(&["contract", "ddl", "--contract", &monthly], "", &[]);
    assert!(ddl.status.success(), "{}", text(&ddl.stderr));
    says(&ddl.stdout, "PARTITION BY RANGE (\"opened_on\")");
    says(&ddl.stdout, "PARTITION OF \"support\".\"tickets\" DEFAULT");
    let check = veil(&["contract", "check", "--contract", &monthly], "", &[]);
    says(
        &check.stdout,
        "(partitioned by month on opened_on, kept 2 months)",
    );

    let migrate = |contract: &str| {
        veil(
            &["migrate", "--database-url", &db.url, "--contract", contract],
            "",
            &[],
        )
    };
    let created = migrate(&monthly);
    assert!(created.status.success(), "{}", text(&created.stderr));
    says(&created.stdout, "table support.tickets: created");
    let today = chrono::Utc::now().date_naive();
    let month = |months_back: u32| {
        let first =
            chrono::Datelike::with_day(&today, 1).unwrap() - chrono::Months::new(months_back);
        (first, first + chrono::Months::new(1))
    };
    let this_month = format!("tickets_m{}", month(0).0.format("%Y%m"));
    let partitions = db
        .strings(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = 'support.tickets'::regclass ORDER BY 1",
        )
        .await;
    assert!(partitions.contains(&this_month), "{partitions:?}");
    assert!(
        partitions.contains(&"tickets_default".to_string()),
        "{partitions:?}"
    );

    // Six months back: a partition past the two months kept, and a row of
    // that age in the default partition; both go, this month stays.
    let (from, to) = month(6);
    let old = format!("tickets_m{}", from.format("%Y%m"));
    let client = db.client().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE support.{old} PARTITION OF support.tickets FOR VALUES FROM ('{from}') TO ('{to}');
             INSERT INTO support.tickets VALUES ('old', '{from}'), ('older', '{}'), ('now', current_date);",
            from - chrono::Months::new(12)
        ))
        .await
        .unwrap();
    let maintain = veil(
        &[
            "maintain",
            "--database-url",
            &db.url,
            "--contract",
            &monthly,
        ],
        "",
        &[],
    );
    assert!(maintain.status.success(), "{}", text(&maintain.stderr));
    says(&maintain.stdout, &format!("dropped support.{old}"));
    assert_eq!(
        db.strings("SELECT ticket_id FROM support.tickets ORDER BY 1")
            .await,
        ["now"],
        "the old partition and the default partition's old row are gone"
    );
    assert_eq!(
        db.scalar(&format!("SELECT count(*) FROM support.{this_month}"))
            .await,
        1
    );

    // A table partitioned another way, or not at all, is refused (exit 2).
    let other_width = migrate(&daily);
    assert_eq!(
        other_width.status.code(),
        Some(2),
        "{}",
        text(&other_width.stderr)
    );
    says(
        &other_width.stderr,
        "table support.tickets is partitioned by month but contract \"tickets\" says every day",
    );
    let doctor = veil(
        &["doctor", "--database-url", &db.url, "--contract", &daily],
        "",
        &[],
    );
    says(
        &doctor.stdout,
        "PROBLEM table support.tickets (contract tickets)",
    );
    client
        .batch_execute("DROP TABLE support.tickets")
        .await
        .unwrap();
    assert!(migrate(&plain).status.success());
    let not_partitioned = migrate(&monthly);
    assert_eq!(not_partitioned.status.code(), Some(2));
    says(
        &not_partitioned.stderr,
        "table support.tickets exists and is not partitioned",
    );
}

#[tokio::test]
async fn contract_commands_check_show_ddl_and_export() {
    let dir = tempfile::tempdir().unwrap();
    let unsafe_file = contract_file(
        &dir,
        "unsafe.yaml",
        "  - {name: email, from: /email, type: text}\n",
    );
    let misspelt = contract_file(
        &dir,
        "typo.yaml",
        "  - {name: a, from: /a, type: text, requird: true}\n",
    );

    let show = veil(&["contract", "show"], "", &[]);
    let show_login = veil(&["contract", "show", "login"], "", &[]);
    let show_other = veil(&["contract", "show", "signup"], "", &[]);
    assert_eq!(show_login.stdout, show.stdout, "login is the default");
    assert_eq!(show_other.status.code(), Some(2));
    says(
        &show_other.stderr,
        "there is no built-in contract \"signup\"",
    );
    let shown = dir.path().join("shown.yaml");
    std::fs::write(&shown, &show.stdout).unwrap();
    let check_shown = veil(
        &["contract", "check", "--contract", shown.to_str().unwrap()],
        "",
        &[],
    );
    let check_unsafe = veil(&["contract", "check", "--contract", &unsafe_file], "", &[]);
    let check_typo = veil(&["contract", "check", "--contract", &misspelt], "", &[]);
    let ddl = veil(&["contract", "ddl"], "", &[]);
    let export = veil(
        &["contract", "export", "--json-schema", "--contract", SHOP],
        "",
        &[],
    );

    assert!(
        check_shown.status.success(),
        "{}",
        text(&check_shown.stderr)
    );
    assert_eq!(check_unsafe.status.code(), Some(2));
    says(&check_unsafe.stderr, "looks like personal data");
    assert_eq!(check_typo.status.code(), Some(2));
    says(&check_typo.stderr, "requird");
    says(&ddl.stdout, "\"masked_device_id\"  varchar(256)");
    let schema: serde_json::Value = serde_json::from_slice(&export.stdout).unwrap();
    let branches = schema["oneOf"].as_array().unwrap();
    assert_eq!(branches.len(), 2);
    assert_eq!(branches[1]["properties"]["type"]["const"], "signup");
    assert_eq!(
        branches[1]["properties"]["user"]["properties"]["email"]["type"],
        "string"
    );
}

/// Drains the queue with the shop contracts; panics on failure.
fn drain_shop(queue: &TestQueue, db: &TestDb, key: &TestKey) {
    let mut args = run_args(queue, db, key);
    args.extend(["--until-empty", "--contract", SHOP].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = veil(&args, "", &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
}

#[tokio::test]
async fn find_and_forget_by_domain_reach_every_contract_the_quarantine_and_every_key() {
    let db = TestDb::create().await;
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    let key_file = key.path.to_str().unwrap();
    let mut refused_signup: serde_json::Value =
        serde_json::from_str(&signup(9, "Ann@Example.com")).unwrap();
    refused_signup["plan"] = "gold".into();
    queue
        .send(&[
            signup(1, "ann@example.com"),
            signup(2, "ANN@example.com"),
            signup(3, "bob@example.com"),
            purchase(4, "Ann@Example.com"),
            refused_signup.to_string(),
            "from: ANN@EXAMPLE.COM, not json".to_string(),
            "bob@example.com wrote this".to_string(),
        ])
        .await;
    drain_shop(&queue, &db, &key);
    // A key rotation between two drains: ann's next rows have other masks.
    let rotated = veil(&["keys", "rotate", "--key-file", key_file], "", &[]);
    assert!(rotated.status.success(), "{}", text(&rotated.stderr));
    queue.send(&[purchase(5, "ann@example.com")]).await;
    drain_shop(&queue, &db, &key);
    let lookup = |verb: &str, extra: &[&str]| {
        let mut args = vec![
            verb,
            "--key-file",
            key_file,
            "--database-url",
            &db.url,
            "--contract",
            SHOP,
            "--reason",
            "DSR-1",
        ];
        args.extend_from_slice(extra);
        veil(&args, "", &[])
    };

    let found = lookup("find", &["--value", "email=Ann@Example.COM"]);
    let dry = lookup("forget", &["--value", "email=ann@example.com", "--dry-run"]);
    let unknown = lookup("find", &["--value", "shoe_size=42"]);
    let purchases_after_dry_run = db.scalar("SELECT count(*) FROM analytics.purchases").await;
    let erased = lookup("forget", &["--value", "email=ann@example.com"]);

    assert!(found.status.success(), "{}", text(&found.stderr));
    let found_text = text(&found.stdout);
    assert!(
        found_text.contains("analytics.signups.masked_email (contract signups):"),
        "{found_text}"
    );
    assert!(
        found_text.contains("(2 rows)") && found_text.contains("2 quarantined message(s) hold it"),
        "{found_text}"
    );
    assert!(
        !found_text.contains("siv1."),
        "find shows no mask: {found_text}"
    );
    says(&dry.stdout, "would delete 2 row(s) of analytics.purchases");
    assert_eq!(purchases_after_dry_run, 2, "a dry run deletes nothing");
    assert_eq!(unknown.status.code(), Some(2));
    says(&unknown.stderr, "neither a PII domain nor a column");
    assert!(erased.status.success(), "{}", text(&erased.stderr));
    says(&erased.stdout, "deleted 2 row(s) of analytics.signups");
    says(&erased.stdout, "deleted 2 row(s) of analytics.purchases");
    says(&erased.stdout, "deleted 2 quarantined message(s)");
    assert_eq!(
        db.scalar("SELECT count(*) FROM analytics.signups").await,
        1,
        "bob's stays"
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM analytics.purchases").await,
        0
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM veil.quarantine").await,
        1,
        "bob's junk stays"
    );
    let audit = db
        .strings("SELECT action || ' ' || query FROM veil.audit ORDER BY id")
        .await;
    assert_eq!(audit.len(), 3, "{audit:?}");
    assert!(
        audit.iter().all(
            |row| row.contains("email fingerprint fp1.") && !row.to_lowercase().contains("ann")
        ),
        "{audit:?}"
    );
    // A column that is not PII is matched as stored.
    let bob = lookup(
        "find",
        &["--value", "user_id=424CDD21-063A-43A7-B91B-000000000003"],
    );
    assert!(
        text(&bob.stdout).contains("(1 row)"),
        "{}{}",
        text(&bob.stdout),
        text(&bob.stderr)
    );
}

#[tokio::test]
async fn rekey_moves_every_reversible_contract_mask_to_the_active_key_and_leaves_hmac_alone() {
    let db = TestDb::create().await;
    let queue = TestQueue::create(&modern_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    let key_file = key.path.to_str().unwrap();
    queue
        .send(&[signup(1, "ann@example.com"), purchase(2, "ann@example.com")])
        .await;
    drain_shop(&queue, &db, &key);
    let rotated = veil(&["keys", "rotate", "--key-file", key_file], "", &[]);
    assert!(rotated.status.success(), "{}", text(&rotated.stderr));
    queue
        .send(&[
            signup(3, "ann@example.com"),
            purchase(4, "ann@example.com"),
            "junk".into(),
        ])
        .await;
    drain_shop(&queue, &db, &key);
    let distinct_emails =
        "SELECT count(DISTINCT m) FROM (SELECT masked_email AS m FROM analytics.signups
                           UNION ALL SELECT masked_email FROM analytics.purchases) e";
    let before = db.scalar(distinct_emails).await;
    let found_old_key_ip = veil(
        &[
            "find",
            "--key-file",
            key_file,
            "--database-url",
            &db.url,
            "--contract",
            SHOP,
            "--reason",
            "F",
            "--value",
            "client_ip=203.0.113.2",
        ],
        "",
        &[],
    );

    let old_key = load_keyring_file(&key.path)
        .keys()
        .map(|k| k.id().to_string())
        .find(|id| *id != load_keyring_file(&key.path).active().id())
        .unwrap();
    let retire = |extra: &[&str]| {
        let mut args = vec![
            "keys",
            "retire",
            "--key-file",
            key_file,
            "--key-id",
            &old_key,
            "--database-url",
            &db.url,
        ];
        args.extend_from_slice(extra);
        veil(&args, "", &[])
    };
    let retire_refused = retire(&["--contract", SHOP]);
    assert_eq!(
        retire_refused.status.code(),
        Some(2),
        "{}",
        text(&retire_refused.stderr)
    );
    says(&retire_refused.stderr, "still made 6 mask(s)");
    let rekeyed = veil(
        &[
            "rekey",
            "--key-file",
            key_file,
            "--database-url",
            &db.url,
            "--contract",
            SHOP,
            "--batch-rows",
            "1",
        ],
        "",
        &[],
    );

    assert_eq!(before, 2, "one email, two keys: two masks");
    assert!(
        text(&found_old_key_ip.stdout).contains("analytics.purchases.masked_client_ip")
            && text(&found_old_key_ip.stdout).contains("(1 row)"),
        "{}{}",
        text(&found_old_key_ip.stdout),
        text(&found_old_key_ip.stderr)
    );
    assert!(rekeyed.status.success(), "{}", text(&rekeyed.stderr));
    says(
        &rekeyed.stdout,
        "1 irreversible (hmac1) masks of older keys were left",
    );
    assert_eq!(
        db.scalar(distinct_emails).await,
        1,
        "rekeyed: one email, one mask again"
    );
    let active = load_keyring_file(&key.path).active().id().to_string();
    let old_key_siv = format!(
        "SELECT count(*) FROM (SELECT masked_email AS m FROM analytics.signups UNION ALL SELECT masked_phone FROM analytics.signups
          UNION ALL SELECT masked_street FROM analytics.signups UNION ALL SELECT masked_email FROM analytics.purchases) s
          WHERE m LIKE 'siv1.%' AND m NOT LIKE 'siv1.{active}.%'"
    );
    assert_eq!(db.scalar(&old_key_siv).await, 0);
    assert_eq!(
        db.scalar(&format!("SELECT count(*) FROM analytics.purchases WHERE masked_client_ip NOT LIKE 'pfx1.{active}.%'")).await,
        0,
        "prefix-preserving masks are re-masked too"
    );
    assert_eq!(db.scalar(&format!("SELECT count(*) FROM analytics.purchases WHERE masked_card NOT LIKE 'hmac1.{active}.%'")).await, 1);
    let email = db
        .strings("SELECT masked_email FROM analytics.signups LIMIT 1")
        .await;
    let opened = veil(
        &[
            "reveal",
            "--key-file",
            key_file,
            "--reason",
            "T",
            "--database-url",
            &db.url,
            "--contract",
            SHOP,
        ],
        &format!("{}\n", email[0]),
        &[],
    );
    assert_eq!(
        text(&opened.stdout),
        "ann@example.com\n",
        "{}",
        text(&opened.stderr)
    );
}

#[tokio::test]
async fn seed_generates_valid_bodies_of_every_contract_and_the_asked_share_of_junk() {
    let db = TestDb::create().await;
    let queue = TestQueue::create(&legacy_endpoint(), ProtocolChoice::Auto).await;
    let key = TestKey::create();
    let dir = tempfile::tempdir().unwrap();
    let no_examples = contract_file(
        &dir,
        "p.yaml",
        "  - {name: code, from: /code, type: text, pattern: '[A-Z]{3}-[0-9]{4}'}\n",
    );

    let seeded = veil(
        &[
            "seed",
            "--queue-url",
            &queue.url,
            "--contract",
            SHOP,
            "--count",
            "120",
            "--bad-ratio",
            "0.1",
            "--rng-seed",
            "5",
        ],
        "",
        &[],
    );
    let refused = veil(
        &[
            "seed",
            "--queue-url",
            &queue.url,
            "--contract",
            &no_examples,
            "--count",
            "5",
        ],
        "",
        &[],
    );
    drain_shop(&queue, &db, &key);

    assert!(seeded.status.success(), "{}", text(&seeded.stderr));
    says(&seeded.stdout, "sent 120 messages (12 junk)");
    assert_eq!(refused.status.code(), Some(2));
    says(&refused.stderr, "give the column `examples: [...]`");
    let signups = db.scalar("SELECT count(*) FROM analytics.signups").await;
    let purchases = db.scalar("SELECT count(*) FROM analytics.purchases").await;
    assert_eq!(signups + purchases, 108);
    assert!(
        signups > 40 && purchases > 40,
        "{signups} signups, {purchases} purchases"
    );
    assert_eq!(db.scalar("SELECT count(*) FROM veil.quarantine").await, 12);
    assert!(
        db.scalar("SELECT count(DISTINCT masked_email) FROM analytics.signups")
            .await
            < signups,
        "emails repeat"
    );
}

/// Sends one message with String/Number attributes, as a producer would:
/// JSON protocol on the modern LocalStack, query protocol on the legacy one
/// (which reads the service from a SigV4 header it does not check).
async fn send_with_attributes(queue: &TestQueue, body: &str, attributes: &[(&str, &str, &str)]) {
    let client = reqwest::Client::new();
    let endpoint = queue
        .url
        .split("/000000000000/")
        .next()
        .unwrap()
        .to_string();
    let response = if queue
        .url
        .contains(&modern_endpoint().replace("http://", ""))
    {
        let attributes: serde_json::Map<String, serde_json::Value> = attributes
            .iter()
            .map(|(name, kind, value)| {
                (
                    name.to_string(),
                    serde_json::json!({"DataType": kind, "StringValue": value}),
                )
            })
            .collect();
        let request = serde_json::json!({"QueueUrl": queue.url, "MessageBody": body, "MessageAttributes": attributes});
        client
            .post(&endpoint)
            .header("Content-Type", "application/x-amz-json-1.0")
            .header("X-Amz-Target", "AmazonSQS.SendMessage")
            .body(request.to_string())
            .send()
            .await
            .unwrap()
    } else {
        let mut form = vec![
            ("Action".to_string(), "SendMessage".to_string()),
            ("QueueUrl".to_string(), queue.url.clone()),
            ("MessageBody".to_string(), body.to_string()),
        ];
        for (index, (name, kind, value)) in attributes.iter().enumerate() {
            let n = index + 1;
            form.push((format!("MessageAttribute.{n}.Name"), name.to_string()));
            form.push((
                format!("MessageAttribute.{n}.Value.DataType"),
                kind.to_string(),
            ));
            form.push((
                format!("MessageAttribute.{n}.Value.StringValue"),
                value.to_string(),
            ));
        }
        client
            .post(&endpoint)
            .header(
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=test/20261204/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=0",
            )
            .form(&form)
            .send()
            .await
            .unwrap()
    };
    assert!(
        response.status().is_success(),
        "{}",
        response.text().await.unwrap()
    );
}

async fn attributes_and_first_receive_time_land_in_their_columns(endpoint: &str) {
    let db = TestDb::create().await;
    let queue = TestQueue::create(endpoint, ProtocolChoice::Auto).await;
    let key = TestKey::create();
    let dir = tempfile::tempdir().unwrap();
    let contract = contract_file(
        &dir,
        "attrs.yaml",
        "  - {name: v, from: /v, type: text}\n  - {name: tenant, sqs: 'attribute:tenant', type: text, required: true}\n  - {name: masked_origin_ip, sqs: 'attribute:origin', type: ip, pii: siv, domain: ip}\n  - {name: priority, sqs: 'attribute:priority', type: integer, max: 9}\n  - {name: first_received_at, sqs: approximate_first_receive_timestamp, type: timestamptz}\n",
    );
    send_with_attributes(
        &queue,
        r#"{"v": "a"}"#,
        &[
            ("tenant", "String", "acme"),
            ("priority", "Number", "3"),
            ("origin", "String", "203.0.113.9"),
        ],
    )
    .await;
    send_with_attributes(&queue, r#"{"v": "b"}"#, &[("tenant", "String", "initech")]).await;
    send_with_attributes(&queue, r#"{"v": "c"}"#, &[("priority", "Number", "1")]).await;
    send_with_attributes(
        &queue,
        r#"{"v": "d"}"#,
        &[("tenant", "String", "acme"), ("priority", "Number", "12")],
    )
    .await;

    let mut args = run_args(&queue, &db, &key);
    args.extend(["--until-empty", "--contract", &contract].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = veil(&args, "", &[]);

    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        db.strings("SELECT v || ':' || tenant || ':' || coalesce(priority::text, '-') FROM support.tickets ORDER BY v").await,
        ["a:acme:3", "b:initech:-"]
    );
    assert_eq!(
        db.strings("SELECT reason || ':' || field FROM veil.quarantine ORDER BY 1")
            .await,
        ["missing_field:tenant", "out_of_range:priority"]
    );
    let ip_mask = db
        .strings("SELECT masked_origin_ip FROM support.tickets WHERE v = 'a'")
        .await;
    assert!(ip_mask[0].starts_with("siv1."), "{ip_mask:?}");
    assert_eq!(
        db.scalar("SELECT count(*) FROM support.tickets WHERE first_received_at BETWEEN now() - interval '5 minutes' AND now() + interval '1 minute'").await,
        2,
        "the first receive time is SQS's, in milliseconds"
    );
}

#[tokio::test]
async fn message_attributes_and_the_first_receive_time_land_in_their_columns_on_modern_localstack()
{
    attributes_and_first_receive_time_land_in_their_columns(&modern_endpoint()).await;
}

#[tokio::test]
async fn message_attributes_and_the_first_receive_time_land_in_their_columns_on_legacy_localstack()
{
    attributes_and_first_receive_time_land_in_their_columns(&legacy_endpoint()).await;
}
