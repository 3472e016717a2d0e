//! `/metrics`: every row of the table in the Prometheus text exposition
//! format, in the table's order.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use super::table::{Prometheus, Source, TABLE};
use super::{Metrics, ServiceState};
use crate::record::RejectReason;

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn render_prometheus(&self) -> String {
        let mut out = String::new();
        for row in TABLE {
            if let Some(prometheus) = row.prometheus {
                self.render_row(&mut out, row.source, &prometheus);
            }
        }
        out
    }

    fn render_row(&self, out: &mut String, source: Source, row: &Prometheus) {
        let name = row.name;
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "# HELP {name} {}\n# TYPE {name} {}",
            row.help, row.kind
        );
        let label = row.label.unwrap_or_default();
        let series = |out: &mut String, values: &mut dyn Iterator<Item = (&str, u64)>| {
            for (value, count) in values {
                let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {count}");
            }
        };
        let ready = |flag: &AtomicBool| u64::from(flag.load(Ordering::Relaxed));
        match source {
            Source::Number(number) => {
                let _ = writeln!(out, "{name} {}", self.get(number));
            }
            Source::Delegated => {
                let _ = writeln!(out, "{name} {}", ready(&self.housekeeping_delegated));
            }
            Source::Family(family) => {
                let counts = self.family(family).snapshot();
                if family == super::Family::Quarantined {
                    // Every reason, zero or not, so rates and alerts see them all.
                    let mut reasons = RejectReason::ALL.iter().map(|reason| {
                        (
                            reason.code(),
                            counts.get(reason.code()).copied().unwrap_or(0),
                        )
                    });
                    series(out, &mut reasons);
                } else {
                    series(out, &mut counts.into_iter());
                }
            }
            Source::BatchSeconds => {
                let (buckets, sum, count) = self.batch_seconds.snapshot();
                for (bound, cumulative) in buckets {
                    let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
                }
                let _ = writeln!(
                    out,
                    "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {sum}\n{name}_count {count}"
                );
            }
            Source::Up => {
                let dependencies = [
                    ("sqs", ready(&self.sqs_ready)),
                    ("postgres", ready(&self.postgres_ready)),
                ];
                series(out, &mut dependencies.into_iter());
            }
            Source::QueueMessages => {
                let depth = *self.queue_depth.lock().expect("queue depth lock");
                if let Some(depth) = depth {
                    let states = [("visible", depth.visible), ("in_flight", depth.in_flight)];
                    series(out, &mut states.into_iter());
                }
            }
            Source::State => {
                let current = self.state();
                let mut states = ServiceState::ALL
                    .iter()
                    .map(|state| (state.name(), u64::from(*state == current)));
                series(out, &mut states);
            }
            Source::Ready => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Family, Number};

    #[test]
    fn metrics_render_in_prometheus_text_format() {
        let metrics = Metrics::default();
        metrics.set(Number::Received, 7);
        metrics.family(Family::SqsErrors).add("receive", 1);
        metrics
            .batch_seconds
            .observe(std::time::Duration::from_millis(30));
        metrics.set_state(ServiceState::Failed);

        let text = metrics.render_prometheus();

        assert!(text.contains("veil_messages_received_total 7\n"));
        assert!(text.contains("veil_messages_quarantined_total{reason=\"not_json\"} 0\n"));
        assert!(text.contains("veil_sqs_errors_total{operation=\"receive\"} 1\n"));
        assert!(text.contains("veil_batch_duration_seconds_bucket{le=\"0.025\"} 0\n"));
        assert!(text.contains("veil_batch_duration_seconds_bucket{le=\"0.05\"} 1\n"));
        assert!(text.contains("veil_batch_duration_seconds_count 1\n"));
        assert!(text.contains("veil_state{state=\"failed\"} 1\n"));
        assert!(text.contains("veil_state{state=\"running\"} 0\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
        }
    }
}
