//! The operations endpoint (`--http-addr`): `/metrics` in the Prometheus
//! text format, `/healthz` (the process is alive) and `/readyz` (the last
//! SQS call and the last Postgres write succeeded). Metrics are rendered
//! from the pipeline's own counters; labels come from small fixed sets.

use std::convert::Infallible;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::pipeline::Counters;

/// Binds `address` and serves until `stop` fires. Returns the bound address
/// (useful with port 0).
pub async fn serve(
    address: SocketAddr,
    counters: Arc<Counters>,
    stop: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("binding the operations endpoint to {address}"))?;
    let bound = listener.local_addr()?;
    tracing::info!(address = %bound, "operations endpoint listening (/metrics, /healthz, /readyz)");
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let Ok((stream, _)) = accepted else { continue };
            let counters = counters.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| respond(request, counters.clone()));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(bound)
}

async fn respond(
    request: Request<hyper::body::Incoming>,
    counters: Arc<Counters>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match request.uri().path() {
        "/metrics" => (StatusCode::OK, render_metrics(&counters)),
        "/healthz" => (StatusCode::OK, "ok\n".to_string()),
        "/readyz" => {
            let sqs = counters.sqs_ready.load(Ordering::Relaxed);
            let postgres = counters.postgres_ready.load(Ordering::Relaxed);
            let status = if sqs && postgres {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (
                status,
                format!("sqs {}\npostgres {}\n", up(sqs), up(postgres)),
            )
        }
        _ => (
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz, /readyz\n".into(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}

fn up(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "unavailable"
    }
}

/// The Prometheus text exposition of the counters.
pub fn render_metrics(counters: &Counters) -> String {
    let mut out = String::new();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let simple = [
        (
            "veil_messages_received_total",
            "counter",
            "Messages received from SQS, redeliveries included.",
            load(&counters.received),
        ),
        (
            "veil_sqs_receive_calls_total",
            "counter",
            "ReceiveMessage calls that returned messages (at most 10 each).",
            load(&counters.receive_calls),
        ),
        (
            "veil_rows_written_total",
            "counter",
            "Rows inserted into user_logins.",
            load(&counters.written),
        ),
        (
            "veil_duplicates_skipped_total",
            "counter",
            "Messages skipped because the ledger already had them.",
            load(&counters.duplicates),
        ),
        (
            "veil_messages_deleted_total",
            "counter",
            "Recorded messages deleted from SQS.",
            load(&counters.deleted),
        ),
        (
            "veil_delete_failures_total",
            "counter",
            "Recorded messages SQS did not delete (they are skipped when redelivered).",
            load(&counters.delete_failures),
        ),
        (
            "veil_batches_total",
            "counter",
            "Postgres batches committed.",
            load(&counters.batches),
        ),
        (
            "veil_visibility_extensions_total",
            "counter",
            "Visibility extensions sent for slow messages.",
            load(&counters.visibility_extensions),
        ),
        (
            "veil_messages_in_flight",
            "gauge",
            "Messages held now: received, not yet deleted.",
            load(&counters.in_flight),
        ),
    ];
    for (name, kind, help, value) in simple {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    let _ = writeln!(out, "# HELP veil_messages_quarantined_total Messages quarantined, by reason.\n# TYPE veil_messages_quarantined_total counter");
    let by_reason = counters.quarantined_by_reason();
    for reason in crate::event::RejectReason::ALL {
        let count = by_reason.get(reason.code()).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "veil_messages_quarantined_total{{reason=\"{}\"}} {count}",
            reason.code()
        );
    }
    let labelled = [
        (
            "veil_sqs_errors_total",
            "SQS call failures, by operation.",
            "operation",
            counters.sqs_errors.snapshot(),
        ),
        (
            "veil_postgres_errors_total",
            "Postgres failures, by kind.",
            "kind",
            counters.postgres_errors.snapshot(),
        ),
    ];
    for (name, help, label, counts) in labelled {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (value, count) in counts {
            let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {count}");
        }
    }
    let (buckets, sum, count) = counters.batch_seconds.snapshot();
    let _ = writeln!(out, "# HELP veil_batch_duration_seconds Time to record one batch in Postgres.\n# TYPE veil_batch_duration_seconds histogram");
    for (bound, cumulative) in buckets {
        let _ = writeln!(
            out,
            "veil_batch_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
        );
    }
    let _ = writeln!(
        out,
        "veil_batch_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(
        out,
        "veil_batch_duration_seconds_sum {sum}\nveil_batch_duration_seconds_count {count}"
    );
    let ready = |b: &std::sync::atomic::AtomicBool| u8::from(b.load(Ordering::Relaxed));
    let _ = writeln!(
        out,
        "# HELP veil_up Whether the last call to each dependency succeeded.\n# TYPE veil_up gauge\nveil_up{{dependency=\"sqs\"}} {}\nveil_up{{dependency=\"postgres\"}} {}",
        ready(&counters.sqs_ready),
        ready(&counters.postgres_ready)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_in_prometheus_text_format() {
        let counters = Counters::default();
        counters.received.store(7, Ordering::Relaxed);
        counters.sqs_errors.add("receive");
        counters
            .batch_seconds
            .observe(std::time::Duration::from_millis(30));
        let text = render_metrics(&counters);
        assert!(text.contains("veil_messages_received_total 7\n"));
        assert!(text.contains("veil_messages_quarantined_total{reason=\"not_json\"} 0\n"));
        assert!(text.contains("veil_sqs_errors_total{operation=\"receive\"} 1\n"));
        assert!(text.contains("veil_batch_duration_seconds_bucket{le=\"0.025\"} 0\n"));
        assert!(text.contains("veil_batch_duration_seconds_bucket{le=\"0.05\"} 1\n"));
        assert!(text.contains("veil_batch_duration_seconds_count 1\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
        }
    }
}
