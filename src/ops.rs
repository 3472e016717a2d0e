//! The operations endpoint (`--http-addr`): `/metrics` in the Prometheus
//! text format, `/healthz` (the process is alive) and `/readyz` (running,
//! and the last SQS call and the last Postgres write succeeded). The
//! numbers and the state come from `metrics`; this file only serves them.
//! A client that sends its request headers too slowly is dropped, so no
//! idle connection can pile up.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The endpoint, serving in the background from start-up on (so `/readyz`
/// answers 503 "starting" while veil checks its dependencies). The
/// pipeline's supervisor takes it over with `supervised`; dropped, it stops.
pub struct OpsServer {
    address: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl OpsServer {
    /// Binds `address` (a taken port is a start-up failure) and serves
    /// `metrics` until stopped.
    pub async fn start(address: SocketAddr, metrics: Arc<dyn Observed>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("binding the operations endpoint to {address}"))?;
        let address = listener.local_addr()?;
        tracing::info!(%address, "operations endpoint listening (/metrics, /healthz, /readyz)");
        let stop = CancellationToken::new();
        let task = tokio::spawn(accept_loop(listener, metrics, stop.clone()));
        Ok(OpsServer {
            address,
            stop,
            task,
        })
    }

    /// The bound address (useful with port 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Runs until `stop` fires, then stops serving; ends early only if the
    /// server itself ended, which its supervisor treats as fatal.
    pub async fn supervised(mut self, stop: CancellationToken) {
        tokio::select! {
            _ = stop.cancelled() => {
                self.stop.cancel();
                let _ = (&mut self.task).await;
            }
            _ = &mut self.task => {}
        }
    }
}

impl Drop for OpsServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept_loop(listener: TcpListener, metrics: Arc<dyn Observed>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else { continue };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| respond(request, metrics.clone()));
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// What the endpoint serves: the application's metrics and state
/// (`metrics::Metrics` is one), so this adapter knows nothing of them.
pub trait Observed: Send + Sync + 'static {
    /// The Prometheus text exposition of every metric (`/metrics`).
    fn render_prometheus(&self) -> String;
    /// Whether the service is ready, and why, for `/readyz`.
    fn readiness(&self) -> (bool, String);
}

async fn respond(
    request: Request<hyper::body::Incoming>,
    metrics: Arc<dyn Observed>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match request.uri().path() {
        "/metrics" => (StatusCode::OK, metrics.render_prometheus()),
        "/healthz" => (StatusCode::OK, "ok\n".to_string()),
        "/readyz" => {
            let (ready, body) = metrics.readiness();
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (status, body)
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
