//! `veil lambda`: the binary as the `bootstrap` of a `provided.al2023`
//! function behind an SQS event source mapping. Init (once per execution
//! environment) loads the keyring, opens the writer connection and
//! prepares its statements; each invocation then records its batch
//! through them (`pipeline::lambda`). A configuration error at init is
//! reported to the Runtime API's init error endpoint and ends the
//! process: Lambda counts the invocation as failed and every record
//! returns to the queue.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::aws::lambda_runtime::{report_init_error, serve, Failure, Invocation};
use crate::sqs::event_source::{SqsBatchResponse, SqsEvent};

use crate::cli::{LambdaArgs, LambdaHandlerKind, RunArgs};
use crate::config::RunConfig;
use crate::error::ConfigError;
use crate::keyring as key_sources;
use crate::metrics::{Metrics, ServiceState};
use crate::pipeline::lambda::{LambdaHandler, ANSWER_MARGIN};
use crate::postgres::{self, Database, Writer};

/// The variable Lambda sets to the Runtime API's `host:port`.
pub const RUNTIME_API_ENV: &str = "AWS_LAMBDA_RUNTIME_API";

/// What the Lambda runtime must find in the environment (Lambda sets them).
const LAMBDA_ENV: [&str; 3] = [
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
];

/// `veil lambda`.
pub async fn lambda(args: LambdaArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let started = Instant::now();
    let Some(api) = std::env::var(RUNTIME_API_ENV)
        .ok()
        .filter(|v| !v.is_empty())
    else {
        return Err(ConfigError(format!(
            "veil lambda serves AWS Lambda's Runtime API, and {RUNTIME_API_ENV} is not set: this is not a \
             Lambda execution environment. Deploy the binary as the function's bootstrap \
             (docs/deploy.md, Lambda), or run `veil run` to poll the queue yourself"
        ))
        .into());
    };
    if let Some(missing) = LAMBDA_ENV.iter().find(|name| std::env::var(name).is_err()) {
        return Err(ConfigError(format!(
            "{missing} is not set; Lambda sets it in every execution environment (a test harness must too)"
        ))
        .into());
    }
    if args.handler == LambdaHandlerKind::Maintain {
        return serve_maintain(&api, &args.run, started, shutdown).await;
    }
    let handler = match init(&args.run).await {
        Ok(handler) => Arc::new(handler),
        Err(error) => return Err(init_failed(&api, error).await),
    };
    tracing::info!(
        init_ms = started.elapsed().as_millis() as u64,
        "veil lambda ready"
    );
    let served = handler.clone();
    let serving = serve(move |event: SqsEvent, invocation| {
        let handler = served.clone();
        async move { invoke(&handler, event, invocation).await }
    });
    tokio::pin!(serving);
    tokio::select! {
        result = &mut serving => return result,
        _ = shutdown.cancelled() => {}
    }
    shut_down(&handler, serving).await;
    Ok(())
}

/// How long `veil lambda` gives an invocation under way to finish once
/// Lambda sends SIGTERM (its shutdown phase allows 500 ms without
/// extensions, then sends SIGKILL).
const SHUTDOWN_BUDGET: Duration = Duration::from_millis(400);

/// Time left to the runtime to send the answer of an invocation that
/// finished in the budget.
const ANSWER_SENT_WITHIN: Duration = Duration::from_millis(100);

/// SIGTERM from Lambda: the invocation under way gets `SHUTDOWN_BUDGET`
/// to finish its batches; past it, it is abandoned. Either way nothing is
/// half recorded: each batch of it committed whole (and is in the ledger)
/// or not at all, and an invocation never answered is retried whole by
/// the event source, the ledger skipping what was recorded. Exits 0.
async fn shut_down(
    handler: &LambdaHandler,
    mut serving: std::pin::Pin<&mut impl std::future::Future<Output = anyhow::Result<()>>>,
) {
    let started = Instant::now();
    // The runtime goes on (the invocation under way needs it to answer)
    // until no invocation is writing.
    let idle = tokio::time::timeout(SHUTDOWN_BUDGET, async {
        tokio::select! {
            _ = serving.as_mut() => {}
            _ = handler.idle() => {}
        }
    })
    .await;
    match idle {
        Ok(()) => {
            // A moment more for an answer being sent.
            let left = SHUTDOWN_BUDGET.saturating_sub(started.elapsed());
            let _ = tokio::time::timeout(left.min(ANSWER_SENT_WITHIN), serving.as_mut()).await;
            tracing::info!("shutdown requested: no invocation under way; exiting")
        }
        Err(_) => tracing::warn!(
            budget_ms = SHUTDOWN_BUDGET.as_millis() as u64,
            "shutdown requested: the invocation under way did not finish in the budget and is \
             abandoned; its committed batches are in the ledger and the event source retries it"
        ),
    }
    handler.flush_metrics();
}

/// Reports an init error to the Runtime API and returns it (the process
/// then exits: Lambda counts the invocation as failed).
async fn init_failed(api: &str, error: anyhow::Error) -> anyhow::Error {
    let error_type = match error.downcast_ref::<ConfigError>() {
        Some(_) => "veil.ConfigError",
        None => "veil.InitError",
    };
    report_init_error(api, error_type, &crate::error::error_chain(&error)).await;
    error
}

/// Once per execution environment: settings, keyring, the writer
/// connection with its statements prepared (a missing table or a refused
/// login stops here).
async fn init(args: &RunArgs) -> anyhow::Result<LambdaHandler> {
    let config = RunConfig::from_args(args)?;
    let metrics = Arc::new(Metrics::default());
    metrics.set_state(ServiceState::Starting);
    // Never a generated key: each execution environment would mask with
    // its own.
    let keyring = Arc::new(key_sources::load(&config.key, false, &crate::aws::KeyServices).await?);
    let mut settings = config.pipeline.clone();
    // The queue's redrive policy counts deliveries; the mapping receives.
    settings.max_receives = None;
    let mut database = Writer::connect(
        config.database.clone(),
        settings.session_limits,
        settings.plan.clone(),
    )
    .await?;
    postgres::log_tls(&config.database, database.client().await?).await;
    database.ready().await.map_err(|error| {
        anyhow::Error::new(postgres::WriteError::from(error)).context(
            "preparing the batch statements (run `veil migrate` as the tables' owner first)",
        )
    })?;
    tracing::info!(
        database = %database.endpoint(),
        key_id = %keyring.active().id(),
        contracts = settings.plan.contracts.len(),
        "veil lambda initialised"
    );
    metrics.set_state(ServiceState::Running);
    Ok(LambdaHandler::new(keyring, settings, database, metrics))
}

/// One invocation: the batch, within the invocation's deadline.
async fn invoke(
    handler: &LambdaHandler,
    event: SqsEvent,
    invocation: Invocation,
) -> Result<SqsBatchResponse, Failure> {
    let remaining = Duration::from_millis(invocation.deadline_ms)
        .checked_sub(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
        )
        .unwrap_or_default();
    let deadline = Instant::now() + remaining.saturating_sub(ANSWER_MARGIN);
    let records = event.records.len();
    let started = Instant::now();
    match handler.handle(event, deadline).await {
        Ok(response) => {
            tracing::info!(
                request_id = %invocation.request_id,
                records,
                failed = response.batch_item_failures.len(),
                handle_ms = started.elapsed().as_millis() as u64,
                "invocation answered"
            );
            Ok(response)
        }
        Err(error) => {
            let message = crate::error::error_chain(&error);
            tracing::error!(request_id = %invocation.request_id, records, error = %message, "invocation failed; every record returns to the queue");
            Err(Failure {
                error_type: "veil.RecordingFailed",
                message,
            })
        }
    }
}

/// `--handler maintain`: each invocation (the stack's daily schedule) is
/// one housekeeping pass as the tables' owner; a failed step or a missing
/// right fails the invocation, so the schedule's retries and alarms see it.
async fn serve_maintain(
    api: &str,
    args: &RunArgs,
    started: Instant,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let init = async {
        let config = RunConfig::from_args(args)?;
        let database = Database::connect(config.database.clone()).await?;
        Ok::<_, anyhow::Error>((database, config.pipeline.housekeeping))
    };
    let (database, policy) = match init.await {
        Ok(ready) => ready,
        Err(error) => return Err(init_failed(api, error).await),
    };
    tracing::info!(
        init_ms = started.elapsed().as_millis() as u64,
        "veil lambda (maintain) ready"
    );
    let database = Arc::new(tokio::sync::Mutex::new(database));
    let policy = Arc::new(policy);
    let serving = serve(move |_event: serde_json::Value, invocation: Invocation| {
        let (database, policy) = (database.clone(), policy.clone());
        async move {
            let mut database = database.lock().await;
            let pass = async {
                let client = database.client().await?;
                super::maintain::pass(client, &policy, Duration::from_secs(60)).await
            };
            let failed = |error: anyhow::Error| {
                let message = crate::error::error_chain(&error);
                tracing::error!(request_id = %invocation.request_id, error = %message, "housekeeping failed");
                Failure {
                    error_type: "veil.HousekeepingFailed",
                    message,
                }
            };
            let report = pass.await.map_err(failed)?;
            let summary = postgres::maintain::describe(&report);
            tracing::info!(request_id = %invocation.request_id, "{summary}");
            if !report.failures.is_empty() {
                return Err(failed(anyhow::anyhow!("{summary}")));
            }
            Ok::<_, Failure>(serde_json::json!({
                "summary": summary,
                "created": report.created,
                "dropped": report.dropped.iter().map(|(name, _)| name).collect::<Vec<_>>(),
            }))
        }
    });
    tokio::select! {
        result = serving => result,
        // A pass under way is abandoned: each of its DDL steps commits
        // alone, and the next scheduled pass does what is left.
        _ = shutdown.cancelled() => {
            tracing::info!("shutdown requested; exiting");
            Ok(())
        }
    }
}
