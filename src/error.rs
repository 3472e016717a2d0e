//! The configuration error: what any stage raises when a setting, a flag, a
//! URL or a key file is wrong. It ends the command with exit code 2 (see
//! `outcome`). And how any error is printed: its cause chain, without the
//! data a Postgres DETAIL quotes. A leaf module, so that every layer can
//! use both.

/// A configuration problem: veil refuses to start (exit code 2). The
/// message says what is wrong and how to fix it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Another veil holds the housekeeping lock, so `veil maintain` did
/// nothing (exit code 75, EX_TEMPFAIL: try again later, or pass
/// `--wait-secs`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LockHeld(pub String);

/// An error and its causes, joined by ": " as anyhow's `{:#}` does, with
/// each Postgres error reduced to its severity, message and hint: the
/// DETAIL of a server error quotes data ("Failing row contains (...)"
/// holds user ids and masks), so it never reaches a log line or stderr.
pub fn error_chain(error: &anyhow::Error) -> String {
    let mut causes = error.chain();
    let mut text = causes.next().map(cause_text).unwrap_or_default();
    for cause in causes {
        text.push_str(": ");
        text.push_str(&cause_text(cause));
    }
    text
}

/// One error of a chain, as `error_chain` prints it.
fn cause_text(cause: &(dyn std::error::Error + 'static)) -> String {
    match cause.downcast_ref::<tokio_postgres::error::DbError>() {
        Some(db) => {
            let mut text = format!("{}: {}", db.severity(), db.message());
            if let Some(hint) = db.hint() {
                text.push_str(&format!(" (hint: {hint})"));
            }
            text
        }
        None => cause.to_string(),
    }
}

/// [`error_chain`] of a plain error.
pub fn std_error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = cause_text(error);
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause_text(cause));
        source = cause.source();
    }
    text
}
