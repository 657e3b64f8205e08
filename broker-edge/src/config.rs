//! Broker configuration: one serde struct, loaded by [`Config::load`]
//! through `plantd_shared::config` — defaults, then the TOML file
//! (`--config`), then `PLANTD_*` environment variables, then the
//! command-line [`Flags`]. A later source replaces a key's whole value
//! (lists too: `--uplink` or `--deny-subscribe` replace the file's list);
//! tables merge key by key.
//!
//! Environment names follow the keys: `PLANTD_SITE`, `PLANTD_MQTT_LISTEN`,
//! `PLANTD_UPLINK__NATS_URL`, `PLANTD_LIMITS__MAX_INFLIGHT`,
//! `PLANTD_DENY_SUBSCRIBE='[$SYS/#, secret/#]'`.

use std::path::{Path, PathBuf};

use plantd_shared::config::ConfigError;
use serde::{Deserialize, Serialize};

use crate::clock::Clock;

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
    /// The time source of session expiry, will delay, message expiry and
    /// keep-alive: the system clock unless a test installs a
    /// [`Clock::manual`] one (`docs/decisions/0056-edge-clock.md`). Not
    /// part of the file format.
    #[serde(skip)]
    pub clock: Clock,
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

impl Config {
    /// Loads the configuration: defaults, the TOML `file`, `PLANTD_*`
    /// variables, then `flags` (see the module docs).
    ///
    /// # Errors
    /// One line naming the key and where its bad value came from (the
    /// file, the environment or a flag), or the unreadable file.
    pub fn load(file: Option<&Path>, flags: &Flags) -> Result<Self, ConfigError> {
        plantd_shared::config::load(file, flags)
    }
}

/// The command-line flags of `plantd-edge`: each one set overrides its
/// key (`docs/operations.md` lists them). Unset flags are left out, so the
/// file's or the environment's value stands.
#[derive(Debug, Default, Clone, clap::Args, Serialize)]
pub struct Flags {
    /// Site name.
    #[arg(long, value_name = "NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// The organisation that owns the site: tokens of other organisations
    /// are refused at CONNECT [default: the site's record in plantd_sites,
    /// or its copy cached in site.json in the data directory].
    #[arg(long, value_name = "ORG")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// MQTT listen address [default: 127.0.0.1:1883].
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt_listen: Option<String>,
    /// HTTP listen address for /healthz and /metrics [default: 127.0.0.1:9090].
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_listen: Option<String>,
    /// MQTT over TLS listen address (needs --tls-cert and --tls-key).
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_listen: Option<String>,
    /// TLS server certificate chain (PEM).
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// TLS server private key (PEM).
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// CA of client certificates (PEM); a verified certificate's common
    /// name identifies the device (a token is still required).
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_ca: Option<PathBuf>,
    /// MQTT over WebSocket listen address (path /mqtt, subprotocol mqtt).
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ws_listen: Option<String>,
    /// MQTT over secure WebSocket listen address (path /mqtt; uses
    /// --tls-cert, --tls-key and --tls-client-ca).
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wss_listen: Option<String>,
    /// Directory for durable state.
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Accept clients without credentials (off by default; logged loudly).
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub allow_anonymous: bool,
    /// URL of the identity service's JWKS (signing keys, cached under
    /// the data directory's trust/).
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// JWKS file with the signing keys (sites that never reach identity).
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<PathBuf>,
    /// Refuse subscriptions covered by this filter (repeatable; replaces
    /// the configured list).
    #[arg(long, value_name = "FILTER")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny_subscribe: Vec<String>,
    /// The JetStream uplink's flags.
    #[command(flatten)]
    pub uplink: UplinkFlags,
    /// The journal's flags.
    #[command(flatten)]
    pub journal: JournalFlags,
}

/// Flags of [`UplinkSettings`].
#[derive(Debug, Default, Clone, clap::Args, Serialize)]
pub struct UplinkFlags {
    /// NATS server for the JetStream uplink (enables the journal).
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_url: Option<String>,
    /// NATS credentials file.
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_creds: Option<PathBuf>,
    /// CA certificate to verify the NATS server.
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_ca: Option<PathBuf>,
    /// Client certificate for mutual TLS to NATS.
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_cert: Option<PathBuf>,
    /// Client key for mutual TLS to NATS.
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_key: Option<PathBuf>,
    /// Topic filter whose messages go up (repeatable; default #); log
    /// lines on $plantd/log/<source> always go up.
    #[arg(long = "uplink", value_name = "FILTER")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<String>,
    /// Create or update plantd's streams at start.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub create_streams: bool,
}

/// Flags of [`JournalSettings`].
#[derive(Debug, Default, Clone, clap::Args, Serialize)]
pub struct JournalFlags {
    /// Journal durability: always, batch or never [default: batch].
    #[arg(long, value_name = "POLICY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fsync: Option<String>,
    /// Journal size limit in bytes [default: 1 GiB].
    #[arg(long = "journal-max-bytes", value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// Full journal: block or drop-oldest [default: block].
    #[arg(long = "journal-overflow", value_name = "POLICY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overflow: Option<String>,
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
            clock: Clock::system(),
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

    fn flags(args: &[&str]) -> Flags {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            flags: Flags,
        }
        let argv = std::iter::once("plantd-edge").chain(args.iter().copied());
        <Cli as clap::Parser>::try_parse_from(argv)
            .expect("flags parse")
            .flags
    }

    #[test]
    fn flags_override_the_file_key_by_key() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("edge.toml");
        std::fs::write(
            &file,
            "site = \"from-file\"\ndeny_subscribe = [\"a/#\"]\n\
             [uplink]\nnats_url = \"nats://file:4222\"\ntopics = [\"f/#\"]\n\
             [journal]\nfsync = \"always\"\nmax_bytes = 10\n",
        )
        .expect("write");
        let c = Config::load(Some(&file), &Flags::default()).expect("load");
        assert_eq!(c.site, "from-file");
        assert_eq!(c.uplink.nats_url.as_deref(), Some("nats://file:4222"));
        assert_eq!(c.journal.fsync, "always");
        assert!(!c.allow_anonymous);

        let f = flags(&[
            "--site",
            "from-flag",
            "--uplink",
            "x/#",
            "--uplink",
            "y/#",
            "--journal-max-bytes",
            "99",
            "--journal-overflow",
            "drop-oldest",
            "--allow-anonymous",
            "--create-streams",
            "--deny-subscribe",
            "b/#",
        ]);
        let c = Config::load(Some(&file), &f).expect("load");
        assert_eq!(c.site, "from-flag");
        assert_eq!(c.uplink.topics, ["x/#", "y/#"], "flags replace the list");
        assert_eq!(c.uplink.nats_url.as_deref(), Some("nats://file:4222"));
        assert!(c.uplink.create_streams);
        assert_eq!(
            c.journal.fsync, "always",
            "unset flags leave the file's value"
        );
        assert_eq!(c.journal.max_bytes, 99);
        assert_eq!(c.journal.overflow, "drop-oldest");
        assert!(c.allow_anonymous);
        assert_eq!(c.deny_subscribe, ["b/#"]);
    }

    #[test]
    fn a_bad_value_names_key_and_file() {
        let f = flags(&["--site", "s"]);
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("edge.toml");
        std::fs::write(&file, "[limits]\nmax_inflight = \"many\"\n").expect("write");
        let err = Config::load(Some(&file), &f).expect_err("bad type");
        let line = err.to_string();
        assert!(line.contains("limits.max_inflight"), "{line}");
        assert!(line.contains("edge.toml"), "{line}");
    }
}
