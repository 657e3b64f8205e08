//! `plantd-alerts`: the alert engine or the notifier on AWS Lambda
//! (feature `lambda`). One package, two functions, chosen by
//! `PLANTD_FUNCTION` — as the proxy's package serves three roles:
//!
//! * `alerts` — the engine ([`plantd_alerts::Engine`]). Its SQS queues,
//!   fed by `plantd-forwarder` from `PLANTD_LOGS`, `PLANTD_TELEMETRY` and
//!   `PLANTD_AGGREGATES` (analytics signals, decision 0030),
//!   invoke it with batches of stream items ([`plantd_trigger::sqs`]:
//!   envelopes back into items, a partial batch response for the items
//!   that failed). An EventBridge scheduled event
//!   (`{"source":"aws.events","detail-type":"Scheduled Event",…}`, the
//!   template's rule, every minute) is the engine's clock: one
//!   [`Engine::tick`] — `for` durations, windows sliding out, absence,
//!   no-data and repeats are decided there, so on AWS they resolve to the
//!   schedule's period (a long-running host, `plantd functions` or
//!   `plantd up`, ticks every second). Any other event is refused.
//! * `notifier` — the notifier ([`plantd_alerts::notify::Notifier`]) on
//!   SQS batches of `PLANTD_ALERTS` records: webhooks signed with
//!   HMAC-SHA256, SNS.
//!
//! **State is NATS's, not the instance's.** A Lambda instance is frozen
//! between invocations and several run at once (one per concurrent
//! batch), so nothing here relies on memory between invocations: rules and
//! silences are read again at the start of every SQS invocation (a rule
//! edit is seen by the next batch), and each tick builds the engine afresh
//! from `plantd_alert_state` — every instance, including those another
//! Lambda instance created — before stepping it. Instance changes are
//! compare-and-set in KV and records go out through the outbox
//! (decision 0024), so concurrent invocations cannot write a transition
//! twice.
//!
//! Environment (through `plantd_shared::config`):
//! * `PLANTD_FUNCTION`: `alerts` or `notifier` (required; anything else is
//!   a start-up error naming the choices);
//! * `PLANTD_NATS_URL` (required) and `PLANTD_NATS_CREDS` (a `.creds`
//!   file, optional — on Lambda a file of a layer, under `/opt`): NATS
//!   with plantd's streams and KV buckets (`plantd streams` creates them);
//! * `PLANTD_ALERTS_SECRET_ID` (the notifier; required): the alerts
//!   secret in Secrets Manager, whose `channel_key` seals and opens the
//!   channels' webhook secrets ([`plantd_alerts::notify::keys`]); the
//!   notifier does not start without it;
//! * the standard AWS variables Lambda sets (region, credentials; the
//!   notifier's SNS client and Secrets Manager; `AWS_ENDPOINT_URL` in
//!   tests).
//!
//! The NATS connection and the handlers are made once, at cold start, and
//! reused by warm invocations.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use anyhow::Context as _;
use async_nats::jetstream;
use lambda_http::lambda_runtime::{self, LambdaEvent, service_fn};
use plantd_alerts::notify::{self, Notifier};
use plantd_alerts::{Engine, SystemClock};
use plantd_trigger::sqs::{self, SqsBatchResponse, SqsEvent};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Which handler of the package a function runs (`PLANTD_FUNCTION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Function {
    /// The alert engine on `PLANTD_LOGS`, `PLANTD_TELEMETRY` and
    /// `PLANTD_AGGREGATES`, and its clock.
    Alerts,
    /// The notifier on `PLANTD_ALERTS`.
    Notifier,
}

impl FromStr for Function {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            plantd_alerts::FUNCTION => Ok(Self::Alerts),
            plantd_alerts::NOTIFIER => Ok(Self::Notifier),
            "" => anyhow::bail!(
                "PLANTD_FUNCTION is not set: it names the handler this function runs, `{}` or `{}`",
                plantd_alerts::FUNCTION,
                plantd_alerts::NOTIFIER
            ),
            other => anyhow::bail!(
                "PLANTD_FUNCTION={other:?} is not a function of plantd-alerts: use `{}` or `{}`",
                plantd_alerts::FUNCTION,
                plantd_alerts::NOTIFIER
            ),
        }
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Alerts => plantd_alerts::FUNCTION,
            Self::Notifier => plantd_alerts::NOTIFIER,
        })
    }
}

/// The function's configuration: `PLANTD_*` variables over these defaults
/// (`plantd_shared::config`).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    /// `alerts` or `notifier` ([`Function`]).
    function: String,
    /// The NATS server URL (required).
    nats_url: String,
    /// A NATS credentials file (`.creds`), if the server wants one.
    nats_creds: Option<PathBuf>,
    /// The alerts secret (the notifier's channel key).
    alerts_secret_id: Option<String>,
    /// A channel key file: refused under Lambda, read only to say so.
    channel_key_file: Option<PathBuf>,
}

/// The command line overrides nothing (an empty map for
/// `plantd_shared::config::load`).
#[derive(Serialize)]
struct NoOverrides {}

/// JetStream on the configured NATS server (`nats_url` checked set).
async fn jetstream(config: &Config, function: Function) -> anyhow::Result<jetstream::Context> {
    let mut options = async_nats::ConnectOptions::new().name(format!("plantd-{function}"));
    if let Some(creds) = &config.nats_creds {
        options = options
            .credentials_file(creds)
            .await
            .with_context(|| format!("cannot read NATS credentials {}", creds.display()))?;
    }
    let client = plantd_shared::nats_urls::connect(&config.nats_url, options)
        .await
        .with_context(|| {
            format!(
                "cannot connect to NATS at {}",
                plantd_shared::nats_urls::redacted(&config.nats_url)
            )
        })?;
    Ok(jetstream::new(client))
}

/// What the `alerts` function was invoked with.
#[derive(Debug)]
enum AlertsEvent {
    /// A batch from its SQS queues.
    Sqs(SqsEvent),
    /// The schedule: the engine's clock.
    Tick,
}

impl AlertsEvent {
    /// Tells an SQS event (`Records`) from an EventBridge scheduled event
    /// (`source` `aws.events`, `detail-type` `Scheduled Event`).
    ///
    /// # Errors
    /// When it is neither (naming what it was), or `Records` is not an SQS
    /// event's.
    fn classify(event: Value) -> anyhow::Result<Self> {
        if event.get("Records").is_some() {
            let sqs: SqsEvent =
                serde_json::from_value(event).context("field Records: not an SQS event")?;
            return Ok(Self::Sqs(sqs));
        }
        let source = event.get("source").and_then(Value::as_str);
        let detail_type = event.get("detail-type").and_then(Value::as_str);
        match (source, detail_type) {
            (Some("aws.events"), Some("Scheduled Event")) => Ok(Self::Tick),
            _ => anyhow::bail!(
                "the alerts function takes SQS events (Records) and EventBridge scheduled events (source aws.events, detail-type \"Scheduled Event\"); got source {source:?}, detail-type {detail_type:?}"
            ),
        }
    }
}

/// The `alerts` function: the engine, rebuilt at every tick.
struct Alerts {
    js: jetstream::Context,
    /// The engine SQS batches go to (the last tick's).
    engine: tokio::sync::Mutex<Engine>,
}

impl Alerts {
    async fn new(js: jetstream::Context) -> anyhow::Result<Self> {
        let engine = Engine::new(&js, Arc::new(SystemClock)).await.context(
            "the alert engine's stores (plantd streams creates the buckets and PLANTD_ALERTS)",
        )?;
        Ok(Self {
            js,
            engine: tokio::sync::Mutex::new(engine),
        })
    }

    /// A batch: rules and silences read again (another process may have
    /// changed them since the last invocation), then the engine on the
    /// items.
    ///
    /// # Errors
    /// When the rules cannot be read: the whole batch is retried by SQS.
    async fn batch(&self, event: SqsEvent) -> anyhow::Result<Value> {
        let engine = self.engine.lock().await.clone();
        engine
            .reload()
            .await
            .context("reading the alert rules and silences")?;
        let records = event.records.len();
        let response: SqsBatchResponse = sqs::handle(&engine, event).await;
        tracing::info!(
            records,
            failed = response.batch_item_failures.len(),
            "batch handled"
        );
        Ok(serde_json::to_value(response)?)
    }

    /// One clock step over every instance in `plantd_alert_state`: a fresh
    /// engine (rules, silences, all instances, outboxes left by a crash
    /// published), ticked, then kept for the next batches.
    ///
    /// # Errors
    /// When the stores cannot be read: this tick is skipped (the next one
    /// catches up: every duration is judged against the clock).
    async fn tick(&self) -> anyhow::Result<Value> {
        let engine = Engine::new(&self.js, Arc::new(SystemClock))
            .await
            .context("reading the alert engine's stores for a tick")?;
        engine.tick().await;
        let instances = engine.instances().await.len();
        *self.engine.lock().await = engine;
        tracing::info!(instances, "tick");
        Ok(json!({ "ticked": true, "instances": instances }))
    }
}

/// Serves the `alerts` function until the runtime stops.
async fn serve_alerts(js: jetstream::Context) -> anyhow::Result<()> {
    let alerts = Arc::new(Alerts::new(js).await?);
    tracing::info!(
        function = plantd_alerts::FUNCTION,
        "alerts serving SQS and scheduled events through the Lambda runtime API"
    );
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let alerts = alerts.clone();
        async move {
            let answer = match AlertsEvent::classify(event.payload) {
                Ok(AlertsEvent::Sqs(batch)) => alerts.batch(batch).await,
                Ok(AlertsEvent::Tick) => alerts.tick().await,
                Err(e) => Err(e),
            };
            // The whole chain, not only the outermost context, in the
            // invocation's error.
            answer.map_err(|e| lambda_runtime::Error::from(format!("{e:#}")))
        }
    }))
    .await
    .map_err(|e| anyhow::anyhow!("Lambda runtime: {e}"))
}

/// The notifier's channel keys: the alerts secret's `channel_key`.
async fn channel_keys(config: &Config) -> anyhow::Result<notify::ChannelKeys> {
    notify::KeySource {
        secret_id: config.alerts_secret_id.clone(),
        key_file: config.channel_key_file.clone(),
        on_lambda: true,
    }
    .load()
    .await
    .context("the notifier's channel key")
}

/// Serves the `notifier` function until the runtime stops: webhook
/// secrets still in clear (or under a previous key) sealed once, then SQS
/// batches.
async fn serve_notifier(js: jetstream::Context, keys: notify::ChannelKeys) -> anyhow::Result<()> {
    let notifier: Arc<Notifier> = Arc::new(
        notify::notifier(&js, notify::Settings::default(), Arc::new(keys))
            .await
            .context("the notifier's stores (plantd streams creates the buckets)")?,
    );
    if let Err(e) = notifier.channels().reseal().await {
        tracing::warn!(error = %e, "cannot seal the channels' webhook secrets now; the next cold start tries again");
    }
    tracing::info!(
        function = plantd_alerts::NOTIFIER,
        "notifier serving SQS events through the Lambda runtime API"
    );
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let notifier = notifier.clone();
        async move {
            let records = event.payload.records.len();
            let response = sqs::handle(notifier.as_ref(), event.payload).await;
            tracing::info!(
                records,
                failed = response.batch_item_failures.len(),
                "batch handled"
            );
            Ok::<_, lambda_runtime::Error>(response)
        }
    }))
    .await
    .map_err(|e| anyhow::anyhow!("Lambda runtime: {e}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    plantd_shared::logging::init("plantd-alerts");
    let config: Config =
        plantd_shared::config::load(None, &NoOverrides {}).map_err(|e| anyhow::anyhow!("{e}"))?;
    let function: Function = config.function.parse()?;
    anyhow::ensure!(
        std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some(),
        "plantd-alerts runs under the Lambda runtime (AWS_LAMBDA_RUNTIME_API); locally `plantd up` or `plantd functions` runs the {function} in-process"
    );
    anyhow::ensure!(
        !config.nats_url.is_empty(),
        "PLANTD_NATS_URL is not set: the {function} function keeps its state in NATS KV"
    );
    // Before NATS: a notifier without its key does not start at all.
    let keys = match function {
        Function::Notifier => Some(channel_keys(&config).await?),
        Function::Alerts => None,
    };
    let js = jetstream(&config, function).await?;
    match (function, keys) {
        (Function::Notifier, Some(keys)) => serve_notifier(js, keys).await,
        _ => serve_alerts(js).await,
    }
}
