//! What a link reads and writes. The link is built on readiness and
//! non-blocking reads and writes (one readiness future for both
//! directions keeps an idle connection's task small); [`Socket`] names
//! exactly those operations so the link serves a TCP socket and a TLS
//! session over it ([`super::TlsSocket`],
//! `docs/decisions/0034-edge-tls-in-link.md`) directly, and WebSocket and
//! secure WebSocket connections through the local socket pair their bridge
//! serves (`crate::ws`, `docs/decisions/0016-edge-websocket.md`).

use std::future::Future;
use std::io;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, Interest, Ready};
use tokio::net::{TcpStream, UnixStream};

/// A non-blocking byte stream a link can serve.
pub trait Socket: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static {
    /// True for the local end of a WebSocket bridge, whose task also
    /// runs the bridge (the link then yields after every read that carried
    /// publishes, see `Link::run`).
    const BRIDGED: bool;
    /// Ready when the socket is ready for one of `interest` (a closed
    /// direction counts as ready); otherwise `cx`'s task is woken when it
    /// becomes so. Polled, not a future: the link's wait then holds no
    /// waiter node of its own, only the socket's registration does (one
    /// reader and one writer waker slot, issue 12).
    ///
    /// # Errors
    /// As the OS readiness.
    fn poll_ready(&self, cx: &mut Context<'_>, interest: Interest) -> Poll<io::Result<Ready>>;
    /// Waits until the socket is ready for one of `interest`
    /// ([`Socket::poll_ready`] as a future).
    fn ready(&self, interest: Interest) -> impl Future<Output = io::Result<Ready>> + Send {
        std::future::poll_fn(move |cx| self.poll_ready(cx, interest))
    }
    /// Reads what is available now into `buf` (`WouldBlock` when nothing is).
    ///
    /// A read that did not fill `buf`'s spare capacity drained the socket,
    /// so it also clears the socket's read readiness (as tokio's `AsyncRead`
    /// does on epoll/kqueue): the next [`Socket::ready`] waits for new data
    /// instead of costing a read that only finds `WouldBlock`. Data that
    /// arrives meanwhile is not missed — readiness is only cleared if no
    /// event came in since the read began — and a closed read side stays
    /// ready.
    ///
    /// # Errors
    /// As the OS read.
    fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize>;
    /// Writes what the socket takes now (`WouldBlock` when nothing).
    ///
    /// # Errors
    /// As the OS write.
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
    /// The SHA-256 fingerprint of the client certificate the TLS handshake
    /// verified (the leaf), for certificate-only login
    /// (`crate::auth::certificates`). Computed when asked — only for a
    /// CONNECT without password while that login is on — so other
    /// connections pay nothing. `None` without TLS or a certificate, and
    /// on bridged sockets (the TLS session of a secure WebSocket is not
    /// the link's).
    fn peer_certificate_sha256(&self) -> Option<plantd_shared::device_certs::Fingerprint> {
        None
    }
}

macro_rules! socket_by_inherent_methods {
    ($t:ty, $bridged:expr) => {
        impl Socket for $t {
            const BRIDGED: bool = $bridged;
            fn poll_ready(
                &self,
                cx: &mut Context<'_>,
                interest: Interest,
            ) -> Poll<io::Result<Ready>> {
                let mut ready = Ready::EMPTY;
                if interest.is_readable() {
                    match <$t>::poll_read_ready(self, cx) {
                        Poll::Ready(Ok(())) => ready |= Ready::READABLE,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => {}
                    }
                }
                if interest.is_writable() {
                    match <$t>::poll_write_ready(self, cx) {
                        Poll::Ready(Ok(())) => ready |= Ready::WRITABLE,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => {}
                    }
                }
                if ready.is_empty() {
                    Poll::Pending
                } else {
                    Poll::Ready(Ok(ready))
                }
            }
            fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
                let spare = buf.capacity() - buf.len();
                let mut short = 0;
                // `try_io` clears readiness when the closure says
                // `WouldBlock`, and only if no readiness event arrived
                // since it began; a short read reports itself that way.
                let r = self.try_io(Interest::READABLE, || {
                    let n = <$t>::try_read_buf(self, buf)?;
                    if n > 0 && n < spare {
                        short = n;
                        return Err(io::ErrorKind::WouldBlock.into());
                    }
                    Ok(n)
                });
                match r {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock && short > 0 => Ok(short),
                    r => r,
                }
            }
            fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
                <$t>::try_write(self, buf)
            }
        }
    };
}

socket_by_inherent_methods!(TcpStream, false);
// Unix sockets are only used as the local end of a bridge's socket pair.
socket_by_inherent_methods!(UnixStream, true);
