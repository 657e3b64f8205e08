//! `plantd-edge`: parse flags, load the config file, run the broker until
//! SIGTERM or Ctrl-C.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use plantd_edge::Config;
use tracing_subscriber::EnvFilter;

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
    /// MQTT listen address [default: 127.0.0.1:1883].
    #[arg(long, value_name = "ADDR")]
    mqtt_listen: Option<String>,
    /// HTTP listen address for /healthz and /metrics [default: 127.0.0.1:9090].
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<String>,
    /// Directory for durable state.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Accept clients without credentials.
    #[arg(long)]
    allow_anonymous: bool,
    /// Refuse subscriptions covered by this filter (repeatable).
    #[arg(long, value_name = "FILTER")]
    deny_subscribe: Vec<String>,
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
    if let Some(v) = args.mqtt_listen {
        config.mqtt_listen = v;
    }
    if let Some(v) = args.http_listen {
        config.http_listen = v;
    }
    if let Some(v) = args.data_dir {
        config.data_dir = Some(v);
    }
    if args.allow_anonymous {
        config.allow_anonymous = true;
    }
    config.deny_subscribe.extend(args.deny_subscribe);
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
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let config = load(Args::parse())?;
    tracing::info!(site = %config.site, "starting plantd-edge");
    plantd_edge::run(config, shutdown_signal()).await?;
    Ok(())
}
