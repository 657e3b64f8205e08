//! Shipping plantd's own warnings and errors to `PLANTD_LOGS`, where
//! operators see their devices' logs.
//!
//! [`crate::logging::init`] installs a [`ShipLayer`] in every binary; it
//! stays idle until [`start`] names the process's component. From then on
//! every event at or above the shipped level (`PLANTD_LOG_SHIP`: `off`,
//! `error`, `warn` — the default —, `info`, `debug`, `trace`) becomes one
//! JSON line:
//!
//! ```json
//! {"time":"2026-12-06T14:30:00.123Z","level":"warn","message":"refusing CONNECT: authentication",
//!  "target":"plantd_edge::link","component":"edge","fields":{"client_id":"pump1"}}
//! ```
//!
//! and is queued, by component ([`Route`]), for a sink:
//!
//! * the edge's lines (targets `plantd_edge`, `plantd_bridge`,
//!   `plantd_journal`, or anything in the `plantd-edge` binary) go into the
//!   edge's journal as topic `$plantd/log/plantd/edge` and up to
//!   `plantd.<site>.log.plantd.edge` like a device's log line, so they
//!   survive an outage (the edge takes [`Route::Edge`]);
//! * site-less components' lines (identity, proxy, trigger, logger, alerts,
//!   `plantd up` itself) are published by [`publish_to_jetstream`] to
//!   `plantd._plantd.log.plantd.<component>`
//!   ([`crate::sites::PLATFORM_SITE`]), best effort with a small retry.
//!
//! Logging never waits for shipping: each queue holds [`QUEUE_LINES`]
//! lines; when it is full (no sink yet, NATS slow) the line is dropped and
//! counted ([`dropped`]). Shipping never feeds itself: events of
//! `async_nats` and of this module, and any event emitted inside a sink
//! (the [`SHIP_SPAN`] span), are not shipped.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Lines each queue holds before new ones are dropped.
pub const QUEUE_LINES: usize = 1024;

/// The longest line shipped, in bytes: a longer message is cut and its
/// fields left out (`"truncated": true`).
pub const MAX_LINE: usize = 16 * 1024;

/// The name of the span sinks run in: events inside it are never shipped.
pub const SHIP_SPAN: &str = "plantd_log_ship";

/// The environment variable choosing the shipped level.
pub const LEVEL_ENV: &str = "PLANTD_LOG_SHIP";

/// The component of the edge, whose lines go to its journal.
pub const EDGE: &str = "edge";

/// Which sink a line goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The edge's journal (component [`EDGE`]).
    Edge,
    /// JetStream, under [`crate::sites::PLATFORM_SITE`].
    Platform,
}

impl Route {
    /// The route of a component's lines.
    pub fn of(component: &str) -> Self {
        if component == EDGE {
            Route::Edge
        } else {
            Route::Platform
        }
    }
}

/// One shipped line.
#[derive(Debug, Clone)]
pub struct LogLine {
    /// The component that logged it (`edge`, `identity`, `proxy`, …).
    pub component: &'static str,
    /// Its level.
    pub level: Level,
    /// The JSON line (no trailing newline).
    pub json: Bytes,
}

impl LogLine {
    /// The level's lower-case name, as in the line (`warn`, `error`, …).
    pub fn level_name(&self) -> &'static str {
        level_name(self.level)
    }

    /// The MQTT topic of the line at the edge: `$plantd/log/plantd/<component>`.
    pub fn topic(&self) -> String {
        format!("{}plantd/{}", crate::topic::LOG_PREFIX, self.component)
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

/// Crate (target prefix) → component, for processes that hold several
/// (`plantd up`). Targets not listed belong to the process's own component.
const COMPONENTS: [(&str, &str); 8] = [
    ("plantd_edge", EDGE),
    ("plantd_bridge", EDGE),
    ("plantd_journal", EDGE),
    ("plantd_identity", "identity"),
    ("plantd_proxy", "proxy"),
    ("plantd_trigger", "trigger"),
    ("plantd_logger", "logger"),
    ("plantd_alerts", "alerts"),
];

/// Targets never shipped: the NATS client (its warnings are about the
/// connection shipping uses) and this module.
const IGNORED: [&str; 2] = ["async_nats", "plantd_shared::log_ship"];

fn crate_of(target: &str) -> &str {
    target.split("::").next().unwrap_or(target)
}

/// The component an event of `target` belongs to in a process whose own
/// component is `default`.
pub fn component_of(target: &str, default: &'static str) -> &'static str {
    let krate = crate_of(target);
    COMPONENTS
        .iter()
        .find(|(c, _)| *c == krate)
        .map_or(default, |(_, component)| component)
}

/// One queue and the receiver a sink may hold.
struct Slot {
    tx: mpsc::Sender<LogLine>,
    rx: Mutex<Option<mpsc::Receiver<LogLine>>>,
}

impl Slot {
    fn new() -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_LINES);
        Self {
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }
}

/// The process's shipping state.
struct Shipping {
    /// The shipped level (from [`LEVEL_ENV`]).
    level: LevelFilter,
    /// The process's own component, once [`start`]ed.
    component: OnceLock<&'static str>,
    /// Set by [`start`].
    active: AtomicBool,
    edge: Slot,
    platform: Slot,
    dropped: AtomicU64,
}

impl Shipping {
    fn slot(&self, route: Route) -> &Slot {
        match route {
            Route::Edge => &self.edge,
            Route::Platform => &self.platform,
        }
    }
}

static STATE: OnceLock<Shipping> = OnceLock::new();

fn state() -> &'static Shipping {
    STATE.get_or_init(|| Shipping {
        level: level_from_env(),
        component: OnceLock::new(),
        active: AtomicBool::new(false),
        edge: Slot::new(),
        platform: Slot::new(),
        dropped: AtomicU64::new(0),
    })
}

/// Reads [`LEVEL_ENV`]: a level name, or `off`; anything unreadable (or
/// unset) is `warn`.
pub fn level_from_env() -> LevelFilter {
    std::env::var(LEVEL_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::WARN)
}

/// The level shipped in this process.
pub fn level() -> LevelFilter {
    state().level
}

/// Starts shipping this process's events as `component` (`edge`,
/// `identity`, `proxy`, `up`, …; see the module documentation for events
/// of other crates). Lines queue until a sink [`take`]s them. Calling it
/// again does not change the component.
pub fn start(component: &'static str) {
    let s = state();
    let _ = s.component.set(component);
    s.active.store(true, Ordering::Release);
}

/// Lines dropped because their queue was full or a sink gave them up.
pub fn dropped() -> u64 {
    STATE.get().map_or(0, |s| s.dropped.load(Ordering::Relaxed))
}

/// Counts lines a sink could not deliver.
pub fn count_dropped(n: u64) {
    state().dropped.fetch_add(n, Ordering::Relaxed);
}

/// The receiving end of one route's queue. Only one sink holds it at a
/// time; dropping it gives it back (an edge restarted in-process takes it
/// again).
#[derive(Debug)]
pub struct ShipQueue {
    route: Route,
    rx: Option<mpsc::Receiver<LogLine>>,
}

impl ShipQueue {
    /// The next line; `None` never happens while the process lives.
    pub async fn recv(&mut self) -> Option<LogLine> {
        match self.rx.as_mut() {
            Some(rx) => rx.recv().await,
            None => None,
        }
    }
}

impl Drop for ShipQueue {
    fn drop(&mut self) {
        if let Some(rx) = self.rx.take()
            && let Ok(mut slot) = state().slot(self.route).rx.lock()
        {
            *slot = Some(rx);
        }
    }
}

/// Takes `route`'s queue: `None` while shipping is not [`start`]ed or
/// another sink holds it.
pub fn take(route: Route) -> Option<ShipQueue> {
    let s = state();
    if !s.active.load(Ordering::Acquire) {
        return None;
    }
    let rx = s.slot(route).rx.lock().ok()?.take()?;
    Some(ShipQueue {
        route,
        rx: Some(rx),
    })
}

/// The span a sink runs in (its events, and the NATS client's, are not
/// shipped). An ERROR-level span so it exists whatever the shipped level.
pub fn sink_span() -> tracing::Span {
    tracing::error_span!(target: "plantd_shared::log_ship", "plantd_log_ship")
}

/// The `tracing` layer that turns events into [`LogLine`]s. Installed by
/// [`crate::logging::init`] with the [`level`] as its filter; idle until
/// [`start`].
#[derive(Debug, Default, Clone, Copy)]
pub struct ShipLayer;

impl<S> Layer<S> for ShipLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(s) = STATE.get() else {
            return;
        };
        if !s.active.load(Ordering::Acquire) {
            return;
        }
        let meta = event.metadata();
        if s.level < *meta.level() {
            return;
        }
        let target = meta.target();
        if IGNORED.iter().any(|t| target.starts_with(t)) {
            return;
        }
        if let Some(scope) = ctx.event_scope(event)
            && scope.into_iter().any(|span| span.name() == SHIP_SPAN)
        {
            return;
        }
        let default = s.component.get().copied().unwrap_or("plantd");
        let component = component_of(target, default);
        let line = LogLine {
            component,
            level: *meta.level(),
            json: render(event, component),
        };
        if s.slot(Route::of(component)).tx.try_send(line).is_err() {
            s.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The JSON line of an event.
fn render(event: &Event<'_>, component: &str) -> Bytes {
    let mut v = FieldVisitor::default();
    event.record(&mut v);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let meta = event.metadata();
    let mut line = Map::new();
    line.insert("time".into(), crate::headers::format_time(now).into());
    line.insert("level".into(), level_name(*meta.level()).into());
    line.insert("message".into(), v.message.clone().into());
    line.insert("target".into(), meta.target().into());
    line.insert("component".into(), component.into());
    line.insert("fields".into(), Value::Object(v.fields));
    let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
    if bytes.len() > MAX_LINE {
        let mut message = v.message;
        let mut cut = MAX_LINE / 2;
        while !message.is_char_boundary(cut.min(message.len())) {
            cut -= 1;
        }
        message.truncate(cut);
        line.insert("message".into(), message.into());
        line.insert("fields".into(), Value::Object(Map::new()));
        line.insert("truncated".into(), true.into());
        bytes = serde_json::to_vec(&line).unwrap_or_default();
    }
    Bytes::from(bytes)
}

/// Collects an event's message and fields as JSON values.
#[derive(Default)]
struct FieldVisitor {
    message: String,
    fields: Map<String, Value>,
}

impl FieldVisitor {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = match value {
                Value::String(s) => s,
                other => other.to_string(),
            };
        } else {
            self.fields.insert(field.name().to_owned(), value);
        }
    }
}

impl Visit for FieldVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
}

/// How often [`publish_to_jetstream`] tries one line.
const ATTEMPTS: u32 = 3;

/// Publishes the lines of `queue` to JetStream as
/// `plantd.<site>.log.plantd.<component>` until the process ends (run it
/// as a task). Each line is tried `ATTEMPTS` times (100 ms, then 400 ms
/// apart) and then dropped and counted: best effort, and a NATS outage
/// costs at most the queue's worth of lines.
pub async fn publish_to_jetstream(queue: ShipQueue, client: async_nats::Client, site: &str) {
    use tracing::Instrument as _;
    let js = async_nats::jetstream::new(client);
    let site = site.to_owned();
    ship(queue, js, site).instrument(sink_span()).await;
}

async fn ship(mut queue: ShipQueue, js: async_nats::jetstream::Context, site: String) {
    while let Some(line) = queue.recv().await {
        let subject = format!(
            "{}.{site}.{}.plantd.{}",
            crate::subject::ROOT,
            crate::subject::Channel::Log.token(),
            line.component
        );
        let mut delay = Duration::from_millis(100);
        let mut shipped = false;
        for attempt in 1..=ATTEMPTS {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(
                crate::headers::user_property("level").as_str(),
                line.level_name(),
            );
            let sent = js
                .publish_with_headers(subject.clone(), headers, line.json.clone())
                .await;
            let stored = match sent {
                Ok(ack) => ack.await.is_ok(),
                Err(_) => false,
            };
            if stored {
                shipped = true;
                break;
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(delay).await;
                delay *= 4;
            }
        }
        if !shipped {
            count_dropped(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    fn json(line: &LogLine) -> Value {
        serde_json::from_slice(&line.json).expect("a JSON line")
    }

    #[test]
    fn components_by_crate() {
        assert_eq!(component_of("plantd_edge::link", "up"), "edge");
        assert_eq!(component_of("plantd_bridge::uplink", "up"), "edge");
        assert_eq!(component_of("plantd_identity::routes", "up"), "identity");
        assert_eq!(component_of("plantd_shared::audit", "proxy"), "proxy");
        assert_eq!(component_of("plantd_edgeways", "up"), "up");
        assert_eq!(Route::of("edge"), Route::Edge);
        assert_eq!(Route::of("proxy"), Route::Platform);
    }

    /// One test, because shipping is process-wide state.
    #[tokio::test]
    async fn warnings_become_json_lines_and_nothing_blocks_or_recurses() {
        let subscriber = tracing_subscriber::registry().with(ShipLayer.with_filter(level()));
        let _guard = tracing::subscriber::set_default(subscriber);
        assert!(take(Route::Platform).is_none(), "not started yet");
        tracing::warn!(target: "plantd_proxy", "before start: not shipped");
        start("proxy");
        let mut q = take(Route::Platform).expect("queue");
        assert!(take(Route::Platform).is_none(), "one sink at a time");

        tracing::warn!(target: "plantd_proxy::routes", site = "s1", code = 7_u64, ok = false, "door refused");
        tracing::info!(target: "plantd_proxy::routes", "info is not shipped");
        tracing::error!(target: "async_nats", "the NATS client's own events are not shipped");
        sink_span().in_scope(|| tracing::error!(target: "plantd_proxy", "nor a sink's"));
        tracing::error!(target: "plantd_edge::auth", "the edge's go to its own queue");
        tracing::error!(target: "plantd_shared::audit", error = %std::io::Error::other("x"), "last");

        let line = q.recv().await.expect("line");
        let v = json(&line);
        assert_eq!(line.component, "proxy");
        assert_eq!(line.level_name(), "warn");
        assert_eq!(v["level"], "warn");
        assert_eq!(v["message"], "door refused");
        assert_eq!(v["target"], "plantd_proxy::routes");
        assert_eq!(v["fields"]["site"], "s1");
        assert_eq!(v["fields"]["code"], 7);
        assert_eq!(v["fields"]["ok"], false);
        assert!(v["time"].as_str().is_some_and(|t| t.ends_with('Z')));
        let line = q.recv().await.expect("line");
        assert_eq!(json(&line)["message"], "last");
        assert_eq!(json(&line)["fields"]["error"], "x");
        assert_eq!(line.component, "proxy", "the process's own component");

        let mut edge = take(Route::Edge).expect("edge queue");
        let line = edge.recv().await.expect("edge line");
        assert_eq!(line.component, "edge");
        assert_eq!(line.topic(), "$plantd/log/plantd/edge");
        assert_eq!(json(&line)["message"], "the edge's go to its own queue");
        // Given back when dropped.
        drop(edge);
        assert!(take(Route::Edge).is_some());

        // A full queue drops and counts; logging goes on.
        let before = dropped();
        for i in 0..QUEUE_LINES + 10 {
            tracing::warn!(target: "plantd_proxy", i, "flood");
        }
        assert_eq!(dropped() - before, 10);
        let long = "é".repeat(MAX_LINE);
        drop(q);
        let mut q = take(Route::Platform).expect("queue back");
        for _ in 0..QUEUE_LINES {
            q.recv().await.expect("flood line");
        }
        tracing::error!(target: "plantd_proxy", long = %long, "{long}");
        let line = q.recv().await.expect("long line");
        assert!(line.json.len() <= MAX_LINE);
        assert_eq!(json(&line)["truncated"], true);
    }
}
