//! One accepted socket's task, by listener: plain TCP straight into its
//! link ([`tcp_task`]), TLS through its handshake, WebSocket through its
//! upgrade and the bridge to the link's socket pair, WSS through both
//! ([`serve_socket`]). Their futures are boxed so that an idle connection
//! pays only for its own transport's state.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::net::{TcpStream, UnixStream};
use tracing::{info, warn};

use crate::link::{self, LinkContext, Peer};
use crate::metrics::Listener;
use crate::tls::Certificates;

/// The task of a plain TCP connection: the link's own future (two boxes,
/// [`link::serve`]) and the connection's place under `max_connections`,
/// nothing else — no dispatch state of [`serve_socket`], whose future is
/// several times larger (tokio rounds a task up to 128-byte multiples, so
/// every idle TCP connection paid a 512-byte task for it; issue 12).
pub(super) fn tcp_task(
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
pub(super) async fn serve_socket(
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

#[cfg(test)]
mod size_tests {
    use plantd_shared::subject::Site;
    use tokio::net::TcpListener;
    use tokio::sync::{Semaphore, mpsc};
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::auth::Authenticator;
    use crate::config::Config;
    use crate::hooks::StaticRules;
    use crate::metrics::Metrics;

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
