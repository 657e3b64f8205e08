//! The command line's shape: the global options ([`Cli`]) and the verbs
//! ([`Verb`]); the subcommands of each command group live in a child
//! module named for the group. Parsing only: [`crate::dispatch`] calls into
//! the library with what was parsed.

mod alerting;
mod analytics;
mod data;
mod identity;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub(crate) use alerting::{AlertsCmd, ChannelsCmd, RulesCmd};
pub(crate) use analytics::{AnalyticsCmd, AnalyticsRulesCmd};
pub(crate) use data::{CommandsCmd, DlqCmd, StateCmd};
pub(crate) use identity::{AuditCmd, SitesCmd};

/// plantd: control and telemetry for industrial sites.
///
/// Exit codes: 0 ok, 1 failure, 2 usage, 3 not logged in / refused,
/// 4 forbidden, 5 not found, 6 conflict, 7 unavailable or timed out.
#[derive(Debug, Parser)]
#[command(name = "plantd", version, about)]
pub(crate) struct Cli {
    /// Profile to use (default: the current one; see `plantd login`).
    #[arg(long, global = true, env = "PLANTD_PROFILE")]
    pub(crate) profile: Option<String>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Verb,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Verb {
    /// Log in and remember the deployment as a profile. The password comes
    /// from `--password-file`, `$PLANTD_PASSWORD`, or the first line of
    /// standard input — never from the command line.
    Login {
        /// The functions' base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Your email.
        #[arg(long)]
        email: String,
        /// A file holding the password.
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Sites whose edges should accept the token (repeatable).
        #[arg(long = "site")]
        sites: Vec<String>,
    },
    /// Revoke and forget the current session.
    Logout,
    /// Who the current session is.
    Whoami,
    /// Print the current access token (for `mosquitto_pub -P`).
    Token,
    /// Scoped state.
    State {
        /// What to do with state.
        #[command(subcommand)]
        cmd: StateCmd,
    },
    /// Send a command to devices on a site (delivered when it is reachable).
    Command {
        /// The site.
        site: String,
        /// The MQTT topic.
        topic: String,
        /// The payload.
        payload: String,
        /// QoS to deliver with.
        #[arg(long, default_value_t = 1)]
        qos: u8,
        /// Drop it if not delivered within this many seconds.
        #[arg(long)]
        ttl: Option<u64>,
        /// Deliver as retained.
        #[arg(long)]
        retain: bool,
    },
    /// Commands not delivered yet: list them, cancel one.
    Commands {
        /// What to do.
        #[command(subcommand)]
        cmd: CommandsCmd,
    },
    /// Call a service on a device (MQTT 5 request/response) and print the answer.
    Call {
        /// The site.
        site: String,
        /// The MQTT topic the device serves.
        topic: String,
        /// The request payload.
        #[arg(default_value = "")]
        payload: String,
        /// How long to wait for the device, in milliseconds.
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
    },
    /// Recent messages of a site matching a topic filter.
    History {
        /// The site.
        site: String,
        /// MQTT topic filter.
        #[arg(default_value = "#")]
        filter: String,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// A site's log lines: the past from the log index, or live with -f.
    ///
    /// `<time> <LEVEL> <site> <source> <message> key=value…` per line,
    /// oldest first (or JSON records with `--json`). `--filter` takes the
    /// log query language: `|= "text"`, `!= "text"`, `|~ "regex"`,
    /// `| temp > 80 and unit = "C"` (docs/api.md, "Logs").
    Logs {
        /// The site (only the superadmin may leave it out, without -f).
        #[arg(long, env = "PLANTD_SITE")]
        site: Option<String>,
        /// Only this source (`line1/plc`, or a glob: `line1/*`).
        #[arg(long)]
        source: Option<String>,
        /// Only this level and above (trace, debug, info, warn, error, fatal).
        #[arg(long)]
        level: Option<String>,
        /// From this time: RFC 3339 or a duration ago (30m, 1h, 7d).
        #[arg(long)]
        since: Option<String>,
        /// Until this time.
        #[arg(long)]
        until: Option<String>,
        /// A filter in the log query language.
        #[arg(long)]
        filter: Option<String>,
        /// At most this many lines (the newest; default 100); with -f, exit
        /// after this many.
        #[arg(long)]
        limit: Option<usize>,
        /// Follow: print lines as they are logged (over /v1/ws).
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Print live messages of a site as its devices publish them.
    ///
    /// Over the proxy's WebSocket: `<topic> <payload>` per line (payloads
    /// that are not UTF-8 as `base64:…`), or one JSON object per line with
    /// `--json`. Says `subscribed …` on stderr once the server has every
    /// filter. Exit 4 when a filter is not granted, 3 when the token is
    /// refused or revoked.
    Sub {
        /// The site.
        #[arg(long, env = "PLANTD_SITE")]
        site: String,
        /// MQTT topic filters (`+` one level, `#` the rest).
        #[arg(default_value = "#")]
        filters: Vec<String>,
        /// Exit after this many messages.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Send a command to a site's devices over the live connection.
    ///
    /// Over the proxy's WebSocket; prints the command's sequence in
    /// PLANTD_COMMANDS. The edge delivers it to the devices subscribed to
    /// the topic when the site is reachable.
    Pub {
        /// The site.
        #[arg(long, env = "PLANTD_SITE")]
        site: String,
        /// The MQTT topic.
        topic: String,
        /// The payload (or `--file`).
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        payload: Option<String>,
        /// Read the payload from this file (`-` for standard input); bytes
        /// that are not UTF-8 are sent as base64.
        #[arg(long)]
        file: Option<PathBuf>,
        /// QoS to deliver with.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
        qos: u8,
        /// Deliver as retained.
        #[arg(long)]
        retain: bool,
        /// Drop it if not delivered within this many seconds.
        #[arg(long)]
        ttl: Option<u64>,
        /// MQTT 5 content type to deliver with.
        #[arg(long)]
        content_type: Option<String>,
    },
    /// Create or update plantd's JetStream streams and KV buckets on a NATS
    /// server or cluster, and their mirrors in other regions (idempotent;
    /// for clusters that `plantd up` does not run; docs/deploy.md).
    Streams {
        /// The NATS server(s), comma separated; user and password may be in
        /// the URL (tls://plantd:PASSWORD@nats-a1:4222). Streams go to the
        /// region (cluster) of the server connected to.
        #[arg(long, env = "PLANTD_NATS_URL", default_value = "nats://127.0.0.1:4222")]
        nats_url: String,
        /// NATS credentials file (JWT + seed).
        #[arg(long, env = "PLANTD_NATS_CREDS")]
        creds: Option<PathBuf>,
        /// CA certificate (PEM) the servers' certificates are verified with.
        #[arg(long, env = "PLANTD_NATS_CA")]
        tls_ca: Option<PathBuf>,
        /// Replicas per stream, bucket and mirror (3 in a cluster).
        #[arg(long, default_value_t = 1)]
        replicas: usize,
        /// Mirror every stream and bucket into this region (a cluster of the
        /// super-cluster); repeat for several.
        #[arg(long, value_name = "REGION")]
        mirror_into: Vec<String>,
        /// Keep telemetry, logs and alerts this many days (default 30).
        #[arg(long, value_name = "DAYS")]
        retention_days: Option<u64>,
        /// JetStream's de-duplication window in minutes (default 120); its
        /// message ids are held in memory (docs/deploy.md, sizing).
        #[arg(long, value_name = "MINUTES")]
        duplicate_window_mins: Option<u64>,
    },
    /// Alert rules (needs alerts:read; changes alerts:write).
    Rules {
        /// What to do.
        #[command(subcommand)]
        cmd: RulesCmd,
    },
    /// Analytics: rules (SQL or JSON; in the cloud or at the edge) and
    /// results (needs analytics:read; changes analytics:write).
    Analytics {
        /// What to do.
        #[command(subcommand)]
        cmd: AnalyticsCmd,
    },
    /// Alerts: list, acknowledge, history, silences.
    Alerts {
        /// What to do.
        #[command(subcommand)]
        cmd: AlertsCmd,
    },
    /// Where alert notifications go: webhooks (signed) and SNS topics,
    /// per organisation (needs alerts:admin).
    Channels {
        /// What to do.
        #[command(subcommand)]
        cmd: ChannelsCmd,
    },
    /// The sites of your organisation: list, create, get, delete.
    Sites {
        /// What to do.
        #[command(subcommand)]
        cmd: SitesCmd,
    },
    /// Items the functions gave up on, parked by the trigger in PLANTD_DLQ:
    /// list them, or hand one back to its function once it is fixed.
    Dlq {
        /// The NATS server.
        #[arg(
            long,
            env = "PLANTD_NATS_URL",
            default_value = "nats://127.0.0.1:4222",
            global = true
        )]
        nats_url: String,
        /// NATS credentials file (JWT + seed).
        #[arg(long, env = "PLANTD_NATS_CREDS", global = true)]
        creds: Option<PathBuf>,
        /// What to do.
        #[command(subcommand)]
        cmd: DlqCmd,
    },
    /// The audit trail of your organisation, oldest first: who did what,
    /// to what, from where, with what outcome (`plantd audit verify`
    /// checks its hash chain). Needs `identity:audit:read` (role admin).
    Audit {
        /// `verify`: check the chain instead of listing.
        #[command(subcommand)]
        cmd: Option<AuditCmd>,
        /// Another organisation's trail (superadmin only).
        #[arg(long, global = true)]
        org: Option<String>,
        /// Only this actor id (`*` at the end: a prefix).
        #[arg(long)]
        actor: Option<String>,
        /// Only this action, e.g. `auth.login`, or a prefix `auth.*`.
        #[arg(long)]
        action: Option<String>,
        /// Only this target, e.g. `user:<id>`, `site:local` (`*` at the end: a prefix).
        #[arg(long)]
        target: Option<String>,
        /// From this time: RFC 3339 or a duration ago (`30m`, `2h`, `7d`).
        #[arg(long)]
        since: Option<String>,
        /// Until this time: RFC 3339 or a duration ago.
        #[arg(long)]
        until: Option<String>,
        /// Print at most this many records.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Run the event functions (logger, alert engine, notifier) alone
    /// against a NATS server until Ctrl-C or SIGTERM: a second host beside
    /// `plantd up`, or the long-running half of a cloud deployment.
    Functions {
        /// TOML configuration file (values can also come from PLANTD_* env).
        #[arg(long, short = 'c')]
        config: Option<PathBuf>,
        /// The NATS server [default: nats://127.0.0.1:4222].
        #[arg(long)]
        nats_url: Option<String>,
        /// Health and metrics address [default: 127.0.0.1:9096].
        #[arg(long)]
        http_listen: Option<String>,
    },
    /// Run the whole stack on this machine until Ctrl-C.
    Up {
        /// TOML configuration file (values can also come from PLANTD_* env).
        #[arg(long, short = 'c')]
        config: Option<PathBuf>,
        /// Where the stack keeps its data [default: ./.plantd].
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Address nats-server binds [default: 127.0.0.1].
        #[arg(long)]
        nats_host: Option<String>,
        /// nats-server client port; 0 picks a free one [default: 4222].
        #[arg(long)]
        nats_port: Option<u16>,
        /// Address of the local functions server [default: 127.0.0.1:8080].
        #[arg(long)]
        http_listen: Option<String>,
        /// The built web app to serve at / [default: app/dist].
        #[arg(long)]
        app_dir: Option<PathBuf>,
        /// The edge broker's MQTT address [default: 127.0.0.1:1883].
        #[arg(long)]
        mqtt_listen: Option<String>,
        /// The edge broker's health/metrics address [default: 127.0.0.1:9090].
        #[arg(long)]
        edge_http_listen: Option<String>,
        /// Let MQTT clients in without a token (development only).
        #[arg(long)]
        allow_anonymous: bool,
    },
}
