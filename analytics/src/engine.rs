//! [`Engine`]: the rules over a stream of [`Event`]s, producing
//! [`Output`]s; [`Engine::checkpoint`] and [`Engine::restore`] for exactly
//! once (decision 0027).
//!
//! Contract:
//! - `process` applies one event to every rule whose filter matches and
//!   returns the results it caused (windows the new watermark closed, and
//!   new revisions of windows a late reading changed), in a deterministic
//!   order: the same events in the same order give the same outputs.
//! - Each (rule, key) remembers the stream sequence of the last event it
//!   applied: an event at or below it is a redelivery and is ignored, so
//!   re-feeding a stream from any point before a checkpoint to a restored
//!   engine yields exactly the outputs an uninterrupted engine yields.
//!   Sequences must therefore increase along the stream (JetStream's stream
//!   sequence does).
//! - `advance(now)` moves every rule's event time forward when the stream is
//!   idle, so the last windows close. Call it at points derived from the
//!   stream (not a wall clock) when results must be reproducible.
//! - Nothing here blocks, allocates per event on the hot path beyond a new
//!   key's name or window, or does I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::field::Payload;
use crate::rule::{Rule, RuleError};
use crate::track::Track;
use crate::window::{KeyState, RuleMetrics, RuleRun, Win};

/// One reading as it arrives.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    /// The MQTT topic it was published on (`line1/m3/temp`).
    pub topic: &'a str,
    /// The payload as published.
    pub payload: &'a [u8],
    /// When the edge received it (ms since the Unix epoch): the event time
    /// when the rule names no payload field or the payload lacks it.
    pub received_at: i64,
    /// Its position in the stream (JetStream stream sequence), increasing.
    pub stream_seq: u64,
}

/// One result: the values of one key's window, as of one revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    /// The rule's name.
    pub rule: String,
    /// The key (a topic, a field's value, or `*`).
    pub key: String,
    /// Window start, inclusive (ms since the epoch).
    pub window_start: i64,
    /// Window end, exclusive.
    pub window_end: i64,
    /// 0 when first emitted; +1 each time a late reading changes it.
    pub revision: u32,
    /// Output name → value; a value that is undefined (e.g. `avg` of text,
    /// `rate` of one instant) is absent.
    pub values: BTreeMap<String, f64>,
    /// Readings of this key dropped so far as later than the allowed
    /// lateness (cumulative): non-zero means a window may miss readings.
    pub dropped_late: u64,
    /// Set by pattern and anomaly operators: this result raises or clears an
    /// alert for (rule, key). The alert manager turns it into an alert
    /// instance's transitions (an alert rule with an `analytics` condition);
    /// at the edge it is also published on `$plantd/alert/<rule>/<key>`.
    /// Absent for windowed aggregates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<Signal>,
}

/// What a pattern or anomaly result says about its (rule, key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// The pattern matched or the detector flagged an anomaly: the alert
    /// fires (`window_start` when the condition began, `window_end` when it
    /// was detected; `values` carries the evidence, e.g. `score`).
    Fire,
    /// The condition no longer holds: the alert resolves.
    Clear,
}

impl Output {
    /// The stable id `<rule>:<key>:<window_start>:<revision>`: the same
    /// result always has the same id (the message id when it is stored, so
    /// a redelivered result is stored once).
    pub fn id(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.rule, self.key, self.window_start, self.revision
        )
    }
}

/// Why an engine could not be built or restored.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum EngineError {
    /// A rule is invalid.
    #[error("rule {name:?}: {error}")]
    Rule {
        /// The rule's name.
        name: String,
        /// What is wrong.
        error: RuleError,
    },
    /// Two rules share a name.
    #[error("two rules are named {0:?}")]
    Duplicate(String),
    /// A checkpoint holds state for a rule whose definition has changed:
    /// its windows mean something else now. Drop it with
    /// [`State::forget`] to start that rule afresh.
    #[error("rule {0:?} changed since the checkpoint")]
    RuleChanged(String),
}

/// The engine: rules, their keys and windows.
#[derive(Debug)]
pub struct Engine {
    /// One run per rule, in the order given.
    rules: Vec<RuleRun>,
}

impl Engine {
    /// An engine with no state.
    ///
    /// # Errors
    /// [`EngineError`] when a rule is invalid or two share a name.
    pub fn new(rules: Vec<Rule>) -> Result<Self, EngineError> {
        let mut runs: Vec<RuleRun> = Vec::with_capacity(rules.len());
        for rule in rules {
            rule.validate().map_err(|error| EngineError::Rule {
                name: rule.name.clone(),
                error,
            })?;
            if runs.iter().any(|r| r.rule.name == rule.name) {
                return Err(EngineError::Duplicate(rule.name));
            }
            runs.push(RuleRun::new(rule));
        }
        Ok(Self { rules: runs })
    }

    /// Applies one event; returns the results it caused.
    pub fn process(&mut self, event: &Event<'_>) -> Vec<Output> {
        let mut out = Vec::new();
        self.process_into(event, &mut out);
        out
    }

    /// [`Engine::process`] appending to a caller's buffer (no allocation
    /// when nothing is emitted).
    pub fn process_into(&mut self, event: &Event<'_>, out: &mut Vec<Output>) {
        let payload = Payload::new(event.payload);
        for run in &mut self.rules {
            run.process(event, &payload, out);
        }
    }

    /// Moves event time to `now` (ms since the epoch) for every rule — never
    /// backwards — and returns the windows that closes.
    pub fn advance(&mut self, now: i64) -> Vec<Output> {
        let mut out = Vec::new();
        for run in &mut self.rules {
            run.advance(now, &mut out);
        }
        out
    }

    /// The counters of a rule.
    pub fn metrics(&self, rule: &str) -> Option<RuleMetrics> {
        self.rules
            .iter()
            .find(|r| r.rule.name == rule)
            .map(|r| r.metrics)
    }

    /// Keys held by a rule.
    pub fn keys(&self, rule: &str) -> usize {
        self.rules
            .iter()
            .find(|r| r.rule.name == rule)
            .map_or(0, |r| r.keys.len())
    }

    /// The whole state, to store and later [`Engine::restore`].
    pub fn checkpoint(&self) -> State {
        State {
            version: State::VERSION,
            rules: self
                .rules
                .iter()
                .map(|r| RuleState {
                    rule: (*r.rule).clone(),
                    max_event: r.max_event,
                    metrics: r.metrics,
                    keys: r
                        .keys
                        .iter()
                        .map(|k| KeyCheckpoint {
                            key: k.name.to_string(),
                            last_seq: k.last_seq,
                            dropped_late: k.dropped_late,
                            windows: k.windows.clone(),
                            last_at: k.last_at,
                            track: k.track.as_deref().cloned(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    /// The state of the rule at `index` (in the order the engine was
    /// given its rules), borrowed: its keys serialise exactly as
    /// [`KeyCheckpoint`]s, without copying every key's windows first
    /// (what a commit that writes most keys of a rule needs). `None` when
    /// there is no such rule.
    pub fn checkpoint_rule(&self, index: usize) -> Option<RuleCheckpointRef<'_>> {
        let r = self.rules.get(index)?;
        Some(RuleCheckpointRef {
            max_event: r.max_event,
            metrics: r.metrics,
            keys: r
                .keys
                .iter()
                .map(|k| KeyCheckpointRef {
                    key: &k.name,
                    last_seq: k.last_seq,
                    dropped_late: k.dropped_late,
                    windows: &k.windows,
                    last_at: k.last_at,
                    track: k.track.as_deref(),
                })
                .collect(),
        })
    }

    /// An engine for `rules` continuing from `state`. State for rules no
    /// longer given is dropped; rules without state start empty.
    ///
    /// # Errors
    /// [`EngineError`] as [`Engine::new`], or
    /// [`EngineError::RuleChanged`] when a rule's definition differs from
    /// the one checkpointed.
    pub fn restore(rules: Vec<Rule>, state: State) -> Result<Self, EngineError> {
        let mut engine = Self::new(rules)?;
        for saved in state.rules {
            let Some(run) = engine
                .rules
                .iter_mut()
                .find(|r| r.rule.name == saved.rule.name)
            else {
                continue;
            };
            if *run.rule != saved.rule {
                return Err(EngineError::RuleChanged(saved.rule.name));
            }
            let keys = saved
                .keys
                .into_iter()
                .map(|k| KeyState {
                    name: k.key.into(),
                    last_seq: k.last_seq,
                    dropped_late: k.dropped_late,
                    windows: k.windows,
                    last_at: k.last_at,
                    track: k.track.map(Box::new),
                })
                .collect();
            run.restore(keys, saved.max_event, saved.metrics);
        }
        Ok(engine)
    }
}

/// A checkpoint: everything an [`Engine`] needs to continue exactly where
/// it was. Serde (JSON with exact floats: the crate turns on serde_json's
/// `float_roundtrip`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    /// Format version ([`State::VERSION`]).
    pub version: u32,
    /// Per rule.
    pub rules: Vec<RuleState>,
}

impl State {
    /// The current format.
    pub const VERSION: u32 = 1;

    /// Drops a rule's state (e.g. after its definition changed).
    pub fn forget(&mut self, rule: &str) {
        self.rules.retain(|r| r.rule.name != rule);
    }
}

/// One rule's checkpointed state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuleState {
    /// The definition the state belongs to.
    pub rule: Rule,
    /// Latest event time seen.
    pub max_event: Option<i64>,
    /// Counters.
    pub metrics: RuleMetrics,
    /// Per key, in interning order.
    pub keys: Vec<KeyCheckpoint>,
}

/// One rule's state borrowed from the engine ([`Engine::checkpoint_rule`]).
#[derive(Debug)]
pub struct RuleCheckpointRef<'a> {
    /// Latest event time seen.
    pub max_event: Option<i64>,
    /// Counters.
    pub metrics: RuleMetrics,
    /// Per key, in interning order.
    pub keys: Vec<KeyCheckpointRef<'a>>,
}

/// One (rule, key)'s state borrowed from the engine: serialises to the
/// same JSON as the [`KeyCheckpoint`] it would make (which reads it back).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct KeyCheckpointRef<'a> {
    key: &'a str,
    last_seq: Option<u64>,
    dropped_late: u64,
    windows: &'a [Win],
    #[serde(skip_serializing_if = "Option::is_none")]
    last_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    track: Option<&'a Track>,
}

impl KeyCheckpointRef<'_> {
    /// The key.
    pub fn key(&self) -> &str {
        self.key
    }

    /// Stream sequence of the last event applied.
    pub fn last_seq(&self) -> Option<u64> {
        self.last_seq
    }
}

/// One (rule, key)'s checkpointed state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyCheckpoint {
    /// The key.
    pub key: String,
    /// Stream sequence of the last event applied.
    pub last_seq: Option<u64>,
    /// Readings dropped as too late.
    pub dropped_late: u64,
    /// Open and retained windows.
    windows: Vec<Win>,
    /// With an aggregate's `stale_after`: the latest event time applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_at: Option<i64>,
    /// A pattern's or detector's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    track: Option<Track>,
}
