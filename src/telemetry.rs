//! Logging: tracing to stderr, text or JSON, levels from RUST_LOG. Other
//! crates are capped at info whatever RUST_LOG says, because at debug and
//! trace the HTTP and Postgres clients log request and response contents,
//! which would put message bodies (PII) in the log. Colour only on a
//! terminal, and never when NO_COLOR is set (<https://no-color.org>); clap
//! follows the same rules for help and usage errors.

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
            .with_ansi(colour_on_stderr(std::env::var_os("NO_COLOR")))
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

/// Whether text logs on stderr may carry ANSI colour: only on a terminal,
/// and not when `NO_COLOR` is set to anything but the empty string.
fn colour_on_stderr(no_color: Option<std::ffi::OsString>) -> bool {
    use std::io::IsTerminal;
    no_color.is_none_or(|value| value.is_empty()) && std::io::stderr().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_color_switches_colour_off_whatever_the_terminal() {
        assert!(!colour_on_stderr(Some("1".into())));
    }
}
