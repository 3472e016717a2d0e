//! How a failed command ends: its exit code (2 for bad configuration, 1 for
//! everything else) and the one step that fixes it, printed under the error.
//! Errors stay typed where they arise (`SqsError` with SQS's code, a
//! Postgres error with its SQLSTATE, `ConfigError`); this module reads the
//! chain once, at the top, so every command explains its failures the same
//! way. What an adapter's error means is the adapter's to say: the
//! application hands in each adapter's `Fixer` (`commands::FIXERS`).

use crate::error::ConfigError;
use crate::keyring::KeyFileError;

/// One adapter's reading of an error of the chain: `None` when the error
/// is not one of its own; `Some(fix)` when it is (`fix` None: nothing to
/// say), which ends the search.
pub type Fixer = fn(&(dyn std::error::Error + 'static)) -> Option<Option<String>>;

/// Exit code for configuration problems (bad flags, key files, URLs).
pub const EXIT_CONFIGURATION: u8 = 2;
/// Exit code for failures at run time.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code of `veil maintain` when another veil held the housekeeping
/// lock and nothing was done (sysexits' EX_TEMPFAIL: try again later).
pub const EXIT_SKIPPED: u8 = 75;

/// The exit code for a failed command.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    if error
        .chain()
        .any(|cause| cause.downcast_ref::<crate::error::LockHeld>().is_some())
    {
        return EXIT_SKIPPED;
    }
    let configuration = error.chain().any(|cause| {
        cause.downcast_ref::<ConfigError>().is_some()
            || cause.downcast_ref::<KeyFileError>().is_some()
    });
    if configuration {
        EXIT_CONFIGURATION
    } else {
        EXIT_FAILURE
    }
}

/// What to do about `error`, when one of `fixers` can tell. Always ends by
/// pointing at `veil doctor`, which checks every dependency at once.
pub fn fix_for(error: &anyhow::Error, fixers: &[Fixer]) -> Option<String> {
    let specific = specific_fix(error, fixers)?;
    Some(format!(
        "{specific}; `veil doctor` checks everything at once"
    ))
}

/// The fix for `error` alone, without the pointer to `veil doctor`: the
/// first cause of the chain an adapter of `fixers` knows.
pub fn specific_fix(error: &anyhow::Error, fixers: &[Fixer]) -> Option<String> {
    error
        .chain()
        .find_map(|cause| fixers.iter().find_map(|fixer| fixer(cause)))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_errors_exit_2_and_others_1() {
        let config = anyhow::Error::new(ConfigError("bad".into())).context("starting");
        assert_eq!(exit_code(&config), EXIT_CONFIGURATION);
        let key = anyhow::Error::new(KeyFileError::Invalid {
            path: "k".into(),
            reason: "r".into(),
        });
        assert_eq!(exit_code(&key), EXIT_CONFIGURATION);
        assert_eq!(exit_code(&anyhow::anyhow!("boom")), EXIT_FAILURE);
    }

    #[derive(Debug, thiserror::Error)]
    #[error("the thing is down")]
    struct Down;

    fn down(cause: &(dyn std::error::Error + 'static)) -> Option<Option<String>> {
        cause
            .downcast_ref::<Down>()
            .map(|_| Some("start the thing".into()))
    }

    #[test]
    fn the_first_cause_a_fixer_knows_gives_the_fix_and_doctor_is_named() {
        let error = anyhow::Error::new(Down).context("reading");
        assert_eq!(
            fix_for(&error, &[down]).as_deref(),
            Some("start the thing; `veil doctor` checks everything at once")
        );
        assert_eq!(fix_for(&anyhow::anyhow!("something else"), &[down]), None);
        assert_eq!(fix_for(&error, &[]), None);
    }
}
