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

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use plantd_bridge::trust::Trust;
use plantd_shared::subject::Site;
use plantd_shared::topic::Filter;
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::auth::Authenticator;
use crate::config::Config;
use crate::hooks::{Authorizer, PublishHook, StaticRules};
use crate::link::{self, LinkContext, Peer, handshake};
use crate::metrics::{Listener, Metrics};
use crate::router::Router;
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

    /// Serves clients until `shutdown` resolves, then closes every client
    /// (v5 reason 0x8B) and returns once all tasks have finished.
    pub async fn run(self, shutdown: impl Future) {
        let Broker {
            config,
            mqtt,
            http,
            tls,
            ws,
            wss,
            certs,
            #[cfg(unix)]
            hangup,
            metrics,
            auth,
            hook,
            authn,
            http_extras,
            router_tx,
            router_rx,
            store,
        } = self;
        let token = CancellationToken::new();
        let tracker = TaskTracker::new();
        let router = crate::store::attach(
            Router::new(router_rx, config.clone(), metrics.clone()),
            store,
            &metrics,
        );
        let router = tokio::spawn(router.run(token.clone()));

        let http_token = token.clone();
        let http_metrics = metrics.clone();
        let http_task = tokio::spawn(async move {
            let serve = axum::serve(http, crate::http::app_with(http_metrics, http_extras))
                .with_graceful_shutdown(async move { http_token.cancelled().await });
            if let Err(e) = serve.await {
                warn!(error = %e, "HTTP server failed");
            }
        });

        if authn.allows_anonymous() {
            warn!(
                "ANONYMOUS ACCESS IS ON (--allow-anonymous): clients without a token may connect, publish and subscribe"
            );
        } else if !authn.verifies_tokens() {
            warn!(
                "no signing keys configured (--jwks-url or --jwks-file) and anonymous access off: every client will be refused"
            );
        }
        let revocations = tokio::spawn(authn.clone().watch_revocations(token.clone()));
        #[cfg(unix)]
        let reloads = hangup.map(|sig| {
            tokio::spawn(reload_on_hangup(
                sig,
                certs.clone(),
                metrics.clone(),
                token.clone(),
            ))
        });
        let keep_alive = Arc::new(link::KeepAlive::with_clock(config.clock.clone()));
        let keep_alive_task = tokio::spawn(keep_alive.clone().run(token.clone()));
        let ctx = Arc::new(LinkContext {
            router: router_tx,
            config: config.clone(),
            metrics: metrics.clone(),
            auth,
            authn,
            hook,
            shutdown: token.clone(),
            keep_alive,
        });
        let limit = Arc::new(Semaphore::new(config.limits.max_connections));
        let conn_ids = AtomicU64::new(1);
        tokio::pin!(shutdown);
        loop {
            let (accepted, kind) = tokio::select! {
                _ = &mut shutdown => break,
                r = mqtt.accept() => (r, Listener::Tcp),
                r = accept_opt(tls.as_ref()) => (r, Listener::Tls),
                r = accept_opt(ws.as_ref()) => (r, Listener::Ws),
                r = accept_opt(wss.as_ref()) => (r, Listener::Wss),
            };
            let (stream, peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off.
                    warn!(error = %e, listener = kind.label(), "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            metrics.accepted(kind);
            let _ = stream.set_nodelay(true);
            let conn_id = conn_ids.fetch_add(1, Relaxed);
            match limit.clone().try_acquire_owned() {
                Ok(permit) if kind == Listener::Tcp => {
                    tracker.spawn(tcp_task(stream, peer, conn_id, ctx.clone(), permit));
                }
                Ok(permit) => {
                    tracker.spawn(serve_socket(
                        kind,
                        stream,
                        peer,
                        certs.clone(),
                        conn_id,
                        ctx.clone(),
                        permit,
                    ));
                }
                Err(_) => {
                    warn!(%peer, listener = kind.label(), limit = config.limits.max_connections, "connection limit reached; refusing");
                    metrics.connections_refused.fetch_add(1, Relaxed);
                    // Over TLS or WebSocket a CONNACK would cost a
                    // handshake or an upgrade first: those are closed.
                    if kind == Listener::Tcp {
                        tracker.spawn(refuse_over_limit(stream, config.clone()));
                    }
                }
            }
        }
        info!("shutting down: closing clients");
        token.cancel();
        drop((mqtt, tls, ws, wss));
        drop(ctx);
        tracker.close();
        tracker.wait().await;
        let _ = revocations.await;
        let _ = keep_alive_task.await;
        #[cfg(unix)]
        if let Some(r) = reloads {
            let _ = r.await;
        }
        let _ = router.await;
        let _ = http_task.await;
        info!("broker stopped");
    }
}

/// Accepts on an optional listener, or never when there is none.
async fn accept_opt(l: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// The task of a plain TCP connection: the link's own future (two boxes,
/// [`link::serve`]) and the connection's place under `max_connections`,
/// nothing else — no dispatch state of [`serve_socket`], whose future is
/// several times larger (tokio rounds a task up to 128-byte multiples, so
/// every idle TCP connection paid a 512-byte task for it; issue 12).
fn tcp_task(
    stream: TcpStream,
    peer: SocketAddr,
    conn_id: u64,
    ctx: Arc<LinkContext>,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> impl Future<Output = ()> + Send + 'static {
    let peer = Peer {
        addr: Some(peer),
        certificate: None,
        fingerprint: None,
    };
    let link = link::serve(stream, peer, conn_id, ctx);
    async move {
        link.await;
        drop(permit);
    }
}

/// Serves one accepted socket of listener `kind` until it closes. TLS and
/// WSS use the certificate current at accept time.
///
/// This future is what a TLS or WebSocket connection's task holds for its
/// whole life (a plain TCP connection's task is [`tcp_task`]), and a future
/// is as large as its largest state: the TLS handshake, the WebSocket
/// upgrade and their links are boxed so that none of them carries the
/// others' state (12.8 KB per idle connection before,
/// `benches/edge_idle_heap.rs`; a size test below keeps it small).
async fn serve_socket(
    kind: Listener,
    stream: TcpStream,
    peer: SocketAddr,
    certs: Option<Arc<Certificates>>,
    conn_id: u64,
    ctx: Arc<LinkContext>,
    // The connection's place under `max_connections`, given back when
    // this future ends (it is an argument, not captured by a wrapper, so
    // the task holds no second copy of the arguments).
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let secure = matches!(kind, Listener::Tls | Listener::Wss);
    match (kind, certs.filter(|_| secure)) {
        (Listener::Tcp, _) => {
            let peer = Peer {
                addr: Some(peer),
                certificate: None,
                fingerprint: None,
            };
            link::serve(stream, peer, conn_id, ctx).await;
        }
        (Listener::Ws, _) => {
            let peer = Peer {
                addr: Some(peer),
                ..Peer::default()
            };
            Box::pin(serve_ws(stream, peer, conn_id, ctx)).await;
        }
        (Listener::Tls, Some(certs)) => {
            serve_tls(stream, peer, certs.config(), conn_id, ctx).await;
        }
        (Listener::Wss, Some(certs)) => {
            Box::pin(serve_wss(stream, peer, certs.acceptor(), conn_id, ctx)).await;
        }
        // Not reached: `bind` loads certificates whenever TLS or WSS is on.
        (Listener::Tls | Listener::Wss, None) => {
            warn!(%peer, "no TLS configuration for a secure listener; closing");
        }
    }
}

/// Serves a WSS client: the TLS handshake, then the WebSocket upgrade and
/// the link ([`serve_ws`]).
async fn serve_wss(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    conn_id: u64,
    ctx: Arc<LinkContext>,
) {
    let timeout = Duration::from_millis(ctx.config.limits.connect_timeout_ms);
    match crate::tls::handshake(&acceptor, stream, timeout).await {
        Ok((tls, certificate)) => {
            // The link serves the bridge's socket pair, not this TLS
            // session: certificate-only login needs the fingerprint now.
            let fingerprint = ctx
                .authn
                .logs_in_certificates()
                .then(|| tls.get_ref().1.peer_certificates())
                .flatten()
                .and_then(|chain| chain.first())
                .map(|leaf| plantd_shared::device_certs::Fingerprint::of_der(leaf.as_ref()));
            let peer = Peer {
                addr: Some(peer),
                certificate,
                fingerprint,
            };
            serve_ws(tls, peer, conn_id, ctx).await;
        }
        Err(why) => {
            info!(%peer, %why, listener = "wss", "closing TLS connection");
            ctx.metrics.connections_refused.fetch_add(1, Relaxed);
        }
    }
}

/// Serves a TLS client: the handshake (within the connect timeout, in the
/// connection's own task, boxed: its state is freed once it is done), then
/// the link over the TLS session itself ([`link::TlsSocket`]: rustls'
/// unbuffered state machine driven over the TCP socket, no bridge, no
/// buffer kept while idle; boxed as well so that the task itself stays
/// small).
async fn serve_tls(
    stream: TcpStream,
    peer: SocketAddr,
    config: Arc<rustls::ServerConfig>,
    conn_id: u64,
    ctx: Arc<LinkContext>,
) {
    let timeout = Duration::from_millis(ctx.config.limits.connect_timeout_ms);
    let (tls, certificate) = match Box::pin(link::TlsSocket::accept(stream, config, timeout)).await
    {
        Ok(x) => x,
        Err(why) => {
            info!(%peer, %why, "closing TLS connection");
            ctx.metrics.connections_refused.fetch_add(1, Relaxed);
            return;
        }
    };
    if let Some(cn) = &certificate {
        info!(%peer, certificate = %cn, "TLS client certificate verified");
    }
    let peer = Peer {
        addr: Some(peer),
        certificate,
        fingerprint: None,
    };
    Box::pin(link::serve(tls, peer, conn_id, ctx)).await;
}

/// Serves a WebSocket client on `stream` (plain TCP, or TLS already
/// established for WSS, with the client certificate in `peer`): the
/// upgrade within the connect timeout, then the link over the bridge's
/// socket pair. A refused or failed upgrade is logged at info and counted
/// in `connections_refused`.
async fn serve_ws<S>(stream: S, peer: Peer, conn_id: u64, ctx: Arc<LinkContext>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let limits = &ctx.config.limits;
    let timeout = Duration::from_millis(limits.connect_timeout_ms);
    let ws = match crate::ws::handshake(stream, timeout, limits.max_packet_size).await {
        Ok(ws) => ws,
        Err(why) => {
            info!(peer = ?peer.addr, %why, "closing WebSocket connection");
            ctx.metrics.connections_refused.fetch_add(1, Relaxed);
            return;
        }
    };
    // The bridge closes the WebSocket (with a grace period of its own) once
    // it sees the link's end-of-file.
    let bridge = |remote| crate::ws::bridge(ws, remote);
    serve_bridged(peer, conn_id, ctx, "WebSocket", bridge).await;
}

/// Serves the link for a client whose transport (`what`: a WebSocket,
/// over TCP or TLS) is already established: the link runs on one end of a fresh
/// socket pair, and `bridge` copies between the transport and the other
/// end until either side ends. Once the link closes its end, the bridge
/// runs until it ends by itself (it closes the transport with a grace
/// period of its own).
async fn serve_bridged<B>(
    peer: Peer,
    conn_id: u64,
    ctx: Arc<LinkContext>,
    what: &str,
    bridge: impl FnOnce(UnixStream) -> B,
) where
    B: Future<Output = ()>,
{
    let (local, remote) = match UnixStream::pair() {
        Ok(p) => p,
        Err(e) => {
            warn!(peer = ?peer.addr, error = %e, "cannot serve a {what} client: no socket pair");
            return;
        }
    };
    if let Some(cn) = &peer.certificate {
        info!(peer = ?peer.addr, certificate = %cn, "TLS client certificate verified");
    }
    let link = link::serve(local, peer, conn_id, ctx);
    let bridge = bridge(remote);
    tokio::pin!(link, bridge);
    tokio::select! {
        () = &mut link => bridge.await,
        () = &mut bridge => link.await,
    }
}

/// Waits for SIGHUP until `stop`, reloading `certs` on each.
#[cfg(unix)]
async fn reload_on_hangup(
    mut sig: tokio::signal::unix::Signal,
    certs: Option<Arc<Certificates>>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            r = sig.recv() => if r.is_none() { return },
        }
        match &certs {
            Some(c) => {
                reload_certificates(c, &metrics);
            }
            None => info!("SIGHUP: no TLS or WSS listener, nothing to reload"),
        }
    }
}

/// Re-reads the TLS certificate, key and client CA into `certs`, logs the
/// outcome and counts it in `metrics` (`tls_reloads`,
/// `tls_reload_failures`, `tls_reload_failed`). On error the previous
/// certificate stays in force; established connections are never touched.
/// Returns whether the reload succeeded.
pub fn reload_certificates(certs: &Certificates, metrics: &Metrics) -> bool {
    let files = certs.files();
    match certs.reload() {
        Ok(()) => {
            metrics.tls_reloads.fetch_add(1, Relaxed);
            metrics.tls_reload_failed.store(0, Relaxed);
            info!(cert = %files.cert.display(), key = %files.key.display(), client_ca = ?files.client_ca, "TLS certificate reloaded");
            true
        }
        Err(e) => {
            metrics.tls_reload_failures.fetch_add(1, Relaxed);
            metrics.tls_reload_failed.store(1, Relaxed);
            tracing::error!(error = %e, cert = %files.cert.display(), "TLS certificate reload failed; keeping the previous certificate");
            false
        }
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

/// Answers a connection over the limit with CONNACK "quota exceeded" (v5)
/// or "server unavailable" (v3), then closes it.
async fn refuse_over_limit(mut stream: TcpStream, config: Arc<Config>) {
    let mut rbuf = bytes::BytesMut::new();
    let timeout = Duration::from_millis(config.limits.connect_timeout_ms.min(5_000));
    let wire = match handshake::read_connect(&mut stream, &mut rbuf, 64 * 1024, timeout).await {
        Ok(h) => Some(h.wire),
        Err(handshake::HandshakeError::Refuse(w, _, _)) => w,
        Err(_) => None,
    };
    handshake::refuse(
        &mut stream,
        wire,
        0x97,
        Some("connection limit reached".into()),
    )
    .await;
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

#[cfg(test)]
mod size_tests {
    use super::*;

    /// Every connection's task holds its future for its whole life: an
    /// idle TCP connection must not pay for the TLS or WebSocket states
    /// (issue 12: ≤ 2 KB of memory per idle TCP connection in all).
    #[tokio::test]
    async fn a_connection_task_is_as_small_as_its_tcp_link() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let s = TcpStream::connect(addr).await.expect("connect");
        let (tx, _rx) = mpsc::channel(1);
        let ctx = Arc::new(LinkContext {
            router: tx,
            config: Arc::new(Config::default()),
            metrics: Arc::new(Metrics::default()),
            auth: Arc::new(StaticRules::default()),
            authn: Arc::new(Authenticator::new(
                Site::new("local").expect("valid site"),
                None,
                true,
            )),
            hook: None,
            shutdown: CancellationToken::new(),
            keep_alive: Arc::new(crate::link::KeepAlive::new()),
        });
        let permit = Arc::new(Semaphore::new(1))
            .try_acquire_owned()
            .expect("a permit");
        let f = tcp_task(s, addr, 1, ctx.clone(), permit);
        let size = std::mem::size_of_val(&f);
        eprintln!("TCP connection task future: {size} bytes");
        // Two boxes and the permit: with tokio's header the task stays in
        // one 256-byte allocation (it was 512 with `serve_socket`).
        assert!(size <= 96, "per-connection task state is {size} bytes");
        drop(f);
        let s = TcpStream::connect(addr).await.expect("connect");
        let permit = Arc::new(Semaphore::new(1))
            .try_acquire_owned()
            .expect("a permit");
        let f = serve_socket(Listener::Tls, s, addr, None, 1, ctx, permit);
        let size = std::mem::size_of_val(&f);
        eprintln!("serve_socket future (TLS, WebSocket): {size} bytes");
        // The handshakes and links are boxed; the dispatch adds a few words.
        assert!(size < 512, "per-connection task state is {size} bytes");
    }
}
