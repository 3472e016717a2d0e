//! The compiled contract: what the parser, the masks, the writer and the
//! commands use. `compile` is the one place a contract file's meaning is
//! checked; it refuses unsafe or contradictory choices (a PII-looking
//! column without a mask, a mask column too narrow for its mask, a `date`
//! from a non-date source, two contracts that route the same bodies) with
//! a message naming the contract, the column and the fix.

use regex::Regex;

use super::extract::Paths;
use super::format::{ColumnFile, ContractFile, PartitionFile, QuarantineFile};
use crate::error::ConfigError;
use crate::keyring::MAX_KEY_ID_CHARS;

/// Longest plaintext (bytes) of an AES-SIV column when the contract gives
/// no `max_bytes`: its mask then fits varchar(256) with any key id.
pub const DEFAULT_SIV_MAX_BYTES: usize = crate::mask::MAX_MASKED_VALUE_BYTES;

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

/// `partition:` of a contract: its table is partitioned by range on a
/// date column, one partition per month or day, kept by `veil maintain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partitioning {
    /// The date column partitioned on.
    pub column: String,
    /// The width of a partition.
    pub every: Granularity,
    /// Partitions older than this many months are dropped (None: kept).
    pub retention_months: Option<u32>,
}

/// The width of a date partition (`user_logins` with `veil migrate
/// --partition-by`, a contract's `partition.every`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Granularity {
    /// One partition per calendar month.
    Month,
    /// One partition per UTC day.
    Day,
}

impl Granularity {
    /// Its name (`month`, `day`), as in the contract file, `--partition-by`
    /// and the table's comment.
    pub fn name(self) -> &'static str {
        match self {
            Granularity::Month => "month",
            Granularity::Day => "day",
        }
    }
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

/// One column, checked.
#[derive(Debug, Clone)]
pub struct Column {
    /// Its name in the table.
    pub name: String,
    /// Where its value comes from.
    pub source: ColumnSource,
    /// The value's type.
    pub column_type: ColumnType,
    /// Absent, null or empty is `missing_field`.
    pub required: bool,
    /// Accept another JSON type that converts exactly.
    pub coerce: bool,
    /// What is done to a text before its checks.
    pub normalize: Normalize,
    /// Most characters.
    pub max_chars: Option<usize>,
    /// Most UTF-8 bytes.
    pub max_bytes: Option<usize>,
    /// The whole value must match.
    pub pattern: Option<Regex>,
    /// The only values allowed.
    pub allowed: Option<Vec<String>>,
    /// Smallest number allowed.
    pub min: Option<f64>,
    /// Largest number allowed.
    pub max: Option<f64>,
    /// The mask, for a PII column.
    pub pii: Option<Pii>,
    /// The column's SQL type.
    pub sql_type: String,
    /// Sample values for `veil seed`.
    pub examples: Vec<String>,
    /// Where `Paths::extract` puts the value of a `from` column.
    pub slot: Option<usize>,
    /// Another column of its contract reads the same pointer.
    pub shares_slot: bool,
    /// What a rejection of this column puts in `veil.quarantine.field`:
    /// its name, or the body field it reads (`quarantine: {field: source}`).
    pub quarantine_field: String,
}

/// How a column's cells travel to Postgres: each kind is an array
/// parameter of its own type, so numbers and dates go as binary values,
/// not as text to be parsed again (everything else goes as text, cast to
/// the column's type in SQL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bind {
    /// text[]: texts, masks, and every type Postgres casts from text.
    Text,
    /// int8[]: integers, bigints, versions' major numbers, SQS times in ms.
    Bigint,
    /// date[].
    Date,
    /// bool[].
    Boolean,
    /// timestamptz[].
    Timestamp,
}

impl Column {
    /// How this column's cells are bound (a mask is always a text).
    pub fn bind(&self) -> Bind {
        if self.pii.is_some() {
            return Bind::Text;
        }
        match self.column_type {
            ColumnType::Integer | ColumnType::Bigint | ColumnType::VersionMajor => Bind::Bigint,
            ColumnType::Date => Bind::Date,
            ColumnType::Boolean => Bind::Boolean,
            ColumnType::Timestamptz => Bind::Timestamp,
            ColumnType::Text
            | ColumnType::Numeric
            | ColumnType::Uuid
            | ColumnType::Ip
            | ColumnType::Jsonb => Bind::Text,
        }
    }
}

/// Where a column's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnSource {
    /// An RFC 6901 JSON pointer into the body.
    Body(String),
    /// The SQS message id.
    MessageId,
    /// The SQS SentTimestamp.
    SentTimestamp,
    /// The SQS ApproximateFirstReceiveTimestamp (the same on every delivery).
    FirstReceiveTimestamp,
    /// A message attribute (String or Number), read as text; numbers,
    /// booleans and dates convert as with `coerce`.
    Attribute(String),
}

/// A column's value type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// A JSON string.
    Text,
    /// A JSON integer within int4.
    Integer,
    /// A JSON integer within int8.
    Bigint,
    /// Any JSON number.
    Numeric,
    /// true or false.
    Boolean,
    /// "YYYY-MM-DD", or the UTC date of an SQS timestamp.
    Date,
    /// RFC 3339, or an SQS timestamp.
    Timestamptz,
    /// A UUID string, stored lower-case.
    Uuid,
    /// An IPv4 or IPv6 address, canonicalized.
    Ip,
    /// The first number of a dotted version ("2.3.0" -> 2).
    VersionMajor,
    /// Any JSON value but null, stored as it is.
    Jsonb,
}

impl ColumnType {
    /// Every type with its name in the contract file.
    pub const ALL: [(ColumnType, &'static str); 11] = [
        (ColumnType::Text, "text"),
        (ColumnType::Integer, "integer"),
        (ColumnType::Bigint, "bigint"),
        (ColumnType::Numeric, "numeric"),
        (ColumnType::Boolean, "boolean"),
        (ColumnType::Date, "date"),
        (ColumnType::Timestamptz, "timestamptz"),
        (ColumnType::Uuid, "uuid"),
        (ColumnType::Ip, "ip"),
        (ColumnType::VersionMajor, "version_major"),
        (ColumnType::Jsonb, "jsonb"),
    ];

    /// The name in the contract file.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(t, _)| *t == self)
            .map_or("text", |(_, name)| name)
    }

    fn of_name(name: &str) -> Option<ColumnType> {
        Self::ALL.iter().find(|(_, n)| *n == name).map(|(t, _)| *t)
    }

    fn is_number(self) -> bool {
        matches!(
            self,
            ColumnType::Integer | ColumnType::Bigint | ColumnType::Numeric
        )
    }

    /// The SQL type of an unmasked column.
    fn default_sql_type(self, max_chars: Option<usize>) -> String {
        match self {
            ColumnType::Text => max_chars.map_or("text".to_string(), |n| format!("varchar({n})")),
            ColumnType::Integer | ColumnType::VersionMajor => "integer".into(),
            ColumnType::Bigint => "bigint".into(),
            ColumnType::Numeric => "numeric".into(),
            ColumnType::Boolean => "boolean".into(),
            ColumnType::Date => "date".into(),
            ColumnType::Timestamptz => "timestamptz".into(),
            ColumnType::Uuid => "uuid".into(),
            ColumnType::Ip => "inet".into(),
            ColumnType::Jsonb => "jsonb".into(),
        }
    }
}

/// What is done to a text before it is checked and stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalize {
    /// Nothing.
    None,
    /// Lower-cased (Unicode).
    Lowercase,
    /// Leading and trailing white space removed.
    Trim,
}

/// How a PII column is masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskKind {
    /// AES-SIV: deterministic, reversible with the key.
    Siv,
    /// HMAC-SHA256: deterministic, irreversible.
    Hmac,
    /// ipcrypt-pfx: deterministic, reversible, prefix-preserving (IP only).
    Pfx,
}

/// A PII column's mask: its kind and the domain bound into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pii {
    /// AES-SIV or HMAC.
    pub kind: MaskKind,
    /// Masks of one domain compare equal across columns and contracts.
    pub domain: String,
    /// `veil/<domain>/v1`: the associated data (AES-SIV) or label (HMAC).
    pub associated_data: Vec<u8>,
}

/// Words that, in a column's name or its pointer's last part, say the
/// value is personal data: such a column needs `pii`, or `pii: none` to
/// store it in clear on purpose.
const PII_WORDS: [&str; 16] = [
    "email",
    "phone",
    "ip",
    "ip_address",
    "ssn",
    "device_id",
    "address",
    "street",
    "first_name",
    "last_name",
    "full_name",
    "birth_date",
    "date_of_birth",
    "card_number",
    "iban",
    "passport",
];

/// The longest mask of a value of `max_bytes` bytes (any key id).
pub fn mask_chars(kind: MaskKind, max_bytes: usize) -> usize {
    let header = crate::mask::SIV_PREFIX
        .len()
        .max(crate::mask::HMAC_PREFIX.len())
        + MAX_KEY_ID_CHARS
        + 2;
    match kind {
        // base64url without padding of the 16-byte tag and the ciphertext
        MaskKind::Siv => header + (16 + max_bytes).div_ceil(3) * 4,
        MaskKind::Hmac => header + 43,
        // the longest canonical IPv6 text
        MaskKind::Pfx => header + 39,
    }
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

/// The name of a mask kind in the contract file.
pub fn kind_name(kind: MaskKind) -> &'static str {
    match kind {
        MaskKind::Siv => "siv",
        MaskKind::Hmac => "hmac",
        MaskKind::Pfx => "ipcrypt-pfx",
    }
}

/// A plain SQL identifier: lower-case letters, digits, underscores, not
/// starting with a digit, at most 63 bytes (Postgres truncates longer ones).
fn is_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        && text.len() <= 63
}

fn identifier(what: &str, text: &str) -> Result<String, String> {
    if is_identifier(text) {
        Ok(text.to_string())
    } else {
        Err(format!(
            "{what} {text:?} is not a plain SQL identifier: use lower-case letters, digits and _ \
             (at most 63), starting with a letter"
        ))
    }
}

fn pointer(what: &str, text: &str) -> Result<String, String> {
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

/// Whether every row has a value in `column`: it is required, or an SQS
/// timestamp.
fn always_there(column: &Column) -> bool {
    column.required
        || matches!(
            column.source,
            ColumnSource::SentTimestamp | ColumnSource::FirstReceiveTimestamp
        )
}

/// `partition:`: on a `date` column every row has (a row without one would
/// sit in the default partition, which retention never drops).
fn partitioning(file: &PartitionFile, columns: &[Column]) -> Result<Partitioning, String> {
    let every = match file.every.as_str() {
        "month" => Granularity::Month,
        "day" => Granularity::Day,
        other => return Err(format!("partition.every {other:?} is not month or day")),
    };
    let Some(column) = columns.iter().find(|c| c.name == file.by) else {
        let dates: Vec<&str> = columns
            .iter()
            .filter(|c| c.column_type == ColumnType::Date)
            .map(|c| c.name.as_str())
            .collect();
        return Err(format!(
            "partition.by {:?} is not one of its columns; its date columns: {}",
            file.by,
            if dates.is_empty() {
                "none".to_string()
            } else {
                dates.join(", ")
            }
        ));
    };
    if column.column_type != ColumnType::Date || column.sql_type != "date" {
        return Err(format!(
            "partition.by {:?} is a {} column; partitions are ranges of dates, so it must be `type: date`",
            column.name, column.sql_type
        ));
    }
    if !always_there(column) {
        return Err(format!(
            "partition.by {:?} may be missing, and rows without a date would stay in the default \
             partition, never dropped: make it `required: true`, or take it from `sqs: sent_timestamp`",
            column.name
        ));
    }
    if file.retention_months == Some(0) {
        return Err(
            "partition.retention_months 0 would drop this month's partition: use 1 or more, or leave it out to keep every row"
                .into(),
        );
    }
    Ok(Partitioning {
        column: column.name.clone(),
        every,
        retention_months: file.retention_months,
    })
}

fn compile_column(file: &ColumnFile) -> Result<Column, String> {
    let name = identifier("the name", &file.name)?;
    let column_type = ColumnType::of_name(&file.type_name).ok_or_else(|| {
        let names: Vec<&str> = ColumnType::ALL.iter().map(|(_, n)| *n).collect();
        format!(
            "type {:?} is not one of {}",
            file.type_name,
            names.join(", ")
        )
    })?;
    let source = source_of(file, column_type)?;
    let normalize = match file.normalize.as_deref() {
        None | Some("none") => Normalize::None,
        Some("lowercase") => Normalize::Lowercase,
        Some("trim") => Normalize::Trim,
        Some(other) => {
            return Err(format!(
                "normalize {other:?} is not one of lowercase, trim, none"
            ))
        }
    };
    let text_only = |key: &str, set: bool| -> Result<(), String> {
        if set && column_type != ColumnType::Text {
            Err(format!(
                "`{key}` applies to text columns only (this one is {})",
                column_type.name()
            ))
        } else {
            Ok(())
        }
    };
    text_only("normalize", normalize != Normalize::None)?;
    text_only("pattern", file.pattern.is_some())?;
    text_only("enum", file.allowed.is_some())?;
    if (file.max_chars.is_some() || file.max_bytes.is_some())
        && !matches!(column_type, ColumnType::Text | ColumnType::Jsonb)
    {
        return Err(format!(
            "`max_chars`/`max_bytes` apply to text and jsonb columns (this one is {})",
            column_type.name()
        ));
    }
    if (file.min.is_some() || file.max.is_some()) && !column_type.is_number() {
        return Err(format!(
            "`min`/`max` apply to integer, bigint and numeric columns (this one is {})",
            column_type.name()
        ));
    }
    if let (Some(min), Some(max)) = (file.min, file.max) {
        if min > max {
            return Err(format!("min {min} is above max {max}: no value could pass"));
        }
    }
    if file.coerce && !matches!(source, ColumnSource::Body(_)) {
        return Err("`coerce` applies to values read from the body".into());
    }
    let pattern = match &file.pattern {
        Some(text) => Some(
            Regex::new(&format!("^(?:{text})$")).map_err(|error| format!("pattern: {error}"))?,
        ),
        None => None,
    };
    let pii = pii_of(file, &name, column_type)?;
    let max_bytes = match (&pii, file.max_bytes) {
        (
            Some(Pii {
                kind: MaskKind::Siv,
                ..
            }),
            None,
        ) if column_type == ColumnType::Text => Some(DEFAULT_SIV_MAX_BYTES),
        (_, max_bytes) => max_bytes,
    };
    let sql_type = sql_type_of(file, column_type, pii.as_ref(), max_bytes)?;
    Ok(Column {
        source,
        column_type,
        required: file.required,
        coerce: file.coerce,
        normalize,
        max_chars: file.max_chars,
        max_bytes,
        pattern,
        allowed: file.allowed.clone(),
        min: file.min,
        max: file.max,
        pii,
        sql_type,
        examples: file.examples.clone().unwrap_or_default(),
        slot: None,
        shares_slot: false,
        quarantine_field: name.clone(),
        name,
    })
}

fn source_of(file: &ColumnFile, column_type: ColumnType) -> Result<ColumnSource, String> {
    const FACTS: &str =
        "message_id, sent_timestamp, approximate_first_receive_timestamp, attribute:<name>";
    let source = match (&file.from, &file.sqs) {
        (Some(from), None) => ColumnSource::Body(pointer("from", from)?),
        (None, Some(fact)) => match fact.as_str() {
            "message_id" => ColumnSource::MessageId,
            "sent_timestamp" => ColumnSource::SentTimestamp,
            "approximate_first_receive_timestamp" => ColumnSource::FirstReceiveTimestamp,
            other => match other.strip_prefix("attribute:") {
                Some(name) if !name.is_empty() => ColumnSource::Attribute(name.to_string()),
                _ => return Err(format!("sqs {other:?} is not one of {FACTS}")),
            },
        },
        (Some(_), Some(_)) => return Err("give either `from` (the body) or `sqs`, not both".into()),
        (None, None) => {
            return Err(format!(
                "give `from` (a JSON pointer into the body) or `sqs` ({FACTS})"
            ))
        }
    };
    let timestamp = matches!(
        column_type,
        ColumnType::Date | ColumnType::Timestamptz | ColumnType::Bigint
    );
    let fits = match source {
        ColumnSource::Body(_) => true,
        ColumnSource::Attribute(_) => column_type != ColumnType::Jsonb,
        ColumnSource::MessageId => column_type == ColumnType::Text,
        ColumnSource::SentTimestamp | ColumnSource::FirstReceiveTimestamp => timestamp,
    };
    if !fits {
        return Err(format!(
            "a {} cannot come from sqs {}: message_id is text; the timestamps are date, timestamptz \
             or bigint (ms); an attribute is any type but jsonb",
            column_type.name(),
            file.sqs.as_deref().unwrap_or_default()
        ));
    }
    let read = matches!(source, ColumnSource::Body(_) | ColumnSource::Attribute(_));
    if file.required && !read {
        return Err(
            "`required` applies to values read from the body or an attribute (SQS always gives these)"
                .into(),
        );
    }
    Ok(source)
}

fn pii_of(file: &ColumnFile, name: &str, column_type: ColumnType) -> Result<Option<Pii>, String> {
    let kind = match file.pii.as_deref() {
        Some("siv") => MaskKind::Siv,
        Some("hmac") => MaskKind::Hmac,
        Some("ipcrypt-pfx") if column_type == ColumnType::Ip => MaskKind::Pfx,
        Some("ipcrypt-pfx") => {
            return Err(format!(
                "pii ipcrypt-pfx masks IP addresses only (this column is {}): use siv or hmac",
                column_type.name()
            ))
        }
        Some("none") => {
            if file.domain.is_some() {
                return Err(
                    "`domain` names a mask's domain, but `pii: none` stores the value in clear"
                        .into(),
                );
            }
            return Ok(None);
        }
        Some(other) => {
            return Err(format!(
                "pii {other:?} is not one of siv, hmac, ipcrypt-pfx, none"
            ))
        }
        None => {
            if file.domain.is_some() {
                return Err("`domain` without `pii`: say how to mask it (pii: siv or hmac)".into());
            }
            if let Some(word) = looks_like_pii(name, file.from.as_deref()) {
                return Err(format!(
                    "it looks like personal data ({word:?}) but has no mask: add `pii: siv` (reversible) or \
                     `pii: hmac` (irreversible), or `pii: none` to store it in clear on purpose"
                ));
            }
            return Ok(None);
        }
    };
    if matches!(
        column_type,
        ColumnType::Boolean | ColumnType::Jsonb | ColumnType::VersionMajor
    ) {
        return Err(format!(
            "a {} column cannot be masked (a boolean has two values, a jsonb no one text): \
             point `from` at the PII leaf instead",
            column_type.name()
        ));
    }
    let domain = identifier("the domain", file.domain.as_deref().unwrap_or(name))?;
    let associated_data = format!("veil/{domain}/v1").into_bytes();
    Ok(Some(Pii {
        kind,
        domain,
        associated_data,
    }))
}

fn looks_like_pii(name: &str, from: Option<&str>) -> Option<&'static str> {
    let leaf = from
        .and_then(|p| p.rsplit('/').next())
        .unwrap_or_default()
        .to_ascii_lowercase();
    PII_WORDS.iter().copied().find(|word| {
        let in_name = name == *word
            || name.ends_with(&format!("_{word}"))
            || name.starts_with(&format!("{word}_"));
        in_name || leaf == *word
    })
}

/// A type name such as `varchar(64)`, `numeric(12, 2)`, `double precision`:
/// nothing that could end the statement it is written into.
fn is_plain_sql_type(text: &str) -> bool {
    let (name, modifier) = match text.split_once('(') {
        Some((name, rest)) => (name, Some(rest)),
        None => (text, None),
    };
    let name_ok = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == ' ');
    let modifier_ok = modifier.is_none_or(|rest| {
        rest.strip_suffix(')').is_some_and(|inner| {
            !inner.is_empty()
                && inner
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == ',' || c == ' ')
        })
    });
    name_ok && modifier_ok && text.len() <= 64
}

fn sql_type_of(
    file: &ColumnFile,
    column_type: ColumnType,
    pii: Option<&Pii>,
    max_bytes: Option<usize>,
) -> Result<String, String> {
    if let Some(sql_type) = &file.sql_type {
        if !is_plain_sql_type(sql_type) {
            return Err(format!(
                "sql_type {sql_type:?} is not a plain SQL type name (letters, digits, _, spaces, \
                 and an optional (n) or (p, s)): it goes into CREATE TABLE as written"
            ));
        }
    }
    let Some(pii) = pii else {
        return Ok(file
            .sql_type
            .clone()
            .unwrap_or_else(|| column_type.default_sql_type(file.max_chars)));
    };
    let sql_type = file
        .sql_type
        .clone()
        .unwrap_or_else(|| "varchar(256)".to_string());
    let longest = match (pii.kind, column_type) {
        (MaskKind::Hmac, _) => mask_chars(MaskKind::Hmac, 0),
        (MaskKind::Pfx, _) => mask_chars(MaskKind::Pfx, 0),
        (MaskKind::Siv, ColumnType::Text) => {
            mask_chars(MaskKind::Siv, max_bytes.unwrap_or(DEFAULT_SIV_MAX_BYTES))
        }
        // canonical IPv6 text is at most 39 bytes; a uuid 36; numbers and dates are short
        (MaskKind::Siv, _) => mask_chars(MaskKind::Siv, 40),
    };
    let width = if sql_type == "text" || sql_type == "varchar" {
        usize::MAX
    } else {
        sql_type
            .strip_prefix("varchar(")
            .and_then(|rest| rest.strip_suffix(')'))
            .and_then(|n| n.trim().parse::<usize>().ok())
            .ok_or_else(|| format!("sql_type {sql_type:?}: a mask column is varchar(N) or text"))?
    };
    if width < longest {
        return Err(format!(
            "sql_type {sql_type} is too narrow for its mask: a value of {} bytes gives masks of up to {longest} \
             characters; widen it to varchar({longest}) or lower max_bytes",
            max_bytes.unwrap_or(DEFAULT_SIV_MAX_BYTES)
        ));
    }
    Ok(sql_type)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::format::{parse_documents, Source};

    fn compile(text: &str) -> Result<Plan, ConfigError> {
        let source = Source {
            origin: "t.yaml".into(),
            text: text.into(),
        };
        let files = parse_documents(&source)?
            .into_iter()
            .map(|f| ("t.yaml".to_string(), f))
            .collect::<Vec<_>>();
        Plan::compile(&files)
    }

    fn refusal(text: &str) -> String {
        compile(text).unwrap_err().to_string()
    }

    const HEAD: &str = "contract: signups\nversion: 1\ncolumns:\n";

    #[test]
    fn a_pii_looking_column_without_a_mask_is_refused() {
        let text = format!("{HEAD}  - {{name: email, from: /user/email, type: text}}\n");
        assert!(refusal(&text).contains("pii: siv"), "{}", refusal(&text));
        let explicit =
            format!("{HEAD}  - {{name: email, from: /user/email, type: text, pii: none}}\n");
        assert!(compile(&explicit).is_ok());
    }

    #[test]
    fn a_mask_column_too_narrow_for_its_mask_is_refused() {
        let text = format!("{HEAD}  - {{name: masked_email, from: /email, type: text, pii: siv, sql_type: varchar(64)}}\n");
        let problem = refusal(&text);
        assert!(
            problem.contains("too narrow") && problem.contains("masked_email"),
            "{problem}"
        );
    }

    #[test]
    fn a_date_from_a_non_date_source_is_refused() {
        let text = format!("{HEAD}  - {{name: a, from: /a, type: text}}\n  - {{name: d, sqs: message_id, type: date}}\n");
        assert!(refusal(&text).contains("cannot come from sqs message_id"));
    }

    #[test]
    fn partitions_go_on_a_date_column_every_row_has() {
        let columns = "columns:\n  - {name: id, from: /id, type: text}\n  \
                       - {name: on_day, from: /day, type: date}\n  \
                       - {name: sent_on, sqs: sent_timestamp, type: date}\n";
        let with =
            |partition: &str| format!("contract: t\nversion: 1\npartition: {partition}\n{columns}");
        let plan = compile(&with("{by: sent_on, every: day, retention_months: 3}")).unwrap();
        assert_eq!(
            plan.contracts[0].partition,
            Some(Partitioning {
                column: "sent_on".into(),
                every: Granularity::Day,
                retention_months: Some(3)
            })
        );
        for (partition, says) in [
            ("{by: on_day, every: month}", "make it `required: true`"),
            ("{by: id, every: month}", "must be `type: date`"),
            (
                "{by: nope, every: month}",
                "its date columns: on_day, sent_on",
            ),
            ("{by: sent_on, every: week}", "not month or day"),
            (
                "{by: sent_on, every: month, retention_months: 0}",
                "use 1 or more",
            ),
            ("{by: sent_on, every: month, keep: 3}", "unknown field"),
        ] {
            let problem = refusal(&with(partition));
            assert!(problem.contains(says), "{partition}: {problem}");
        }
    }

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
    fn rules_on_the_wrong_type_are_refused() {
        for column in [
            "{name: n, from: /n, type: integer, pattern: 'a+'}",
            "{name: n, from: /n, type: text, min: 1}",
            "{name: n, from: /n, type: integer, min: 5, max: 1}",
            "{name: n, from: /n, type: jsonb, pii: siv}",
            "{name: n, from: n, type: text}",
            "{name: N, from: /n, type: text}",
            "{name: n, from: /n, type: texte}",
            "{name: n, from: /n, type: text, sql_type: 'text); drop table x; --'}",
        ] {
            assert!(
                compile(&format!("{HEAD}  - {column}\n")).is_err(),
                "{column}"
            );
        }
    }

    #[test]
    fn required_columns_are_checked_first_in_table_order() {
        let text = format!(
            "{HEAD}  - {{name: a, from: /a, type: text}}\n  - {{name: b, from: /b, type: text, required: true}}\n  - {{name: c, from: /c, type: text, required: true}}\n"
        );
        let plan = compile(&text).unwrap();
        assert_eq!(plan.contracts[0].check_order, [1, 2, 0]);
    }

    #[test]
    fn masks_of_the_longest_value_fit_the_computed_width() {
        let keyring = crate::keyring::Keyring::generate();
        let value = "x".repeat(DEFAULT_SIV_MAX_BYTES);
        let mask = keyring.mask(crate::mask::MaskMode::Siv, b"veil/device_id/v1", &value);
        let long_id = MAX_KEY_ID_CHARS - keyring.active().id().len();
        assert!(mask.len() + long_id <= mask_chars(MaskKind::Siv, DEFAULT_SIV_MAX_BYTES));
        assert!(mask_chars(MaskKind::Siv, DEFAULT_SIV_MAX_BYTES) <= 256);
    }
}
