//! CloudWatch Embedded Metric Format: one JSON line of the table's EMF
//! rows, counters as what happened since the last line (CloudWatch sums
//! what it receives), gauges as they are now; rows of one EMF name (the
//! SQS and the Postgres errors) are summed.

use std::collections::BTreeMap;
use std::time::Duration;

use super::table::{Source, TABLE};
use super::Metrics;

/// Counter totals at the last EMF line, by EMF name, so each line carries
/// what happened since.
#[derive(Debug, Default, Clone)]
pub struct EmfTotals(BTreeMap<&'static str, u64>);

/// The CloudWatch namespace of veil's own metrics.
pub const EMF_NAMESPACE: &str = "veil";

impl Metrics {
    /// The current value of a row's source, as EMF carries it.
    fn emf_value(&self, source: Source) -> u64 {
        match source {
            Source::Number(number) => self.get(number),
            Source::Family(family) => self.family(family).total(),
            Source::Ready => u64::from(self.readiness().0),
            Source::Delegated
            | Source::BatchSeconds
            | Source::Up
            | Source::QueueMessages
            | Source::State => 0,
        }
    }

    /// One CloudWatch Embedded Metric Format line (a JSON object; no
    /// newline): counts since `last` (then updated), and the current
    /// gauges, in namespace `veil` with the dimension `Service=veil`.
    pub fn render_emf(&self, last: &mut EmfTotals, timestamp_ms: i64) -> String {
        let mut values: Vec<(&str, &str, u64)> = Vec::new();
        let mut now = BTreeMap::new();
        for row in TABLE {
            let Some(emf) = row.emf else { continue };
            let value = self.emf_value(row.source);
            let reported = if emf.delta {
                let total = now.entry(emf.name).or_insert(0);
                *total += value;
                let before = last.0.get(emf.name).copied().unwrap_or(0);
                total.saturating_sub(before)
            } else {
                value
            };
            match values.iter_mut().find(|(name, _, _)| *name == emf.name) {
                Some(entry) => entry.2 = reported,
                None => values.push((emf.name, emf.unit, reported)),
            }
        }
        last.0 = now;
        let definitions: Vec<serde_json::Value> = values
            .iter()
            .map(|(name, unit, _)| serde_json::json!({"Name": name, "Unit": unit}))
            .collect();
        let mut line = serde_json::json!({
            "_aws": {
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": EMF_NAMESPACE,
                    "Dimensions": [["Service"]],
                    "Metrics": definitions,
                }],
            },
            "Service": "veil",
            "State": self.state().name(),
        });
        for (name, _, value) in values {
            line[name] = value.into();
        }
        line.to_string()
    }

    /// One EMF line on stdout: the counts since `last` (then updated).
    pub fn print_emf_line(&self, last: &mut EmfTotals) {
        use std::io::Write;
        let line = self.render_emf(last, chrono::Utc::now().timestamp_millis());
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
    }
}

/// Writes an EMF line to stdout every `interval` until `stop`, and a last
/// one then, so nothing counted is left out. CloudWatch Logs (the awslogs
/// driver, the agent) turns each line into metrics; no agent of veil's own.
pub async fn write_emf_lines(
    metrics: std::sync::Arc<Metrics>,
    interval: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut last = EmfTotals::default();
    loop {
        let stopping = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tokio::time::sleep(interval) => false,
        };
        metrics.print_emf_line(&mut last);
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Family, Number};

    #[test]
    fn emf_lines_follow_the_embedded_metric_format_and_count_since_the_last() {
        let metrics = Metrics::default();
        metrics.set(Number::Received, 10);
        metrics.family(Family::SqsErrors).add("receive", 2);
        metrics.family(Family::PostgresErrors).add("transient", 1);
        let mut last = EmfTotals::default();
        let first = metrics.render_emf(&mut last, 1_764_072_000_000);
        metrics.set(Number::Received, 25);
        metrics.set(Number::InFlight, 4);
        let second = metrics.render_emf(&mut last, 1_764_072_060_000);

        for (line, received, errors, in_flight) in [(&first, 10, 3, 0), (&second, 15, 0, 4)] {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(!line.contains('\n'), "one line");
            let aws = &value["_aws"];
            assert!(aws["Timestamp"].is_i64());
            let directive = &aws["CloudWatchMetrics"][0];
            assert_eq!(directive["Namespace"], EMF_NAMESPACE);
            // Every dimension named is a string member of the line.
            for set in directive["Dimensions"].as_array().unwrap() {
                for key in set.as_array().unwrap() {
                    assert!(value[key.as_str().unwrap()].is_string(), "{key}");
                }
            }
            // Every metric named is a number member, with a CloudWatch unit.
            let metrics = directive["Metrics"].as_array().unwrap();
            assert_eq!(metrics.len(), 12, "one definition per EMF name");
            for metric in metrics {
                let name = metric["Name"].as_str().unwrap();
                assert!(value[name].is_u64(), "{name}");
                assert!(["Count", "Bytes", "None"].contains(&metric["Unit"].as_str().unwrap()));
            }
            assert_eq!(value["MessagesReceived"], received);
            assert_eq!(
                value["Errors"], errors,
                "the SQS and the Postgres errors, summed"
            );
            assert_eq!(value["MessagesInFlight"], in_flight, "a gauge, as it is");
        }
    }
}
