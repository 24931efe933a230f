//! The metrics README documents, encoded by prometheus-client in the OpenMetrics text format.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;

use crate::client::{AttemptCode, AttemptObserver};

/// Label pairs, in the order given.
type Labels = Vec<(&'static str, String)>;

/// Every metric serve exports.
pub struct Metrics {
    registry: Registry,
    callbacks: Family<Labels, Counter>,
    /// `callbacks`' series once each is first counted, by command and outcome: counting a
    /// callback is then one atomic add, without building the labels and looking them up in
    /// the family's locked map at every request.
    callback_series: [[OnceLock<Counter>; OUTCOMES]; COMMANDS],
    latency: Histogram,
    queue_depth: Gauge,
    deletions: Family<Labels, Counter>,
    api_calls: Family<Labels, Counter>,
    last_resync: Gauge<f64, AtomicU64>,
    reloads: Family<Labels, Counter>,
    entries: Gauge,
    ready: Gauge,
    active: Gauge,
}

/// A callback's outcome, the `outcome` label of `timctl_callbacks_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallbackOutcome {
    /// Checked; at least one conversation was queued.
    Queued,
    /// Checked; nothing to delete (another command, or conversations no manifest names).
    Ignored,
    /// Forged or missing Sign.
    Unauthorized,
    /// A genuine Sign with a RequestTime more than 60 s away.
    Stale,
    /// Another app's callback, or a peer outside `--callback-allow`.
    Forbidden,
    /// A body that cannot be read.
    Malformed,
    /// A body over 1 MiB.
    TooLarge,
    /// The queue was full: answered OK, not queued.
    Overflow,
}

/// How many [`CallbackOutcome`]s there are.
const OUTCOMES: usize = 8;

/// How many values [`command_label`] gives.
const COMMANDS: usize = 5;

impl CallbackOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Ignored => "ignored",
            Self::Unauthorized => "unauthorized",
            Self::Stale => "stale",
            Self::Forbidden => "forbidden",
            Self::Malformed => "malformed",
            Self::TooLarge => "too_large",
            Self::Overflow => "overflow",
        }
    }
}

/// The slot of a [`command_label`] value in `Metrics::callback_series`.
fn command_slot(command: &str) -> Option<usize> {
    match command {
        crate::callback::C2C_AFTER_SEND => Some(0),
        crate::callback::GROUP_AFTER_SEND => Some(1),
        "Alert.RequestOverLimit" => Some(2),
        "other" => Some(3),
        "none" => Some(4),
        _ => None,
    }
}

/// The `command` label: the two message commands and `Alert.RequestOverLimit` by name, anything
/// else `other`, so a caller cannot grow the label set.
pub fn command_label(command: Option<&str>) -> &'static str {
    match command {
        Some(crate::callback::C2C_AFTER_SEND) => crate::callback::C2C_AFTER_SEND,
        Some(crate::callback::GROUP_AFTER_SEND) => crate::callback::GROUP_AFTER_SEND,
        Some("Alert.RequestOverLimit") => "Alert.RequestOverLimit",
        Some(_) => "other",
        None => "none",
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric at zero.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let callbacks = Family::<Labels, Counter>::default();
        registry.register(
            "timctl_callbacks",
            "Callbacks received, by command and outcome",
            callbacks.clone(),
        );
        let latency = Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]);
        registry.register(
            "timctl_enforcement_latency_seconds",
            "From a callback's arrival to the confirmed deletion it caused",
            latency.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "timctl_queue_depth",
            "Conversations queued or being deleted",
            queue_depth.clone(),
        );
        let deletions = Family::<Labels, Counter>::default();
        registry.register(
            "timctl_deletions",
            "Deletions, by reason (enforced, or the resync's plan reason) and outcome",
            deletions.clone(),
        );
        let api_calls = Family::<Labels, Counter>::default();
        registry.register(
            "timctl_api_calls",
            "Requests sent, retries included, by endpoint and the answer's ErrorCode",
            api_calls.clone(),
        );
        let last_resync = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "timctl_last_resync_success_timestamp_seconds",
            "When the last resync finished without failures (Unix seconds)",
            last_resync.clone(),
        );
        let reloads = Family::<Labels, Counter>::default();
        // Every outcome from the start, at 0: an alert on `increase(…{outcome="invalid"}[…])`
        // needs the series before the first reload, and "no series" reads as "no data".
        for outcome in ["adopted", "unchanged", "invalid", "refused"] {
            let _zero = reloads.get_or_create(&vec![("outcome", outcome.to_owned())]);
        }
        registry.register(
            "timctl_manifest_reloads",
            "Manifest reloads, by outcome",
            reloads.clone(),
        );
        let entries = Gauge::default();
        registry.register(
            "timctl_manifest_entries",
            "Conversations the adopted manifests forbid",
            entries.clone(),
        );
        let ready = Gauge::default();
        registry.register("timctl_ready", "1 when /readyz answers 200", ready.clone());
        let active = Gauge::default();
        registry.register(
            "timctl_active",
            "1 on the replica that holds the state's lock and deletes",
            active.clone(),
        );
        Metrics {
            registry,
            callbacks,
            callback_series: Default::default(),
            latency,
            queue_depth,
            deletions,
            api_calls,
            last_resync,
            reloads,
            entries,
            ready,
            active,
        }
    }

    /// Counts a callback (`command` is a [`command_label`] value).
    pub fn callback(&self, command: &'static str, outcome: CallbackOutcome) {
        let series = || {
            self.callbacks
                .get_or_create(&vec![
                    ("command", command.to_owned()),
                    ("outcome", outcome.as_str().to_owned()),
                ])
                .clone()
        };
        match command_slot(command) {
            Some(slot) => self.callback_series[slot][outcome as usize]
                .get_or_init(series)
                .inc(),
            None => series().inc(),
        };
    }

    /// Observes one enforced deletion's latency.
    pub fn enforcement_latency(&self, seconds: f64) {
        self.latency.observe(seconds);
    }

    /// Sets the queue depth.
    pub fn set_queue_depth(&self, depth: usize) {
        self.queue_depth.set(depth as i64);
    }

    /// Counts a deletion's outcome (the calls it took are counted by [`Metrics::api_attempt`]).
    pub fn deletion(&self, reason: &str, outcome: &str) {
        self.deletions
            .get_or_create(&vec![
                ("reason", reason.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
    }

    /// Counts one request on the wire, retries included: `timctl_api_calls_total{endpoint,
    /// code}`, `code` the answer's ErrorCode, `transient` for no usable answer (a dropped
    /// connection, a timeout, HTTP 429 or 5xx) or `fatal` (HTTP 401/403, TLS).
    pub fn api_attempt(&self, endpoint: &'static str, code: AttemptCode) {
        let code = match code {
            AttemptCode::Code(c) => c.to_string(),
            AttemptCode::Transient => "transient".to_owned(),
            AttemptCode::Fatal => "fatal".to_owned(),
        };
        self.api_calls
            .get_or_create(&vec![("endpoint", endpoint.to_owned()), ("code", code)])
            .inc();
    }

    /// An observer for the client that counts its attempts here.
    pub fn attempt_observer(self: &std::sync::Arc<Self>) -> AttemptObserver {
        let metrics = self.clone();
        AttemptObserver::new(move |endpoint, code| metrics.api_attempt(endpoint, code))
    }

    /// Notes a resync that finished without failures, now.
    pub fn resync_succeeded(&self) {
        let now = jiff::Timestamp::now().as_millisecond() as f64 / 1000.0;
        self.last_resync.set(now);
    }

    /// Counts a manifest reload's outcome.
    pub fn reload(&self, outcome: &'static str) {
        self.reloads
            .get_or_create(&vec![("outcome", outcome.to_owned())])
            .inc();
    }

    /// Sets how many conversations the adopted manifests forbid.
    pub fn set_entries(&self, n: usize) {
        self.entries.set(n as i64);
    }

    /// Sets readiness and whether this replica is the active one.
    pub fn set_ready(&self, ready: bool, active: bool) {
        self.ready.set(i64::from(ready));
        self.active.set(i64::from(active));
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_names_and_labels_are_exported() {
        let m = Metrics::new();
        m.callback(
            command_label(Some("C2C.CallbackAfterSendMsg")),
            CallbackOutcome::Queued,
        );
        m.callback(command_label(Some("anything")), CallbackOutcome::Stale);
        // The second count of a series goes through its cached counter: the same series.
        m.callback(command_label(Some("another")), CallbackOutcome::Stale);
        m.deletion("enforced", "deleted");
        m.api_attempt("v4/recentcontact/delete", AttemptCode::Code(0));
        m.api_attempt("v4/recentcontact/delete", AttemptCode::Transient);
        m.enforcement_latency(0.2);
        let text = m.encode();
        for needle in [
            r#"timctl_callbacks_total{command="C2C.CallbackAfterSendMsg",outcome="queued"} 1"#,
            r#"timctl_callbacks_total{command="other",outcome="stale"} 2"#,
            r#"timctl_deletions_total{reason="enforced",outcome="deleted"} 1"#,
            r#"timctl_api_calls_total{endpoint="v4/recentcontact/delete",code="0"} 1"#,
            r#"timctl_api_calls_total{endpoint="v4/recentcontact/delete",code="transient"} 1"#,
            r#"timctl_enforcement_latency_seconds_bucket{le="0.25"} 1"#,
            "timctl_queue_depth 0",
            "timctl_ready 0",
            "timctl_active 0",
            "timctl_manifest_entries 0",
            "# EOF",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
    }
}
