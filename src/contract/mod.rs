//! Contracts: any JSON event type, its table and its PII policy declared in
//! one YAML file. `format` reads the file, `plan` checks it and compiles
//! the plan every step uses, `parse` turns a body into a typed row by the
//! plan, `json_schema` describes the bodies a plan accepts for producers.
//! Pure: no I/O but reading the contract files.
//!
//! The login contract is built in (`examples/contracts/login.yaml`, embedded)
//! and stays the zero-flag default; with no `--contract`, veil runs its
//! hard-wired login path, which the built-in contract reproduces exactly.

pub mod extract;
pub mod format;
pub mod json_schema;
pub mod parse;
pub mod plan;
pub mod values;

use std::path::Path;

pub use parse::{
    parse, stored_form, Cell, ContractRejection, ParsedEvent, SqsFacts, MAX_BODY_BYTES,
};
pub use plan::{
    Column, ColumnSource, ColumnType, Contract, Granularity, MaskKind, Normalize, Partitioning,
    Pii, Plan, TableName,
};

use crate::error::ConfigError;

/// The built-in login contract's text.
pub const LOGIN_CONTRACT_YAML: &str = include_str!("../../examples/contracts/login.yaml");

/// The built-in login contract, compiled.
pub fn builtin_login() -> Plan {
    compile_sources(&[format::Source {
        origin: "built-in".into(),
        text: LOGIN_CONTRACT_YAML.into(),
    }])
    // The embedded file is checked by a unit test, so this cannot fail.
    .expect("the built-in login contract compiles")
}

/// The contracts of a file or a directory, compiled into one plan.
pub fn load(path: &Path) -> Result<Plan, ConfigError> {
    compile_sources(&format::read_sources(path)?)
}

fn compile_sources(sources: &[format::Source]) -> Result<Plan, ConfigError> {
    let mut files = Vec::new();
    for source in sources {
        for file in format::parse_documents(source)? {
            files.push((source.origin.clone(), file));
        }
    }
    Plan::compile(&files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{self, LoginEvent, Rejection};
    use proptest::prelude::*;

    #[test]
    fn the_builtin_login_contract_compiles_to_the_table_of_the_reference_environment() {
        let plan = builtin_login();
        let login = &plan.contracts[0];
        assert_eq!(login.table.to_string(), "user_logins");
        let columns: Vec<(&str, &str)> = login
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.sql_type.as_str()))
            .collect();
        assert_eq!(
            columns,
            [
                ("user_id", "varchar(128)"),
                ("device_type", "varchar(32)"),
                ("masked_ip", "varchar(256)"),
                ("masked_device_id", "varchar(256)"),
                ("locale", "varchar(32)"),
                ("app_version", "integer"),
                ("create_date", "date"),
            ]
        );
        let domains: Vec<&[u8]> = plan
            .domains()
            .iter()
            .map(|d| d.associated_data.as_slice())
            .collect();
        assert_eq!(domains, [&b"veil/ip/v1"[..], &b"veil/device_id/v1"[..]]);
    }

    /// The login parser's answer in the contract parser's terms.
    fn login_answer(body: &[u8]) -> Result<Vec<Cell>, (&'static str, Option<String>)> {
        match event::parse(body) {
            Ok(LoginEvent {
                user_id,
                device_type,
                ip,
                locale,
                device_id,
                app_version_major,
            }) => Ok(vec![
                Cell::Text(user_id),
                Cell::Text(device_type),
                Cell::Text(ip),
                Cell::Text(device_id),
                locale.map_or(Cell::Null, Cell::Text),
                Cell::Integer(app_version_major.into()),
            ]),
            Err(Rejection { reason, field }) => Err((reason.code(), field.map(str::to_string))),
        }
    }

    /// The contract parser's answer, with the login columns named by the
    /// field they read (as `event::Rejection` names them).
    fn contract_answer(
        plan: &Plan,
        body: &[u8],
    ) -> Result<Vec<Cell>, (&'static str, Option<String>)> {
        let facts = SqsFacts {
            message_id: "m",
            sent_ms: Some(1_764_000_000_000),
            first_receive_ms: None,
            attributes: &[],
        };
        let login = &plan.contracts[0];
        match parse(plan, body, facts) {
            Ok(mut event) => {
                event.cells.pop(); // create_date, from SQS
                Ok(event.cells)
            }
            Err(rejection) => Err((
                rejection.reason.code(),
                rejection.column.map(|c| match &login.columns[c].source {
                    ColumnSource::Body(pointer) => pointer.trim_start_matches('/').to_string(),
                    _ => login.columns[c].name.clone(),
                }),
            )),
        }
    }

    fn field_value() -> impl Strategy<Value = Option<serde_json::Value>> {
        use serde_json::json;
        prop_oneof![
            Just(None),
            Just(Some(json!(null))),
            Just(Some(json!(""))),
            Just(Some(json!(7))),
            Just(Some(json!(["x"]))),
            Just(Some(json!("2.3.0"))),
            Just(Some(json!("0.96"))),
            Just(Some(json!("v2"))),
            Just(Some(json!("199.172.111.135"))),
            Just(Some(json!("2001:DB8::1"))),
            Just(Some(json!("593-47-5928"))),
            Just(Some(json!("a\u{0}b"))),
            Just(Some(json!("é".repeat(40)))),
            Just(Some(json!("x".repeat(129)))),
            "[a-z0-9.:-]{0,12}".prop_map(|s| Some(json!(s))),
        ]
    }

    /// Writes `tests/fixtures/golden/login-parse-answers.jsonl`: 1 500
    /// bodies drawn (seeded) from the values above, each with the login
    /// parser's answer: its cells, or its reason and field. Run once with
    /// the login parser, so the built-in contract can be held to it after
    /// that parser is gone.
    #[test]
    #[ignore = "writes the fixture; run by hand with --ignored"]
    fn write_the_login_parse_answers_fixture() {
        use proptest::strategy::ValueTree;
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(25);
        let strategy = field_value();
        let mut runner = proptest::test_runner::TestRunner::new_with_rng(
            ProptestConfig::default(),
            proptest::test_runner::TestRng::from_seed(
                proptest::test_runner::RngAlgorithm::ChaCha,
                &[25; 32],
            ),
        );
        let keys = [
            "user_id",
            "app_version",
            "device_type",
            "ip",
            "locale",
            "device_id",
            "other",
        ];
        let mut lines = String::new();
        for index in 0..1_500 {
            let body = match index % 50 {
                0 => b"not json".to_vec(),
                1 => b"[1]".to_vec(),
                2 => br#"{"foo": "x", "bar": "1"}"#.to_vec(),
                _ => {
                    let object: serde_json::Map<String, serde_json::Value> = keys
                        .iter()
                        .filter_map(|key| {
                            let value = strategy.new_tree(&mut runner).unwrap().current();
                            // most fields valid, so later checks are reached too
                            let value = match (rng.random_range(0..4), *key) {
                                (0, _) => value,
                                (_, "user_id") => Some(serde_json::json!("u-1")),
                                (_, "app_version") => Some(serde_json::json!("2.3.0")),
                                (_, "device_type") => Some(serde_json::json!("ios")),
                                (_, "ip") => Some(serde_json::json!("10.0.0.1")),
                                (_, "device_id") => Some(serde_json::json!("593-47-5928")),
                                _ => value,
                            };
                            value.map(|v| (key.to_string(), v))
                        })
                        .collect();
                    serde_json::to_vec(&object).unwrap()
                }
            };
            let answer = match login_answer(&body) {
                Ok(cells) => serde_json::json!({"cells": cells.iter().map(|cell| match cell {
                    Cell::Null => serde_json::Value::Null,
                    Cell::Text(text) => serde_json::json!(text),
                    Cell::Integer(number) => serde_json::json!(number),
                    other => panic!("no login cell is {other:?}"),
                }).collect::<Vec<_>>()}),
                Err((reason, field)) => serde_json::json!({"reason": reason, "field": field}),
            };
            let line =
                serde_json::json!({"body": String::from_utf8(body).unwrap(), "answer": answer});
            lines.push_str(&line.to_string());
            lines.push('\n');
        }
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/golden/login-parse-answers.jsonl"
        );
        std::fs::write(path, lines).unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]
        #[test]
        fn the_login_contract_agrees_with_the_login_parser_on_every_body(
            values in proptest::collection::vec(field_value(), 7),
            junk in prop_oneof![Just(None), Just(Some(b"not json".to_vec())), Just(Some(b"[1]".to_vec())),
                                Just(Some(br#"{"foo": "x", "bar": "1"}"#.to_vec()))],
        ) {
            let plan = builtin_login();
            let body = match junk {
                Some(junk) => junk,
                None => {
                    let keys = ["user_id", "app_version", "device_type", "ip", "locale", "device_id", "other"];
                    let object: serde_json::Map<String, serde_json::Value> = keys
                        .iter()
                        .zip(values)
                        .filter_map(|(key, value)| value.map(|v| (key.to_string(), v)))
                        .collect();
                    serde_json::to_vec(&object).unwrap()
                }
            };
            prop_assert_eq!(contract_answer(&plan, &body), login_answer(&body));
        }
    }
}
