//! What each consumer counts and how healthy it is: items done, failed,
//! parked and replayed, batches and handler latency (counted by the
//! consumer loop); lag, DLQ depth and rate (read by the watcher); rendered
//! as Prometheus text ([`Status::prometheus`]) and as a health verdict
//! that names a stuck consumer ([`Status::health`]).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Upper bounds (seconds) of the handler latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// What the watcher last read about a consumer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Snapshot {
    /// When it was read.
    pub at: Instant,
    /// Items in the stream not yet delivered to the consumer (the lag).
    pub pending: u64,
    /// Items delivered and not yet acknowledged or parked.
    pub ack_pending: u64,
    /// Records of this consumer in `PLANTD_DLQ` (`None`: unreadable).
    pub dlq_depth: Option<u64>,
    /// Items completed per second since the previous read.
    pub items_per_second: f64,
}

/// Counters and gauges of one (function, stream) consumer, shared by its
/// loop, its watcher and the status readers.
#[derive(Debug)]
pub(crate) struct ConsumerMetrics {
    /// The function.
    pub function: String,
    /// The stream.
    pub stream: String,
    /// The durable name.
    pub durable: String,
    /// When the consumer started: the reference of `last_progress_ms`.
    started: Instant,
    /// Stuck after this long without progress while items are pending.
    stuck_after: Duration,
    /// A snapshot older than this is stale (the watcher cannot reach NATS).
    stale_after: Duration,
    /// Items the handler succeeded on (acknowledged).
    pub done: AtomicU64,
    /// Handler failures (each failed delivery, retried or parked).
    pub failed: AtomicU64,
    /// Items parked in `PLANTD_DLQ`.
    pub parked: AtomicU64,
    /// Parked items replayed successfully.
    pub replayed: AtomicU64,
    /// Batches handed to the handler.
    pub batches: AtomicU64,
    /// Acknowledgements that could not be sent.
    pub ack_errors: AtomicU64,
    /// Histogram counts per [`LATENCY_BUCKETS`] bound (not cumulative).
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    /// Sum of handler latencies, microseconds.
    latency_sum_us: AtomicU64,
    /// Milliseconds after `started` of the last completed item (acked or
    /// parked) — progress.
    last_progress_ms: AtomicU64,
    /// The watcher's last read.
    snapshot: Mutex<Option<Snapshot>>,
}

impl ConsumerMetrics {
    pub fn new(
        function: &str,
        stream: &str,
        durable: &str,
        stuck_after: Duration,
        watch_interval: Duration,
    ) -> Self {
        Self {
            function: function.to_owned(),
            stream: stream.to_owned(),
            durable: durable.to_owned(),
            started: Instant::now(),
            stuck_after,
            stale_after: (watch_interval * 3).max(Duration::from_secs(5)),
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            parked: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            ack_errors: AtomicU64::new(0),
            latency_buckets: Default::default(),
            latency_sum_us: AtomicU64::new(0),
            last_progress_ms: AtomicU64::new(0),
            snapshot: Mutex::new(None),
        }
    }

    /// Records one handler call's latency.
    pub fn observe_latency(&self, took: Duration) {
        let secs = took.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
    }

    /// Notes that an item was completed (acknowledged or parked) now.
    pub fn progressed(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_progress_ms.store(ms, Ordering::Relaxed);
    }

    /// Items completed so far (done + parked): the rate's numerator.
    pub fn completed(&self) -> u64 {
        self.done.load(Ordering::Relaxed) + self.parked.load(Ordering::Relaxed)
    }

    pub fn set_snapshot(&self, s: Snapshot) {
        *self.snapshot.lock().unwrap_or_else(PoisonError::into_inner) = Some(s);
    }

    fn snapshot(&self) -> Option<Snapshot> {
        *self.snapshot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn since_progress(&self, now: Instant) -> Duration {
        let at =
            self.started + Duration::from_millis(self.last_progress_ms.load(Ordering::Relaxed));
        now.saturating_duration_since(at)
    }

    fn health(&self, now: Instant) -> ConsumerHealth {
        let snap = self.snapshot();
        let since = self.since_progress(now);
        let (state, reason) = match snap {
            None => (
                ConsumerState::Unknown,
                Some("no consumer information read yet".to_owned()),
            ),
            Some(s) if now.saturating_duration_since(s.at) > self.stale_after => (
                ConsumerState::Unknown,
                Some(format!(
                    "consumer information is {:.0} s old: NATS unreachable?",
                    now.saturating_duration_since(s.at).as_secs_f64()
                )),
            ),
            Some(s) if s.pending + s.ack_pending == 0 => (ConsumerState::Idle, None),
            Some(s) if since > self.stuck_after => (
                ConsumerState::Stuck,
                Some(format!(
                    "{} items pending ({} delivered, unacknowledged) and none completed for {:.0} s",
                    s.pending + s.ack_pending,
                    s.ack_pending,
                    since.as_secs_f64()
                )),
            ),
            Some(_) => (ConsumerState::Working, None),
        };
        ConsumerHealth {
            function: self.function.clone(),
            stream: self.stream.clone(),
            consumer: self.durable.clone(),
            state,
            reason,
            pending: snap.map(|s| s.pending),
            ack_pending: snap.map(|s| s.ack_pending),
            dlq_depth: snap.and_then(|s| s.dlq_depth),
            seconds_since_progress: since.as_secs_f64(),
        }
    }
}

/// Where a consumer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsumerState {
    /// Nothing pending. Healthy.
    Idle,
    /// Items pending and items completing. Healthy.
    Working,
    /// Items pending and none completed for `stuck_after`. Unhealthy.
    Stuck,
    /// Its lag cannot be read (not yet, or NATS unreachable). Unhealthy.
    Unknown,
}

impl ConsumerState {
    /// Healthy states: [`ConsumerState::Idle`] and [`ConsumerState::Working`].
    pub fn is_healthy(self) -> bool {
        matches!(self, Self::Idle | Self::Working)
    }
}

/// One consumer's health.
#[derive(Debug, Clone, Serialize)]
pub struct ConsumerHealth {
    /// The function.
    pub function: String,
    /// The stream.
    pub stream: String,
    /// The durable consumer name.
    pub consumer: String,
    /// Where it stands.
    pub state: ConsumerState,
    /// Why it is not healthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Items not yet delivered (the lag), when known.
    pub pending: Option<u64>,
    /// Items delivered and not yet completed, when known.
    pub ack_pending: Option<u64>,
    /// Its records in `PLANTD_DLQ`, when known.
    pub dlq_depth: Option<u64>,
    /// Seconds since it last completed an item (or started).
    pub seconds_since_progress: f64,
}

/// The trigger's health: healthy only when every consumer is.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// True when every consumer is idle or working.
    pub healthy: bool,
    /// Each consumer.
    pub consumers: Vec<ConsumerHealth>,
}

/// A cheap, cloneable view of every consumer of a trigger, for `/metrics`
/// and health endpoints.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// The consumers, in the order they were bound.
    pub(crate) consumers: Arc<Mutex<Vec<Arc<ConsumerMetrics>>>>,
}

impl Status {
    pub(crate) fn add(&self, m: Arc<ConsumerMetrics>) {
        self.consumers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(m);
    }

    fn all(&self) -> Vec<Arc<ConsumerMetrics>> {
        self.consumers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every consumer's health, now.
    pub fn health(&self) -> Health {
        let now = Instant::now();
        let consumers: Vec<ConsumerHealth> = self.all().iter().map(|c| c.health(now)).collect();
        Health {
            healthy: consumers.iter().all(|c| c.state.is_healthy()),
            consumers,
        }
    }

    /// Every consumer's metrics in the Prometheus text format (0.0.4).
    pub fn prometheus(&self) -> String {
        let now = Instant::now();
        let all = self.all();
        let mut out = String::new();
        let labels = |c: &ConsumerMetrics| {
            format!(
                "function=\"{}\",stream=\"{}\"",
                escape(&c.function),
                escape(&c.stream)
            )
        };
        header(
            &mut out,
            "plantd_trigger_items_total",
            "counter",
            "Items by outcome: done (acknowledged), failed (a failed delivery, retried or parked), parked (moved to PLANTD_DLQ), replayed (a parked item handled on replay).",
        );
        for c in &all {
            for (outcome, v) in [
                ("done", &c.done),
                ("failed", &c.failed),
                ("parked", &c.parked),
                ("replayed", &c.replayed),
            ] {
                let _ = writeln!(
                    out,
                    "plantd_trigger_items_total{{{},outcome=\"{outcome}\"}} {}",
                    labels(c),
                    v.load(Ordering::Relaxed)
                );
            }
        }
        header(
            &mut out,
            "plantd_trigger_ack_errors_total",
            "counter",
            "Acknowledgements that could not be sent (the item will be redelivered).",
        );
        for c in &all {
            let _ = writeln!(
                out,
                "plantd_trigger_ack_errors_total{{{}}} {}",
                labels(c),
                c.ack_errors.load(Ordering::Relaxed)
            );
        }
        header(
            &mut out,
            "plantd_trigger_handler_seconds",
            "histogram",
            "Time the handler took per batch.",
        );
        for c in &all {
            let l = labels(c);
            let mut cumulative = 0;
            for (bound, n) in LATENCY_BUCKETS.iter().zip(&c.latency_buckets) {
                cumulative += n.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "plantd_trigger_handler_seconds_bucket{{{l},le=\"{bound}\"}} {cumulative}"
                );
            }
            let count = c.batches.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "plantd_trigger_handler_seconds_bucket{{{l},le=\"+Inf\"}} {count}"
            );
            let sum = c.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "plantd_trigger_handler_seconds_sum{{{l}}} {sum}");
            let _ = writeln!(out, "plantd_trigger_handler_seconds_count{{{l}}} {count}");
        }
        let gauges: [(&str, &str, GaugeOf); 4] = [
            (
                "plantd_trigger_pending",
                "Items in the stream not yet delivered to the consumer (lag).",
                |s| Some(s.pending as f64),
            ),
            (
                "plantd_trigger_ack_pending",
                "Items delivered and not yet acknowledged or parked.",
                |s| Some(s.ack_pending as f64),
            ),
            (
                "plantd_trigger_dlq_depth",
                "Records of this consumer in PLANTD_DLQ.",
                |s| s.dlq_depth.map(|d| d as f64),
            ),
            (
                "plantd_trigger_items_per_second",
                "Items completed per second over the last watch interval.",
                |s| Some(s.items_per_second),
            ),
        ];
        for (name, help, value) in gauges {
            header(&mut out, name, "gauge", help);
            for c in &all {
                if let Some(v) = c.snapshot().as_ref().and_then(value) {
                    let _ = writeln!(out, "{name}{{{}}} {v}", labels(c));
                }
            }
        }
        header(
            &mut out,
            "plantd_trigger_seconds_since_progress",
            "gauge",
            "Seconds since the consumer last completed an item (or started).",
        );
        for c in &all {
            let _ = writeln!(
                out,
                "plantd_trigger_seconds_since_progress{{{}}} {}",
                labels(c),
                c.since_progress(now).as_secs_f64()
            );
        }
        header(
            &mut out,
            "plantd_trigger_healthy",
            "gauge",
            "1 when the consumer is idle or working, 0 when stuck or its lag is unknown.",
        );
        for c in &all {
            let _ = writeln!(
                out,
                "plantd_trigger_healthy{{{}}} {}",
                labels(c),
                u8::from(c.health(now).state.is_healthy())
            );
        }
        out
    }
}

/// Reads one gauge's value from a snapshot.
type GaugeOf = fn(&Snapshot) -> Option<f64>;

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A Prometheus label value with `\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(stuck_after: Duration) -> Arc<ConsumerMetrics> {
        Arc::new(ConsumerMetrics::new(
            "f",
            "S",
            "f_S",
            stuck_after,
            Duration::from_secs(1),
        ))
    }

    fn snap(pending: u64, ack_pending: u64) -> Snapshot {
        Snapshot {
            at: Instant::now(),
            pending,
            ack_pending,
            dlq_depth: Some(0),
            items_per_second: 0.0,
        }
    }

    #[test]
    fn health_names_the_state() {
        let status = Status::default();
        let m = metrics(Duration::from_millis(1));
        status.add(m.clone());
        assert_eq!(status.health().consumers[0].state, ConsumerState::Unknown);
        assert!(!status.health().healthy);
        m.set_snapshot(snap(0, 0));
        assert_eq!(status.health().consumers[0].state, ConsumerState::Idle);
        assert!(status.health().healthy);
        std::thread::sleep(Duration::from_millis(5));
        m.set_snapshot(snap(3, 1));
        let h = status.health();
        assert_eq!(h.consumers[0].state, ConsumerState::Stuck);
        assert!(!h.healthy);
        assert!(
            h.consumers[0]
                .reason
                .as_deref()
                .unwrap_or("")
                .contains("4 items pending")
        );
    }

    #[test]
    fn prometheus_text_has_every_family() {
        let status = Status::default();
        let m = metrics(Duration::from_secs(60));
        status.add(m.clone());
        m.observe_latency(Duration::from_millis(3));
        m.done.fetch_add(2, Ordering::Relaxed);
        m.set_snapshot(snap(5, 0));
        let text = status.prometheus();
        for want in [
            "plantd_trigger_items_total{function=\"f\",stream=\"S\",outcome=\"done\"} 2",
            "plantd_trigger_handler_seconds_bucket{function=\"f\",stream=\"S\",le=\"0.005\"} 1",
            "plantd_trigger_handler_seconds_count{function=\"f\",stream=\"S\"} 1",
            "plantd_trigger_pending{function=\"f\",stream=\"S\"} 5",
            "plantd_trigger_dlq_depth{function=\"f\",stream=\"S\"} 0",
            "plantd_trigger_healthy{function=\"f\",stream=\"S\"} 1",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
