//! `plantd-alerts`: the one alert manager, used by log rules now and by
//! analytics next. Rules are data (org-scoped, in KV); the engine follows
//! `PLANTD_LOGS` and `PLANTD_TELEMETRY` through the trigger and a clock
//! for durations and absence; every alert instance — one per (rule, key) —
//! moves pending → firing → resolved, or into no-data (never "resolved"),
//! with its state in KV; each transition is written once to
//! `PLANTD_ALERTS` and notified from there.
//!
//! | module | what it holds |
//! |---|---|
//! | [`record`] | [`AlertRecord`]: what `PLANTD_ALERTS` holds (the contract with the notifier, the proxy, the CLI and the app) |
//!
//! Stores: `plantd_alert_rules`, `plantd_alert_state`,
//! `plantd_alert_silences`, `plantd_alert_channels`, `plantd_notifications`
//! (names in `plantd_shared::streams`).

pub mod record;

pub use record::{AlertRecord, AlertState, Evidence, RecordKind, Severity};

/// The function name the alert engine binds to the trigger with.
pub const FUNCTION: &str = "alerts";
/// The function name the notifier binds to the trigger with (on
/// `PLANTD_ALERTS`).
pub const NOTIFIER: &str = "notifier";
