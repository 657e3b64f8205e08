//! `plantd-edge`: parse flags, load the config file, run the broker until
//! SIGTERM or Ctrl-C.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use plantd_edge::Config;

/// mimalloc: the broker allocates small objects at a high rate on several
/// threads (see `docs/performance.md`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// plantd's edge broker (MQTT 3.1.1 and 5.0).
#[derive(Debug, Parser)]
#[command(name = "plantd-edge", version, about)]
struct Args {
    /// TOML configuration file; flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Site name.
    #[arg(long, value_name = "NAME")]
    site: Option<String>,
    /// The organisation that owns the site: tokens of other organisations
    /// are refused at CONNECT [default: the site's record in plantd_sites,
    /// or its copy cached in <data-dir>/site.json].
    #[arg(long, value_name = "ORG")]
    org: Option<String>,
    /// MQTT listen address [default: 127.0.0.1:1883].
    #[arg(long, value_name = "ADDR")]
    mqtt_listen: Option<String>,
    /// HTTP listen address for /healthz and /metrics [default: 127.0.0.1:9090].
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<String>,
    /// MQTT over TLS listen address (needs --tls-cert and --tls-key).
    #[arg(long, value_name = "ADDR")]
    tls_listen: Option<String>,
    /// TLS server certificate chain (PEM).
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// TLS server private key (PEM).
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// CA of client certificates (PEM); a verified certificate's common
    /// name identifies the device (a token is still required).
    #[arg(long, value_name = "FILE")]
    tls_client_ca: Option<PathBuf>,
    /// MQTT over WebSocket listen address (path /mqtt, subprotocol mqtt).
    #[arg(long, value_name = "ADDR")]
    ws_listen: Option<String>,
    /// MQTT over secure WebSocket listen address (path /mqtt; uses
    /// --tls-cert, --tls-key and --tls-client-ca).
    #[arg(long, value_name = "ADDR")]
    wss_listen: Option<String>,
    /// Directory for durable state.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Accept clients without credentials (off by default; logged loudly).
    #[arg(long)]
    allow_anonymous: bool,
    /// URL of the identity service's JWKS (signing keys, cached under
    /// <data-dir>/trust).
    #[arg(long, value_name = "URL")]
    jwks_url: Option<String>,
    /// JWKS file with the signing keys (sites that never reach identity).
    #[arg(long, value_name = "FILE")]
    jwks_file: Option<PathBuf>,
    /// Refuse subscriptions covered by this filter (repeatable).
    #[arg(long, value_name = "FILTER")]
    deny_subscribe: Vec<String>,
    /// NATS server for the JetStream uplink (enables the journal).
    #[arg(long, value_name = "URL")]
    nats_url: Option<String>,
    /// NATS credentials file.
    #[arg(long, value_name = "FILE")]
    nats_creds: Option<PathBuf>,
    /// CA certificate to verify the NATS server.
    #[arg(long, value_name = "FILE")]
    nats_ca: Option<PathBuf>,
    /// Client certificate for mutual TLS to NATS.
    #[arg(long, value_name = "FILE")]
    nats_cert: Option<PathBuf>,
    /// Client key for mutual TLS to NATS.
    #[arg(long, value_name = "FILE")]
    nats_key: Option<PathBuf>,
    /// Topic filter whose messages go up (repeatable) [default: #]; log
    /// lines on $plantd/log/<source> always go up.
    #[arg(long = "uplink", value_name = "FILTER")]
    uplink: Vec<String>,
    /// Create or update plantd's streams at start.
    #[arg(long)]
    create_streams: bool,
    /// Journal durability: always, batch or never [default: batch].
    #[arg(long, value_name = "POLICY")]
    fsync: Option<String>,
    /// Journal size limit in bytes [default: 1 GiB].
    #[arg(long, value_name = "BYTES")]
    journal_max_bytes: Option<u64>,
    /// Full journal: block or drop-oldest [default: block].
    #[arg(long, value_name = "POLICY")]
    journal_overflow: Option<String>,
}

fn load(args: Args) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        None => Config::default(),
    };
    if let Some(v) = args.site {
        config.site = v;
    }
    if args.org.is_some() {
        config.org = args.org;
    }
    if let Some(v) = args.mqtt_listen {
        config.mqtt_listen = v;
    }
    if let Some(v) = args.http_listen {
        config.http_listen = v;
    }
    if args.tls_listen.is_some() {
        config.tls_listen = args.tls_listen;
    }
    if args.tls_cert.is_some() {
        config.tls_cert = args.tls_cert;
    }
    if args.tls_key.is_some() {
        config.tls_key = args.tls_key;
    }
    if args.tls_client_ca.is_some() {
        config.tls_client_ca = args.tls_client_ca;
    }
    if args.ws_listen.is_some() {
        config.ws_listen = args.ws_listen;
    }
    if args.wss_listen.is_some() {
        config.wss_listen = args.wss_listen;
    }
    if let Some(v) = args.data_dir {
        config.data_dir = Some(v);
    }
    if args.allow_anonymous {
        config.allow_anonymous = true;
    }
    if args.jwks_url.is_some() {
        config.jwks_url = args.jwks_url;
    }
    if args.jwks_file.is_some() {
        config.jwks_file = args.jwks_file;
    }
    config.deny_subscribe.extend(args.deny_subscribe);
    let u = &mut config.uplink;
    if args.nats_url.is_some() {
        u.nats_url = args.nats_url;
    }
    if args.nats_creds.is_some() {
        u.nats_creds = args.nats_creds;
    }
    if args.nats_ca.is_some() {
        u.nats_ca = args.nats_ca;
    }
    if args.nats_cert.is_some() {
        u.nats_cert = args.nats_cert;
    }
    if args.nats_key.is_some() {
        u.nats_key = args.nats_key;
    }
    if !args.uplink.is_empty() {
        u.topics = args.uplink;
    }
    if args.create_streams {
        u.create_streams = true;
    }
    let j = &mut config.journal;
    if let Some(v) = args.fsync {
        j.fsync = v;
    }
    if let Some(v) = args.journal_max_bytes {
        j.max_bytes = v;
    }
    if let Some(v) = args.journal_overflow {
        j.overflow = v;
    }
    Ok(config)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutdown signal received");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // PLANTD_LOG (or RUST_LOG) chooses what is printed; PLANTD_LOG_SHIP
    // (default warn) what is journaled as `$plantd/log/plantd/edge`.
    plantd_shared::logging::init("plantd-edge");
    plantd_shared::log_ship::start(plantd_shared::log_ship::EDGE);
    let config = load(Args::parse())?;
    tracing::info!(site = %config.site, "starting plantd-edge");
    plantd_edge::edge::run(config, shutdown_signal(), |listening| listening.log()).await?;
    Ok(())
}
