//! A TLS connection served by the link directly: rustls' session state
//! machine driven over the `TcpStream` under the link's readiness model
//! (`docs/decisions/0034-edge-tls-in-link.md`).
//!
//! The contract of [`Socket`] holds with TLS in between:
//! * **readable** means "a read can make progress": either the TCP socket
//!   is readable or rustls already holds decrypted bytes. The second case
//!   is the wake-up a plain readiness wait misses — one TCP read can carry
//!   several TLS records, and once they are decrypted the kernel socket is
//!   empty, so waiting on TCP readiness alone would leave the rest of a
//!   burst unread until the client sends again. [`TlsSocket::ready`]
//!   answers at once while decrypted bytes are waiting.
//! * a read that returns fewer bytes than asked for drained the TCP socket
//!   (its `WouldBlock` cleared the TCP readiness), so the next `ready`
//!   waits for new data;
//! * a write hands plaintext to rustls, which encrypts it into its
//!   outgoing buffer (bounded: [`OUTGOING_LIMIT`]); what the TCP socket
//!   does not take now stays there and `ready` adds write interest until
//!   it is sent, whatever the link asks for. A full outgoing buffer is
//!   `WouldBlock`, so a slow TLS reader holds back the link exactly like a
//!   slow TCP reader.
//!
//! Memory: rustls keeps a 4 KB receive buffer once the handshake is done
//! and per-direction record state; no bridge, no socket pair, no copy
//! buffers.

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use rustls::ServerConnection;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf, Ready};
use tokio::net::TcpStream;

use super::Socket;

/// Most encrypted bytes waiting for the TCP socket before a write is
/// refused with `WouldBlock` (rustls' own default).
pub const OUTGOING_LIMIT: usize = 64 * 1024;

/// A TLS session over a TCP socket, after the handshake.
pub struct TlsSocket {
    /// The transport.
    tcp: TcpStream,
    /// The session. A lock because the link's [`Socket`] calls take
    /// `&self`; only the connection's own task ever takes it, so it is
    /// never contended.
    state: Mutex<State>,
}

/// What the lock protects.
struct State {
    /// rustls' state machine.
    conn: ServerConnection,
    /// rustls may hold decrypted bytes not yet read (conservative: a
    /// spurious `true` costs one read that finds nothing).
    buffered: bool,
    /// `close_notify` has been queued.
    close_sent: bool,
}

/// `io::Read` over a non-blocking `TcpStream` (a `WouldBlock` clears the
/// socket's read readiness).
struct TcpRead<'a>(&'a TcpStream);

impl Read for TcpRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

/// `io::Write` over a non-blocking `TcpStream` (a `WouldBlock` clears the
/// socket's write readiness).
struct TcpWrite<'a>(&'a TcpStream);

impl Write for TcpWrite<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn would_block() -> io::Error {
    io::ErrorKind::WouldBlock.into()
}

impl TlsSocket {
    /// Serves `conn`, whose handshake is complete, over `tcp`. Bytes the
    /// client sent with its last handshake flight (often the CONNECT) may
    /// already be decrypted: the first `ready` reports them.
    pub fn new(tcp: TcpStream, mut conn: ServerConnection) -> TlsSocket {
        conn.set_buffer_limit(Some(OUTGOING_LIMIT));
        TlsSocket {
            tcp,
            state: Mutex::new(State {
                conn,
                buffered: true,
                close_sent: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held leaves rustls' state as it was
        // between two calls: still consistent.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends what rustls has encrypted; `WouldBlock` when the TCP socket
    /// took not all of it.
    fn flush_tls(&self, st: &mut State) -> io::Result<()> {
        while st.conn.wants_write() {
            if st.conn.write_tls(&mut TcpWrite(&self.tcp))? == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        Ok(())
    }

    /// Sends what it can of rustls' output; errors other than `WouldBlock`
    /// surface here, a pending remainder waits for [`TlsSocket::ready`].
    fn flush_some(&self, st: &mut State) -> io::Result<()> {
        match self.flush_tls(st) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            r => r,
        }
    }

    /// Reads decrypted bytes into `out`, reading and decrypting from the
    /// TCP socket as needed. `Ok(0)`: the client closed (with or without
    /// `close_notify`). `WouldBlock`: nothing now, and the TCP socket's
    /// read readiness is cleared.
    fn read_plain(&self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        let mut st = self.lock();
        let mut n = 0;
        let result = loop {
            if n == out.len() {
                // More may be waiting in rustls.
                st.buffered = true;
                break Ok(n);
            }
            match st.conn.reader().read(&mut out[n..]) {
                Ok(0) => break Ok(n), // close_notify received
                Ok(k) => {
                    n += k;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The TCP stream ended without close_notify.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break Ok(n),
                Err(e) => break Err(e),
            }
            st.buffered = false;
            match st.conn.read_tls(&mut TcpRead(&self.tcp)) {
                // End of stream: the next `reader().read` reports it.
                Ok(0) => {}
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    break if n > 0 { Ok(n) } else { Err(e) };
                }
                Err(e) => break Err(e),
            }
            if let Err(e) = st.conn.process_new_packets() {
                // rustls queued an alert saying why: send it if we can.
                let _ = self.flush_some(&mut st);
                break Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        };
        // Reading may have produced output (alerts, key updates).
        self.flush_some(&mut st)?;
        result
    }

    /// Encrypts what rustls' outgoing buffer takes of `buf` and sends what
    /// the TCP socket takes now. `WouldBlock` when nothing was taken.
    fn write_plain(&self, buf: &[u8]) -> io::Result<usize> {
        let mut st = self.lock();
        self.flush_some(&mut st)?;
        let n = st.conn.writer().write(buf)?;
        self.flush_some(&mut st)?;
        if n == 0 && !buf.is_empty() {
            return Err(would_block());
        }
        Ok(n)
    }
}

impl Socket for TlsSocket {
    const BRIDGED: bool = false;

    async fn ready(&self, interest: Interest) -> io::Result<Ready> {
        loop {
            let wants_write = {
                let st = self.lock();
                if interest.is_readable() && st.buffered {
                    return Ok(Ready::READABLE);
                }
                st.conn.wants_write()
            };
            let want = if wants_write {
                interest | Interest::WRITABLE
            } else {
                interest
            };
            let r = self.tcp.ready(want).await?;
            if wants_write && (r.is_writable() || r.is_write_closed()) {
                let mut st = self.lock();
                self.flush_some(&mut st)?;
            }
            let readable = r.is_readable() || r.is_read_closed();
            let writable = r.is_writable() || r.is_write_closed();
            if (interest.is_readable() && readable) || (interest.is_writable() && writable) {
                return Ok(r);
            }
        }
    }

    fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
        let len = buf.len();
        buf.resize(buf.capacity(), 0);
        let r = self.read_plain(&mut buf[len..]);
        buf.truncate(len + *r.as_ref().unwrap_or(&0));
        r
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
            if self.lock().buffered || buf.remaining() == 0 {
                // Decrypted bytes first, without waiting on the socket.
            } else {
                ready!(self.tcp.poll_read_ready(cx))?;
            }
            match self.read_plain(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
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
            if !st.close_sent {
                st.close_sent = true;
                st.conn.send_close_notify();
            }
        }
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}
