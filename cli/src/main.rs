//! `plantd`: run and talk to the plantd stack.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use plantd_cli::up::{self, EdgeOverrides, HttpOverrides, NatsOverrides, UpOverrides};

/// plantd: control and telemetry for industrial sites.
///
/// Exit codes: 0 ok, 1 failure, 2 usage, 3 not logged in / refused,
/// 4 forbidden, 5 not found, 6 conflict, 7 unavailable or timed out.
#[derive(Debug, Parser)]
#[command(name = "plantd", version, about)]
struct Cli {
    /// Profile to use (default: the current one; see `plantd login`).
    #[arg(long, global = true, env = "PLANTD_PROFILE")]
    profile: Option<String>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    json: bool,
    /// What to do.
    #[command(subcommand)]
    command: Verb,
}

#[derive(Debug, Subcommand)]
enum StateCmd {
    /// List the scopes you can read (`--create NAME` creates one first).
    Scopes {
        /// Create this scope.
        #[arg(long)]
        create: Option<String>,
    },
    /// List a scope's keys.
    List {
        /// The scope.
        scope: String,
    },
    /// Print a value (its revision goes to stderr).
    Get {
        /// The scope.
        scope: String,
        /// The key.
        key: String,
    },
    /// Store a value.
    Set {
        /// The scope.
        scope: String,
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Only if the stored revision is still this one.
        #[arg(long)]
        if_match: Option<String>,
        /// Content type of the value.
        #[arg(long, default_value = "application/json")]
        content_type: String,
    },
    /// Delete a value.
    Delete {
        /// The scope.
        scope: String,
        /// The key.
        key: String,
    },
}

#[derive(Debug, Subcommand)]
enum DlqCmd {
    /// List parked items, oldest first.
    List {
        /// Only this consumer's (`<function>_<stream>`, e.g. logger_PLANTD_LOGS).
        #[arg(long)]
        consumer: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Hand parked item SEQ back to the function that failed on it (the
    /// trigger must be running); removed from PLANTD_DLQ once handled.
    Replay {
        /// Its sequence in PLANTD_DLQ (first column of `plantd dlq list`).
        seq: u64,
        /// Seconds to wait for the function.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
}

#[derive(Debug, Subcommand)]
enum SitesCmd {
    /// Your organisation's sites (the superadmin: every site, or `--org`'s).
    List {
        /// Only this organisation's (another than yours: superadmin only).
        #[arg(long)]
        org: Option<String>,
    },
    /// Register a site to your organisation (ids are global: exit 6 when
    /// taken).
    Create {
        /// The site id: 1-64 of A-Z a-z 0-9 _ - (the `<site>` of its subjects).
        id: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// What and where it is.
        #[arg(long)]
        description: Option<String>,
        /// A label `key=value` (repeatable).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Register it to another organisation (superadmin only).
        #[arg(long)]
        org: Option<String>,
    },
    /// Show one site.
    Get {
        /// The site id.
        id: String,
    },
    /// Delete a site: its devices get no more tokens, its edge admits
    /// nobody new after a restart.
    Delete {
        /// The site id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum RulesCmd {
    /// Your organisation's alert rules.
    List,
    /// Show one rule as JSON (what `apply` takes).
    Get {
        /// The rule's id.
        id: String,
    },
    /// Create or replace the rules in a JSON file: one rule or a list
    /// (docs/api.md#alerts); checked here first, naming the field.
    Apply {
        /// The file (`-`: standard input).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Delete a rule (its alerts go with it).
    Delete {
        /// The rule's id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum AnalyticsCmd {
    /// Analytics rules: list, get, put, delete.
    Rules {
        /// What to do.
        #[command(subcommand)]
        cmd: AnalyticsRulesCmd,
    },
    /// A site's analytics results (the latest revision of each window).
    Results {
        /// The site.
        #[arg(long)]
        site: String,
        /// Only this rule's.
        #[arg(long)]
        rule: Option<String>,
        /// Only this key's (e.g. a topic).
        #[arg(long)]
        key: Option<String>,
        /// Windows starting at or after: RFC 3339, ms since the epoch, or
        /// a duration ago (30m, 2h).
        #[arg(long)]
        from: Option<String>,
        /// Windows starting at or before (as --from).
        #[arg(long)]
        to: Option<String>,
        /// At most this many windows.
        #[arg(long, default_value_t = plantd_cli::analytics::DEFAULT_RESULTS)]
        limit: usize,
    },
}

#[derive(Debug, Subcommand)]
enum AnalyticsRulesCmd {
    /// Your organisation's analytics rules, one line each.
    List,
    /// Show one rule as JSON (what `put --file` takes).
    Get {
        /// The rule's name.
        name: String,
    },
    /// Create or replace a rule, from SQL or a JSON file
    /// (docs/api.md#analytics-rules).
    Put {
        /// The rule's name.
        name: String,
        /// The rule as SQL: SELECT avg(value) FROM "line1/+/temp" GROUP BY
        /// topic, TUMBLE(1m).
        #[arg(long, conflicts_with = "file")]
        sql: Option<String>,
        /// A JSON file: what `get` prints, or a rule in its JSON form
        /// (`-`: standard input).
        #[arg(short = 'f', long)]
        file: Option<PathBuf>,
        /// The sites it reads, comma-separated (default: every site; a
        /// rule at the edge needs them).
        #[arg(long, value_delimiter = ',')]
        sites: Vec<String>,
        /// Where it runs: cloud or edge.
        #[arg(long)]
        at: Option<String>,
        /// Store it paused.
        #[arg(long)]
        disabled: bool,
        /// Alert on its pattern and anomaly signals with this severity
        /// (info, warning, critical): the alert rule analytics-NAME.
        #[arg(long)]
        alert_severity: Option<String>,
        /// The alert's notification channels, comma-separated.
        #[arg(long, value_delimiter = ',')]
        alert_channels: Vec<String>,
    },
    /// Delete a rule (and its alert rule).
    Delete {
        /// The rule's name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum AlertsCmd {
    /// Alert instances: one line each (id, state, severity, site, rule,
    /// key, value, ack).
    List {
        /// Only this state: inactive, pending, firing, no_data.
        #[arg(long)]
        state: Option<String>,
        /// Only this site.
        #[arg(long)]
        site: Option<String>,
        /// Only this severity: info, warning, critical.
        #[arg(long)]
        severity: Option<String>,
    },
    /// Acknowledge a firing alert (repeats stop until it fires again).
    Ack {
        /// The alert's id (from `plantd alerts list`).
        id: String,
        /// What you are doing about it.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// An alert's records (transitions, acks, repeats), oldest first.
    History {
        /// The alert's id.
        id: String,
    },
    /// Silence alerts matching labels for a while: their records are
    /// kept, marked silenced, and not notified.
    Silence {
        /// `label=value`, `label!=value` or `label=~regex` (repeat for
        /// more; all must match).
        #[arg(long = "match", required = true)]
        matchers: Vec<String>,
        /// How long: 30m, 2h, 1d.
        #[arg(long = "for")]
        duration: String,
        /// Why.
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Your organisation's silences.
    Silences,
    /// End a silence now.
    Unsilence {
        /// The silence's id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum ChannelsCmd {
    /// Your organisation's notification channels (secrets never shown).
    List,
    /// Show one channel.
    Get {
        /// The channel's name.
        name: String,
    },
    /// Create or replace the channels in a JSON file: one
    /// `{"name", "webhook": {url, secret, ...} | "sns": {topic_arn}, ...}`
    /// or a list of them (docs/api.md#notification-channels).
    Apply {
        /// The file (`-`: standard input).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Delete a channel (rules naming it skip it from then on).
    Delete {
        /// The channel's name.
        name: String,
    },
    /// Send a test notification on a channel, once, and say what it
    /// answered.
    Test {
        /// The channel's name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum CommandsCmd {
    /// The site's pending commands, oldest first: queued for its edge, or
    /// held (nobody subscribes to the topic, or behind such a command).
    Pending {
        /// The site.
        site: String,
        /// At most this many (1 to 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Cancel a pending command: it is never delivered afterwards.
    Cancel {
        /// The site.
        site: String,
        /// The command's id (the sequence `plantd command` printed).
        id: u64,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCmd {
    /// Check the organisation's hash chain: exit 0 when it is intact, 1
    /// with the first broken record when a record was altered, removed,
    /// inserted or forged.
    Verify,
}

#[derive(Debug, Subcommand)]
enum Verb {
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

/// The password from a file, `$PLANTD_PASSWORD`, or standard input.
fn read_password(file: Option<&std::path::Path>) -> anyhow::Result<String> {
    if let Some(f) = file {
        return Ok(std::fs::read_to_string(f)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))?
            .trim()
            .to_owned());
    }
    if let Ok(p) = std::env::var("PLANTD_PASSWORD") {
        return Ok(p);
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| anyhow::anyhow!("cannot read the password from standard input: {e}"))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// The bytes of `--file` (`-` is standard input).
fn read_payload(file: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Read as _;
    if file == std::path::Path::new("-") {
        let mut b = Vec::new();
        std::io::stdin()
            .read_to_end(&mut b)
            .map_err(|e| anyhow::anyhow!("cannot read the payload from standard input: {e}"))?;
        return Ok(b);
    }
    std::fs::read(file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))
}

/// mimalloc, as in `plantd-edge`: `plantd up` and `plantd functions` run
/// the trigger and its handlers in this process, which allocate a record
/// per log line or reading; measured in `docs/performance.md` ("Logs").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    plantd_shared::logging::init("plantd");
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("plantd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = cli.json;
    let profile = cli.profile.clone();
    let result = runtime.block_on(async {
        use plantd_cli::commands;
        use plantd_cli::session::Session;
        match cli.command {
            Verb::Login {
                url,
                email,
                password_file,
                sites,
            } => {
                let password = read_password(password_file.as_deref())?;
                let s = Session::login(profile.as_deref(), &url, &email, &password, &sites).await?;
                let _ = s;
                println!("logged in to {url} as {email}");
                Ok(())
            }
            Verb::Logout => {
                Session::open(profile.as_deref()).await?.logout().await?;
                println!("logged out");
                Ok(())
            }
            Verb::Whoami => commands::whoami(&Session::open(profile.as_deref()).await?, json).await,
            Verb::Token => {
                println!(
                    "{}",
                    Session::open(profile.as_deref()).await?.access_token()
                );
                Ok(())
            }
            Verb::State { cmd } => {
                let s = Session::open(profile.as_deref()).await?;
                match cmd {
                    StateCmd::Scopes { create } => {
                        commands::scopes(&s, create.as_deref(), json).await
                    }
                    StateCmd::List { scope } => commands::list(&s, &scope, json).await,
                    StateCmd::Get { scope, key } => commands::get(&s, &scope, &key, json).await,
                    StateCmd::Set {
                        scope,
                        key,
                        value,
                        if_match,
                        content_type,
                    } => {
                        commands::set(
                            &s,
                            &scope,
                            &key,
                            &value,
                            if_match.as_deref(),
                            &content_type,
                            json,
                        )
                        .await
                    }
                    StateCmd::Delete { scope, key } => commands::delete(&s, &scope, &key).await,
                }
            }
            Verb::Command {
                site,
                topic,
                payload,
                qos,
                ttl,
                retain,
            } => {
                let s = Session::open(profile.as_deref()).await?;
                let args = commands::CommandArgs {
                    site: &site,
                    topic: &topic,
                    payload: &payload,
                    qos,
                    ttl,
                    retain,
                };
                commands::command(&s, args, json).await
            }
            Verb::Commands { cmd } => {
                let s = Session::open(profile.as_deref()).await?;
                match cmd {
                    CommandsCmd::Pending { site, limit } => {
                        commands::pending(&s, &site, limit, json).await
                    }
                    CommandsCmd::Cancel { site, id } => commands::cancel(&s, &site, id, json).await,
                }
            }
            Verb::Call {
                site,
                topic,
                payload,
                timeout_ms,
            } => {
                commands::call(
                    &Session::open(profile.as_deref()).await?,
                    &site,
                    &topic,
                    &payload,
                    timeout_ms,
                )
                .await
            }
            Verb::History {
                site,
                filter,
                limit,
            } => {
                commands::history(
                    &Session::open(profile.as_deref()).await?,
                    &site,
                    &filter,
                    limit,
                    json,
                )
                .await
            }
            Verb::Sub {
                site,
                filters,
                count,
            } => {
                let mut s = Session::open(profile.as_deref()).await?;
                let args = plantd_cli::live::SubArgs {
                    site: &site,
                    filters: &filters,
                    count,
                    json,
                };
                plantd_cli::live::sub(&mut s, args).await
            }
            Verb::Logs {
                site,
                source,
                level,
                since,
                until,
                filter,
                limit,
                follow,
            } => {
                let mut s = Session::open(profile.as_deref()).await?;
                let args = plantd_cli::logs::LogsArgs {
                    site: site.as_deref(),
                    source: source.as_deref(),
                    level: level.as_deref(),
                    since: since.as_deref(),
                    until: until.as_deref(),
                    filter: filter.as_deref(),
                    limit,
                    follow,
                    json,
                };
                plantd_cli::logs::logs(&mut s, args).await
            }
            Verb::Pub {
                site,
                topic,
                payload,
                file,
                qos,
                retain,
                ttl,
                content_type,
            } => {
                use plantd_cli::live::Payload;
                let payload = match (payload, file) {
                    (Some(p), _) => Payload::Text(p),
                    (None, Some(f)) => Payload::Bytes(read_payload(&f)?),
                    (None, None) => Payload::Text(String::new()),
                };
                let s = Session::open(profile.as_deref()).await?;
                let args = plantd_cli::live::PubArgs {
                    site: &site,
                    topic: &topic,
                    payload,
                    qos,
                    retain,
                    ttl,
                    content_type: content_type.as_deref(),
                };
                plantd_cli::live::publish(&s, args, json).await
            }
            Verb::Streams {
                nats_url,
                creds,
                tls_ca,
                replicas,
                mirror_into,
                retention_days,
                duplicate_window_mins,
            } => {
                let options = plantd_cli::streams::Options {
                    url: nats_url,
                    creds,
                    ca: tls_ca,
                    replicas,
                    mirror_into,
                    retention: retention_days
                        .map(|d| std::time::Duration::from_secs(d.saturating_mul(86_400))),
                    duplicate_window: duplicate_window_mins
                        .map(|m| std::time::Duration::from_secs(m.saturating_mul(60))),
                };
                plantd_cli::streams::ensure(&options).await
            }
            Verb::Rules { cmd } => {
                use plantd_cli::rules;
                let s = Session::open(profile.as_deref()).await?;
                match cmd {
                    RulesCmd::List => rules::list(&s, json).await,
                    RulesCmd::Get { id } => rules::get(&s, &id).await,
                    RulesCmd::Apply { file } => rules::apply(&s, &file, json).await,
                    RulesCmd::Delete { id } => rules::delete(&s, &id).await,
                }
            }
            Verb::Analytics { cmd } => {
                use plantd_cli::analytics;
                let s = Session::open(profile.as_deref()).await?;
                match cmd {
                    AnalyticsCmd::Rules { cmd } => match cmd {
                        AnalyticsRulesCmd::List => analytics::list(&s, json).await,
                        AnalyticsRulesCmd::Get { name } => analytics::get(&s, &name).await,
                        AnalyticsRulesCmd::Put {
                            name,
                            sql,
                            file,
                            sites,
                            at,
                            disabled,
                            alert_severity,
                            alert_channels,
                        } => {
                            let args = analytics::PutArgs {
                                sql,
                                file,
                                sites,
                                at,
                                disabled,
                                alert_severity,
                                alert_channels,
                            };
                            analytics::put(&s, &name, &args, json).await
                        }
                        AnalyticsRulesCmd::Delete { name } => analytics::delete(&s, &name).await,
                    },
                    AnalyticsCmd::Results {
                        site,
                        rule,
                        key,
                        from,
                        to,
                        limit,
                    } => {
                        let args = analytics::ResultsArgs {
                            site,
                            rule,
                            key,
                            from,
                            to,
                            limit,
                        };
                        analytics::results(&s, &args, json).await
                    }
                }
            }
            Verb::Alerts { cmd } => {
                use plantd_cli::alerts;
                let s = Session::open(profile.as_deref()).await?;
                match cmd {
                    AlertsCmd::List {
                        state,
                        site,
                        severity,
                    } => {
                        let filter = alerts::ListFilter {
                            state: state.as_deref(),
                            site: site.as_deref(),
                            severity: severity.as_deref(),
                        };
                        alerts::list(&s, &filter, json).await
                    }
                    AlertsCmd::Ack { id, note } => alerts::ack(&s, &id, &note, json).await,
                    AlertsCmd::History { id } => alerts::history(&s, &id, json).await,
                    AlertsCmd::Silence {
                        matchers,
                        duration,
                        comment,
                    } => alerts::silence(&s, &matchers, &duration, &comment, json).await,
                    AlertsCmd::Silences => alerts::silences(&s, json).await,
                    AlertsCmd::Unsilence { id } => alerts::unsilence(&s, &id).await,
                }
            }
            Verb::Channels { cmd } => {
                use plantd_cli::channels;
                let s = Session::open(profile.as_deref()).await?;
                match cmd {
                    ChannelsCmd::List => channels::list(&s, json).await,
                    ChannelsCmd::Get { name } => channels::get(&s, &name, json).await,
                    ChannelsCmd::Apply { file } => channels::apply(&s, &file, json).await,
                    ChannelsCmd::Delete { name } => channels::delete(&s, &name).await,
                    ChannelsCmd::Test { name } => channels::test(&s, &name, json).await,
                }
            }
            Verb::Sites { cmd } => {
                use plantd_cli::sites;
                let s = Session::open(profile.as_deref()).await?;
                match cmd {
                    SitesCmd::List { org } => sites::list(&s, org.as_deref(), json).await,
                    SitesCmd::Create {
                        id,
                        name,
                        description,
                        labels,
                        org,
                    } => {
                        let site = sites::NewSite {
                            id: &id,
                            name: name.as_deref(),
                            description: description.as_deref(),
                            labels: &labels,
                            org: org.as_deref(),
                        };
                        sites::create(&s, site, json).await
                    }
                    SitesCmd::Get { id } => sites::get(&s, &id, json).await,
                    SitesCmd::Delete { id } => sites::delete(&s, &id).await,
                }
            }
            Verb::Dlq {
                nats_url,
                creds,
                cmd,
            } => match cmd {
                DlqCmd::List { consumer, limit } => {
                    let consumer = consumer.as_deref();
                    plantd_cli::dlq::list(&nats_url, creds.as_deref(), consumer, limit, json).await
                }
                DlqCmd::Replay { seq, timeout } => {
                    let timeout = std::time::Duration::from_secs(timeout);
                    plantd_cli::dlq::replay(&nats_url, creds.as_deref(), seq, timeout, json).await
                }
            },
            Verb::Audit {
                cmd,
                org,
                actor,
                action,
                target,
                since,
                until,
                limit,
            } => {
                let s = Session::open(profile.as_deref()).await?;
                match cmd {
                    Some(AuditCmd::Verify) => {
                        plantd_cli::audit::verify(&s, org.as_deref(), json).await
                    }
                    None => {
                        let filters = plantd_cli::audit::Filters {
                            org: org.as_deref(),
                            actor: actor.as_deref(),
                            action: action.as_deref(),
                            target: target.as_deref(),
                            since: since.as_deref(),
                            until: until.as_deref(),
                            limit,
                        };
                        plantd_cli::audit::list(&s, filters, json).await
                    }
                }
            }
            Verb::Functions {
                config,
                nats_url,
                http_listen,
            } => {
                let overrides = plantd_cli::functions::FunctionsOverrides {
                    nats_url,
                    http_listen,
                };
                let config = plantd_cli::functions::load_config(config.as_deref(), &overrides)?;
                plantd_cli::functions::run(config, up::shutdown_signal()).await
            }
            Verb::Up {
                config,
                data_dir,
                nats_host,
                nats_port,
                http_listen,
                app_dir,
                mqtt_listen,
                edge_http_listen,
                allow_anonymous,
            } => {
                let overrides = UpOverrides {
                    data_dir,
                    nats: NatsOverrides {
                        host: nats_host,
                        port: nats_port,
                    },
                    http: HttpOverrides {
                        listen: http_listen,
                        app_dir,
                    },
                    edge: EdgeOverrides {
                        mqtt_listen,
                        http_listen: edge_http_listen,
                        allow_anonymous: allow_anonymous.then_some(true),
                    },
                };
                let config = up::load_config(config.as_deref(), &overrides)?;
                up::run(config, up::shutdown_signal()).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("plantd: {e:#}");
            match e.downcast_ref::<plantd_cli::session::CliError>() {
                Some(c) => ExitCode::from(c.kind as u8),
                None => ExitCode::FAILURE,
            }
        }
    }
}
