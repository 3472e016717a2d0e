//! How a failed command ends: its exit code (2 for bad configuration, 1 for
//! everything else) and the one step that fixes it, printed under the error.
//! Errors stay typed where they arise (`SqsError` with SQS's code, a
//! Postgres error with its SQLSTATE, `ConfigError`); this module
//! reads the chain once, at the top, so every command explains its failures
//! the same way.

use crate::error::ConfigError;
use crate::keyring::KeyFileError;
use crate::sqs::SqsError;

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

/// What to do about `error`, when veil can tell. Always ends by pointing at
/// `veil doctor`, which checks every dependency at once.
pub fn fix_for(error: &anyhow::Error) -> Option<String> {
    let specific = specific_fix(error)?;
    Some(format!(
        "{specific}; `veil doctor` checks everything at once"
    ))
}

/// The fix for `error` alone, without the pointer to `veil doctor`.
pub fn specific_fix(error: &anyhow::Error) -> Option<String> {
    error.chain().find_map(|cause| {
        if let Some(sqs) = cause.downcast_ref::<SqsError>() {
            return Some(sqs_fix(sqs));
        }
        if let Some(fix) = crate::postgres::fix_of(cause) {
            return fix;
        }
        if let Some(crate::postgres::ConnectError::SecretRefused { secret, .. }) =
            cause.downcast_ref()
        {
            return Some(format!(
                "the username and password in secret {secret} are refused: fix the secret's value \
                 (RDS format: host, port, username, password, dbname), or finish the rotation \
                 (the secret and the role's password must match); DATABASE_URL's user and password \
                 are not used with --database-secret-id"
            ));
        }
        if let Some(fix) = crate::postgres::certificate_problem(cause) {
            return Some(fix);
        }
        None
    })
}

fn sqs_fix(error: &SqsError) -> String {
    match error.code() {
        Some("QueueDoesNotExist" | "AWS.SimpleQueueService.NonExistentQueue") => {
            "the queue does not exist: `veil seed` creates the demo queue (and fills it), \
             or fix --queue-url / VEIL_QUEUE_URL"
        }
        Some(
            "AccessDenied" | "AccessDeniedException" | "AuthorizationError" | "KMS.AccessDenied",
        ) => {
            "grant this role sqs:ReceiveMessage, sqs:DeleteMessage, sqs:ChangeMessageVisibility \
             and sqs:GetQueueAttributes on the queue (docs/security.md)"
        }
        Some(
            "InvalidClientTokenId"
            | "UnrecognizedClientException"
            | "SignatureDoesNotMatch"
            | "MissingAuthenticationToken"
            | "IncompleteSignature"
            | "ExpiredToken"
            | "InvalidSecurity",
        ) => {
            "AWS did not accept the credentials: check AWS_PROFILE or AWS_ACCESS_KEY_ID / \
             AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, and the region"
        }
        _ if error.is_transient() => {
            "the SQS endpoint did not answer: start LocalStack (`make services`, or \
             scripts/services.sh up modern), or fix the endpoint (--queue-url, AWS_ENDPOINT_URL_SQS)"
        }
        _ => "check --queue-url and the queue's permissions",
    }
    .to_string()
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

    #[test]
    fn a_missing_queue_points_at_seed_and_doctor() {
        let error = anyhow::Error::new(SqsError::Permanent {
            code: "QueueDoesNotExist".into(),
            description: "GetQueueAttributes: HTTP 400".into(),
        })
        .context("checking the queue");
        let fix = fix_for(&error).unwrap();
        assert!(
            fix.contains("veil seed") && fix.contains("veil doctor"),
            "{fix}"
        );
    }

    #[test]
    fn an_unreachable_endpoint_points_at_the_services() {
        let error = anyhow::Error::new(SqsError::Transient("connection refused".into()));
        assert!(fix_for(&error).unwrap().contains("scripts/services.sh"));
        assert_eq!(fix_for(&anyhow::anyhow!("something else")), None);
    }
}
