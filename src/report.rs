//! The end-of-run report of `veil run --until-empty`: counts, rate, and the
//! rows written, laid out the way psql prints a table. Masked values only.
//! Every cell is printed with its control characters escaped: producers
//! control `user_id`, `device_type` and `locale`, and a CR, an ESC sequence
//! or a C1 control would otherwise rewrite the operator's terminal or
//! break the table. Stored data is unchanged.

use std::fmt::Write;

use crate::pipeline::{RunReport, SampleTable};

/// The summary lines and the table of sample rows.
pub fn render(report: &RunReport) -> String {
    let mut out = String::new();
    let reasons = if report.quarantined_by_reason.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = report
            .quarantined_by_reason
            .iter()
            .map(|(reason, count)| format!("{reason}: {count}"))
            .collect();
        format!(" ({})", list.join(", "))
    };
    if report.received == 0 {
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "the queue was empty: nothing received in {:.2} s",
            report.elapsed.as_secs_f64()
        );
        return out;
    }
    let _ = writeln!(
        out,
        "received {}, written {}, quarantined {}{}, duplicates skipped {}, in {:.2} s \
         (last batch done at {:.2} s: {:.0} msg/s)",
        report.received,
        report.written,
        report.quarantined,
        reasons,
        report.duplicates,
        report.elapsed.as_secs_f64(),
        report.busy.as_secs_f64(),
        report.rate_per_sec()
    );
    if report.receive_calls > 0 {
        let _ = writeln!(
            out,
            "{} receive calls brought {:.1} messages each (10 at most)",
            report.receive_calls,
            report.received as f64 / report.receive_calls as f64
        );
    }
    if report.delete_failures > 0 {
        let _ = writeln!(
            out,
            "warning: {} recorded messages could not be deleted; they will be redelivered and skipped",
            report.delete_failures
        );
    }
    // One contract's rows need no title (the built-in login contract's
    // table looks as it always did); several are each named.
    let titled = report.samples.len() > 1;
    for table in &report.samples {
        out.push('\n');
        if titled {
            let _ = writeln!(out, "{}:", table.title);
        }
        out.push_str(&sample_table(table));
    }
    out
}

/// Rows of a contract's table as psql's aligned format prints them.
pub fn sample_table(table: &SampleTable) -> String {
    psql_table(
        &table.headers,
        &table.rows,
        &table.right_aligned,
        table.total,
    )
}

/// `text` with its control characters written out: `\r`, `\n`, `\t`, and
/// `\xNN` for the rest of C0, DEL and C1 (U+0080 to U+009F), so nothing a
/// producer sent can move the cursor, clear the screen or fake a line.
pub fn escape_control(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// C1 controls (U+0080 to U+009F) as JSON escapes; serde_json leaves them
/// raw, and a terminal obeys some of them.
pub fn escape_c1_in_json(json: &str) -> String {
    json.chars()
        .map(|c| match u32::from(c) {
            code @ 0x80..=0x9f => format!("\\u{code:04x}"),
            _ => c.to_string(),
        })
        .collect()
}

/// A table in psql's aligned format: centered headers, `right_aligned`
/// columns (numbers) flush right, and a row-count footer that says when
/// only the first rows of `total` are shown.
pub fn psql_table<H: AsRef<str>>(
    headers: &[H],
    rows: &[Vec<String>],
    right_aligned: &[usize],
    total: u64,
) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|cell| escape_control(cell).into_owned())
                .collect()
        })
        .collect();
    let rows = &rows;
    let headers: Vec<String> = headers
        .iter()
        .map(|h| escape_control(h.as_ref()).into_owned())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers
        .iter()
        .zip(&widths)
        .map(|(h, w)| format!(" {h:^w$} "))
        .collect();
    out.push_str(header.join("|").trim_end());
    out.push('\n');
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(w + 2)).collect();
    out.push_str(&rule.join("+"));
    out.push('\n');
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(column, (cell, w))| {
                if right_aligned.contains(&column) {
                    format!(" {cell:>w$} ")
                } else {
                    format!(" {cell:<w$} ")
                }
            })
            .collect();
        out.push_str(line.join("|").trim_end());
        out.push('\n');
    }
    let noun = if total == 1 { "row" } else { "rows" };
    if (rows.len() as u64) < total {
        let _ = writeln!(
            out,
            "({total} {noun}; first {} shown, see --show-rows)",
            rows.len()
        );
    } else {
        let _ = writeln!(out, "({total} {noun})");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(locale: Option<&str>) -> Vec<String> {
        [
            "u-1",
            "ios",
            "siv1.ab.cd",
            "siv1.ab.ef",
            locale.unwrap_or_default(),
            "12",
            "2026-11-24",
        ]
        .map(String::from)
        .to_vec()
    }

    fn masked_rows_table(rows: &[Vec<String>], total: u64) -> String {
        let login = crate::contract::builtin_login();
        sample_table(&SampleTable {
            title: "user_logins (contract login)".into(),
            headers: login.contracts[0]
                .columns
                .iter()
                .map(|c| c.name.clone())
                .collect(),
            right_aligned: vec![5],
            rows: rows.to_vec(),
            total,
        })
    }

    #[test]
    fn control_characters_are_written_out_and_nothing_else_changes() {
        assert_eq!(
            escape_control("a\u{1b}[2J\r\nb\tc\u{85}d\u{7f}"),
            "a\\x1b[2J\\r\\nb\\tc\\x85d\\x7f"
        );
        assert!(matches!(
            escape_control("plain ünïcödé"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(
            escape_c1_in_json("{\"body\":\"x\u{9b}31m\"}"),
            r#"{"body":"x\u009b31m"}"#
        );
        let mut evil = row(Some("RU"));
        evil[0] = "u\r\n fake | row \u{1b}[31m".into();
        let table = masked_rows_table(&[evil], 1);
        assert_eq!(table.lines().count(), 4, "{table}");
        assert!(!table.chars().any(|c| c.is_control() && c != '\n'));
    }

    #[test]
    fn table_looks_like_psql() {
        let table = masked_rows_table(&[row(Some("RU")), row(None)], 2);
        let expected = [
            " user_id | device_type | masked_ip  | masked_device_id | locale | app_version | create_date",
            "---------+-------------+------------+------------------+--------+-------------+-------------",
            " u-1     | ios         | siv1.ab.cd | siv1.ab.ef       | RU     |          12 | 2026-11-24",
            " u-1     | ios         | siv1.ab.cd | siv1.ab.ef       |        |          12 | 2026-11-24",
            "(2 rows)",
            "",
        ]
        .join("\n");
        assert_eq!(table, expected);
    }

    #[test]
    fn an_empty_drain_says_so_instead_of_a_zero_rate() {
        let report = RunReport {
            elapsed: std::time::Duration::from_millis(1_140),
            ..RunReport::default()
        };
        assert_eq!(
            render(&report),
            "the queue was empty: nothing received in 1.14 s\n"
        );
    }

    #[test]
    fn footer_says_when_rows_are_cut() {
        let table = masked_rows_table(&[row(None)], 5);
        assert!(
            table.ends_with("(5 rows; first 1 shown, see --show-rows)\n"),
            "{table}"
        );
    }
}
