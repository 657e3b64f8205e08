//! The session under the [`TlsSocket`](super::TlsSocket)'s lock: rustls'
//! unbuffered state machine and the buffers it is pumped over, each given
//! back when it is empty.

use std::io;

use bytes::BytesMut;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, InsufficientSizeError};

use super::OUTGOING_LIMIT;

/// What the lock protects.
pub(super) struct State {
    /// rustls' state machine (keys, handshake state; no buffers).
    pub(super) conn: UnbufferedServerConnection,
    /// TLS bytes read from TCP, not yet processed (a partial record).
    pub(super) incoming: Vec<u8>,
    /// Encrypted bytes for the TCP socket; `sent` of them are sent.
    pub(super) outgoing: Vec<u8>,
    /// See `outgoing`.
    pub(super) sent: usize,
    /// Decrypted bytes not read yet (left by a write that had to process
    /// incoming records, or by a read into a short buffer).
    pub(super) plain: Vec<u8>,
    /// The client sent `close_notify` or closed TCP: reads return 0.
    pub(super) peer_closed: bool,
    /// `close_notify` is to be encrypted at the next chance.
    pub(super) close: bool,
    /// `close_notify` was asked for (once).
    pub(super) close_asked: bool,
}

/// Where a pump of rustls stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// Every whole record is processed; application data may be sent.
    Traffic,
    /// The handshake needs more bytes from the client.
    Handshaking,
    /// Closed in both directions.
    Closed,
}

/// Somewhere decrypted bytes go.
pub(super) trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl Sink for BytesMut {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

pub(super) fn would_block() -> io::Error {
    io::ErrorKind::WouldBlock.into()
}

pub(super) fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Grows `out` past `start` to what `write` says it needs and writes
/// there; `out` keeps exactly what was written.
fn write_grown<E>(
    out: &mut Vec<u8>,
    guess: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, E>,
    needed: impl Fn(&E) -> Option<usize>,
) -> Result<(), E> {
    let start = out.len();
    out.resize(start + guess, 0);
    loop {
        match write(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(e) => match needed(&e) {
                Some(size) if size > out.len() - start => out.resize(start + size, 0),
                _ => {
                    out.truncate(start);
                    return Err(e);
                }
            },
        }
    }
}

impl State {
    /// Drives rustls over `incoming` until it has processed every whole
    /// record: decrypted bytes go to `sink`, handshake and alert records to
    /// `outgoing`; then encrypts as much of `app` as the outgoing limit
    /// allows (how much: the second value) and `close_notify` if asked.
    pub(super) fn pump(
        &mut self,
        sink: &mut dyn Sink,
        app: &[u8],
    ) -> Result<(Stop, usize), rustls::Error> {
        let mut taken = 0;
        loop {
            let status = self.conn.process_tls_records(&mut self.incoming[..]);
            let discard = status.discard;
            let step = match status.state {
                Err(e) => Err(e),
                Ok(ConnectionState::ReadTraffic(mut r)) => loop {
                    match r.next_record() {
                        Some(Ok(record)) => sink.put(record.payload),
                        Some(Err(e)) => break Err(e),
                        None => break Ok(None),
                    }
                },
                Ok(ConnectionState::EncodeTlsData(mut e)) => write_grown(
                    &mut self.outgoing,
                    0,
                    |out| e.encode(out),
                    |err| match err {
                        EncodeError::InsufficientSize(InsufficientSizeError { required_size }) => {
                            Some(*required_size)
                        }
                        _ => None,
                    },
                )
                .map(|()| None)
                .map_err(|e| rustls::Error::General(e.to_string())),
                // Sent by the caller, in order, after this pump.
                Ok(ConnectionState::TransmitTlsData(t)) => {
                    t.done();
                    Ok(None)
                }
                Ok(ConnectionState::PeerClosed) => {
                    self.peer_closed = true;
                    Ok(None)
                }
                Ok(ConnectionState::Closed) => Ok(Some(Stop::Closed)),
                Ok(ConnectionState::BlockedHandshake) => Ok(Some(Stop::Handshaking)),
                Ok(ConnectionState::WriteTraffic(mut w)) => {
                    let room = OUTGOING_LIMIT.saturating_sub(self.outgoing.len() - self.sent);
                    let n = app.len().min(room);
                    let mut result = Ok(Some(Stop::Traffic));
                    if n > 0 {
                        // A record per 16 KB, each with its header and tag.
                        let guess = n + (n / 16_384 + 1) * 64;
                        result = write_grown(
                            &mut self.outgoing,
                            guess,
                            |out| w.encrypt(&app[..n], out),
                            encrypt_needed,
                        )
                        .map(|()| {
                            taken = n;
                            Some(Stop::Traffic)
                        })
                        .map_err(|e| rustls::Error::General(e.to_string()));
                    }
                    if result.is_ok() && self.close {
                        self.close = false;
                        result = write_grown(
                            &mut self.outgoing,
                            64,
                            |out| w.queue_close_notify(out),
                            encrypt_needed,
                        )
                        .map(|()| Some(Stop::Traffic))
                        .map_err(|e| rustls::Error::General(e.to_string()));
                    }
                    result
                }
                Ok(other) => Err(rustls::Error::General(format!(
                    "unexpected TLS state {other:?}"
                ))),
            };
            self.incoming.drain(..discard);
            match step {
                Ok(None) => {}
                Ok(Some(stop)) => {
                    self.release_incoming();
                    return Ok((stop, taken));
                }
                Err(e) => {
                    self.queue_alert();
                    return Err(e);
                }
            }
        }
    }

    /// After an error rustls has queued an alert saying why: encode it
    /// (best effort; the caller sends what `outgoing` holds).
    pub(super) fn queue_alert(&mut self) {
        for _ in 0..4 {
            let status = self.conn.process_tls_records(&mut []);
            match status.state {
                Ok(ConnectionState::EncodeTlsData(mut e)) => {
                    let _ = write_grown(
                        &mut self.outgoing,
                        0,
                        |out| e.encode(out),
                        |err| match err {
                            EncodeError::InsufficientSize(InsufficientSizeError {
                                required_size,
                            }) => Some(*required_size),
                            _ => None,
                        },
                    );
                }
                Ok(ConnectionState::TransmitTlsData(t)) => t.done(),
                _ => return,
            }
        }
    }

    /// An empty input buffer is given back.
    pub(super) fn release_incoming(&mut self) {
        if self.incoming.is_empty() && self.incoming.capacity() > 0 {
            self.incoming = Vec::new();
        }
    }

    /// Encrypted bytes are waiting for the TCP socket.
    pub(super) fn wants_write(&self) -> bool {
        self.sent < self.outgoing.len()
    }
}

fn encrypt_needed(e: &EncryptError) -> Option<usize> {
    match e {
        EncryptError::InsufficientSize(InsufficientSizeError { required_size }) => {
            Some(*required_size)
        }
        _ => None,
    }
}

/// A [`Sink`] that knows its length (the link's read buffer, a vector).
pub(super) trait SinkLen: Sink {
    fn len(&self) -> usize;
    fn as_sink(&mut self) -> &mut dyn Sink;
}

impl SinkLen for BytesMut {
    fn len(&self) -> usize {
        BytesMut::len(self)
    }
    fn as_sink(&mut self) -> &mut dyn Sink {
        self
    }
}

impl SinkLen for Vec<u8> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn as_sink(&mut self) -> &mut dyn Sink {
        self
    }
}
