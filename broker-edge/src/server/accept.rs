//! The accept loop: [`Broker::run`] starts the router, the HTTP server and
//! the background tasks, accepts on every listener under the connection
//! limit (refusing the excess with a CONNACK on plain TCP), and on shutdown
//! closes every link and waits for all of them.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::Broker;
use super::connection::{serve_socket, tcp_task};
#[cfg(unix)]
use super::reload::reload_on_hangup;
use crate::config::Config;
use crate::link::{self, LinkContext, handshake};
use crate::metrics::Listener;
use crate::router::Router;

impl Broker {
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
