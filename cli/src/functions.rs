//! The event functions on one trigger — the logger (per-minute aggregates,
//! exactly once), the alert engine (log and telemetry rules, with its
//! clock) and the notifier (webhooks, SNS) — and `plantd functions`, which
//! runs them alone against any NATS.
//!
//! `plantd up` runs [`EventFunctions`] in its own process. `plantd
//! functions` is the same set as a process of its own: a second host
//! beside `plantd up`, the long-running half of a cloud deployment, or the
//! process the crash test kills at random points. Every binding is a
//! durable consumer (`logger_PLANTD_LOGS`, `alerts_PLANTD_LOGS`,
//! `alerts_PLANTD_TELEMETRY`, `alerts_PLANTD_AGGREGATES` — the analytics
//! signals the alert engine turns into alerts —, `notifier_PLANTD_ALERTS`,
//! `analytics_PLANTD_TELEMETRY`), so any number of
//! hosts share the work and a restarted one resumes where the stream's
//! acknowledgements say — every handler is idempotent on (stream,
//! sequence), so what a killed host had half done is done once.
//!
//! The trigger receives and acknowledges every binding's items on the
//! host's connection; the analytics function and the logger read and write
//! on a NATS connection each of their own ([`FunctionConnections`]).
//! nats-server handles one connection's messages in order, so on a shared
//! connection a function's fencing read and results queued behind the
//! thousands of acknowledgements the trigger had just sent for the
//! previous batch (docs/performance.md, "Analytics end to end").

use std::future::Future;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use async_nats::jetstream;
use plantd_alerts::notify::{ChannelKeys, KeySource};
use plantd_shared::streams;
use plantd_trigger::{ConsumerSettings, Trigger};
use serde::{Deserialize, Serialize};

/// The NATS connections of the functions that write the most, beside the
/// host's connection the trigger receives and acknowledges on.
pub struct FunctionConnections {
    /// The analytics function's reads and writes: fencing reads, results,
    /// checkpoints, its stream-order reads.
    pub analytics: jetstream::Context,
    /// The logger's: its per-minute aggregates.
    pub logger: jetstream::Context,
    /// The clients opened for them (drained on stop); empty when they
    /// share the host's.
    own: Vec<async_nats::Client>,
}

impl FunctionConnections {
    /// Opens a connection each to `nats_url` (one URL or a comma-separated
    /// list, `plantd_shared::nats_urls`), named `plantd <function>` in
    /// nats-server's monitoring.
    ///
    /// # Errors
    /// When NATS is unreachable (the redacted URL in the message).
    pub async fn connect(nats_url: &str) -> Result<Self> {
        let open = |name: &'static str| async move {
            plantd_shared::nats_urls::connect(
                nats_url,
                async_nats::ConnectOptions::new().name(format!("plantd {name}")),
            )
            .await
            .with_context(|| {
                format!(
                    "the {name} function cannot connect to {}",
                    plantd_shared::nats_urls::redacted(nats_url)
                )
            })
        };
        let analytics = open(plantd_analytics_function::FUNCTION).await?;
        let logger = open(plantd_logger::FUNCTION).await?;
        Ok(Self {
            analytics: jetstream::new(analytics.clone()),
            logger: jetstream::new(logger.clone()),
            own: vec![analytics, logger],
        })
    }

    /// Every function on `js` — the host's connection (slower under load:
    /// the functions' writes queue behind the trigger's acknowledgements).
    pub fn shared(js: &jetstream::Context) -> Self {
        Self {
            analytics: js.clone(),
            logger: js.clone(),
            own: Vec::new(),
        }
    }

    /// Drains the connections opened for the functions.
    async fn drain(self) {
        for client in self.own {
            if let Err(e) = client.drain().await {
                tracing::debug!(error = %e, "draining a function's NATS client");
            }
        }
    }
}

/// The event functions bound to one trigger.
pub struct EventFunctions {
    trigger: Trigger,
    connections: FunctionConnections,
    alerts: plantd_alerts::Running,
    /// The analytics function (its rule watch and idle clock).
    analytics: plantd_analytics_function::Running,
    lines: Vec<(&'static str, String)>,
}

impl EventFunctions {
    /// Binds the logger, the alert engine and the notifier to a new trigger
    /// on `js` (the streams and buckets must exist: `streams::ensure`),
    /// every consumer with `settings` (the logger's with its own batch
    /// size and `settings`' `ack_wait`). Every function reads and writes
    /// on `js` too ([`FunctionConnections::shared`]). The notifier opens
    /// webhook secrets with `keys` and first seals any still in clear
    /// ([`plantd_alerts::notify::Channels::reseal`]).
    ///
    /// # Errors
    /// When a bucket is missing or the trigger refuses a binding; the error
    /// names the function.
    pub async fn start(
        js: &jetstream::Context,
        settings: ConsumerSettings,
        keys: Arc<ChannelKeys>,
    ) -> Result<Self> {
        Self::start_feeding(js, FunctionConnections::shared(js), settings, None, keys).await
    }

    /// [`Self::start`], the analytics function and the logger on
    /// `connections`, the logger also feeding `index` — the log index
    /// this process's `/v1/logs` reads — with the lines it parsed, so they
    /// are read and parsed once (`plantd_logger::feed`).
    ///
    /// # Errors
    /// As [`Self::start`].
    pub async fn start_feeding(
        js: &jetstream::Context,
        connections: FunctionConnections,
        settings: ConsumerSettings,
        index: Option<Arc<plantd_logger::LogIndex>>,
        keys: Arc<ChannelKeys>,
    ) -> Result<Self> {
        Self::start_with(
            js,
            connections,
            settings,
            index,
            plantd_analytics_function::Settings::default(),
            keys,
        )
        .await
    }

    /// [`Self::start_feeding`] with the analytics function's `analytics`
    /// settings (its idle clock).
    ///
    /// # Errors
    /// As [`Self::start`].
    pub async fn start_with(
        js: &jetstream::Context,
        connections: FunctionConnections,
        settings: ConsumerSettings,
        index: Option<Arc<plantd_logger::LogIndex>>,
        analytics: plantd_analytics_function::Settings,
        keys: Arc<ChannelKeys>,
    ) -> Result<Self> {
        let mut trigger = Trigger::new(js.clone());
        let mut lines = Vec::new();
        // The logger counts every line in the per-minute aggregates exactly
        // once; queries read the log index, which follows the stream itself.
        let aggregates = plantd_logger::Aggregates::open(
            &connections.logger,
            plantd_logger::AggregateSettings::default(),
        )
        .await
        .context("the log aggregates bucket is missing")?;
        let mut logger = plantd_logger::Logger::new(0).with_aggregates(aggregates);
        if let Some(index) = index {
            logger = logger.with_index(index);
        }
        let logger = Arc::new(logger);
        let logged = trigger
            .bind(
                plantd_logger::FUNCTION,
                streams::LOGS,
                logger,
                // Big batches (one CAS per minute key per batch).
                plantd_trigger::ConsumerSettings {
                    ack_wait: settings.ack_wait,
                    ..plantd_logger::consumer_settings()
                },
            )
            .await
            .context("the logger did not start")?;
        lines.push((
            "logger",
            format!(
                "{logged}  (per-minute aggregates of {}; dead letters in {}: plantd dlq list)",
                streams::LOGS,
                streams::DLQ
            ),
        ));
        let notifier =
            plantd_alerts::notify::notifier(js, plantd_alerts::notify::Settings::default(), keys)
                .await
                .context("the notifier did not start")?;
        // Webhook secrets an older plantd stored in clear, or sealed with a
        // previous key: sealed with the current one, once.
        notifier
            .channels()
            .reseal()
            .await
            .context("sealing the alert channels' webhook secrets")?;
        let notified =
            plantd_alerts::notify::bind(&mut trigger, Arc::new(notifier), settings.clone())
                .await
                .context("the notifier did not start")?;
        lines.push((
            "notifier",
            format!("{notified}  (alert records -> webhooks and SNS: plantd channels)"),
        ));
        // Analytics: the cloud-placed rules on telemetry, results to
        // PLANTD_AGGREGATES exactly once (decision 0029).
        let analytics = plantd_analytics_function::start(
            &connections.analytics,
            &mut trigger,
            analytics,
            &settings,
        )
        .await
        .context("the analytics function did not start")?;
        lines.push((
            "analytics",
            format!(
                "{}  (rules: {}; results in {})",
                analytics.consumer,
                streams::ANALYTICS_RULES_BUCKET,
                streams::AGGREGATES
            ),
        ));
        let alerts = plantd_alerts::start(
            js,
            &mut trigger,
            Arc::new(plantd_alerts::SystemClock),
            plantd_alerts::TICK,
            settings,
        )
        .await
        .context("the alert engine did not start")?;
        lines.push((
            "alerts",
            format!(
                "{}  (rules: plantd rules; alerts: plantd alerts)",
                alerts.consumers.join(", ")
            ),
        ));
        Ok(Self {
            trigger,
            connections,
            alerts,
            analytics,
            lines,
        })
    }

    /// One status line per function: (name, what it consumes).
    pub fn lines(&self) -> &[(&'static str, String)] {
        &self.lines
    }

    /// The trigger's metrics and health, for `/metrics` and
    /// `/healthz/trigger`.
    pub fn status(&self) -> plantd_trigger::Status {
        self.trigger.status()
    }

    /// Stops the alert engine's clock, then the trigger once the batches in
    /// hand are settled, then drains the functions' own connections.
    pub async fn stop(self) {
        drop(self.alerts);
        drop(self.analytics);
        self.trigger.shutdown().await;
        self.connections.drain().await;
    }
}

/// Configuration of `plantd functions` (file `--config`, `PLANTD_*` env,
/// flags).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FunctionsConfig {
    /// The NATS server (JetStream) to consume from.
    pub nats_url: String,
    /// Health and metrics listener (`/healthz`, `/healthz/trigger`,
    /// `/metrics`); port 0 picks a free one.
    pub http_listen: String,
    /// How long a delivered item may stay unacknowledged before JetStream
    /// hands it out again (a host that died holding it), in milliseconds.
    pub ack_wait_ms: u64,
    /// The analytics function's idle clock: a (site, rule) with no reading
    /// for this long has its event time moved on by the wall time since
    /// (windows close, absence fires), in milliseconds; 0 turns it off
    /// (results then depend on the readings alone).
    pub analytics_idle_close_ms: u64,
    /// The alerts secret in Secrets Manager whose `channel_key` seals the
    /// channels' webhook secrets (a cloud deployment's); wins over
    /// `channel_key_file`.
    pub alerts_secret_id: Option<String>,
    /// The channel key file, created (mode 0600) on first start: the same
    /// file as the `plantd up` (and proxy) this host works beside — by
    /// default `plantd up`'s in its default data directory.
    pub channel_key_file: std::path::PathBuf,
}

impl Default for FunctionsConfig {
    fn default() -> Self {
        Self {
            nats_url: "nats://127.0.0.1:4222".into(),
            http_listen: "127.0.0.1:9096".into(),
            ack_wait_ms: 30_000,
            analytics_idle_close_ms: 10_000,
            alerts_secret_id: None,
            channel_key_file: crate::up::channel_key_path(std::path::Path::new(
                crate::up::DEFAULT_DATA_DIR,
            )),
        }
    }
}

/// Flags of `plantd functions` (unset ones are skipped).
#[derive(Debug, Default, Serialize)]
pub struct FunctionsOverrides {
    /// `--nats-url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_url: Option<String>,
    /// `--http-listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_listen: Option<String>,
}

/// Loads the configuration: defaults, then `file`, then `PLANTD_*`, then
/// flags.
///
/// # Errors
/// A one-line error naming the key and where its bad value came from.
pub fn load_config(
    file: Option<&std::path::Path>,
    overrides: &FunctionsOverrides,
) -> Result<FunctionsConfig> {
    Ok(plantd_shared::config::load(file, overrides)?)
}

/// Runs the event functions against `config.nats_url` until `shutdown`
/// completes: creates or updates the streams and buckets, binds every
/// function, serves `/healthz` (200 while running), `/healthz/trigger`
/// (503 naming a stuck consumer) and `/metrics`, and prints one status
/// line per function plus `functions ready http://<addr>` on standard
/// output. On shutdown the batches in hand are settled before exit.
///
/// # Errors
/// When NATS is unreachable, a stream or bucket cannot be created, a
/// function cannot bind, or the listener cannot bind.
pub async fn run(
    config: FunctionsConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    plantd_shared::log_ship::start("functions");
    let client =
        plantd_shared::nats_urls::connect(&config.nats_url, async_nats::ConnectOptions::new())
            .await
            .with_context(|| {
                format!(
                    "cannot connect to {}",
                    plantd_shared::nats_urls::redacted(&config.nats_url)
                )
            })?;
    let js = jetstream::new(client.clone());
    streams::ensure(&js, &streams::Settings::default())
        .await
        .context("cannot create plantd's streams and buckets")?;
    if let Some(queue) = plantd_shared::log_ship::take(plantd_shared::log_ship::Route::Platform) {
        tokio::spawn(plantd_shared::log_ship::publish_to_jetstream(
            queue,
            client.clone(),
            plantd_shared::sites::PLATFORM_SITE,
        ));
    }
    let settings = ConsumerSettings {
        ack_wait: std::time::Duration::from_millis(config.ack_wait_ms),
        ..ConsumerSettings::default()
    };
    settings
        .validate()
        .map_err(|e| anyhow::anyhow!("ack_wait_ms: {e}"))?;
    let analytics = plantd_analytics_function::Settings {
        idle_close: (config.analytics_idle_close_ms > 0)
            .then(|| std::time::Duration::from_millis(config.analytics_idle_close_ms)),
        ..plantd_analytics_function::Settings::default()
    };
    let keys = KeySource {
        secret_id: config.alerts_secret_id.clone(),
        key_file: Some(config.channel_key_file.clone()),
        on_lambda: false,
    }
    .load()
    .await
    .context("the alert channels' key")?;
    let connections = FunctionConnections::connect(&config.nats_url).await?;
    let functions =
        EventFunctions::start_with(&js, connections, settings, None, analytics, Arc::new(keys))
            .await?;
    for (name, detail) in functions.lines() {
        println!("  {name:<9} ready   {detail}");
    }
    let router = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .merge(plantd_trigger::http::routes(functions.status()));
    let router = with_analytics_metrics(router, &functions);
    let listener = tokio::net::TcpListener::bind(&config.http_listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.http_listen))?;
    let addr = listener.local_addr()?;
    println!("functions ready http://{addr}");
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await;
    functions.stop().await;
    if let Err(e) = client.drain().await {
        tracing::debug!(error = %e, "draining the NATS client");
    }
    served.context("the health and metrics server failed")
}

/// Adds `GET /metrics/analytics` (the analytics function's counters per
/// site and rule) to `router`.
fn with_analytics_metrics(router: axum::Router, functions: &EventFunctions) -> axum::Router {
    let metrics = functions.analytics.analytics.clone();
    router.route(
        "/metrics/analytics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        plantd_trigger::http::PROMETHEUS_CONTENT_TYPE,
                    )],
                    metrics.metrics().prometheus(),
                )
            }
        }),
    )
}
