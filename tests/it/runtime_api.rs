//! A Lambda Runtime API of our own, for driving the real `veil lambda`
//! binary: the documented endpoints (next invocation, response, error, init
//! error) at `/2018-06-01/runtime/...`, with the headers Lambda sends
//! (request id, deadline, function ARN, trace id). Invocations are queued
//! by the test; every process that polls `next` takes the next one, so two
//! processes on one API are two concurrent execution environments.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use tokio::sync::Notify;

/// What a function answered to one invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// `POST .../response` with this JSON.
    Response(serde_json::Value),
    /// `POST .../error` with this JSON (`errorType`, `errorMessage`).
    Error(serde_json::Value),
}

struct Invocation {
    id: String,
    deadline_ms: u64,
    body: String,
}

#[derive(Default)]
struct State {
    pending: Mutex<VecDeque<Invocation>>,
    queued: Notify,
    answers: Mutex<HashMap<String, Answer>>,
    init_error: Mutex<Option<serde_json::Value>>,
    next_calls: Mutex<u32>,
}

/// The server; it stops when dropped.
pub struct RuntimeApi {
    /// `host:port`, for `AWS_LAMBDA_RUNTIME_API`.
    pub address: String,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RuntimeApi {
    /// Listens on a free port of 127.0.0.1.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address: SocketAddr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let served = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = served.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(serve(&state, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        RuntimeApi {
            address: address.to_string(),
            state,
            task,
        }
    }

    /// Queues an invocation with `body` that must be answered within
    /// `timeout` (its deadline header); returns its request id.
    pub fn invoke(&self, body: &serde_json::Value, timeout: Duration) -> String {
        let id = format!("req-{}", uuid_like());
        let deadline_ms = (std::time::SystemTime::now() + timeout)
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        self.state.pending.lock().unwrap().push_back(Invocation {
            id: id.clone(),
            deadline_ms,
            body: body.to_string(),
        });
        self.state.queued.notify_waiters();
        id
    }

    /// The answer to invocation `id`, waiting up to `limit`.
    pub async fn answer(&self, id: &str, limit: Duration) -> Answer {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(answer) = self.state.answers.lock().unwrap().get(id) {
                return answer.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no answer to {id} within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The answer to invocation `id`, if there is one now.
    pub fn answered(&self, id: &str) -> Option<Answer> {
        self.state.answers.lock().unwrap().get(id).cloned()
    }

    /// The init error a process reported, if any.
    pub fn init_error(&self) -> Option<serde_json::Value> {
        self.state.init_error.lock().unwrap().clone()
    }

    /// How many `next` calls processes made so far (one per process ready
    /// for work, plus one per answered invocation).
    pub fn next_calls(&self) -> u32 {
        *self.state.next_calls.lock().unwrap()
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{:x}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

async fn serve(state: &State, request: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    let method = request.method().clone();
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let json = || serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let rest = path.strip_prefix("/2018-06-01/runtime/").unwrap_or("");
    match (method.as_str(), rest) {
        ("GET", "invocation/next") => {
            *state.next_calls.lock().unwrap() += 1;
            let invocation = loop {
                let queued = state.queued.notified();
                if let Some(invocation) = state.pending.lock().unwrap().pop_front() {
                    break invocation;
                }
                queued.await;
            };
            Response::builder()
                .header("Lambda-Runtime-Aws-Request-Id", &invocation.id)
                .header(
                    "Lambda-Runtime-Deadline-Ms",
                    invocation.deadline_ms.to_string(),
                )
                .header(
                    "Lambda-Runtime-Invoked-Function-Arn",
                    "arn:aws:lambda:us-east-1:000000000000:function:veil",
                )
                .header(
                    "Lambda-Runtime-Trace-Id",
                    "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700",
                )
                .body(Full::new(Bytes::from(invocation.body)))
                .unwrap()
        }
        ("POST", "init/error") => {
            *state.init_error.lock().unwrap() = Some(json());
            accepted()
        }
        ("POST", invocation) => {
            let Some((id, what)) = invocation
                .strip_prefix("invocation/")
                .and_then(|rest| rest.split_once('/'))
            else {
                return not_found();
            };
            let answer = match what {
                "response" => Answer::Response(json()),
                "error" => Answer::Error(json()),
                _ => return not_found(),
            };
            state.answers.lock().unwrap().insert(id.to_string(), answer);
            accepted()
        }
        _ => not_found(),
    }
}

fn accepted() -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::ACCEPTED)
        .body(Full::new(Bytes::from_static(b"{\"status\":\"OK\"}")))
        .unwrap()
}

fn not_found() -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// An SQS event of the event source mapping, from messages received from
/// a real queue (their ids, receipt handles, send times, receive counts and
/// message attributes), as Lambda builds it.
pub fn sqs_event(queue_url: &str, messages: &[veil::sqs::QueueMessage]) -> serde_json::Value {
    let queue_name = queue_url.rsplit('/').next().unwrap();
    let records: Vec<serde_json::Value> = messages
        .iter()
        .map(|message| {
            let mut attributes = serde_json::Map::new();
            attributes.insert("SenderId".into(), "000000000000".into());
            if let Some(sent) = message.sent_timestamp_ms {
                attributes.insert("SentTimestamp".into(), sent.to_string().into());
            }
            if let Some(count) = message.receive_count {
                attributes.insert("ApproximateReceiveCount".into(), count.to_string().into());
            }
            if let Some(first) = message.first_receive_ms {
                attributes.insert(
                    "ApproximateFirstReceiveTimestamp".into(),
                    first.to_string().into(),
                );
            }
            let message_attributes: serde_json::Map<String, serde_json::Value> = message
                .attributes
                .iter()
                .map(|(name, value)| {
                    (
                        name.clone(),
                        serde_json::json!({"stringValue": value, "dataType": "String"}),
                    )
                })
                .collect();
            serde_json::json!({
                "messageId": message.receipt.message_id,
                "receiptHandle": message.receipt.receipt_handle,
                "body": message.body,
                "attributes": attributes,
                "messageAttributes": message_attributes,
                "eventSource": "aws:sqs",
                "eventSourceARN": format!("arn:aws:sqs:us-east-1:000000000000:{queue_name}"),
                "awsRegion": "us-east-1"
            })
        })
        .collect();
    serde_json::json!({ "Records": records })
}

/// The message ids of an answer's `batchItemFailures`, sorted.
pub fn failures(answer: &Answer) -> Vec<String> {
    let Answer::Response(response) = answer else {
        panic!("the invocation failed: {answer:?}");
    };
    let mut ids: Vec<String> = response["batchItemFailures"]
        .as_array()
        .unwrap_or_else(|| panic!("no batchItemFailures in {response}"))
        .iter()
        .map(|failure| failure["itemIdentifier"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}
