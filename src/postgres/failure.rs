//! What a failed write means for the writer, decided once from the SQLSTATE
//! (and, for unique violations, the constraint):
//!
//! | class | SQLSTATE | what the writer does |
//! |---|---|---|
//! | transient | no SQLSTATE (the connection failed or timed out), class 08 (connection), 53 (insufficient resources), 25006 (read-only: a reader after failover), 55P03 (lock not available: our `lock_timeout`), 57014 (query canceled: our `statement_timeout`), 57P01-57P03 (shutdown, crash, cannot connect now), 40001, 40P01, 23514 naming no constraint (a partition constraint: the insert was routed to a default partition while housekeeping attached the partition for its range) | retries the same batch with backoff, on a new connection |
//! | duplicate | 23505 on `ledger_pkey` or `quarantine_pkey` | redoes the batch keeping only what is not recorded yet |
//! | data | class 22 (a value Postgres refuses), class 23 but the keys above (an operator's unique index or check constraint on `user_logins`) | bisects the batch; the culprit goes to the quarantine as `db_rejected` |
//! | fatal | everything else: 42501 (a privilege revoked), 42P01 (a table gone), 42703, ... | stops veil, with the message naming what is missing and the fix |

use tokio_postgres::error::SqlState;

/// The ledger's primary key: an id recorded before.
pub const LEDGER_KEY: &str = "ledger_pkey";
/// The quarantine's primary key: a message quarantined before.
pub const QUARANTINE_KEY: &str = "quarantine_pkey";

/// Why a batch did not commit, classified for the writer.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Retry the same batch later, on a new connection.
    #[error("database unavailable: {0}")]
    Transient(#[source] tokio_postgres::Error),
    /// Some message of the batch is already recorded (ledger or quarantine).
    #[error("already recorded: {0}")]
    Duplicate(#[source] tokio_postgres::Error),
    /// Postgres refused some value of the batch: split it to find the one.
    #[error("database rejected a value: {0}")]
    Data(#[source] tokio_postgres::Error),
    /// Retrying will not help (a privilege, a table): stop.
    #[error("database error: {0}")]
    Fatal(#[source] tokio_postgres::Error),
    /// The write did not finish within its deadline (the connection may be
    /// stalled); it may or may not have committed, which the ledger settles
    /// on the retry.
    #[error("the batch write took longer than {0} s")]
    Deadline(u64),
    /// A new connection's login could not be made (a secret or an IAM
    /// token): retried, as AWS may be unreachable for a moment.
    #[error("cannot log in to Postgres: {0:#}")]
    Login(anyhow::Error),
}

impl WriteError {
    /// Whether the same batch may succeed on a later attempt.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            WriteError::Transient(_) | WriteError::Deadline(_) | WriteError::Login(_)
        )
    }

    /// A short label for metrics (`veil_postgres_errors_total{kind}`).
    pub fn kind(&self) -> &'static str {
        match self {
            WriteError::Transient(_) | WriteError::Deadline(_) | WriteError::Login(_) => {
                "transient"
            }
            WriteError::Duplicate(_) => "duplicate",
            WriteError::Data(_) => "data",
            WriteError::Fatal(_) => "fatal",
        }
    }
}

impl From<tokio_postgres::Error> for WriteError {
    fn from(error: tokio_postgres::Error) -> Self {
        let constraint = error.as_db_error().and_then(|db| db.constraint());
        match classify(error.code(), constraint) {
            Class::Transient => WriteError::Transient(error),
            Class::Duplicate => WriteError::Duplicate(error),
            Class::Data => WriteError::Data(error),
            Class::Fatal => WriteError::Fatal(error),
        }
    }
}

/// The classes of the table above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Retry with backoff.
    Transient,
    /// Already recorded.
    Duplicate,
    /// A value refused: bisect.
    Data,
    /// Stop.
    Fatal,
}

/// Whether a unique constraint is the ledger's key (on the parent, or the
/// key index of one of its partitions: `ledger_d20261125_pkey`,
/// `ledger_default_pkey`, ...) or the quarantine's.
fn is_recorded_key(constraint: &str) -> bool {
    constraint == LEDGER_KEY
        || constraint == QUARANTINE_KEY
        || (constraint.starts_with("ledger_") && constraint.ends_with("_pkey"))
}

/// Classifies a failure by its SQLSTATE (`None`: no answer from the
/// server) and, for a unique violation, the constraint it names. Any text
/// is accepted as an SQLSTATE: a malformed one is fatal, never a panic.
pub fn classify(code: Option<&SqlState>, constraint: Option<&str>) -> Class {
    let Some(code) = code else {
        return Class::Transient;
    };
    let transient = [
        SqlState::READ_ONLY_SQL_TRANSACTION,
        SqlState::LOCK_NOT_AVAILABLE,
        SqlState::QUERY_CANCELED,
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::T_R_SERIALIZATION_FAILURE,
        SqlState::T_R_DEADLOCK_DETECTED,
    ];
    if transient.contains(code) {
        return Class::Transient;
    }
    if *code == SqlState::UNIQUE_VIOLATION && constraint.is_some_and(is_recorded_key) {
        return Class::Duplicate;
    }
    // A CHECK constraint always has a name; a partition constraint has
    // none. Routing picks the right partition, so the only way to violate
    // one is to lose a race with ATTACH PARTITION: the retry routes anew.
    if *code == SqlState::CHECK_VIOLATION && constraint.is_none() {
        return Class::Transient;
    }
    match code.code().get(..2) {
        Some("08" | "53") => Class::Transient,
        Some("22" | "23") => Class::Data,
        _ => Class::Fatal,
    }
}

/// The fix to print for a Postgres error in a failed command's chain:
/// `Some(Some(fix))` when veil knows one, `Some(None)` for a Postgres
/// error it has no fix for (the search stops there), `None` when `cause`
/// is not a Postgres error.
pub fn fix_of(cause: &(dyn std::error::Error + 'static)) -> Option<Option<String>> {
    if let Some(postgres) = cause.downcast_ref::<tokio_postgres::Error>() {
        return Some(postgres_fix(postgres));
    }
    // Transparent: its source skips the Postgres error it wraps.
    if let Some(super::ConnectError::Postgres(postgres)) = cause.downcast_ref() {
        return Some(postgres_fix(postgres));
    }
    if let Some(super::ConnectError::SecretRefused { secret, .. }) = cause.downcast_ref() {
        return Some(Some(format!(
            "the username and password in secret {secret} are refused: fix the secret's value \
             (RDS format: host, port, username, password, dbname), or finish the rotation \
             (the secret and the role's password must match); DATABASE_URL's user and password \
             are not used with --database-secret-id"
        )));
    }
    super::certificate_problem(cause).map(Some)
}

fn postgres_fix(error: &tokio_postgres::Error) -> Option<String> {
    if let Some(fix) = super::certificate_problem(error) {
        return Some(fix);
    }
    let refused_plain = error
        .as_db_error()
        .is_some_and(|db| db.message().contains("no encryption"));
    if refused_plain {
        return Some(
            "the server accepts only encrypted connections: set sslmode=verify-full with \
             sslrootcert (or sslmode=require) in DATABASE_URL, or PGSSLMODE"
                .into(),
        );
    }
    let fix = match error.code() {
        Some(code)
            if *code == SqlState::INVALID_PASSWORD
                || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
        {
            "Postgres refused the login: set the user and password with DATABASE_URL \
             (postgres://USER:PASSWORD@HOST:PORT/DB) or PGUSER / PGPASSWORD"
        }
        Some(code) if *code == SqlState::INVALID_CATALOG_NAME => {
            "the database does not exist: create it (createdb NAME) or fix the name in \
             DATABASE_URL / PGDATABASE"
        }
        Some(code) if *code == SqlState::INSUFFICIENT_PRIVILEGE => {
            "the role lacks a privilege: run `veil migrate` as the owner once, then apply \
             sql/roles.sql for the pipeline role"
        }
        Some(_) => return None,
        None if refused_or_unreachable(error) => {
            "no Postgres answered: start it (scripts/services.sh up postgres), or point veil at \
             yours with DATABASE_URL or PGHOST / PGPORT"
        }
        None => return None,
    };
    Some(fix.to_string())
}

/// Whether a connection error is a refused or unreachable server (the
/// causes are io errors somewhere down tokio-postgres's chain), or a
/// connect timeout.
fn refused_or_unreachable(error: &tokio_postgres::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
            );
        }
        source = cause.source();
    }
    error.to_string().contains("timeout")
}

/// Whether an error, anywhere in its chain, is the server refusing for want
/// of a privilege (SQLSTATE 42501): rights revoked since they were checked,
/// or one the check does not know of.
pub fn lacks_privilege(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<tokio_postgres::Error>())
        .any(|error| error.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(code: &str, constraint: Option<&str>) -> Class {
        classify(Some(&SqlState::from_code(code)), constraint)
    }

    #[test]
    fn the_reviewed_codes_are_transient() {
        for code in [
            "25006", "55P03", "57014", "57P01", "57P02", "57P03", "40001", "40P01", "08006",
            "08001", "53300",
        ] {
            assert_eq!(of(code, None), Class::Transient, "{code}");
        }
        assert_eq!(classify(None, None), Class::Transient, "no answer at all");
        assert_eq!(
            of("23514", None),
            Class::Transient,
            "a partition constraint, raced by an ATTACH"
        );
    }

    #[test]
    fn unique_violations_are_told_apart_by_constraint() {
        assert_eq!(of("23505", Some(LEDGER_KEY)), Class::Duplicate);
        assert_eq!(of("23505", Some(QUARANTINE_KEY)), Class::Duplicate);
        assert_eq!(of("23505", Some("ledger_d20261125_pkey")), Class::Duplicate);
        assert_eq!(of("23505", Some("ledger_default_pkey")), Class::Duplicate);
        assert_eq!(
            of("23505", Some("ledger_before_20261126_pkey")),
            Class::Duplicate
        );
        assert_eq!(of("23505", Some("user_logins_user_id_key")), Class::Data);
        assert_eq!(of("23514", Some("user_logins_check")), Class::Data);
        assert_eq!(of("22021", None), Class::Data);
    }

    #[test]
    fn privileges_and_missing_tables_are_fatal_and_nothing_panics() {
        assert_eq!(of("42501", None), Class::Fatal);
        assert_eq!(of("42P01", None), Class::Fatal);
        for malformed in ["", "4", "\u{e9}", "ZZZZZZZZ"] {
            assert_eq!(of(malformed, None), Class::Fatal, "{malformed:?}");
        }
    }
}
