//! The contract file as written: YAML, one contract per document (a file may
//! hold several, separated by `---`), read into these `deny_unknown_fields`
//! types so that a misspelt key is an error with its line and column, never
//! silently ignored. Nothing here is checked beyond its shape; `plan`
//! checks the meaning and compiles it.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::ConfigError;

/// One contract: an event type, the table it lands in, and its columns.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContractFile {
    /// The contract's name (also the table's name when `table` is unset).
    pub contract: String,
    /// The contract's version; a new version may add nullable columns.
    pub version: u32,
    /// The table, optionally schema-qualified (`analytics.signups`).
    #[serde(default)]
    pub table: Option<String>,
    /// Routing: this contract takes the bodies whose `field` equals `equals`.
    #[serde(default, rename = "match")]
    pub match_rule: Option<MatchRule>,
    /// A free description for people.
    #[serde(default)]
    pub description: Option<String>,
    /// Range partitions of the table on a date column, kept by
    /// `veil maintain` (optional; a table is never partitioned after the
    /// fact).
    #[serde(default)]
    pub partition: Option<PartitionFile>,
    /// How this contract's quarantine entries name it and the value at
    /// fault (optional; the defaults name the contract and the column).
    #[serde(default)]
    pub quarantine: Option<QuarantineFile>,
    /// The columns of the table, in order.
    pub columns: Vec<ColumnFile>,
}

/// `quarantine: {contract: none, field: source}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuarantineFile {
    /// `name` (default): `veil.quarantine.contract` holds the contract's
    /// name; `none`: it stays NULL.
    #[serde(default)]
    pub contract: Option<String>,
    /// `column` (default): `veil.quarantine.field` names the column at
    /// fault; `source`: the body field it reads (its pointer without the
    /// leading `/`), or the column for one read from SQS.
    #[serde(default)]
    pub field: Option<String>,
}

/// `partition: {by: signed_up_on, every: month, retention_months: 24}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionFile {
    /// The column partitioned on: a `date` column every row has.
    pub by: String,
    /// The width of a partition: `month` or `day`.
    pub every: String,
    /// `veil maintain` drops partitions older than this many months
    /// (default: keep every row).
    #[serde(default)]
    pub retention_months: Option<u32>,
}

/// `match: {field: /type, equals: signup}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchRule {
    /// A JSON pointer into the body.
    pub field: String,
    /// The text the value there must equal.
    pub equals: String,
}

/// One column as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnFile {
    /// The column's name in the table.
    pub name: String,
    /// Where the value comes from: an RFC 6901 JSON pointer into the body.
    #[serde(default)]
    pub from: Option<String>,
    /// ...or an SQS fact: `message_id`, `sent_timestamp`.
    #[serde(default)]
    pub sqs: Option<String>,
    /// The value's type (see `plan::ColumnType`).
    #[serde(rename = "type")]
    pub type_name: String,
    /// Absent, null or empty is `missing_field` (default false: NULL).
    #[serde(default)]
    pub required: bool,
    /// Accept a value of another JSON type that converts exactly (a digit
    /// string for an integer, a number for a text).
    #[serde(default)]
    pub coerce: bool,
    /// lowercase | trim | none (default none).
    #[serde(default)]
    pub normalize: Option<String>,
    /// Most characters of the value (after normalization).
    #[serde(default)]
    pub max_chars: Option<usize>,
    /// Most bytes (UTF-8) of the value (after normalization).
    #[serde(default)]
    pub max_bytes: Option<usize>,
    /// A regular expression the whole value must match.
    #[serde(default)]
    pub pattern: Option<String>,
    /// The only values allowed.
    #[serde(default, rename = "enum")]
    pub allowed: Option<Vec<String>>,
    /// Smallest number allowed (integer, bigint, numeric).
    #[serde(default)]
    pub min: Option<f64>,
    /// Largest number allowed.
    #[serde(default)]
    pub max: Option<f64>,
    /// siv | hmac | ipcrypt-pfx: the column holds a mask, never the value.
    #[serde(default)]
    pub pii: Option<String>,
    /// Masks of one domain compare equal across columns and contracts
    /// (default: the column's name).
    #[serde(default)]
    pub domain: Option<String>,
    /// Sample values for `veil seed` (needed where a `pattern` makes
    /// generated values unlikely to pass).
    #[serde(default)]
    pub examples: Option<Vec<String>>,
    /// The column's SQL type, when the default derived from `type` will
    /// not do (`varchar(64)`, `text`).
    #[serde(default)]
    pub sql_type: Option<String>,
    /// A free description for people.
    #[serde(default)]
    pub description: Option<String>,
}

/// A contract file's text with where it came from, for error messages.
pub struct Source {
    /// The file (or `built-in` for the login contract).
    pub origin: String,
    /// Its text.
    pub text: String,
}

/// Reads a contract file, or every `*.yaml`/`*.yml` file of a directory in
/// name order.
pub fn read_sources(path: &Path) -> Result<Vec<Source>, ConfigError> {
    let metadata = std::fs::metadata(path).map_err(|error| {
        ConfigError(format!(
            "--contract {}: {error}. Give a contract file or a directory of them \
             (examples/contracts/ has some; `veil contract show` prints the built-in one)",
            path.display()
        ))
    })?;
    let files: Vec<PathBuf> = if metadata.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|error| ConfigError(format!("--contract {}: {error}", path.display())))?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|file| {
                matches!(
                    file.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml")
                )
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(ConfigError(format!(
                "--contract {}: the directory holds no *.yaml or *.yml file",
                path.display()
            )));
        }
        files
    } else {
        vec![path.to_path_buf()]
    };
    files
        .into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(&file)
                .map_err(|error| ConfigError(format!("contract {}: {error}", file.display())))?;
            Ok(Source {
                origin: file.display().to_string(),
                text,
            })
        })
        .collect()
}

/// The contracts of one file's text: each YAML document is one contract.
pub fn parse_documents(source: &Source) -> Result<Vec<ContractFile>, ConfigError> {
    let contracts: Vec<ContractFile> = serde_saphyr::from_multiple(&source.text)
        .map_err(|error| ConfigError(format!("contract {}: {error}", source.origin)))?;
    if contracts.is_empty() {
        return Err(ConfigError(format!(
            "contract {}: no contract in the file (it needs at least `contract`, `version` and `columns`)",
            source.origin
        )));
    }
    Ok(contracts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str) -> Source {
        Source {
            origin: "test.yaml".into(),
            text: text.into(),
        }
    }

    #[test]
    fn a_misspelt_key_is_refused_with_its_place() {
        let error = parse_documents(&source(
            "contract: a\nversion: 1\ncolumns:\n  - name: x\n    type: text\n    requried: true\n",
        ))
        .unwrap_err();
        let text = error.to_string();
        assert!(text.contains("requried"), "{text}");
        assert!(text.contains("test.yaml"), "{text}");
        assert!(text.contains('6'), "names the line: {text}");
    }

    #[test]
    fn several_documents_are_several_contracts() {
        let contracts = parse_documents(&source(
            "contract: a\nversion: 1\ncolumns: []\n---\ncontract: b\nversion: 2\ncolumns: []\n",
        ))
        .unwrap();
        let names: Vec<&str> = contracts.iter().map(|c| c.contract.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
    }
}
