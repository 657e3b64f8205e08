//! `plantd`: run and talk to the plantd stack.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use plantd_cli::up::{self, EdgeOverrides, HttpOverrides, NatsOverrides, UpOverrides};

/// plantd: control and telemetry for industrial sites.
#[derive(Debug, Parser)]
#[command(name = "plantd", version, about)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or update plantd's JetStream streams and KV buckets on a NATS
    /// server (idempotent; for clusters that `plantd up` does not run).
    Streams {
        /// The NATS server.
        #[arg(long, env = "PLANTD_NATS_URL", default_value = "nats://127.0.0.1:4222")]
        nats_url: String,
        /// NATS credentials file (JWT + seed).
        #[arg(long, env = "PLANTD_NATS_CREDS")]
        creds: Option<PathBuf>,
        /// Replicas per stream and bucket (3 in a cluster).
        #[arg(long, default_value_t = 1)]
        replicas: usize,
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
    let result = runtime.block_on(async {
        match cli.command {
            Command::Streams {
                nats_url,
                creds,
                replicas,
            } => plantd_cli::streams::ensure(&nats_url, creds.as_deref(), replicas).await,
            Command::Up {
                config,
                data_dir,
                nats_host,
                nats_port,
                http_listen,
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
            ExitCode::FAILURE
        }
    }
}
