//! Logging: tracing to stderr, text or JSON, levels from RUST_LOG. Other
//! crates are capped at info whatever RUST_LOG says, because at debug and
//! trace the HTTP and Postgres clients log request and response contents,
//! which would put message bodies (PII) in the log.

use tracing_subscriber::filter::{EnvFilter, FilterExt, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::cli::LogFormat;

/// Installs the global subscriber. Call once, first thing.
pub fn init(format: LogFormat) {
    let from_env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let pii_guard = Targets::new()
        .with_default(tracing::Level::INFO)
        .with_target("veil", tracing::Level::TRACE);
    let filter = from_env.and(pii_guard);
    let layer = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    // A second init (tests) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .try_init();
}
