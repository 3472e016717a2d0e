//! Contracts: any JSON event type, its table and its PII policy declared in
//! one YAML file. `format` reads the file, `plan` checks it and compiles
//! the plan every step uses, `parse` turns a body into a typed row by the
//! plan, `json_schema` describes the bodies a plan accepts for producers.
//! Pure: no I/O but reading the contract files.
//!
//! The login contract is built in (`examples/contracts/login.yaml`,
//! embedded) and is the zero-flag default: with no `--contract`, veil runs
//! it, through the same parser, planner and steps as any other contract.
//! What is particular to `user_logins` (its name, its columns in their
//! historical order, quarantine entries named as before) is data in that
//! file.

pub mod cell;
pub mod column;
pub mod extract;
pub mod format;
pub mod json_schema;
pub mod parse;
pub mod partition;
pub mod pii;
pub mod plan;
pub mod values;

use std::path::Path;

pub use cell::Cell;
pub use column::{Bind, Column, ColumnSource, ColumnType, Normalize};
pub use parse::{parse, stored_form, ContractRejection, ParsedEvent, SqsFacts, MAX_BODY_BYTES};
pub use partition::{Granularity, Partitioning};
pub use pii::{MaskKind, Pii};
pub use plan::{Contract, Plan, TableName};

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

/// The contracts of one YAML text (tests and examples), compiled.
pub fn compile_text(text: &str) -> Result<Plan, ConfigError> {
    compile_sources(&[format::Source {
        origin: "text".into(),
        text: text.into(),
    }])
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

/// What the tests of the contract modules share.
#[cfg(test)]
pub(crate) mod testing {
    /// The start of a contract of one table, `signups`, before its columns.
    pub const HEAD: &str = "contract: signups\nversion: 1\ncolumns:\n";

    /// Why `text` does not compile, as a message.
    pub fn refusal(text: &str) -> String {
        super::compile_text(text).unwrap_err().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// The built-in contract's answer to a body in the terms of the
    /// fixture: its cells but `create_date` (from SQS), or its reason and
    /// the field at fault as the quarantine names it.
    fn answer(plan: &Plan, body: &str) -> serde_json::Value {
        let facts = SqsFacts {
            message_id: "m",
            sent_ms: Some(1_764_000_000_000),
            first_receive_ms: None,
            attributes: &[],
        };
        let login = &plan.contracts[0];
        match parse(plan, body.as_bytes(), facts) {
            Ok(mut event) => {
                assert_eq!(
                    event.cells.pop(),
                    Some(Cell::Date(
                        chrono::NaiveDate::from_ymd_opt(2025, 11, 24).unwrap()
                    ))
                );
                let cells: Vec<serde_json::Value> = event
                    .cells
                    .iter()
                    .map(|cell| match cell {
                        Cell::Null => serde_json::Value::Null,
                        Cell::Text(text) => serde_json::json!(text),
                        Cell::Integer(number) => serde_json::json!(number),
                        other => panic!("no login cell is {other:?}"),
                    })
                    .collect();
                serde_json::json!({ "cells": cells })
            }
            Err(rejection) => serde_json::json!({
                "reason": rejection.reason.code(),
                "field": rejection.column.map(|c| login.columns[c].quarantine_field.clone()),
            }),
        }
    }

    /// The answers of the login parser that came before the built-in
    /// contract, on 1 500 seeded bodies (valid, and broken in every way),
    /// written by that parser: the contract gives each one.
    #[test]
    fn the_builtin_login_contract_gives_the_answers_of_the_login_parser_before_it() {
        let plan = builtin_login();
        let fixture = include_str!("../../tests/fixtures/golden/login-parse-answers.jsonl");
        let mut checked = 0;
        for line in fixture.lines() {
            let case: serde_json::Value = serde_json::from_str(line).unwrap();
            let body = case["body"].as_str().unwrap();
            assert_eq!(answer(&plan, body), case["answer"], "{body}");
            checked += 1;
        }
        assert_eq!(checked, 1_500);
    }
}
