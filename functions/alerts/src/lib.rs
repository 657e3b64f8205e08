//! `plantd-alerts`: the one alert manager, for log, telemetry and
//! analytics rules. Rules are data (org-scoped, in KV); the engine follows
//! `PLANTD_LOGS`, `PLANTD_TELEMETRY` and `PLANTD_AGGREGATES` (the signals
//! of analytics patterns and anomalies) through the trigger and a clock
//! for durations and absence; every alert instance — one per (rule, key) —
//! moves pending → firing → resolved, or into no-data (never "resolved"),
//! with its state in KV; each transition is written once to
//! `PLANTD_ALERTS` and notified from there. Decision record:
//! `docs/decisions/0024-alert-manager.md`.
//!
//! | module | what it holds |
//! |---|---|
//! | [`record`] | [`AlertRecord`]: what `PLANTD_ALERTS` holds (the contract with the notifier, the proxy, the CLI and the app) |
//! | [`rule`] | [`Rule`]: rules as JSON, validated with errors naming the field |
//! | [`duration`] | [`Dur`]: `30s`, `5m`, `1h30m` |
//! | [`silence`] | [`Silence`], [`Matcher`]: label matchers and a time window |
//! | [`instance`] | [`InstanceState`]: one (rule, key) instance, its lifecycle and outbox |
//! | [`store`] | [`Stores`]: rules, silences, state (CAS) and the outbox protocol to `PLANTD_ALERTS` |
//! | [`engine`] | [`Engine`]: the trigger handler and the clock step |
//! | [`clock`] | [`Clock`], [`SystemClock`], [`ManualClock`] |
//! | `logs` | log conditions' matching through `plantd_logger::query` |
//! | [`analytics`] | analytics conditions: signalled results in `PLANTD_AGGREGATES` as observations |
//! | [`notify`] | the notifier on `PLANTD_ALERTS`: channels (webhook signed with HMAC-SHA256, SNS), delivery markers, retries |
//!
//! Stores: `plantd_alert_rules`, `plantd_alert_state`,
//! `plantd_alert_silences`, `plantd_alert_channels`, `plantd_notifications`
//! (names in `plantd_shared::streams`).

pub mod analytics;
pub mod clock;
pub mod duration;
pub mod engine;
pub mod instance;
mod logs;
pub mod notify;
pub mod record;
pub mod rule;
pub mod silence;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use plantd_shared::streams;
use plantd_trigger::{ConsumerSettings, Trigger, TriggerError};
use thiserror::Error;

pub use clock::{Clock, ManualClock, SystemClock};
pub use duration::Dur;
pub use engine::Engine;
pub use instance::InstanceState;
pub use record::{AlertRecord, AlertState, Evidence, RecordKind, Severity};
pub use rule::{Condition, Rule, RuleError};
pub use silence::{Matcher, Silence};
pub use store::{StoreError, Stores};

/// The function name the alert engine binds to the trigger with.
pub const FUNCTION: &str = "alerts";
/// The function name the notifier binds to the trigger with (on
/// `PLANTD_ALERTS`).
pub const NOTIFIER: &str = "notifier";
/// The streams the engine consumes (one durable consumer
/// `alerts_<stream>` each; on AWS one SQS queue each, decision 0026).
pub const STREAMS: [&str; 3] = [streams::TELEMETRY, streams::LOGS, streams::AGGREGATES];
/// How often the clock steps the engine by default.
pub const TICK: Duration = Duration::from_secs(1);

/// Why the alert engine did not start.
#[derive(Debug, Error)]
pub enum StartError {
    /// Its stores could not be read.
    #[error("alert engine: {0}")]
    Store(#[from] StoreError),
    /// The trigger refused a binding.
    #[error("alert engine: {0}")]
    Trigger(#[from] TriggerError),
}

/// The running engine: its clock and watcher tasks stop when this is
/// dropped (the trigger's bindings stop with the trigger).
#[derive(Debug)]
pub struct Running {
    engine: Engine,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The durable consumers bound (`alerts_PLANTD_LOGS`,
    /// `alerts_PLANTD_TELEMETRY`, `alerts_PLANTD_AGGREGATES`).
    pub consumers: Vec<String>,
}

impl Running {
    /// The engine (for diagnostics and tests).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Lets the clock and the watcher run for the rest of the process
    /// (`plantd up`, whose trigger lives as long as it does).
    pub fn detach(mut self) {
        self.tasks.clear();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts the alert engine: binds it as [`FUNCTION`] to `PLANTD_LOGS`,
/// `PLANTD_TELEMETRY` and `PLANTD_AGGREGATES` ([`STREAMS`]) on `trigger`
/// with `settings`, and starts its clock
/// (every `tick`, reading the time from `clock`) and the watcher that
/// reloads rules and silences when they change.
///
/// # Errors
/// [`StartError`] when the stores cannot be read or a binding fails.
pub async fn start(
    js: &jetstream::Context,
    trigger: &mut Trigger,
    clock: Arc<dyn Clock>,
    tick: Duration,
    settings: ConsumerSettings,
) -> Result<Running, StartError> {
    let engine = Engine::new(js, clock).await?;
    let tasks = vec![
        tokio::spawn(engine.clone().watch_changes(Duration::from_secs(5))),
        tokio::spawn(engine.clone().run_clock(tick)),
    ];
    let mut running = Running {
        engine: engine.clone(),
        tasks,
        consumers: Vec::new(),
    };
    let handler = Arc::new(engine);
    for stream in STREAMS {
        let durable = trigger
            .bind(FUNCTION, stream, handler.clone(), settings.clone())
            .await?;
        running.consumers.push(durable);
    }
    Ok(running)
}
