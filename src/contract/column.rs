//! One column of a contract, checked: where its value comes from, its type
//! and rules, how its cells travel to Postgres (`Bind`) and its SQL type. A
//! rule on the wrong type, a source of the wrong kind or an SQL type that
//! could end the statement it is written into is refused here.

use regex::Regex;

use super::format::ColumnFile;
use super::pii::{mask_chars, pii_of, MaskKind, Pii, DEFAULT_SIV_MAX_BYTES};
use super::plan::{identifier, pointer};

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

pub(super) fn compile_column(file: &ColumnFile) -> Result<Column, String> {
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
    use crate::contract::compile_text as compile;
    use crate::contract::testing::{refusal, HEAD};

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
}
