//! The broker as a library: bind the listeners, then [`Broker::run`] until a
//! shutdown future resolves (the mini-redis shape; `main` only parses flags).
//!
//! Listeners: MQTT over TCP (always), TLS (`tls_listen`), WebSocket
//! (`ws_listen`) and secure WebSocket (`wss_listen`). They share one accept
//! loop, the connection limit and the shutdown path; TLS and WSS share one
//! [`Certificates`], re-read on SIGHUP (see [`reload_certificates`]).
//!
//! Shutdown: the accept loop stops, every link is told through a
//! cancellation token and closes its client with v5 reason 0x8B, the task
//! tracker waits for all of them, then the router (whose command channel
//! closes with the last link) and the HTTP server stop.
//!
//! | module | what it holds |
//! |---|---|
//! | this one | [`Broker`]: binding the listeners, its settings, its addresses; [`run`] |
//! | `accept` | [`Broker::run`]: the accept loop, the connection limit, the shutdown path |
//! | `connection` | one accepted socket's task: plain TCP, the TLS handshake, the WebSocket upgrade and its bridge |
//! | `reload` | SIGHUP and [`reload_certificates`] |

mod accept;
mod connection;
mod reload;

pub use reload::reload_certificates;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use plantd_bridge::trust::Trust;
use plantd_shared::subject::Site;
use plantd_shared::topic::Filter;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::auth::Authenticator;
use crate::config::Config;
use crate::hooks::{Authorizer, PublishHook, StaticRules};
use crate::metrics::Metrics;
use crate::tls::{Certificates, TlsFiles};

/// Why the broker could not start.
#[derive(Debug, Error)]
pub enum Error {
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address from the configuration.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The site name cannot be used (it is part of token audiences and
    /// subjects).
    #[error("invalid site name {site:?}: {detail}")]
    Site {
        /// The configured name.
        site: String,
        /// Why it is invalid.
        detail: String,
    },
    /// A configured filter is not a valid MQTT filter.
    #[error("invalid topic filter {filter:?} in configuration: {source}")]
    Filter {
        /// The filter text.
        filter: String,
        /// Why it is invalid.
        source: plantd_shared::topic::TopicError,
    },
    /// The TLS or WSS listener is misconfigured (missing or invalid
    /// certificate, key or client CA).
    #[error("TLS listener: {0}")]
    Tls(String),
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The session store in the data directory cannot be opened or read
    /// (the message names the file).
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// A broker with bound listeners, ready to [`run`](Broker::run).
pub struct Broker {
    /// Settings.
    config: Arc<Config>,
    /// MQTT listener.
    mqtt: TcpListener,
    /// HTTP listener (health, metrics).
    http: TcpListener,
    /// TLS listener (`--tls-listen`), if configured.
    tls: Option<TcpListener>,
    /// WebSocket listener (`--ws-listen`), if configured.
    ws: Option<TcpListener>,
    /// Secure WebSocket listener (`--wss-listen`), if configured.
    wss: Option<TcpListener>,
    /// The TLS configuration of the TLS and WSS listeners (present when
    /// either is configured), reloaded on SIGHUP.
    certs: Option<Arc<Certificates>>,
    /// SIGHUP, registered at bind so that a reload request arriving before
    /// `run` neither kills the process nor is lost.
    #[cfg(unix)]
    hangup: Option<tokio::signal::unix::Signal>,
    /// Counters, shared with the HTTP endpoint.
    metrics: Arc<Metrics>,
    /// Authorisation of PUBLISH and SUBSCRIBE.
    auth: Arc<dyn Authorizer>,
    /// Journal hook.
    hook: Option<Arc<dyn PublishHook>>,
    /// Token authentication at CONNECT, expiry and revocation.
    authn: Arc<Authenticator>,
    /// Readiness and metrics from the journal and the bridge.
    http_extras: crate::http::HttpExtras,
    /// The router's command channel, made at bind so that handles exist
    /// before the broker runs.
    router_tx: mpsc::Sender<crate::router::RouterCmd>,
    /// Its receiving end, taken by `run`.
    router_rx: mpsc::Receiver<crate::router::RouterCmd>,
    /// The session store (`<data-dir>/sessions.redb`), loaded, when there
    /// is a data directory.
    store: Option<crate::store::OpenedStore>,
}

impl Broker {
    /// Binds the MQTT and HTTP listeners of `config`, and the TLS,
    /// WebSocket and secure WebSocket listeners it configures. On Unix,
    /// SIGHUP is taken over from here on: it reloads the TLS files (and
    /// never terminates the broker).
    ///
    /// # Errors
    /// [`Error::Bind`] when an address is taken or invalid,
    /// [`Error::Filter`] for a bad `deny_subscribe` filter,
    /// [`Error::DataDir`] when the data directory cannot be created,
    /// [`Error::Store`] when the session store in it cannot be opened or
    /// read (corrupt, unreadable, held by another process),
    /// [`Error::Tls`] when the TLS certificate, key or client CA is missing
    /// or invalid while `tls_listen` or `wss_listen` is set.
    pub async fn bind(config: Config) -> Result<Self, Error> {
        let deny = config
            .deny_subscribe
            .iter()
            .map(|f| {
                Filter::new(f.as_str()).map_err(|source| Error::Filter {
                    filter: f.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(dir) = &config.data_dir {
            std::fs::create_dir_all(dir).map_err(|source| Error::DataDir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let store = match &config.data_dir {
            Some(dir) => Some(crate::store::OpenedStore::open(dir, config.clock.clone())?),
            None => None,
        };
        let site = Site::new(config.site.as_str()).map_err(|e| Error::Site {
            site: config.site.clone(),
            detail: e.to_string(),
        })?;
        let authn = Arc::new(
            Authenticator::new(site, None, config.allow_anonymous).with_org(config.org.clone()),
        );
        let bind = |addr: String| async move {
            TcpListener::bind(&addr)
                .await
                .map_err(|source| Error::Bind { addr, source })
        };
        let mqtt = bind(config.mqtt_listen.clone()).await?;
        let http = bind(config.http_listen.clone()).await?;
        let secure_flag = match (&config.tls_listen, &config.wss_listen) {
            (Some(_), _) => Some("--tls-listen"),
            (None, Some(_)) => Some("--wss-listen"),
            (None, None) => None,
        };
        let certs = match secure_flag {
            Some(flag) => {
                let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
                    return Err(Error::Tls(format!("{flag} needs --tls-cert and --tls-key")));
                };
                let certs = Certificates::load(&TlsFiles {
                    cert,
                    key,
                    client_ca: config.tls_client_ca.as_deref(),
                })
                .map_err(|e| Error::Tls(e.to_string()))?;
                Some(Arc::new(certs))
            }
            None => None,
        };
        let tls = match &config.tls_listen {
            Some(addr) => Some(bind(addr.clone()).await?),
            None => None,
        };
        let ws = match &config.ws_listen {
            Some(addr) => Some(bind(addr.clone()).await?),
            None => None,
        };
        let wss = match &config.wss_listen {
            Some(addr) => Some(bind(addr.clone()).await?),
            None => None,
        };
        #[cfg(unix)]
        let hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(error = %e, "cannot watch SIGHUP: TLS certificates will not be reloaded");
                None
            }
        };
        let (router_tx, router_rx) = mpsc::channel(4096);
        Ok(Broker {
            config: Arc::new(config),
            mqtt,
            http,
            tls,
            ws,
            wss,
            certs,
            #[cfg(unix)]
            hangup,
            metrics: Arc::new(Metrics::default()),
            auth: Arc::new(StaticRules {
                deny_subscribe: deny,
            }),
            hook: None,
            authn,
            http_extras: crate::http::HttpExtras::default(),
            router_tx,
            router_rx,
            store,
        })
    }

    /// A handle for injecting publications and subscribing from inside the
    /// process (the downlink and the site services). It does not keep the
    /// broker alive: once the broker stops, its calls fail.
    pub fn handle(&self) -> crate::inject::BrokerHandle {
        crate::inject::BrokerHandle::new(self.router_tx.downgrade())
    }

    /// Adds readiness checks and metrics from other parts to `/readyz` and
    /// `/metrics`.
    pub fn with_http_extras(mut self, extras: crate::http::HttpExtras) -> Self {
        self.http_extras = extras;
        self
    }

    /// Replaces the authorisation rules (default: [`StaticRules`]).
    pub fn with_authorizer(mut self, auth: Arc<dyn Authorizer>) -> Self {
        self.auth = auth;
        self
    }

    /// Verifies CONNECT passwords as tokens with `trust` (keys and
    /// revocations for this broker's site); without it only anonymous
    /// access (when allowed) is possible.
    pub fn with_trust(mut self, trust: Arc<Trust>) -> Self {
        self.authn = Arc::new(
            Authenticator::new(
                self.authn.site().clone(),
                Some(trust),
                self.config.allow_anonymous,
            )
            .with_org(self.authn.org()),
        );
        self
    }

    /// Installs the hook every accepted PUBLISH passes before its
    /// acknowledgement.
    pub fn with_publish_hook(mut self, hook: Arc<dyn PublishHook>) -> Self {
        self.hook = Some(hook);
        self
    }

    /// The bound MQTT address (useful with port 0).
    ///
    /// # Panics
    /// Never in practice: a bound TCP listener always has a local address.
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.mqtt
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The bound TLS address, when a TLS listener is configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The bound WebSocket address, when a WebSocket listener is configured.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The bound secure WebSocket address, when one is configured.
    pub fn wss_addr(&self) -> Option<SocketAddr> {
        self.wss.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The TLS configuration of the TLS and WSS listeners, for reloading it
    /// without a signal (see [`reload_certificates`]); `None` without
    /// either listener.
    pub fn certificates(&self) -> Option<Arc<Certificates>> {
        self.certs.clone()
    }

    /// The bound addresses, for the "listening" log line.
    pub fn listening(&self) -> Listening {
        Listening {
            mqtt: self.mqtt_addr(),
            http: self.http_addr(),
            tls: self.tls_addr(),
            ws: self.ws_addr(),
            wss: self.wss_addr(),
        }
    }

    /// The broker's counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The authenticator every link asks at CONNECT (the edge switches
    /// its site's owner and turns certificate login on through it).
    pub fn authenticator(&self) -> Arc<Authenticator> {
        self.authn.clone()
    }
}

/// The addresses a broker listens on.
#[derive(Debug, Clone, Copy)]
pub struct Listening {
    /// MQTT over TCP.
    pub mqtt: SocketAddr,
    /// Health and metrics.
    pub http: SocketAddr,
    /// MQTT over TLS, when configured.
    pub tls: Option<SocketAddr>,
    /// MQTT over WebSocket, when configured.
    pub ws: Option<SocketAddr>,
    /// MQTT over secure WebSocket, when configured.
    pub wss: Option<SocketAddr>,
}

impl Listening {
    /// Logs the "plantd-edge listening" line (`tls=`, `ws=`, `wss=` only
    /// for configured listeners); tests find port-0 addresses in it.
    pub fn log(&self) {
        info!(
            mqtt = %self.mqtt,
            http = %self.http,
            tls = self.tls.map(tracing::field::display),
            ws = self.ws.map(tracing::field::display),
            wss = self.wss.map(tracing::field::display),
            "plantd-edge listening"
        );
    }
}

/// Binds `config`'s listeners and serves until `shutdown` resolves.
///
/// # Errors
/// As [`Broker::bind`].
pub async fn run(config: Config, shutdown: impl Future) -> Result<(), Error> {
    let broker = Broker::bind(config).await?;
    broker.listening().log();
    broker.run(shutdown).await;
    Ok(())
}
