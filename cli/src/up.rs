//! `plantd up`: run the whole stack on this machine until Ctrl-C or
//! SIGTERM.
//!
//! That is nats-server with JetStream (data under `<data-dir>/nats`), with
//! plantd's streams and buckets created or updated; the functions —
//! identity, the proxy (REST API and `/v1/ws`) and the web app behind one
//! local HTTP server (default `127.0.0.1:8080`), the logger, the alert
//! engine, the notifier and analytics on one trigger — and the edge broker,
//! each supervised and restarted when it stops. On first start a local
//! administrator is created with a generated password kept in
//! `<data-dir>/admin-password` (mode 0600) — never a fixed default. Each
//! component prints one status line on standard output; logs go to standard
//! error.
//!
//! | module | what it holds |
//! |---|---|
//! | `config` | [`UpConfig`], its defaults and flags ([`UpOverrides`]), [`load_config`] |
//! | `server` | the functions server: identity, proxy, trigger metrics, web app |
//! | `trigger` | the event functions on one trigger, the log index |
//! | `edge` | the edge broker and its site's registration |
//! | `restart` | bringing a stopped component back (retries, crash loops) |
//!
//! This file starts them in order and supervises them until shutdown.

mod config;
mod edge;
mod restart;
mod server;
mod trigger;

use std::future::Future;
use std::time::Duration;

use anyhow::{Context as _, Result};
use plantd_shared::local_nats::{NatsServer, NatsServerSpec};
use plantd_shared::streams::{self, Settings};

pub use config::{
    EdgeConfig, EdgeOverrides, HttpConfig, HttpOverrides, NatsConfig, NatsOverrides, UpConfig,
    UpOverrides, load_config,
};
use edge::start_edge;
use restart::{describe_end, ensure_after_restart, retry};
use server::{admin_password_path, start_functions};
use trigger::{start_log_index, start_trigger, stop_trigger};

use crate::supervise::{RestartPolicy, Restarts};

/// `plantd up`'s data directory when none is configured.
pub const DEFAULT_DATA_DIR: &str = ".plantd";

/// The channel key file under `data_dir`: the key that seals alert
/// channels' webhook secrets in KV (`plantd_alerts::notify::keys`),
/// created with mode 0600 on first start and kept.
pub fn channel_key_path(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("alerts").join("channel-keys.json")
}

/// Prints one component's status line on standard output.
fn status(component: &str, state: &str, detail: impl std::fmt::Display) {
    println!("  {component:<9} {state:<7} {detail}");
}

/// Runs the stack until `shutdown` completes, then stops every component.
///
/// # Errors
/// When a component cannot start, or stops by itself while running.
pub async fn run(config: UpConfig, shutdown: impl Future<Output = ()>) -> Result<()> {
    // Warnings and errors (PLANTD_LOG_SHIP, default warn) go to PLANTD_LOGS:
    // the edge's through its journal, the others' to
    // plantd._plantd.log.plantd.<component> once NATS is up.
    plantd_shared::log_ship::start("up");
    let data_dir = &config.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    println!(
        "plantd up: starting the stack (data in {})",
        data_dir.display()
    );

    let mut spec = NatsServerSpec::new(data_dir.join("nats"));
    spec.host = config.nats.host.clone();
    spec.port = config.nats.port;
    spec.binary = config.nats.binary.clone();
    let mut nats = NatsServer::start(spec)
        .await
        .context("nats-server did not start")?;
    status(
        "nats",
        "ready",
        format_args!(
            "{}  (JetStream, store {})",
            nats.url(),
            nats.store_dir().display()
        ),
    );

    let client = async_nats::connect(nats.url())
        .await
        .with_context(|| format!("cannot connect to {}", nats.url()))?;
    let js = async_nats::jetstream::new(client.clone());
    streams::ensure(&js, &Settings::default())
        .await
        .context("cannot create plantd's streams and buckets")?;
    if let Some(queue) = plantd_shared::log_ship::take(plantd_shared::log_ship::Route::Platform) {
        tokio::spawn(plantd_shared::log_ship::publish_to_jetstream(
            queue,
            client.clone(),
            plantd_shared::sites::PLATFORM_SITE,
        ));
    }
    status("streams", "ready", streams::STREAMS.join(" "));
    status("buckets", "ready", streams::BUCKETS.join(" "));

    // One channel key for the notifier and the proxy (which writes
    // channels): never in the bucket it protects.
    let key_file = channel_key_path(data_dir);
    let channel_keys = std::sync::Arc::new(
        plantd_alerts::notify::KeySource {
            key_file: Some(key_file.clone()),
            ..Default::default()
        }
        .load()
        .await
        .context("the alert channels' key")?,
    );
    status(
        "keys",
        "ready",
        format_args!(
            "channel key {} in {}  (seals webhook secrets in KV)",
            channel_keys.kid(),
            key_file.display()
        ),
    );
    let (log_index, log_follow) = start_log_index(&js);
    let trigger = start_trigger(&js, &nats.url(), &log_index, &channel_keys).await?;
    let trigger_status = trigger.status();
    let (functions_url, server_stop, server) = start_functions(
        &config,
        &js,
        &nats.url(),
        &trigger_status,
        &log_index,
        &channel_keys,
    )
    .await?;
    status(
        "functions",
        "ready",
        format_args!(
            "{functions_url}  (identity /v1/auth, /.well-known/jwks.json; proxy /v1/state, /v1/sites)"
        ),
    );
    let (edge_stop, edge, edge_mqtt) = start_edge(&config, &nats.url(), &functions_url).await?;

    println!(
        "plantd is up. Next: get a token as {} (password in {}, mode 0600):",
        config.http.admin_email,
        admin_password_path(&config).display()
    );
    println!(
        "  TOKEN=$(curl -s {functions_url}/v1/auth/login -H 'content-type: application/json' -d \"{{\\\"email\\\":\\\"{}\\\",\\\"password\\\":\\\"$(cat {})\\\",\\\"sites\\\":[\\\"{}\\\"]}}\" | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')",
        config.http.admin_email,
        admin_password_path(&config).display(),
        config.edge.site
    );
    println!(
        "  mosquitto_pub -h {} -p {} -u admin -P \"$TOKEN\" -t line1/temp -m 21.5",
        edge_mqtt.ip(),
        edge_mqtt.port()
    );
    println!(
        "  NATS is at {} (e.g. subscribe to plantd.>). Ctrl-C stops everything.",
        nats.url()
    );

    // Supervise until asked to stop: a component that stops by itself is
    // started again (nats-server on the same port and store); only a crash
    // loop ends `plantd up`. Meanwhile the edge keeps accepting and
    // journaling, and every NATS client reconnects by itself.
    tokio::pin!(shutdown);
    let policy = RestartPolicy::default();
    let mut nats_restarts = Restarts::new(policy);
    let mut edge_restarts = Restarts::new(policy);
    let mut functions_restarts = Restarts::new(policy);
    let (mut edge_stop, mut edge) = (edge_stop, edge);
    let (mut server_stop, mut server) = (server_stop, server);
    let outcome: Result<()> = loop {
        tokio::select! {
            _ = &mut shutdown => break Ok(()),
            exit = nats.exited() => {
                let how = exit.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                tracing::error!(exit = %how, "nats-server stopped unexpectedly; restarting it on the same store");
                status("nats", "down", format_args!("stopped unexpectedly ({how}); restarting"));
                let tail = nats.tail().join("\n");
                let spec = nats.spec().clone();
                let back = retry("nats-server", &mut nats_restarts, &mut shutdown, &tail, || {
                    let spec = spec.clone();
                    async move { NatsServer::start(spec).await.map_err(anyhow::Error::from) }
                })
                .await;
                match back {
                    Ok(Some(server)) => {
                        nats = server;
                        status(
                            "nats",
                            "ready",
                            format_args!("{}  (restarted, store {})", nats.url(), nats.store_dir().display()),
                        );
                        ensure_after_restart(&js).await;
                    }
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            }
            ended = &mut edge => {
                let why = describe_end(ended);
                tracing::error!(reason = %why, "the edge broker stopped unexpectedly; restarting it");
                status("edge", "down", format_args!("stopped unexpectedly ({why}); restarting"));
                let nats_url = nats.url();
                let back = retry("the edge broker", &mut edge_restarts, &mut shutdown, &why, || {
                    start_edge(&config, &nats_url, &functions_url)
                })
                .await;
                match back {
                    Ok(Some((stop, task, _))) => (edge_stop, edge) = (stop, task),
                    Ok(None) => {
                        edge = tokio::spawn(async { Ok(()) });
                        break Ok(());
                    }
                    Err(e) => {
                        edge = tokio::spawn(async { Ok(()) });
                        break Err(e);
                    }
                }
            }
            ended = &mut server => {
                let why = match ended {
                    Ok(Ok(())) => "stopped".to_owned(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                tracing::error!(reason = %why, "the functions server stopped unexpectedly; restarting it");
                status("functions", "down", format_args!("stopped unexpectedly ({why}); restarting"));
                let nats_url = nats.url();
                let back = retry("the functions server", &mut functions_restarts, &mut shutdown, &why, || {
                    start_functions(&config, &js, &nats_url, &trigger_status, &log_index, &channel_keys)
                })
                .await;
                match back {
                    Ok(Some((url, stop, task))) => {
                        status("functions", "ready", format_args!("{url}  (restarted)"));
                        (server_stop, server) = (stop, task);
                    }
                    Ok(None) => {
                        server = tokio::spawn(async { Ok(()) });
                        break Ok(());
                    }
                    Err(e) => {
                        server = tokio::spawn(async { Ok(()) });
                        break Err(e);
                    }
                }
            }
        }
    };

    println!("plantd up: stopping");
    let _ = edge_stop.send(());
    match edge.await {
        Ok(Ok(())) => status("edge", "stopped", &config.edge.site),
        Ok(Err(e)) => tracing::warn!(error = %e, "edge"),
        Err(e) => tracing::warn!(error = %e, "edge task"),
    }
    let _ = server_stop.send(());
    match server.await {
        Ok(Ok(())) => status("functions", "stopped", &functions_url),
        Ok(Err(e)) => tracing::warn!(error = %e, "functions server"),
        Err(e) => tracing::warn!(error = %e, "functions server task"),
    }
    stop_trigger(trigger).await;
    log_follow.abort();
    if let Err(e) = client.drain().await {
        tracing::debug!(error = %e, "draining the NATS client");
    }
    nats.stop(Duration::from_secs(15))
        .await
        .context("stopping nats-server")?;
    status("nats", "stopped", nats.url());
    outcome
}

/// Resolves when the process receives Ctrl-C (SIGINT) or SIGTERM
/// ([`plantd_shared::shutdown::terminated`]).
pub async fn shutdown_signal() {
    plantd_shared::shutdown::terminated().await;
}
