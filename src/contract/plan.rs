//! The compiled plan: every contract veil runs with, in routing order, and
//! `Plan::compile`, the one place a contract file's meaning is checked. It
//! refuses unsafe or contradictory choices with a message naming the
//! contract, the column and the fix; across contracts (`check_together`):
//! unique names and tables, routes that cannot take the same body, a
//! catch-all only last, one mask kind per domain. A column's own checks
//! are in `column`, its mask in `pii`, the table's partitions in
//! `partition`.

use super::column::{compile_column, Column, ColumnSource};
use super::extract::Paths;
use super::format::{ContractFile, QuarantineFile};
use super::partition::{always_there, partitioning, Granularity, Partitioning};
use super::pii::{kind_name, MaskKind, Pii};
use crate::error::ConfigError;

/// Every contract veil runs with, in routing order.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The contracts; a body goes to the first whose `match` holds.
    pub contracts: Vec<Contract>,
    /// Every pointer the contracts read, for one pass over a body.
    pub paths: Paths,
}

/// One compiled contract.
#[derive(Debug, Clone)]
pub struct Contract {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: u32,
    /// Where its rows go.
    pub table: TableName,
    /// Which bodies it takes (`None`: every body that reaches it).
    pub route: Option<Route>,
    /// Its columns, in table order.
    pub columns: Vec<Column>,
    /// The order columns are checked in: required ones first (missing data
    /// is the most useful reason), each group in table order.
    pub check_order: Vec<usize>,
    /// Range partitions on a date column, if the contract asks for them.
    pub partition: Option<Partitioning>,
    /// What its quarantine entries hold in `veil.quarantine.contract`:
    /// its name, or nothing (`quarantine: {contract: none}`).
    pub quarantine_contract: Option<String>,
}

/// A table name, optionally schema-qualified; both parts are plain
/// identifiers (checked), so they are quoted as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    /// The schema (`None`: the first of `search_path`).
    pub schema: Option<String>,
    /// The table.
    pub name: String,
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// `match`: the value at `pointer` must be the string `equals`.
#[derive(Debug, Clone)]
pub struct Route {
    /// A JSON pointer into the body.
    pub pointer: String,
    /// The discriminator's value.
    pub equals: String,
    /// Where `Paths::extract` puts the value at `pointer`.
    pub slot: usize,
}

impl Plan {
    /// Compiles and checks contracts, in routing order.
    pub fn compile(files: &[(String, ContractFile)]) -> Result<Plan, ConfigError> {
        if files.is_empty() {
            return Err(ConfigError("no contract given".into()));
        }
        let contracts = files
            .iter()
            .map(|(origin, file)| {
                compile_contract(file).map_err(|problem| {
                    ConfigError(format!(
                        "contract {:?} ({origin}): {problem}",
                        file.contract
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        check_together(&contracts)?;
        let mut contracts = contracts;
        let mut paths = Paths::default();
        for contract in &mut contracts {
            if let Some(route) = &mut contract.route {
                route.slot = paths.add(&route.pointer);
            }
            for column in &mut contract.columns {
                if let ColumnSource::Body(pointer) = &column.source {
                    column.slot = Some(paths.add(pointer));
                }
            }
            let slots: Vec<Option<usize>> = contract.columns.iter().map(|c| c.slot).collect();
            for column in &mut contract.columns {
                column.shares_slot = column.slot.is_some()
                    && slots.iter().filter(|s| **s == column.slot).count() > 1;
            }
        }
        Ok(Plan { contracts, paths })
    }

    /// Whether a column reads a message attribute (receives then ask for them).
    pub fn reads_message_attributes(&self) -> bool {
        self.contracts
            .iter()
            .flat_map(|c| &c.columns)
            .any(|c| matches!(c.source, ColumnSource::Attribute(_)))
    }

    /// Whether a column reads the first receive time.
    pub fn reads_first_receive_time(&self) -> bool {
        self.contracts
            .iter()
            .flat_map(|c| &c.columns)
            .any(|c| c.source == ColumnSource::FirstReceiveTimestamp)
    }

    /// The plan with every contract that has no `partition:` partitioned
    /// `every` month or day on its date column that every row has (`veil
    /// migrate --partition-by`: `create_date` of the login contract).
    pub fn partitioned_by(mut self, every: Granularity) -> Result<Plan, ConfigError> {
        for contract in &mut self.contracts {
            if contract.partition.is_some() {
                continue;
            }
            let column = contract
                .columns
                .iter()
                .find(|c| c.sql_type == "date" && always_there(c))
                .ok_or_else(|| {
                    ConfigError(format!(
                        "--partition-by: contract {:?} has no date column every row has to partition on",
                        contract.name
                    ))
                })?;
            contract.partition = Some(Partitioning {
                column: column.name.clone(),
                every,
                retention_months: None,
            });
        }
        Ok(self)
    }

    /// The contract named `name`.
    pub fn contract(&self, name: &str) -> Option<&Contract> {
        self.contracts.iter().find(|c| c.name == name)
    }

    /// Every PII domain of the plan with its kind, once each.
    pub fn domains(&self) -> Vec<&Pii> {
        let mut domains: Vec<&Pii> = Vec::new();
        for pii in self
            .contracts
            .iter()
            .flat_map(|c| c.columns.iter())
            .filter_map(|c| c.pii.as_ref())
        {
            if !domains.iter().any(|d| d.domain == pii.domain) {
                domains.push(pii);
            }
        }
        domains
    }
}

/// What holds across contracts: unique names and tables, routes that
/// cannot take the same body, a catch-all only last, one kind per domain.
fn check_together(contracts: &[Contract]) -> Result<(), ConfigError> {
    for (index, contract) in contracts.iter().enumerate() {
        let earlier = &contracts[..index];
        if earlier.iter().any(|c| c.name == contract.name) {
            return Err(ConfigError(format!(
                "two contracts are named {:?}: names must be unique",
                contract.name
            )));
        }
        if let Some(other) = earlier.iter().find(|c| c.table == contract.table) {
            return Err(ConfigError(format!(
                "contracts {:?} and {:?} both write table {}: give each its own `table`",
                other.name, contract.name, contract.table
            )));
        }
        if let Some(catch_all) = earlier.iter().find(|c| c.route.is_none()) {
            return Err(ConfigError(format!(
                "contract {:?} has no `match`, so it takes every body and {:?} after it would never \
                 get one: give {:?} a `match`, or put it last",
                catch_all.name, contract.name, catch_all.name
            )));
        }
        if let (Some(route), true) = (&contract.route, index > 0) {
            let same = earlier.iter().find(|c| {
                c.route
                    .as_ref()
                    .is_some_and(|r| r.pointer == route.pointer && r.equals == route.equals)
            });
            if let Some(other) = same {
                return Err(ConfigError(format!(
                    "contracts {:?} and {:?} both match {} = {:?}: a body can go to one contract only",
                    other.name, contract.name, route.pointer, route.equals
                )));
            }
        }
    }
    let all_pii = contracts
        .iter()
        .flat_map(|c| c.columns.iter().map(move |col| (c, col)));
    let mut seen: Vec<(&Contract, &Column, &Pii)> = Vec::new();
    for (contract, column) in all_pii {
        let Some(pii) = &column.pii else { continue };
        if let Some((other_contract, other, _)) = seen
            .iter()
            .find(|(_, _, p)| p.domain == pii.domain && p.kind != pii.kind)
        {
            return Err(ConfigError(format!(
                "domain {:?} is masked with {} in {}.{} and {} in {}.{}: masks of one domain must be of one \
                 kind to compare equal; use one `pii` for both, or give one its own `domain`",
                pii.domain,
                kind_name(other.pii.as_ref().map_or(MaskKind::Siv, |p| p.kind)),
                other_contract.name,
                other.name,
                kind_name(pii.kind),
                contract.name,
                column.name
            )));
        }
        seen.push((contract, column, pii));
    }
    Ok(())
}

/// A plain SQL identifier: lower-case letters, digits, underscores, not
/// starting with a digit, at most 63 bytes (Postgres truncates longer ones).
fn is_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        && text.len() <= 63
}

pub(super) fn identifier(what: &str, text: &str) -> Result<String, String> {
    if is_identifier(text) {
        Ok(text.to_string())
    } else {
        Err(format!(
            "{what} {text:?} is not a plain SQL identifier: use lower-case letters, digits and _ \
             (at most 63), starting with a letter"
        ))
    }
}

pub(super) fn pointer(what: &str, text: &str) -> Result<String, String> {
    if text.is_empty() || text.starts_with('/') {
        Ok(text.to_string())
    } else {
        Err(format!(
            "{what} {text:?} is not a JSON pointer (RFC 6901): it starts with '/', as in /user/email"
        ))
    }
}

fn compile_contract(file: &ContractFile) -> Result<Contract, String> {
    let name = identifier("the contract name", &file.contract)?;
    let table = match &file.table {
        None => TableName {
            schema: None,
            name: name.clone(),
        },
        Some(text) => match text.split_once('.') {
            Some((schema, table)) => TableName {
                schema: Some(identifier("the table's schema", schema)?),
                name: identifier("the table name", table)?,
            },
            None => TableName {
                schema: None,
                name: identifier("the table name", text)?,
            },
        },
    };
    let route = match &file.match_rule {
        Some(rule) => Some(Route {
            pointer: pointer("match.field", &rule.field)?,
            equals: rule.equals.clone(),
            slot: 0,
        }),
        None => None,
    };
    if file.columns.is_empty() {
        return Err("it has no columns".into());
    }
    let mut columns: Vec<Column> = Vec::with_capacity(file.columns.len());
    for column_file in &file.columns {
        let column = compile_column(column_file)
            .map_err(|problem| format!("column {:?}: {problem}", column_file.name))?;
        if columns.iter().any(|c| c.name == column.name) {
            return Err(format!("column {:?} appears twice", column.name));
        }
        columns.push(column);
    }
    if !columns
        .iter()
        .any(|c| matches!(c.source, ColumnSource::Body(_)))
    {
        return Err("no column reads the body (`from`): every event would look alike".into());
    }
    let check_order = (0..columns.len())
        .filter(|&i| columns[i].required)
        .chain((0..columns.len()).filter(|&i| !columns[i].required))
        .collect();
    let partition = match &file.partition {
        Some(partition) => Some(partitioning(partition, &columns)?),
        None => None,
    };
    let (names_contract, fields_by_source) = quarantine_naming(file.quarantine.as_ref())?;
    if fields_by_source {
        for column in &mut columns {
            if let ColumnSource::Body(pointer) = &column.source {
                column.quarantine_field = pointer.trim_start_matches('/').to_string();
            }
        }
    }
    Ok(Contract {
        quarantine_contract: names_contract.then(|| name.clone()),
        name,
        version: file.version,
        table,
        route,
        columns,
        check_order,
        partition,
    })
}

/// `quarantine:`: whether entries name the contract, and whether they name
/// the body field at fault instead of the column.
fn quarantine_naming(file: Option<&QuarantineFile>) -> Result<(bool, bool), String> {
    let Some(file) = file else {
        return Ok((true, false));
    };
    let names_contract = match file.contract.as_deref() {
        None | Some("name") => true,
        Some("none") => false,
        Some(other) => return Err(format!("quarantine.contract {other:?} is not name or none")),
    };
    let by_source = match file.field.as_deref() {
        None | Some("column") => false,
        Some("source") => true,
        Some(other) => {
            return Err(format!(
                "quarantine.field {other:?} is not column or source"
            ))
        }
    };
    Ok((names_contract, by_source))
}

#[cfg(test)]
mod tests {
    use crate::contract::compile_text as compile;
    use crate::contract::testing::{refusal, HEAD};

    #[test]
    fn two_contracts_routing_the_same_bodies_are_refused() {
        let one = "contract: a\nversion: 1\nmatch: {field: /type, equals: x}\ncolumns: [{name: v, from: /v, type: text}]\n";
        let two = "contract: b\nversion: 1\nmatch: {field: /type, equals: x}\ncolumns: [{name: v, from: /v, type: text}]\n";
        assert!(refusal(&format!("{one}---\n{two}")).contains("both match"));
    }

    #[test]
    fn a_catch_all_before_another_contract_is_refused() {
        let one = "contract: a\nversion: 1\ncolumns: [{name: v, from: /v, type: text}]\n";
        let two = "contract: b\nversion: 1\nmatch: {field: /type, equals: x}\ncolumns: [{name: v, from: /v, type: text}]\n";
        assert!(refusal(&format!("{one}---\n{two}")).contains("put it last"));
    }

    #[test]
    fn one_domain_with_two_mask_kinds_is_refused() {
        let text = format!(
            "{HEAD}  - {{name: a, from: /a, type: text, pii: siv, domain: email}}\n  - {{name: b, from: /b, type: text, pii: hmac, domain: email}}\n"
        );
        assert!(refusal(&text).contains("of one kind"));
    }

    #[test]
    fn required_columns_are_checked_first_in_table_order() {
        let text = format!(
            "{HEAD}  - {{name: a, from: /a, type: text}}\n  - {{name: b, from: /b, type: text, required: true}}\n  - {{name: c, from: /c, type: text, required: true}}\n"
        );
        let plan = compile(&text).unwrap();
        assert_eq!(plan.contracts[0].check_order, [1, 2, 0]);
    }
}
