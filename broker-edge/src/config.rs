//! Broker configuration: a plain serde struct (TOML file, then flags).
//!
//! Kept as one `Deserialize + Serialize + Default` struct with
//! `deny_unknown_fields` so that loading can move onto
//! `plantd_shared::config` without changing its shape.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Everything the broker needs to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Site name; later the bridge's subject prefix (`plantd.<site>.`).
    pub site: String,
    /// The organisation that owns the site. A CONNECT whose token belongs
    /// to another organisation is refused (v5 0x87, 3.1.1 return code 5)
    /// whatever its audience and grants say (the bootstrap superadmin
    /// excepted). Unset: read from the site's record in `plantd_sites`
    /// over the uplink's NATS at start, else from the copy cached in
    /// `<data-dir>/site.json`; with token authentication on and no way to
    /// tell, the edge does not start. See [`crate::owner`].
    pub org: Option<String>,
    /// MQTT TCP listener address (port 0 picks a free port).
    pub mqtt_listen: String,
    /// HTTP listener for `/healthz` and `/metrics`.
    pub http_listen: String,
    /// MQTT over TLS listener address (unset: no TLS listener).
    pub tls_listen: Option<String>,
    /// The TLS server certificate chain (PEM), required with `tls_listen`.
    pub tls_cert: Option<PathBuf>,
    /// The TLS server private key (PEM), required with `tls_listen`.
    pub tls_key: Option<PathBuf>,
    /// CA of client certificates (PEM): clients may then present one, and
    /// a valid one's common name becomes the connection's certificate
    /// identity (a token is still required).
    pub tls_client_ca: Option<PathBuf>,
    /// MQTT over WebSocket listener address, path `/mqtt` (unset: none).
    pub ws_listen: Option<String>,
    /// MQTT over secure WebSocket listener address, path `/mqtt`, with the
    /// TLS listener's certificate, key and client CA (unset: none).
    pub wss_listen: Option<String>,
    /// Directory for durable state: the journal (`journal/`), the session
    /// store (`sessions.redb`: persistent sessions, retained messages) and
    /// the cached signing keys (`trust`). Unset: sessions and retained
    /// messages live in memory only.
    pub data_dir: Option<PathBuf>,
    /// Accept clients without credentials (off by default: every client
    /// must present a token issued for this site).
    pub allow_anonymous: bool,
    /// Where the identity service publishes its signing keys (JWKS); the
    /// last good copy is cached under `<data-dir>/trust`.
    pub jwks_url: Option<String>,
    /// A JWKS file, for sites that never reach the identity service.
    pub jwks_file: Option<PathBuf>,
    /// Seconds between JWKS refreshes from `jwks_url`.
    pub jwks_refresh_secs: u64,
    /// Topic filters no client may subscribe to (SUBACK 0x87 / 0x80).
    pub deny_subscribe: Vec<String>,
    /// Seconds between `$SYS/broker/...` statistics updates.
    pub sys_interval_secs: u64,
    /// Protocol limits.
    pub limits: Limits,
    /// The JetStream bridge.
    pub uplink: UplinkSettings,
    /// The durable journal (used when the uplink is configured).
    pub journal: JournalSettings,
    /// Analytics rules placed at the edge ([`crate::analytics`]; with the
    /// uplink only: results go up through the journal).
    pub analytics: AnalyticsSettings,
    /// The site status published for site health ([`crate::status`];
    /// with the uplink only).
    pub status: StatusSettings,
}

/// The status the edge publishes to `plantd_site_status` for the cloud's
/// site health (`GET /v1/sites/{site}/health`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatusSettings {
    /// Publish it (on by default).
    pub enabled: bool,
    /// Milliseconds between statuses; the cloud shows the edge not
    /// connected after three intervals without one.
    pub interval_ms: u64,
}

impl Default for StatusSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_ms: 5_000,
        }
    }
}

/// The edge's analytics: rules placed `at = "edge"` for this site, run on
/// the publications it accepts (see `docs/broker.md`, "Analytics at the
/// edge").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyticsSettings {
    /// Run the rules (on by default; they come from the cloud's
    /// `plantd_analytics_rules` and the cached copy on disk).
    pub enabled: bool,
    /// Milliseconds between moves of the engine's time to the wall clock,
    /// which close windows and fire timers without new readings.
    pub tick_ms: u64,
    /// Seconds between checkpoints of the engine's state (also written
    /// after results are journaled, and at shutdown).
    pub checkpoint_secs: u64,
}

impl Default for AnalyticsSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            tick_ms: 1_000,
            checkpoint_secs: 30,
        }
    }
}

/// The connection to JetStream and what goes up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UplinkSettings {
    /// NATS server(s), comma-separated; unset: no uplink, no journal.
    pub nats_url: Option<String>,
    /// NATS credentials file (JWT + seed).
    pub nats_creds: Option<PathBuf>,
    /// CA certificate(s) to verify the NATS server (PEM).
    pub nats_ca: Option<PathBuf>,
    /// Client certificate for mutual TLS (PEM).
    pub nats_cert: Option<PathBuf>,
    /// Client key for mutual TLS (PEM).
    pub nats_key: Option<PathBuf>,
    /// Topic filters whose messages go up (default: everything but
    /// `$`-topics). Log lines on `$plantd/log/<source>` go up whatever the
    /// filters (to `plantd.<site>.log.<source>`).
    pub topics: Vec<String>,
    /// Create or update plantd's streams at start.
    pub create_streams: bool,
    /// Publishes awaiting JetStream acknowledgement at most.
    pub window: usize,
}

impl Default for UplinkSettings {
    fn default() -> Self {
        Self {
            nats_url: None,
            nats_creds: None,
            nats_ca: None,
            nats_cert: None,
            nats_key: None,
            topics: vec!["#".into()],
            create_streams: false,
            window: 4096,
        }
    }
}

/// Durability and size of the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JournalSettings {
    /// `always`, `batch` (group commit) or `never`.
    pub fsync: String,
    /// Largest size on disk in bytes (0: unbounded).
    pub max_bytes: u64,
    /// Drop records older than this many seconds (unset: keep).
    pub max_age_secs: Option<u64>,
    /// `block` (backpressure, never drop) or `drop-oldest`.
    pub overflow: String,
    /// Segment file size in bytes.
    pub segment_bytes: u64,
}

impl Default for JournalSettings {
    fn default() -> Self {
        Self {
            fsync: "batch".into(),
            max_bytes: 1024 * 1024 * 1024,
            max_age_secs: None,
            overflow: "block".into(),
            segment_bytes: 64 * 1024 * 1024,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            site: "local".to_owned(),
            org: None,
            mqtt_listen: "127.0.0.1:1883".to_owned(),
            http_listen: "127.0.0.1:9090".to_owned(),
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            ws_listen: None,
            wss_listen: None,
            data_dir: None,
            allow_anonymous: false,
            jwks_url: None,
            jwks_file: None,
            jwks_refresh_secs: 300,
            deny_subscribe: Vec::new(),
            sys_interval_secs: 10,
            limits: Limits::default(),
            uplink: UplinkSettings::default(),
            journal: JournalSettings::default(),
            analytics: AnalyticsSettings::default(),
            status: StatusSettings::default(),
        }
    }
}

/// Limits that protect the broker from clients; each is enforced with a
/// defined outcome (see `docs/broker.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Concurrent client connections; more are refused (CONNACK 0x97 / 3).
    pub max_connections: usize,
    /// Largest packet accepted or sent, in bytes (v5 Maximum Packet Size).
    pub max_packet_size: u32,
    /// Unacknowledged QoS 1/2 messages per direction (v5 Receive Maximum).
    pub max_inflight: u16,
    /// Messages queued per session, connected or not; when full the oldest
    /// QoS 0 message is dropped, else the new message is refused (0x97).
    pub max_queued_messages: usize,
    /// Queue QoS 0 messages for offline persistent sessions.
    pub queue_qos0_offline: bool,
    /// Longest topic name or filter, in bytes.
    pub max_topic_length: usize,
    /// Most `/`-separated levels in a topic name or filter.
    pub max_topic_levels: usize,
    /// Subscriptions one session may hold.
    pub max_subscriptions_per_client: usize,
    /// Milliseconds a new socket has to send CONNECT.
    pub connect_timeout_ms: u64,
    /// Topic aliases a v5 client may use towards the broker.
    pub topic_alias_maximum: u16,
    /// When set, v5 clients are told to use this keep-alive (seconds).
    pub server_keep_alive: Option<u16>,
    /// Longest session expiry interval granted, in seconds.
    pub max_session_expiry_secs: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 100_000,
            max_packet_size: 1024 * 1024,
            max_inflight: 64,
            max_queued_messages: 1000,
            queue_qos0_offline: false,
            max_topic_length: 1024,
            max_topic_levels: 32,
            max_subscriptions_per_client: 1000,
            connect_timeout_ms: 10_000,
            topic_alias_maximum: 64,
            server_keep_alive: None,
            max_session_expiry_secs: u32::MAX,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_round_trip_and_unknown_fields_refused() {
        let c = Config::default();
        let text = toml::to_string(&c).expect("serialise");
        let back: Config = toml::from_str(&text).expect("parse");
        assert_eq!(back, c);
        assert!(toml::from_str::<Config>("mqtt_lsiten = \"x\"").is_err());
        let partial: Config = toml::from_str("[limits]\nmax_inflight = 5").expect("partial");
        assert_eq!(partial.limits.max_inflight, 5);
        assert_eq!(partial.mqtt_listen, "127.0.0.1:1883");
    }
}
