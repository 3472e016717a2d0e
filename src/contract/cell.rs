//! A checked value of one column, as the parser makes it and the writer
//! binds it, and the text Postgres reads it from.

use chrono::{DateTime, NaiveDate, Utc};

/// One column's checked value, before masking.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// NULL.
    Null,
    /// A text (also a canonical IP, a lower-case uuid, a mask).
    Text(String),
    /// An integer or bigint (also a version's major number).
    Integer(i64),
    /// A numeric, as its exact JSON text.
    Numeric(String),
    /// A boolean.
    Boolean(bool),
    /// A date.
    Date(NaiveDate),
    /// A timestamp.
    Timestamp(DateTime<Utc>),
    /// A JSON value, as its text.
    Json(String),
}

impl Cell {
    /// The text Postgres reads the value from (every column is sent as
    /// text and cast to its type in the batch SQL).
    pub fn sql_text(&self) -> Option<String> {
        match self {
            Cell::Null => None,
            Cell::Text(text) | Cell::Numeric(text) | Cell::Json(text) => Some(text.clone()),
            Cell::Integer(number) => Some(itoa::Buffer::new().format(*number).to_string()),
            Cell::Boolean(flag) => Some(flag.to_string()),
            Cell::Date(date) => Some(date_text(*date)),
            Cell::Timestamp(time) => Some(time.to_rfc3339()),
        }
    }

    /// The text Postgres reads the value from, borrowed where the cell
    /// holds it as text (the writer's arrays, without a copy per cell).
    pub fn sql_text_ref(&self) -> Option<std::borrow::Cow<'_, str>> {
        match self {
            Cell::Text(text) | Cell::Numeric(text) | Cell::Json(text) => {
                Some(std::borrow::Cow::Borrowed(text))
            }
            other => other.sql_text().map(std::borrow::Cow::Owned),
        }
    }

    /// The text a mask is made of.
    pub fn mask_input(&self) -> Option<std::borrow::Cow<'_, str>> {
        self.sql_text_ref()
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        match self {
            Cell::Text(text) | Cell::Numeric(text) | Cell::Json(text) => text.len(),
            _ => 0,
        }
    }
}

/// `YYYY-MM-DD`, written digit by digit: chrono's `format` parses its
/// pattern on every call, and `format!` with widths is not much cheaper
/// (together a third of the contract path's extra cost on login events).
fn date_text(date: NaiveDate) -> String {
    use chrono::Datelike;
    let (year, month, day) = (date.year(), date.month(), date.day());
    if !(0..=9999).contains(&year) {
        return date.to_string();
    }
    let mut text = String::with_capacity(10);
    let mut digits = |value: u32, width: u32| {
        for place in (0..width).rev() {
            let digit = (value / 10u32.pow(place)) % 10;
            text.push(char::from(b'0' + digit as u8));
        }
    };
    digits(year as u32, 4);
    digits(month, 2);
    digits(day, 2);
    text.insert(4, '-');
    text.insert(7, '-');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_integers_are_written_as_postgres_reads_them() {
        for (y, m, d) in [(2026, 12, 4), (1, 1, 1), (9999, 12, 31), (1985, 2, 3)] {
            let date = NaiveDate::from_ymd_opt(y, m, d).unwrap();
            assert_eq!(date_text(date), date.format("%Y-%m-%d").to_string());
        }
        assert_eq!(Cell::Integer(-42).sql_text().as_deref(), Some("-42"));
    }
}
