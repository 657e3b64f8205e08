//! Which publications are readings ([`reads`]), the wall clock
//! ([`now_ms`]) and the analytics' counters ([`Stats`], on `/metrics`).
//! The engine reads its readings from the journal itself
//! ([`super::runner`], decision 0031), so a SIGKILL loses none.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Counters of the edge's analytics, shown on `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
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

/// Milliseconds since the Unix epoch by the wall clock.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Whether a publication on `topic` is a reading the engine applies: every
/// topic but `$`-topics (log lines, the edge's own results, `$SYS`).
pub fn reads(topic: &str) -> bool {
    !topic.starts_with('$')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollar_topics_are_not_readings() {
        assert!(reads("line1/temp"));
        assert!(!reads("$plantd/agg/r/k"));
        assert!(!reads("$plantd/log/pump1"));
    }
}
