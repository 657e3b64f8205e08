//! `plantd-analytics`: the rule engine behind plantd's analytics — windows,
//! watermarks and aggregates on live telemetry, exactly once. A pure
//! library (no I/O, no async, deterministic): the cloud's analytics
//! function and the edge both drive it with events and store its
//! checkpoints. Decision record: `docs/decisions/0027-analytics-engine.md`.
//!
//! ```
//! use plantd_analytics::{Engine, Event, Rule};
//!
//! let rule = Rule::from_sql(
//!     "line1_temp",
//!     r#"SELECT avg(value), max(value) FROM "line1/+/temp" GROUP BY topic, TUMBLE(1m)"#,
//! ).expect("ok");
//! let mut engine = Engine::new(vec![rule]).expect("ok");
//! let ev = |seq, at, v: &'static str| Event {
//!     topic: "line1/m3/temp", payload: v.as_bytes(), received_at: at, stream_seq: seq,
//! };
//! assert!(engine.process(&ev(1, 1_000, "20")).is_empty());
//! assert!(engine.process(&ev(2, 2_000, "22")).is_empty());
//! let out = engine.process(&ev(3, 61_000, "30")); // the watermark passes 60 s
//! assert_eq!(out[0].values["avg_value"], 21.0);
//! assert_eq!(out[0].id(), "line1_temp:line1/m3/temp:0:0");
//! ```
//!
//! | module | what it holds |
//! |---|---|
//! | [`rule`] | [`Rule`]: the JSON form of a rule, validated with errors naming the field; [`Operator`]: aggregate, pattern or anomaly |
//! | [`pattern`] | [`Pattern`] (threshold held, sequence / absence, rate of change, stale source) and [`Anomaly`] (EWMA z-score, CUSUM) as data |
//! | [`sql`] | [`Rule::from_sql`]: the SQL form (sqlparser), errors at line:column; `sql::expr` its durations, fields and conditions |
//! | [`engine`] | [`Engine`], [`Event`], [`Output`], [`State`]: the API and its contract, checkpoints |
//! | `window` | per rule: interned keys, tumbling/hopping/session windows (with `stale_after` gaps), the watermark and its timers |
//! | `track` | per key of a pattern or detector: readings held to the watermark, deadlines, the state machines, fire/clear |
//! | `accumulate` | per window and field: moments, min/max, first/last, DDSketch, HyperLogLog++ |
//! | [`field`] | [`FieldPath`] (`value`, `payload.a.b`) and lazy payload parsing |
//! | [`stored`] | [`StoredRule`]: a rule as stored in `plantd_analytics_rules` (`<org>.<name>`), with its [`Placement`] and sites |
//! | [`topic`] | [`TopicFilter`]: MQTT filters |
//! | [`duration`] | [`Millis`]: `500ms`, `10s`, `1m`, `1h30m` |
//!
//! Patterns (CEP) and anomaly detectors are [`Operator`] variants (rule
//! JSON `"operator": {"pattern": …}` / `{"anomaly": …}`, SQL
//! `SELECT threshold(value > 8, 30s) FROM … GROUP BY topic`), run by the
//! same engine with the same keys, watermark, timers and checkpoints. Their
//! results are [`Output`]s with a [`Signal`]: `fire` when the condition
//! starts (`window_start` when it began, `window_end` when it was
//! detected), `clear` when it ends (`window_end` then), the evidence in
//! `values`. Fire is revision 0 of its start and clear revision 1, so ids
//! stay unique and deterministic. Semantics: decision 0028; every operator
//! with SQL and JSON examples: `docs/analytics.md`.
//!
//! ```
//! use plantd_analytics::{Engine, Event, Rule, Signal};
//!
//! let rule = Rule::from_sql(
//!     "over_pressure",
//!     r#"SELECT threshold(value > 8, 30s) FROM "line1/+/bar" GROUP BY topic"#,
//! ).expect("ok");
//! let mut engine = Engine::new(vec![rule]).expect("ok");
//! let ev = |seq, at, v: &'static str| Event {
//!     topic: "line1/p1/bar", payload: v.as_bytes(), received_at: at, stream_seq: seq,
//! };
//! assert!(engine.process(&ev(1, 0, "8.5")).is_empty());
//! let out = engine.advance(30_000); // no message needed: the watermark fires it
//! assert_eq!(out[0].signal, Some(Signal::Fire));
//! assert_eq!((out[0].window_start, out[0].window_end), (0, 30_000));
//! let out = engine.process(&ev(2, 31_000, "7"));
//! assert_eq!(out[0].signal, Some(Signal::Clear));
//! assert_eq!(out[0].id(), "over_pressure:line1/p1/bar:0:1");
//! ```

mod accumulate;
pub mod duration;
pub mod engine;
pub mod field;
pub mod pattern;
pub mod rule;
pub mod sql;
pub mod stored;
pub mod topic;
mod track;
mod window;

pub use duration::Millis;
pub use engine::{
    Engine, EngineError, Event, KeyCheckpoint, KeyCheckpointRef, Output, RuleCheckpointRef,
    RuleState, Signal, State,
};
pub use field::FieldPath;
pub use pattern::{
    Anomaly, Cusum, Direction, Pattern, RateOfChange, Sequence, SequenceMode, Stale, Step,
    Threshold, Zscore,
};
pub use rule::{
    AggFn, Aggregate, Condition, GroupBy, Operator, Rule, RuleError, Select, TimePolicy, Window,
};
pub use sql::SqlError;
pub use stored::{Placement, Source, StoredRule, StoredRuleError};
pub use topic::TopicFilter;
pub use window::RuleMetrics;
