//! What a link reads and writes. The link is built on readiness and
//! non-blocking reads and writes (one readiness future for both
//! directions keeps an idle connection's task small); [`Socket`] names
//! exactly those operations so the link serves a TCP socket directly, and
//! TLS, WebSocket and secure WebSocket connections through the local
//! socket pair their bridge serves (`crate::tls`, `crate::ws`; why a
//! bridge: `docs/decisions/0014-edge-tls.md` and
//! `docs/decisions/0016-edge-websocket.md`).

use std::future::Future;
use std::io;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, Interest, Ready};
use tokio::net::{TcpStream, UnixStream};

/// A non-blocking byte stream a link can serve.
pub trait Socket: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static {
    /// Waits until the socket is ready for one of `interest`.
    fn ready(&self, interest: Interest) -> impl Future<Output = io::Result<Ready>> + Send;
    /// Reads what is available now into `buf` (`WouldBlock` when nothing is).
    ///
    /// # Errors
    /// As the OS read.
    fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize>;
    /// Writes what the socket takes now (`WouldBlock` when nothing).
    ///
    /// # Errors
    /// As the OS write.
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
}

macro_rules! socket_by_inherent_methods {
    ($t:ty) => {
        impl Socket for $t {
            fn ready(&self, interest: Interest) -> impl Future<Output = io::Result<Ready>> + Send {
                <$t>::ready(self, interest)
            }
            fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
                <$t>::try_read_buf(self, buf)
            }
            fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
                <$t>::try_write(self, buf)
            }
        }
    };
}

socket_by_inherent_methods!(TcpStream);
socket_by_inherent_methods!(UnixStream);
