//! Tracing set-up shared by every binary.
//!
//! * `PLANTD_LOG` (or `RUST_LOG`) selects levels, e.g. `info,plantd_edge=debug`;
//!   the default is `info`.
//! * `PLANTD_LOG_FORMAT=json` writes one JSON object per line (for log
//!   shippers and Lambda); otherwise human-readable lines, coloured on a
//!   terminal.
//!
//! Logs go to standard error so standard output stays free for what a
//! command prints for people or scripts.
//!
//! Every subscriber also carries the [`crate::log_ship::ShipLayer`] (with
//! its own level, `PLANTD_LOG_SHIP`, default `warn`, whatever `PLANTD_LOG`
//! says): idle until the process calls [`crate::log_ship::start`], then its
//! warnings and errors also go to `PLANTD_LOGS`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

/// Output format of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// Reads `PLANTD_LOG_FORMAT` (`json` or anything else for text).
    pub fn from_env() -> Self {
        match std::env::var("PLANTD_LOG_FORMAT") {
            Ok(v) if v.eq_ignore_ascii_case("json") => LogFormat::Json,
            _ => LogFormat::Text,
        }
    }
}

/// Installs the global subscriber for `service` (recorded as a field on
/// JSON lines). Calling it twice is harmless: the second call does nothing.
pub fn init(service: &'static str) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = std::env::var("PLANTD_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|s| EnvFilter::try_new(s).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let ship = crate::log_ship::ShipLayer.with_filter(crate::log_ship::level());
    let registry = tracing_subscriber::registry().with(ship);
    let result = match LogFormat::from_env() {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_span_events(FmtSpan::NONE)
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init(),
    };
    if result.is_ok() {
        tracing::debug!(service, "tracing initialised");
    }
}
