//! The AWS Lambda Runtime API: each invocation's event handed to a handler
//! and its answer (or failure) sent back, through the `lambda_runtime`
//! crate, and an init error reported when the function cannot start. The
//! handler sees veil's types only.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// What the Runtime API says of one invocation.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// Its request id, for the logs.
    pub request_id: String,
    /// When Lambda stops it, in ms since the epoch.
    pub deadline_ms: u64,
}

/// Why an invocation failed, as Lambda records it (`errorType`,
/// `errorMessage`); every record of it is retried.
#[derive(Debug, Clone)]
pub struct Failure {
    /// A short type (`veil.RecordingFailed`).
    pub error_type: &'static str,
    /// What happened (never a value of the event).
    pub message: String,
}

/// Serves invocations until the runtime stops: each event of type `E` goes
/// to `handler`, whose answer `R` is sent back.
pub async fn serve<E, R, F, Fut>(handler: F) -> anyhow::Result<()>
where
    E: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
    F: Fn(E, Invocation) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, Failure>> + Send,
{
    let handler = Arc::new(handler);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<E>| {
        let handler = handler.clone();
        async move {
            let invocation = Invocation {
                request_id: event.context.request_id.clone(),
                deadline_ms: event.context.deadline,
            };
            handler(event.payload, invocation)
                .await
                .map_err(|failure| Diagnostic {
                    error_type: failure.error_type.into(),
                    error_message: failure.message,
                })
        }
    }))
    .await
    .map_err(|error| anyhow::anyhow!("the Lambda runtime stopped: {error}"))
}

/// Tells the Runtime API at `api` (`host:port`) why init failed (Lambda
/// logs it and fails the invocation), best effort: the process exits next
/// either way.
pub async fn report_init_error(api: &str, error_type: &str, message: &str) {
    let body = serde_json::json!({
        "errorType": error_type,
        "errorMessage": message,
    });
    let url = format!("http://{api}/2018-06-01/runtime/init/error");
    let sent = reqwest::Client::new()
        .post(&url)
        .header("Lambda-Runtime-Function-Error-Type", "Runtime.InitError")
        .body(body.to_string())
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    if let Err(error) = sent {
        tracing::warn!(%error, "could not report the init error to the Runtime API");
    }
}
