//! What real SQS servers never do, from a small fake one (JSON protocol):
//! a receive that returns more messages than asked, an `ExpiredToken`
//! reply; and what veil must always send: both names of the
//! system-attribute parameter.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::fixtures::*;
use veil::metrics::Family;

/// What the fake server saw.
#[derive(Default)]
struct Seen {
    receives: usize,
    receive_requests: Vec<Value>,
    /// Receipt handles set to visibility 0.
    released: Vec<String>,
    deleted: Vec<String>,
    /// Answer DeleteMessageBatch with AccessDenied.
    deny_deletes: bool,
}

/// Serves GetQueueAttributes (an empty queue, 256 KiB messages),
/// ReceiveMessage (first ExpiredToken, then 12 messages, then nothing),
/// ChangeMessageVisibilityBatch and DeleteMessageBatch (all succeed).
async fn fake_sqs(seen: Arc<Mutex<Seen>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| answer(request, seen.clone()));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    port
}

fn event(index: usize) -> String {
    json!({"user_id": format!("u-{index}"), "app_version": "2.3.0", "device_type": "ios",
           "ip": "10.0.0.1", "locale": "RU", "device_id": "593-47-5928"})
    .to_string()
}

async fn answer(
    request: Request<Incoming>,
    seen: Arc<Mutex<Seen>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let target = request
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let call: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut seen = seen.lock().unwrap();
    let entries = || call["Entries"].as_array().cloned().unwrap_or_default();
    let ids =
        |entries: &[Value]| -> Value { entries.iter().map(|e| json!({"Id": e["Id"]})).collect() };
    let (status, reply) = match target.trim_start_matches("AmazonSQS.") {
        "GetQueueAttributes" => (
            200,
            json!({"Attributes": {
            "QueueArn": "arn:aws:sqs:us-east-1:000000000000:fake",
            "MaximumMessageSize": "262144",
            "ApproximateNumberOfMessages": "0",
            "ApproximateNumberOfMessagesNotVisible": "0"}}),
        ),
        "ReceiveMessage" => {
            seen.receives += 1;
            seen.receive_requests.push(call.clone());
            match seen.receives {
                1 => (
                    400,
                    json!({"__type": "com.amazon.coral.service#ExpiredTokenException",
                                  "message": "The security token included in the request is expired"}),
                ),
                2 => {
                    let messages: Vec<Value> = (0..12)
                        .map(|i| {
                            json!({"MessageId": format!("m-{i}"), "ReceiptHandle": format!("r-{i}"),
                                        "Body": event(i), "Attributes": {
                                            "SentTimestamp": "1764000000000",
                                            "ApproximateReceiveCount": "1"}})
                        })
                        .collect();
                    (200, json!({"Messages": messages}))
                }
                _ => (200, json!({})),
            }
        }
        "ChangeMessageVisibilityBatch" => {
            let entries = entries();
            for entry in &entries {
                if entry["VisibilityTimeout"] == 0 {
                    seen.released
                        .push(entry["ReceiptHandle"].as_str().unwrap().into());
                }
            }
            (200, json!({"Successful": ids(&entries), "Failed": []}))
        }
        "DeleteMessageBatch" if seen.deny_deletes => (
            400,
            json!({"__type": "com.amazon.coral.service#AccessDeniedException",
                   "message": "User is not authorized to perform: sqs:DeleteMessage"}),
        ),
        "DeleteMessageBatch" => {
            let entries = entries();
            for entry in &entries {
                seen.deleted
                    .push(entry["ReceiptHandle"].as_str().unwrap().into());
            }
            (200, json!({"Successful": ids(&entries), "Failed": []}))
        }
        other => (
            400,
            json!({"__type": format!("com.amazonaws.sqs#Unsupported{other}")}),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(reply.to_string())));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    Ok(response)
}

#[tokio::test]
async fn extra_messages_are_given_back_and_an_expired_token_is_retried() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let port = fake_sqs(seen.clone()).await;
    let db = migrated_db().await;
    let key = TestKey::create();
    let queue = TestQueue::attach(&format!("http://127.0.0.1:{port}/000000000000/fake")).await;
    let config = run_config(&queue, &db, &key, &["--until-empty", "--receivers", "1"]);
    let metrics = std::sync::Arc::new(veil::metrics::Metrics::default());

    let report = tokio::time::timeout(
        TEST_TIMEOUT,
        veil::commands::serve_observed(&config, CancellationToken::new(), metrics.clone()),
    )
    .await
    .unwrap()
    .unwrap();

    assert_eq!(
        (report.received, report.written),
        (10, 10),
        "the ten asked for"
    );
    assert_eq!(db.scalar("SELECT count(*) FROM user_logins").await, 10);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.released, ["r-10", "r-11"], "the extras went back");
    assert_eq!(seen.deleted.len(), 10);
    assert_eq!(
        metrics.family(Family::SqsErrors).snapshot().get("receive"),
        Some(&1),
        "the expired token was one transient failure, then retried"
    );
    for call in &seen.receive_requests {
        let names = json!(["SentTimestamp", "ApproximateReceiveCount"]);
        assert_eq!(call["MessageSystemAttributeNames"], names, "{call}");
        assert_eq!(call["AttributeNames"], names, "{call}");
    }
}

#[tokio::test]
async fn a_delete_refused_for_good_is_fatal_not_a_warning() {
    let seen = Arc::new(Mutex::new(Seen {
        deny_deletes: true,
        ..Default::default()
    }));
    let port = fake_sqs(seen.clone()).await;
    let db = migrated_db().await;
    let key = TestKey::create();
    let queue = TestQueue::attach(&format!("http://127.0.0.1:{port}/000000000000/fake")).await;
    let config = run_config(&queue, &db, &key, &["--receivers", "1"]);

    let outcome = tokio::time::timeout(
        TEST_TIMEOUT,
        veil::commands::serve(&config, CancellationToken::new()),
    )
    .await
    .expect("veil stops by itself");

    let error = format!("{:#}", outcome.expect_err("a fatal error"));
    assert!(error.contains("deleting recorded messages"), "{error}");
    assert!(error.contains("AccessDenied"), "{error}");
    assert_eq!(
        db.scalar("SELECT count(*) FROM user_logins").await,
        10,
        "what was recorded stays recorded (and is skipped when it comes back)"
    );
    assert!(seen.lock().unwrap().deleted.is_empty());
}

#[tokio::test]
async fn a_reply_is_read_into_one_buffer_of_its_length_however_it_is_chunked() {
    // 10 MiB in 64 KiB chunks, as a receive of ten 1 MiB bodies arrives.
    const LENGTH: usize = 10 << 20;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let service = service_fn(|_request: Request<Incoming>| async {
            let chunks = (0..LENGTH / 65536).map(|_| {
                Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from(vec![b'x'; 65536])))
            });
            let body = http_body_util::StreamBody::new(futures::stream::iter(chunks));
            Ok::<_, Infallible>(
                Response::builder()
                    .header("content-length", LENGTH)
                    .body(body)
                    .unwrap(),
            )
        });
        let _ = http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await;
    });

    let mut response = reqwest::get(format!("http://127.0.0.1:{port}/"))
        .await
        .unwrap();
    let reply = veil::sqs::read_reply(&mut response).await.unwrap();

    assert_eq!(reply.len(), LENGTH);
    assert_eq!(
        reply.capacity(),
        LENGTH,
        "one allocation of the announced length: no second copy, no regrowth"
    );
}
