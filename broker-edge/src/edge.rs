//! The whole edge: the MQTT broker, the durable journal, and the JetStream
//! uplink, started together and stopped in order.
//!
//! Without `uplink.nats_url` it is the plain broker. With it:
//! 1. the journal is opened under `<data-dir>/journal` (recovering and
//!    reporting what it repaired);
//! 2. every publication selected by the uplink rules is journaled before it
//!    is acknowledged ([`crate::journal_hook::JournalHook`]);
//! 3. the edge takes its site's lease ([`plantd_bridge::SiteLease`]): when
//!    another live edge already serves the site, it refuses to start (or,
//!    when NATS was out of reach at start, its uplink refuses to publish);
//! 4. the uplink publishes the journal to JetStream with message ids
//!    `<site>:<journal id>:<seq>`, skipping what JetStream already holds
//!    and resending the rest after outages and restarts;
//! 5. `/readyz` says whether the journal is writable and the uplink making
//!    progress; `/metrics` adds the journal's and the uplink's figures;
//! 6. the site's record in `plantd_sites` is followed: a change of owner
//!    or a deletion applies at once ([`crate::owner::watch`]); with
//!    `--tls-client-ca`, the site's device certificates in
//!    `plantd_device_certs` are followed for certificate-only login
//!    ([`crate::auth::certificates`], also from their cache without NATS).
//!
//! On shutdown the broker closes its clients first, then the uplink gets a
//! moment to collect outstanding acknowledgements, then the journal is
//! flushed and its cursor persisted.
//!
//! | module | what it holds |
//! |---|---|
//! | this one | [`run`]: starting the parts in order, stopping them in order |
//! | `journal` | the journal's options from the configuration, opening it at start |
//! | `nats` | the NATS connection: options from the configuration, connecting |
//! | `readiness` | `/readyz` and the journal's, uplink's, downlink's, analytics' and login figures on `/metrics` |

mod journal;
mod nats;
mod readiness;

pub use journal::journal_options;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use plantd_bridge::{
    Downlink, DownlinkConfig, DownlinkStatus, Service, ServiceConfig, Uplink, UplinkConfig,
    UplinkConnector,
};
use plantd_bridge::{LeaseState, SiteLease};
use plantd_shared::lease::LeaseLife;
use plantd_shared::subject::Site;
use plantd_shared::topic::Filter;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::auth::EdgeTrust;
use crate::auth::certificates::{self, Directory};
use crate::config::Config;
use crate::inject::{EdgeCommands, EdgeServices};
use crate::journal_hook::JournalHook;
use crate::server::Broker;
use journal::open_journal;
use nats::{connect_nats, nats_options};
use readiness::{AuthFigures, readiness};

/// Why the edge could not start.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// The broker could not bind or was misconfigured.
    #[error(transparent)]
    Broker(#[from] crate::server::Error),
    /// A setting is invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// The journal could not be opened.
    #[error("journal: {0}")]
    Journal(#[from] plantd_journal::JournalError),
    /// The NATS connection could not be set up.
    #[error("NATS: {0}")]
    Nats(String),
    /// Another live edge holds this site's lease.
    #[error("refusing to start: {0}")]
    SiteTaken(String),
}

/// How long start-up waits for NATS to confirm the site lease before
/// going on without (the uplink confirms it before it publishes).
const LEASE_CHECK: Duration = Duration::from_secs(3);

/// Who this edge is, for the lease's holder field.
fn holder(data_dir: &std::path::Path) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown host".into());
    format!(
        "host {host}, pid {}, data dir {}",
        std::process::id(),
        data_dir.display()
    )
}

/// Runs the edge until `shutdown` resolves. `on_ready` is called with the
/// bound addresses once listening.
///
/// # Errors
/// [`EdgeError`] when something cannot start.
pub async fn run(
    mut config: Config,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(crate::server::Listening),
) -> Result<(), EdgeError> {
    // Which organisation owns the site: tokens of others are refused at
    // CONNECT (`crate::owner`; no start without it when tokens are verified).
    let registry = match &config.uplink.nats_url {
        Some(url) => Some((url.clone(), nats_options(&config).await?)),
        None => None,
    };
    let verifies_tokens = config.jwks_url.is_some() || config.jwks_file.is_some();
    let configured_org = config.org.clone();
    config.org = crate::owner::resolve(&config, registry, verifies_tokens)
        .await
        .map_err(|e| EdgeError::Config(e.to_string()))?;
    // Signing keys (and, with NATS, revocations) for token authentication.
    let mut trust = EdgeTrust::start(&config).map_err(|e| EdgeError::Config(e.to_string()))?;
    // Certificate-only login where client certificates are verified.
    let device_certs = match &config.tls_client_ca {
        Some(_) => {
            let site =
                Site::new(config.site.as_str()).map_err(|e| EdgeError::Config(e.to_string()))?;
            let cache = config
                .data_dir
                .as_ref()
                .map(|d| d.join(certificates::CACHE_FILE));
            Some(Arc::new(Directory::new(site, cache)))
        }
        None => None,
    };
    let Some(url) = config.uplink.nats_url.clone() else {
        let broker = EdgeTrust::install(trust.as_ref(), Broker::bind(config).await?);
        if let Some(d) = &device_certs {
            broker.authenticator().enable_certificates(d.clone());
        }
        on_ready(broker.listening());
        broker.run(shutdown).await;
        if let Some(t) = trust {
            t.stop().await;
        }
        return Ok(());
    };
    let site = Site::new(config.site.as_str()).map_err(|e| EdgeError::Config(e.to_string()))?;
    let data_dir = config.data_dir.clone().ok_or_else(|| {
        EdgeError::Config("--data-dir is required with --nats-url (the journal lives there)".into())
    })?;
    let rules = config
        .uplink
        .topics
        .iter()
        .map(|f| {
            Filter::new(f.as_str())
                .map_err(|e| EdgeError::Config(format!("uplink topic {f:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let journal = open_journal(&config, &data_dir)?;
    let nats_opts = nats_options(&config).await?;
    let client = connect_nats(nats_opts.clone(), &url).await?;
    // One live journal per site: take the lease before anything goes up.
    let lease = SiteLease::new(
        client.clone(),
        site.clone(),
        journal.identity().current().to_string(),
        holder(&data_dir),
        journal
            .identity()
            .lives()
            .iter()
            .map(|l| LeaseLife {
                id: l.id.to_string(),
                first_seq: l.first_seq,
            })
            .collect(),
    );
    let pings = lease
        .listen()
        .await
        .map_err(|e| EdgeError::Nats(e.to_string()))?;
    let checked = tokio::time::timeout(LEASE_CHECK, async {
        let _ = client.flush().await;
        lease.confirm().await
    })
    .await;
    match checked {
        Ok(Ok(LeaseState::Refused(why))) => {
            tracing::error!(reason = %why, "another edge serves this site");
            journal.close().await?;
            if let Some(t) = trust {
                t.stop().await;
            }
            return Err(EdgeError::SiteTaken(why));
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(
            error = %e,
            "cannot check the site lease yet; the uplink will before it publishes"
        ),
        Err(_) => tracing::warn!(
            "NATS not reachable yet: the site lease is checked before the uplink publishes"
        ),
    }
    if let Some(t) = &mut trust {
        t.mirror_revocations(&client);
    }
    let token = CancellationToken::new();
    // Whatever way `run` ends — an error below, or the caller dropping it
    // (`plantd up` restarting the edge in-process) — the tasks it spawned
    // stop with it: an orphaned lease task would keep answering for this
    // journal and the restarted edge would be refused its own site.
    let _stop_tasks_on_exit = token.clone().drop_guard();
    let mut tasks = Vec::new();
    if config.uplink.create_streams {
        let js = async_nats::jetstream::new(client.clone());
        let t = token.clone();
        tasks.push(tokio::spawn(async move {
            let mut delay = Duration::from_millis(200);
            loop {
                match plantd_shared::streams::ensure(
                    &js,
                    &plantd_shared::streams::Settings::default(),
                )
                .await
                {
                    Ok(_) => break,
                    Err(e) => tracing::warn!(error = %e, "cannot create streams yet; retrying"),
                }
                tokio::select! {
                    _ = t.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }));
    }
    // The edge's own warnings and errors, journaled like a device's logs.
    tasks.extend(crate::own_logs::spawn(journal.clone(), token.clone()));
    let mut ucfg = UplinkConfig::new(site.clone());
    ucfg.window = config.uplink.window.max(1);
    let uplink = Uplink::new(journal.clone(), UplinkConnector::new(&url, nats_opts), ucfg)
        .with_lease(lease.clone());
    let t = token.clone();
    tasks.push(tokio::spawn(lease.run(pings, t.cancelled_owned())));
    let status = uplink.status();
    let uplink_status = status.clone();
    let uplink_stop = CancellationToken::new();
    let _stop_uplink_on_exit = uplink_stop.clone().drop_guard();
    let stop = uplink_stop.clone();
    let uplink_task = tokio::spawn(async move { uplink.run(stop.cancelled_owned()).await });

    let site = Site::new(config.site.as_str()).map_err(|e| EdgeError::Config(e.to_string()))?;
    let downlink_status = watch::channel(DownlinkStatus::default()).0;
    // Rules placed at the edge: their engine reads the journal.
    let analytics = config.analytics.enabled.then(crate::analytics::prepare);
    // Site health: the newest publication's time goes in the status.
    let last_message = crate::status::LastMessage::default();
    let hook = crate::status::Seen::new(
        JournalHook::new(journal.clone(), rules),
        last_message.clone(),
    );
    let analytics_settings = config.analytics.clone();
    let status_settings = config.status.clone();
    // The owner in force, as the site's record is followed.
    let (owners, owners_rx) = watch::channel(config.org.clone());
    let owner_stats = Arc::new(crate::owner::watch::Stats::default());
    let site_cache = config
        .data_dir
        .as_ref()
        .map(|d| d.join(crate::owner::CACHE_FILE));
    let broker = Broker::bind(config)
        .await?
        .with_publish_hook(Arc::new(hook))
        .with_http_extras(readiness(
            journal.clone(),
            status,
            downlink_status.subscribe(),
            analytics.as_ref().map(|a| a.stats.clone()),
            AuthFigures {
                owner: owner_stats.clone(),
                certificates: device_certs.clone(),
            },
        ));
    let broker = EdgeTrust::install(trust.as_ref(), broker);
    let handle = broker.handle();
    // The site changing hands, or deleted, applies without a restart.
    let authn = broker.authenticator();
    let js = async_nats::jetstream::new(client.clone());
    tasks.push(tokio::spawn(crate::owner::watch::follow(
        js.clone(),
        crate::owner::watch::Watch {
            site: site.clone(),
            configured: configured_org,
            cache: site_cache,
            authn: authn.clone(),
            stats: owner_stats,
            owners,
        },
        token.clone(),
    )));
    if let Some(d) = device_certs {
        authn.enable_certificates(d.clone());
        tasks.push(tokio::spawn(certificates::follow(
            js,
            d,
            authn,
            token.clone(),
        )));
    }
    if status_settings.enabled {
        let edge = plantd_shared::site_status::EdgeInfo {
            id: journal.identity().current().to_string(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            holder: holder(&data_dir),
            started_ms: plantd_shared::headers::now_ms(),
        };
        let sources = crate::status::Sources {
            site: site.clone(),
            edge,
            interval: Duration::from_millis(status_settings.interval_ms),
            journal: journal.clone(),
            uplink: uplink_status,
            metrics: broker.metrics(),
            last_message,
        };
        tasks.push(crate::status::spawn(sources, client.clone(), token.clone()));
    }
    if let Some(a) = analytics {
        tasks.extend(a.start(
            &analytics_settings,
            &crate::analytics::Site {
                site: site.as_str(),
                owners: owners_rx,
                data_dir: &data_dir,
            },
            client.clone(),
            journal.clone(),
            handle.clone(),
            token.clone(),
        ));
    }

    // Cloud → devices: commands from PLANTD_COMMANDS, in order per topic.
    let downlink = Downlink::new(
        client.clone(),
        DownlinkConfig::new(site.clone()),
        Arc::new(EdgeCommands {
            broker: handle.clone(),
        }),
    )
    .with_status(downlink_status);
    let t = token.clone();
    tasks.push(tokio::spawn(async move {
        downlink.run(t.cancelled_owned()).await
    }));

    // Requests to site services: NATS request → MQTT 5 request/response.
    let services = EdgeServices::start(handle, token.clone());
    let t = token.clone();
    let svc_client = client.clone();
    tasks.push(tokio::spawn(async move {
        let mut delay = Duration::from_millis(200);
        let bound = loop {
            // The bind waits for the server while NATS is down: it must not
            // hold up a shutdown.
            let bind = Service::bind(svc_client.clone(), ServiceConfig::new(site.clone()), Arc::new(services.clone()));
            tokio::select! {
                _ = t.cancelled() => return,
                r = bind => match r {
                    Ok(s) => break s,
                    Err(e) => tracing::warn!(error = %e, "site services not reachable over NATS yet; retrying"),
                },
            }
            tokio::select! {
                _ = t.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        };
        bound.run(t.cancelled_owned()).await;
    }));

    on_ready(broker.listening());
    let stop_tasks = token.clone();
    broker
        .run(async move {
            shutdown.await;
            // Stop feeding the broker before it closes its clients.
            stop_tasks.cancel();
        })
        .await;

    token.cancel();
    if let Some(t) = trust {
        bounded("signing keys", t.stop()).await;
    }
    uplink_stop.cancel();
    bounded("uplink", uplink_task).await;
    for t in tasks {
        let abort = t.abort_handle();
        if bounded("background task", t).await.is_none() {
            abort.abort();
        }
    }
    match bounded("journal", journal.close()).await {
        Some(closed) => closed?,
        None => tracing::warn!(
            "journal not closed in time; what it held is on disk and replayed at the next start"
        ),
    }
    // A connection NATS never accepted (bad credentials, no server) must
    // not hold the exit up either.
    bounded("NATS drain", client.drain()).await;
    tracing::info!("edge stopped; journal flushed");
    Ok(())
}

/// How long each shutdown step may take before the edge goes on without
/// it: SIGTERM always ends the process (a supervisor's stop timeout is
/// usually 10–90 s), whatever state the uplink or NATS is in.
const SHUTDOWN_STEP: Duration = Duration::from_secs(5);

/// Awaits `step` for at most [`SHUTDOWN_STEP`]; `None` (and a warning
/// naming `what`) when it did not finish.
async fn bounded<F: Future>(what: &str, step: F) -> Option<F::Output> {
    match tokio::time::timeout(SHUTDOWN_STEP, step).await {
        Ok(out) => Some(out),
        Err(_) => {
            tracing::warn!(
                step = what,
                waited_ms = SHUTDOWN_STEP.as_millis() as u64,
                "shutdown step did not finish in time; going on without it"
            );
            None
        }
    }
}
