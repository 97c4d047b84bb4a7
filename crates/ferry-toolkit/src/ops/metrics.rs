//! Metric names and the Prometheus recorder.
//!
//! The toolkit records through the `metrics` facade, so a service may install any recorder;
//! [`install`] installs a Prometheus one, once per process (later calls return the same
//! handle), and `/metrics` renders it. Metrics recorded before a recorder is installed are lost,
//! so a service calls [`install`] first thing.
//!
//! Every series carries the `service` that recorded it (the toolkit learns it from
//! [`crate::Publisher::service`]); a router's series also carry its consumer `group`. A
//! service's `/metrics` renders only its own series ([`only_service`]).
//!
//! | metric | labels (besides `service`) | meaning |
//! | --- | --- | --- |
//! | `ferry_messages_handled_total` | group, topic, type | handler succeeded |
//! | `ferry_messages_failed_total` | group, topic, type | handler attempts that failed (timeouts included) |
//! | `ferry_messages_retried_total` | group, topic, type | retries scheduled |
//! | `ferry_messages_dead_lettered_total` | group, topic, type, reason | messages parked in `<topic>.dlq` |
//! | `ferry_messages_unknown_type_total` | group, topic, type | messages of an unregistered type, skipped |
//! | `ferry_messages_redrive_skipped_total` | group, topic | re-driven messages addressed to another group, skipped |
//! | `ferry_handler_duration_seconds` | group, topic, type | histogram of handler attempt durations |
//! | `ferry_consumer_lag_messages` | group, topic, partition | messages behind the partition's end (high watermark − next offset) |
//! | `ferry_messages_published_total` | topic, type | messages published with the typed publisher |
//! | `ferry_replies_dropped_total` | topic, reason | replies to `unknown` or `expired` requests |
//! | `ferry_outbox_published_total` | | outbox rows published by the relay |
//! | `ferry_outbox_publish_failures_total` | | failed outbox publishes (each is retried) |
//! | `ferry_outbox_parked_total` | topic | outbox rows the broker refused for good, parked instead of retried |
//! | `ferry_outbox_delay_seconds` | | histogram of the time from staging a row to its acknowledged publish |

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Handled messages.
pub const HANDLED: &str = "ferry_messages_handled_total";
/// Failed handler attempts.
pub const FAILED: &str = "ferry_messages_failed_total";
/// Scheduled retries.
pub const RETRIED: &str = "ferry_messages_retried_total";
/// Dead-lettered messages.
pub const DEAD_LETTERED: &str = "ferry_messages_dead_lettered_total";
/// Skipped messages of unknown types.
pub const UNKNOWN_TYPE: &str = "ferry_messages_unknown_type_total";
/// Skipped re-driven messages addressed to another group.
pub const REDRIVE_SKIPPED: &str = "ferry_messages_redrive_skipped_total";
/// Handler attempt durations.
pub const HANDLER_DURATION: &str = "ferry_handler_duration_seconds";
/// Consumer lag per partition.
pub const CONSUMER_LAG: &str = "ferry_consumer_lag_messages";
/// Published messages.
pub const PUBLISHED: &str = "ferry_messages_published_total";
/// Dropped replies.
pub const REPLIES_DROPPED: &str = "ferry_replies_dropped_total";

/// Outbox rows published.
pub const OUTBOX_PUBLISHED: &str = "ferry_outbox_published_total";
/// Failed outbox publishes.
pub const OUTBOX_FAILED: &str = "ferry_outbox_publish_failures_total";
/// Outbox rows parked after a permanent rejection.
pub const OUTBOX_PARKED: &str = "ferry_outbox_parked_total";
/// Staging-to-publish delay of outbox rows.
pub const OUTBOX_DELAY: &str = "ferry_outbox_delay_seconds";

/// SQLite group commits (each one `COMMIT`, one fsync).
pub const GROUP_COMMITS: &str = "ferry_sql_group_commits_total";
/// Commands made durable by SQLite group commits (divided by [`GROUP_COMMITS`]: the mean batch).
pub const GROUP_COMMITTED: &str = "ferry_sql_group_committed_commands_total";

/// Histogram buckets for handler durations, in seconds: 1 ms to 60 s.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Histogram buckets for the broker's request latencies, in seconds: 100 µs to 10 s.
const BROKER_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once) and returns its handle.
///
/// If another recorder was installed first, the returned handle renders an empty page: the
/// service chose its own recorder.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(HANDLER_DURATION.to_owned()),
                    DURATION_BUCKETS,
                )
                .expect("buckets are not empty")
                .set_buckets_for_metric(Matcher::Full(OUTBOX_DELAY.to_owned()), DURATION_BUCKETS)
                .expect("buckets are not empty")
                // The broker's request latencies (an in-process broker under `ferry up`).
                .set_buckets_for_metric(Matcher::Prefix("ferry_broker_".to_owned()), BROKER_BUCKETS)
                .expect("buckets are not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            handle
        })
        .clone()
}

/// Renders the installed recorder in the Prometheus text format.
pub fn render() -> String {
    let handle = install();
    handle.run_upkeep();
    handle.render()
}

/// Who records: the service (`Publisher::service`) and, for a router's metrics, its group.
#[derive(Debug, Clone, Copy)]
pub(crate) struct By<'a> {
    pub(crate) service: &'static str,
    pub(crate) group: &'a str,
}

pub(crate) fn handled(by: By<'_>, topic: &str, type_name: &str, took: Duration) {
    counter!(HANDLED, "service" => by.service, "group" => by.group.to_owned(), "topic" => topic.to_owned(), "type" => type_name.to_owned()).increment(1);
    duration(by, topic, type_name, took);
}

pub(crate) fn failed(by: By<'_>, topic: &str, type_name: &str, took: Duration) {
    counter!(FAILED, "service" => by.service, "group" => by.group.to_owned(), "topic" => topic.to_owned(), "type" => type_name.to_owned()).increment(1);
    duration(by, topic, type_name, took);
}

fn duration(by: By<'_>, topic: &str, type_name: &str, took: Duration) {
    histogram!(HANDLER_DURATION, "service" => by.service, "group" => by.group.to_owned(), "topic" => topic.to_owned(), "type" => type_name.to_owned())
        .record(took.as_secs_f64());
}

pub(crate) fn retried(by: By<'_>, topic: &str, type_name: &str) {
    counter!(RETRIED, "service" => by.service, "group" => by.group.to_owned(), "topic" => topic.to_owned(), "type" => type_name.to_owned()).increment(1);
}

pub(crate) fn dead_lettered(by: By<'_>, topic: &str, type_name: &str, reason: &str) {
    counter!(DEAD_LETTERED, "service" => by.service, "group" => by.group.to_owned(), "topic" => topic.to_owned(), "type" => type_name.to_owned(), "reason" => reason.to_owned())
        .increment(1);
}

pub(crate) fn unknown_type(by: By<'_>, topic: &str, type_name: &str) {
    counter!(UNKNOWN_TYPE, "service" => by.service, "group" => by.group.to_owned(), "topic" => topic.to_owned(), "type" => type_name.to_owned())
        .increment(1);
}

pub(crate) fn redrive_skipped(by: By<'_>, topic: &str) {
    counter!(REDRIVE_SKIPPED, "service" => by.service, "group" => by.group.to_owned(), "topic" => topic.to_owned()).increment(1);
}

pub(crate) fn lag(by: By<'_>, topic: &str, partition: i32, lag: i64) {
    gauge!(CONSUMER_LAG, "service" => by.service, "group" => by.group.to_owned(), "topic" => topic.to_owned(), "partition" => partition.to_string())
        .set(lag.max(0) as f64);
}

pub(crate) fn published(service: &'static str, topic: &str, type_name: &str) {
    counter!(PUBLISHED, "service" => service, "topic" => topic.to_owned(), "type" => type_name.to_owned()).increment(1);
}

pub(crate) fn reply_dropped(service: &'static str, topic: &str, reason: &'static str) {
    counter!(REPLIES_DROPPED, "service" => service, "topic" => topic.to_owned(), "reason" => reason).increment(1);
}

pub(crate) fn outbox_published(service: &'static str, delay: Duration) {
    counter!(OUTBOX_PUBLISHED, "service" => service).increment(1);
    histogram!(OUTBOX_DELAY, "service" => service).record(delay.as_secs_f64());
}

pub(crate) fn group_commit(commands: usize) {
    counter!(GROUP_COMMITS).increment(1);
    counter!(GROUP_COMMITTED).increment(commands as u64);
}

pub(crate) fn outbox_failed(service: &'static str) {
    counter!(OUTBOX_FAILED, "service" => service).increment(1);
}

pub(crate) fn outbox_parked(service: &'static str, topic: &str) {
    counter!(OUTBOX_PARKED, "service" => service, "topic" => topic.to_owned()).increment(1);
}

/// The lines of a Prometheus text page that belong to `service`: its samples (those with
/// `service="<service>"`) and the `# HELP`/`# TYPE` lines of the metrics they are samples of.
/// Under `ferry up` one process records for every service; each service's `/metrics` shows its
/// own series only, so scraping all of them counts nothing twice.
pub fn only_service(page: &str, service: &str) -> String {
    let wanted = format!("service=\"{service}\"");
    let mut out = String::new();
    // The comment lines of the metric whose samples follow; cleared when the next metric's
    // comments start (after any sample of this one).
    let mut comments: Vec<&str> = Vec::new();
    let mut after_samples = false;
    let mut comments_written = false;
    for line in page.lines() {
        if line.starts_with('#') {
            if after_samples {
                comments.clear();
                after_samples = false;
                comments_written = false;
            }
            comments.push(line);
            continue;
        }
        after_samples = true;
        if line.contains(&wanted) {
            if !comments_written {
                for c in &comments {
                    out.push_str(c);
                    out.push('\n');
                }
                comments_written = true;
            }
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_service_sees_its_own_series_and_their_comments_only() {
        let page = "# TYPE a counter\na{service=\"x\"} 1\na{service=\"y\"} 2\n# TYPE b gauge\nb{service=\"y\"} 3\n# HELP c help\n# TYPE c counter\nc{service=\"x\",t=\"1\"} 4\n";
        assert_eq!(
            super::only_service(page, "x"),
            "# TYPE a counter\na{service=\"x\"} 1\n# HELP c help\n# TYPE c counter\nc{service=\"x\",t=\"1\"} 4\n"
        );
    }
}
