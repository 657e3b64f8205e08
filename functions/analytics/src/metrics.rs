//! [`Metrics`]: the analytics function's counters per (site, rule) and the
//! Prometheus text of them (`GET /metrics/analytics`). The consumer's lag
//! and health are the trigger's (`analytics_PLANTD_TELEMETRY` in
//! `/metrics` and `/healthz/trigger`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use plantd_analytics::RuleMetrics;

/// One (site, rule)'s figures as of its last commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuleFigures {
    /// The engine's counters.
    pub engine: RuleMetrics,
    /// Keys held.
    pub keys: u64,
    /// Checkpoint generation.
    pub generation: u64,
    /// Results stored in `PLANTD_AGGREGATES`.
    pub stored: u64,
    /// Results published again that JetStream already held.
    pub republished: u64,
    /// KV writes of its checkpoints.
    pub checkpoint_writes: u64,
    /// Its watermark's event time (ms since the epoch), 0 before any.
    pub max_event: i64,
}

/// Counters of the whole function.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Per (site, rule).
    rules: Mutex<BTreeMap<(String, String), RuleFigures>>,
    /// Batches that failed (and were retried).
    pub failed_batches: AtomicU64,
    /// Items handed over.
    pub items: AtomicU64,
    /// Idle advances done.
    pub idle_advances: AtomicU64,
    /// Result batches stored as one fast-ingest batch
    /// ([`crate::fast_ingest`]).
    pub fast_batches: AtomicU64,
    /// Result batches whose fast-ingest batch failed and that were
    /// published again one result at a time.
    pub fast_fallbacks: AtomicU64,
}

impl Metrics {
    /// Updates a (site, rule)'s figures with `f`.
    pub fn update(&self, site: &str, rule: &str, f: impl FnOnce(&mut RuleFigures)) {
        let mut rules = self
            .rules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(rules.entry((site.to_owned(), rule.to_owned())).or_default());
    }

    /// Forgets a (site, rule) (its rule is gone).
    pub fn forget(&self, site: &str, rule: &str) {
        self.rules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&(site.to_owned(), rule.to_owned()));
    }

    /// A (site, rule)'s figures.
    pub fn figures(&self, site: &str, rule: &str) -> Option<RuleFigures> {
        self.rules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(site.to_owned(), rule.to_owned()))
            .copied()
    }

    /// The Prometheus text format.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        let total = |name: &str, help: &str, value: u64, out: &mut String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        total(
            "plantd_analytics_items_total",
            "Telemetry items handed to the analytics function.",
            self.items.load(Ordering::Relaxed),
            &mut out,
        );
        total(
            "plantd_analytics_failed_batches_total",
            "Batches that failed and were handed over again.",
            self.failed_batches.load(Ordering::Relaxed),
            &mut out,
        );
        total(
            "plantd_analytics_idle_advances_total",
            "Watermarks moved by the idle clock.",
            self.idle_advances.load(Ordering::Relaxed),
            &mut out,
        );
        total(
            "plantd_analytics_fast_batches_total",
            "Result batches stored as one fast-ingest batch.",
            self.fast_batches.load(Ordering::Relaxed),
            &mut out,
        );
        total(
            "plantd_analytics_fast_fallbacks_total",
            "Result batches published again one result at a time after their fast-ingest batch failed.",
            self.fast_fallbacks.load(Ordering::Relaxed),
            &mut out,
        );
        let rules = self
            .rules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        type Get = fn(&RuleFigures) -> u64;
        let series: [(&str, &str, &str, Get); 11] = [
            (
                "plantd_analytics_applied_total",
                "counter",
                "Readings applied once per rule.",
                |f| f.engine.applied,
            ),
            (
                "plantd_analytics_duplicates_total",
                "counter",
                "Redelivered readings ignored.",
                |f| f.engine.duplicates,
            ),
            (
                "plantd_analytics_late_updates_total",
                "counter",
                "Late readings that revised an emitted result.",
                |f| f.engine.late_updates,
            ),
            (
                "plantd_analytics_dropped_late_total",
                "counter",
                "Readings later than the allowed lateness.",
                |f| f.engine.dropped_late,
            ),
            (
                "plantd_analytics_outputs_total",
                "counter",
                "Results emitted by the engine, revisions included.",
                |f| f.engine.outputs,
            ),
            (
                "plantd_analytics_stored_total",
                "counter",
                "Results stored in PLANTD_AGGREGATES.",
                |f| f.stored,
            ),
            (
                "plantd_analytics_republished_total",
                "counter",
                "Results published again after a crash that JetStream already held.",
                |f| f.republished,
            ),
            (
                "plantd_analytics_checkpoint_writes_total",
                "counter",
                "KV writes of checkpoints.",
                |f| f.checkpoint_writes,
            ),
            ("plantd_analytics_keys", "gauge", "Keys held.", |f| f.keys),
            (
                "plantd_analytics_generation",
                "gauge",
                "Checkpoint generation.",
                |f| f.generation,
            ),
            (
                "plantd_analytics_watermark_ms",
                "gauge",
                "Latest event time (ms since the epoch).",
                |f| u64::try_from(f.max_event).unwrap_or(0),
            ),
        ];
        for (name, kind, help, get) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for ((site, rule), f) in &rules {
                let _ = writeln!(out, "{name}{{site=\"{site}\",rule=\"{rule}\"}} {}", get(f));
            }
        }
        out
    }
}
