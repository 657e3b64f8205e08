//! A TLS connection served by the link directly: rustls' unbuffered state
//! machine ([`UnbufferedServerConnection`]) driven over the `TcpStream`
//! under the link's readiness model (`docs/decisions/0034-edge-tls-in-link.md`,
//! `docs/decisions/0049-idle-connection-memory.md` for the buffers).
//!
//! The socket owns the TLS buffers, so they exist only while they hold
//! something: the TLS bytes read from TCP and not yet a whole record, the
//! encrypted bytes the TCP socket has not taken yet, and the decrypted bytes
//! nobody has read yet. Each is given back as soon as it is empty — an idle
//! TLS connection holds rustls' keys and state and no buffer at all
//! (rustls' buffered `ServerConnection` kept a 4 KB receive buffer for the
//! life of every session).
//!
//! The contract of [`Socket`] holds with TLS in between:
//! * **readable** means "a read can make progress": either the TCP socket
//!   is readable or decrypted bytes are waiting here. A read processes
//!   every whole record it has, so what stays behind is only a partial
//!   record, which needs more TCP bytes; decrypted bytes wait here only
//!   when a write had to process incoming records first, and
//!   [`TlsSocket::ready`] answers at once for them.
//! * a read that finds nothing stops on the TCP socket's `WouldBlock`,
//!   which clears its read readiness, so the next `ready` waits for new
//!   data;
//! * a write encrypts into the outgoing buffer (bounded: [`OUTGOING_LIMIT`])
//!   and sends what the TCP socket takes now; the rest waits there and
//!   `ready` adds write interest until it is sent, whatever the link asks
//!   for. A full outgoing buffer is `WouldBlock`, so a slow TLS reader holds
//!   back the link exactly like a slow TCP reader.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::BytesMut;
use rustls::ServerConfig;
use rustls::server::UnbufferedServerConnection;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf, Ready};
use tokio::net::TcpStream;

use super::Socket;

mod state;

use state::{SinkLen, State, Stop, tls_error, would_block};

/// Most encrypted bytes waiting for the TCP socket before a write is
/// refused with `WouldBlock`.
pub const OUTGOING_LIMIT: usize = 64 * 1024;

/// Bytes asked of the TCP socket per read (a TLS record is at most
/// 16 KB + 256; a partial one grows the buffer as needed).
const READ_SIZE: usize = 8 * 1024;

/// Decrypted bytes from which a read returns without draining the TCP
/// socket (the link processes them first).
const READ_BATCH: usize = 64 * 1024;

/// A TLS session over a TCP socket.
pub struct TlsSocket {
    /// The transport.
    tcp: TcpStream,
    /// The session. A lock because the link's [`Socket`] calls take
    /// `&self`; only the connection's own task ever takes it, so it is
    /// never contended.
    state: Mutex<State>,
}

impl TlsSocket {
    /// Runs the TLS handshake on `tcp` within `timeout` with `config`;
    /// returns the session and the common name of the client's verified
    /// certificate, if it sent one. Bytes the client sent with its last
    /// handshake flight (often the CONNECT) are kept for the first read.
    ///
    /// # Errors
    /// A message for the log when the handshake fails or times out.
    pub async fn accept(
        tcp: TcpStream,
        config: Arc<ServerConfig>,
        timeout: Duration,
    ) -> Result<(TlsSocket, Option<Arc<str>>), String> {
        let conn = UnbufferedServerConnection::new(config)
            .map_err(|e| format!("TLS session not created: {e}"))?;
        let socket = TlsSocket {
            tcp,
            state: Mutex::new(State {
                conn,
                incoming: Vec::new(),
                outgoing: Vec::new(),
                sent: 0,
                plain: Vec::new(),
                peer_closed: false,
                close: false,
                close_asked: false,
            }),
        };
        tokio::time::timeout(timeout, socket.handshake())
            .await
            .map_err(|_| "no TLS handshake within the connect timeout".to_owned())?
            .map_err(|e| format!("TLS handshake failed: {e}"))?;
        let cn = {
            let st = socket.lock();
            st.conn
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| crate::tls::common_name(leaf.as_ref()))
                .map(Arc::from)
        };
        Ok((socket, cn))
    }

    /// Exchanges handshake flights until application data may flow.
    async fn handshake(&self) -> io::Result<()> {
        loop {
            let stop = {
                let mut st = self.lock();
                let mut early = std::mem::take(&mut st.plain);
                let r = st.pump(&mut early, &[]);
                st.plain = early;
                r
            };
            // Our flight (or the alert that ends it) goes out first.
            self.flush_all().await?;
            match stop.map_err(tls_error)? {
                (Stop::Traffic, _) => return Ok(()),
                (Stop::Closed, _) => return Err(io::ErrorKind::UnexpectedEof.into()),
                (Stop::Handshaking, _) => {}
            }
            self.tcp.readable().await?;
            let mut st = self.lock();
            st.incoming.reserve(READ_SIZE);
            match self.tcp.try_read_buf(&mut st.incoming) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends everything `outgoing` holds, waiting for the socket.
    async fn flush_all(&self) -> io::Result<()> {
        loop {
            let r = {
                let mut st = self.lock();
                self.flush_tls(&mut st)
            };
            match r {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.tcp.writable().await?;
                }
                r => return r,
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held leaves the state as it was
        // between two calls: still consistent.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends what is encrypted; `WouldBlock` when the TCP socket took not
    /// all of it. The emptied buffer is given back.
    fn flush_tls(&self, st: &mut State) -> io::Result<()> {
        while st.wants_write() {
            match self.tcp.try_write(&st.outgoing[st.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => st.sent += n,
                Err(e) => return Err(e),
            }
        }
        st.outgoing = Vec::new();
        st.sent = 0;
        Ok(())
    }

    /// Sends what it can; errors other than `WouldBlock` surface here, a
    /// pending remainder waits for [`TlsSocket::ready`].
    fn flush_some(&self, st: &mut State) -> io::Result<()> {
        match self.flush_tls(st) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            r => r,
        }
    }

    /// Appends decrypted bytes to `out`, reading and decrypting from the
    /// TCP socket until it has nothing more now (its `WouldBlock` clears the
    /// read readiness) or [`READ_BATCH`] bytes are decrypted. `Ok(0)`: the
    /// client closed (with or without `close_notify`). `WouldBlock`:
    /// nothing now.
    fn read_plain(&self, out: &mut dyn SinkLen) -> io::Result<usize> {
        let mut st = self.lock();
        let start = out.len();
        if !st.plain.is_empty() {
            out.put(&st.plain);
            st.plain = Vec::new();
        }
        let result = loop {
            if let Err(e) = st.pump(out.as_sink(), &[]) {
                let _ = self.flush_some(&mut st);
                break Err(tls_error(e));
            }
            let n = out.len() - start;
            if st.peer_closed || n >= READ_BATCH {
                break Ok(n);
            }
            st.incoming.reserve(READ_SIZE);
            match self.tcp.try_read_buf(&mut st.incoming) {
                // The TCP stream ended (without close_notify): what is
                // decrypted is returned, then 0.
                Ok(0) => st.peer_closed = true,
                Ok(_) => {}
                Err(e) => {
                    st.release_incoming();
                    break if e.kind() == io::ErrorKind::WouldBlock && n > 0 {
                        Ok(n)
                    } else {
                        Err(e)
                    };
                }
            }
        };
        // Reading may have produced output (alerts, key updates).
        self.flush_some(&mut st)?;
        result
    }

    /// Encrypts what the outgoing limit allows of `buf` and sends what the
    /// TCP socket takes now. `WouldBlock` when nothing was taken.
    fn write_plain(&self, buf: &[u8]) -> io::Result<usize> {
        let mut st = self.lock();
        self.flush_some(&mut st)?;
        let mut early = std::mem::take(&mut st.plain);
        let r = st.pump(&mut early, buf);
        st.plain = early;
        let n = match r {
            Ok((_, n)) => n,
            Err(e) => {
                let _ = self.flush_some(&mut st);
                return Err(tls_error(e));
            }
        };
        self.flush_some(&mut st)?;
        if n == 0 && !buf.is_empty() {
            return Err(would_block());
        }
        Ok(n)
    }
}

impl Socket for TlsSocket {
    const BRIDGED: bool = false;

    fn poll_ready(&self, cx: &mut Context<'_>, interest: Interest) -> Poll<io::Result<Ready>> {
        loop {
            let wants_write = {
                let st = self.lock();
                if interest.is_readable() && (!st.plain.is_empty() || st.peer_closed) {
                    return Poll::Ready(Ok(Ready::READABLE));
                }
                st.wants_write()
            };
            let want = if wants_write {
                interest | Interest::WRITABLE
            } else {
                interest
            };
            let r = ready!(self.tcp.poll_ready(cx, want))?;
            if wants_write && (r.is_writable() || r.is_write_closed()) {
                let mut st = self.lock();
                self.flush_some(&mut st)?;
            }
            let readable = r.is_readable() || r.is_read_closed();
            let writable = r.is_writable() || r.is_write_closed();
            if (interest.is_readable() && readable) || (interest.is_writable() && writable) {
                return Poll::Ready(Ok(r));
            }
        }
    }

    fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
        self.read_plain(buf)
    }

    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        self.write_plain(buf)
    }

    fn peer_certificate_sha256(&self) -> Option<plantd_shared::device_certs::Fingerprint> {
        let st = self.lock();
        st.conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| plantd_shared::device_certs::Fingerprint::of_der(leaf.as_ref()))
    }
}

impl AsyncRead for TlsSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            {
                let mut st = self.lock();
                if !st.plain.is_empty() || buf.remaining() == 0 {
                    let n = st.plain.len().min(buf.remaining());
                    buf.put_slice(&st.plain[..n]);
                    st.plain.drain(..n);
                    if st.plain.is_empty() {
                        st.plain = Vec::new();
                    }
                    return Poll::Ready(Ok(()));
                }
            }
            let mut got = Vec::new();
            match self.read_plain(&mut got) {
                Ok(0) => return Poll::Ready(Ok(())),
                Ok(_) => {
                    // Served from `plain` on the next turn of the loop.
                    self.lock().plain = got;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.tcp.poll_read_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for TlsSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            match self.write_plain(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.tcp.poll_write_ready(cx))?;
                }
                r => return Poll::Ready(r),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let r = {
                let mut st = self.lock();
                self.flush_tls(&mut st)
            };
            match r {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.tcp.poll_write_ready(cx))?;
                }
                r => return Poll::Ready(r),
            }
        }
    }

    /// Sends `close_notify`, flushes, then shuts the TCP write side.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        {
            let mut st = self.lock();
            if !st.close_asked {
                st.close_asked = true;
                st.close = true;
                let mut early = std::mem::take(&mut st.plain);
                let _ = st.pump(&mut early, &[]);
                st.plain = early;
            }
        }
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::RootCertStore;
    use rustls::pki_types::{PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn configs() -> (Arc<ServerConfig>, Arc<rustls::ClientConfig>) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("certificate");
        let der = cert.der().clone();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![der.clone()],
                PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .expect("server config");
        let mut roots = RootCertStore::empty();
        roots.add(der).expect("root");
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    /// Bursts both ways arrive intact through the readiness interface,
    /// and afterwards the socket holds no buffer: an idle TLS connection
    /// costs rustls' keys and state only (issue 12: ≤ 8 KB per idle TLS
    /// connection in all).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bursts_arrive_intact_and_an_idle_session_holds_no_buffer() {
        let (server_config, client_config) = configs();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let up: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let down: Vec<u8> = (0..500_000u32).map(|i| (i % 241) as u8).collect();
        let client = {
            let (up, down) = (up.clone(), down.clone());
            tokio::spawn(async move {
                let tcp = TcpStream::connect(addr).await.expect("connect");
                let name = ServerName::try_from("localhost").expect("name");
                let mut tls = tokio_rustls::TlsConnector::from(client_config)
                    .connect(name, tcp)
                    .await
                    .expect("client handshake");
                tls.write_all(&up).await.expect("write");
                tls.flush().await.expect("flush");
                let mut got = vec![0; down.len()];
                tls.read_exact(&mut got).await.expect("read");
                assert!(got == down, "the server's burst arrives intact");
                tls
            })
        };
        let (tcp, _) = listener.accept().await.expect("accept");
        let (socket, cn) = TlsSocket::accept(tcp, server_config, Duration::from_secs(10))
            .await
            .expect("server handshake");
        assert!(cn.is_none(), "no client certificate");
        let mut got = BytesMut::new();
        while got.len() < up.len() {
            socket.ready(Interest::READABLE).await.expect("ready");
            match socket.try_read_buf(&mut got) {
                Ok(0) => panic!("closed early"),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("read: {e}"),
            }
        }
        assert!(got[..] == up[..], "the client's burst arrives intact");
        let mut sent = 0;
        while sent < down.len() {
            match socket.try_write(&down[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    socket.ready(Interest::WRITABLE).await.expect("ready");
                }
                Err(e) => panic!("write: {e}"),
            }
        }
        // What is still encrypted goes out while the link waits.
        while socket.lock().wants_write() {
            socket.ready(Interest::WRITABLE).await.expect("ready");
        }
        let _client = client.await.expect("client");
        let st = socket.lock();
        assert_eq!(
            (
                st.incoming.capacity(),
                st.outgoing.capacity(),
                st.plain.capacity()
            ),
            (0, 0, 0),
            "an idle TLS session keeps no buffer"
        );
        let size = std::mem::size_of::<TlsSocket>();
        eprintln!("TlsSocket: {size} bytes");
        assert!(size < 1280, "a TLS socket is {size} bytes");
    }
}
