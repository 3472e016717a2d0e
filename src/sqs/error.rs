//! What went wrong talking to SQS, classified once for every caller:
//! transient (retry with backoff) or a refusal with SQS's error code.

/// What went wrong talking to SQS, classified for the caller.
#[derive(Debug, thiserror::Error)]
pub enum SqsError {
    /// Worth retrying: connection refused or reset, timeout, 5xx,
    /// throttling, credentials that could not be refreshed or expired.
    #[error("SQS unavailable: {0}")]
    Transient(String),
    /// Retrying will not help: no such queue, access denied, bad request.
    #[error("SQS refused the request: {description}")]
    Permanent {
        /// SQS's error code (`QueueDoesNotExist`, `AccessDenied`, ...); empty
        /// when the refusal did not come from SQS.
        code: String,
        /// What was asked and what came back (never a message body).
        description: String,
    },
}

impl SqsError {
    /// Whether the same call may succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(self, SqsError::Transient(_))
    }

    /// A refusal that did not come from SQS itself (no error code).
    pub fn refused(description: String) -> Self {
        SqsError::Permanent {
            code: String::new(),
            description,
        }
    }

    /// SQS's error code of a refusal.
    pub fn code(&self) -> Option<&str> {
        match self {
            SqsError::Permanent { code, .. } if !code.is_empty() => Some(code),
            _ => None,
        }
    }
}

/// The error for an SQS reply that is not a success: server errors,
/// throttling and expired credentials are transient, anything else is a
/// refusal.
pub(super) fn refusal(
    action: &str,
    status: reqwest::StatusCode,
    code: &str,
    message: &str,
) -> SqsError {
    let description = format!("{action}: HTTP {status} {code} {message}");
    if status.is_server_error() || is_transient_code(code) || is_expired_credentials(code) {
        SqsError::Transient(description)
    } else {
        SqsError::Permanent {
            code: code.to_string(),
            description,
        }
    }
}

/// Error codes that mean "try again later" in either protocol.
fn is_transient_code(code: &str) -> bool {
    matches!(
        code,
        "ServiceUnavailable"
            | "InternalError"
            | "InternalFailure"
            | "RequestThrottled"
            | "ThrottlingException"
            | "Throttling"
            | "KmsThrottled"
            | "RequestTimeout"
    )
}

/// Codes that mean the credentials used to sign were stale: the cache is
/// dropped and the next call signs with fresh ones.
pub(super) fn is_expired_credentials(code: &str) -> bool {
    matches!(
        code,
        "ExpiredToken" | "ExpiredTokenException" | "RequestExpired" | "TokenRefreshRequired"
    )
}

/// What to do about an SQS error of a failed command's chain
/// (`outcome::Fixer`): None when `cause` is not one.
pub fn fix(cause: &(dyn std::error::Error + 'static)) -> Option<Option<String>> {
    cause
        .downcast_ref::<SqsError>()
        .map(|error| Some(sqs_fix(error)))
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

    fn fix_of(error: SqsError) -> String {
        let error = anyhow::Error::new(error).context("checking the queue");
        error.chain().find_map(fix).flatten().unwrap()
    }

    #[test]
    fn a_missing_queue_points_at_seed() {
        let fix = fix_of(SqsError::Permanent {
            code: "QueueDoesNotExist".into(),
            description: "GetQueueAttributes: HTTP 400".into(),
        });
        assert!(fix.contains("veil seed"), "{fix}");
    }

    #[test]
    fn an_unreachable_endpoint_points_at_the_services() {
        let said = fix_of(SqsError::Transient("connection refused".into()));
        assert!(said.contains("scripts/services.sh"), "{said}");
        assert_eq!(fix(&std::fmt::Error), None, "not an SQS error");
    }

    #[test]
    fn expired_credentials_and_server_errors_are_transient_others_refusals() {
        let ok_status = reqwest::StatusCode::BAD_REQUEST;
        assert!(refusal("R", ok_status, "ExpiredToken", "").is_transient());
        assert!(refusal("R", ok_status, "ThrottlingException", "").is_transient());
        assert!(refusal("R", reqwest::StatusCode::BAD_GATEWAY, "", "").is_transient());
        let missing = refusal("R", ok_status, "QueueDoesNotExist", "gone");
        assert_eq!(missing.code(), Some("QueueDoesNotExist"));
        assert!(!missing.is_transient());
    }
}
