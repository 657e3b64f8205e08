//! [`Feed`]: which publications are readings ([`Feed::reads`]), and the
//! analytics' counters ([`Stats`], on `/metrics`).
//!
//! The engine reads its readings from the journal itself
//! ([`super::runner`], decision 0031), so a SIGKILL loses none. The
//! journal hook still holds a [`Feed`] ([`crate::uplink::JournalHook::with_analytics`]);
//! once the engine runs its queue is closed and [`Feed::offer`] does
//! nothing ([`Feed::wants`] is false), so `plantd_analytics_dropped_total`
//! stays 0.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::mpsc;

/// How often at most a full queue is reported in the log.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// One accepted publication, as the engine reads it.
#[derive(Debug, Clone)]
pub struct Reading {
    /// The topic it was published on.
    pub topic: Arc<str>,
    /// The payload as published.
    pub payload: Bytes,
    /// When the edge accepted it (ms since the Unix epoch): the event time
    /// of rules that name no payload field.
    pub received_at: i64,
}

/// Counters of the edge's analytics, shown on `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Readings dropped because the engine's queue was full.
    pub dropped: AtomicU64,
    /// Readings the engine applied.
    pub processed: AtomicU64,
    /// Results journaled (`$plantd/agg/…`).
    pub results: AtomicU64,
    /// Results with a signal published on `$plantd/alert/…`.
    pub alerts: AtomicU64,
    /// Results that could not be published (a key that is no valid topic
    /// level, a journal failure); each is logged.
    pub failed: AtomicU64,
    /// Rules running now.
    pub rules: AtomicU64,
}

impl Stats {
    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// The figures in the Prometheus text format.
    pub fn prometheus(&self, out: &mut String) {
        use std::fmt::Write as _;
        let mut one = |name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        one(
            "plantd_analytics_rules",
            "gauge",
            "Analytics rules running at this edge.",
            Self::get(&self.rules),
        );
        one(
            "plantd_analytics_readings_total",
            "counter",
            "Readings the edge's analytics engine applied.",
            Self::get(&self.processed),
        );
        one(
            "plantd_analytics_dropped_total",
            "counter",
            "Readings not analysed because the engine's queue was full.",
            Self::get(&self.dropped),
        );
        one(
            "plantd_analytics_results_total",
            "counter",
            "Analytics results journaled on $plantd/agg/.",
            Self::get(&self.results),
        );
        one(
            "plantd_analytics_alerts_total",
            "counter",
            "Analytics signals published on $plantd/alert/.",
            Self::get(&self.alerts),
        );
        one(
            "plantd_analytics_failed_total",
            "counter",
            "Analytics results that could not be published.",
            Self::get(&self.failed),
        );
    }
}

/// The sending side; cheap to clone.
#[derive(Debug, Clone)]
pub struct Feed {
    tx: mpsc::Sender<Reading>,
    stats: Arc<Stats>,
    /// When the full queue was last reported.
    warned: Arc<Mutex<Option<Instant>>>,
}

/// A feed holding at most `capacity` readings, its receiving end and the
/// counters both share.
pub fn channel(capacity: usize) -> (Feed, mpsc::Receiver<Reading>, Arc<Stats>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let stats = Arc::new(Stats::default());
    let feed = Feed {
        tx,
        stats: stats.clone(),
        warned: Arc::new(Mutex::new(None)),
    };
    (feed, rx, stats)
}

/// Milliseconds since the Unix epoch by the wall clock.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Feed {
    /// Whether a publication on `topic` is analysed: every topic but
    /// `$`-topics (log lines, the edge's own results, `$SYS`).
    pub fn reads(topic: &str) -> bool {
        !topic.starts_with('$')
    }

    /// Whether a publication on `topic` would be analysed now: not a
    /// `$`-topic ([`Feed::reads`]), and some rule runs.
    pub fn wants(&self, topic: &str) -> bool {
        Self::reads(topic) && self.stats.rules.load(Ordering::Relaxed) > 0 && !self.tx.is_closed()
    }

    /// Offers one accepted publication to the engine; never waits. Ignored
    /// unless [`Feed::wants`] it.
    pub fn offer(&self, topic: &Arc<str>, payload: &Bytes) {
        if !self.wants(topic) {
            return;
        }
        let reading = Reading {
            topic: topic.clone(),
            payload: payload.clone(),
            received_at: now_ms(),
        };
        match self.tx.try_send(reading) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(r)) => {
                let dropped = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                self.warn_full(&r.topic, dropped);
            }
            // The engine has stopped (shutdown): nothing to count.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    fn warn_full(&self, topic: &str, dropped: u64) {
        let Ok(mut last) = self.warned.lock() else {
            return;
        };
        if last.is_some_and(|t| t.elapsed() < WARN_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        tracing::warn!(
            %topic,
            dropped_total = dropped,
            capacity = self.tx.max_capacity(),
            "analytics queue full: readings are not analysed (they still go up); raise [analytics] queue or reduce the rules"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let (feed, mut rx, stats) = channel(2);
        feed.offer(&Arc::from("line1/temp"), &Bytes::from_static(b"1"));
        assert!(rx.try_recv().is_err(), "no rule runs: nothing queued");
        stats.rules.store(1, Ordering::Relaxed);
        let topic: Arc<str> = Arc::from("line1/temp");
        let payload = Bytes::from_static(b"21");
        for _ in 0..5 {
            feed.offer(&topic, &payload);
        }
        feed.offer(&Arc::from("$plantd/agg/r/k"), &payload);
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 3);
        assert_eq!(rx.recv().await.expect("first").topic, topic);
        assert_eq!(rx.recv().await.expect("second").topic, topic);
        assert!(rx.try_recv().is_err(), "a $-topic is not analysed");
    }
}
