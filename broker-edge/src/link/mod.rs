//! A link owns one client socket: it reads and decodes packets, runs the
//! per-connection protocol (QoS handshakes, in-flight windows, topic
//! aliases, keep-alive) and writes batches of packets back.
//!
//! Everything shared goes through the router ([`RouterCmd`]); deliveries,
//! acknowledgements and kicks arrive through the session's [`Mailbox`].
//! Writes are gathered in one buffer and flushed with non-blocking writes as
//! soon as they are ready, so a burst of deliveries becomes a few large
//! writes. Reading pauses while the write buffer is above its high water
//! mark or too many acknowledgements are outstanding, so a client that does
//! not read cannot make the broker buffer without bound. An idle connection
//! holds no read or write buffer.

//!
//! The files follow the data paths:
//!
//! | file | what it does |
//! |---|---|
//! | `admission.rs` | CONNECT to running link: authentication, the router's admission, CONNACK, and the goodbye (DISCONNECT, will, session hand-back) |
//! | `event_loop.rs` | the I/O and back-pressure loop: readiness, reads, writes, batching publications to the router |
//! | `keepalive.rs` | the broker-wide keep-alive checker: one sweep over every connection's last read, no timer per connection |
//! | `inbound.rs` | the inbound protocol state machine: each client packet, QoS 1/2 receipt, topic aliases, SUBSCRIBE checks |
//! | `outbound.rs` | what goes to the client: router control messages, mailbox deliveries, PUBLISH encoding, redelivery |
//! | `handshake.rs` | reading and normalising the first packet |
//! | `socket.rs`, `wire.rs` | the byte stream served, and the 3.1.1 ⇄ 5.0 packet translation |
//! | `tls_socket.rs` | a TLS session (rustls) driven over the TCP socket under the same readiness model |

mod admission;
mod event_loop;
pub mod handshake;
mod inbound;
mod keepalive;
mod outbound;
mod reauth;
pub mod socket;
mod tls_socket;
pub mod wire;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::BytesMut;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::hooks::{Authorizer, ClientInfo, PublishHook};
use crate::mailbox::{LinkCtl, Mailbox};
use crate::message::{Delivery, Publication};
use crate::metrics::Metrics;
use crate::protocol::v5;
use crate::router::{Routed, RouterCmd};
use crate::session::OutgoingWindow;
use crate::store::SessionLog;
pub use admission::serve;
pub use keepalive::{KeepAlive, TICK as KEEP_ALIVE_TICK};
pub use socket::Socket;
pub use tls_socket::TlsSocket;
use wire::Wire;

/// Write buffer size above which the link stops draining and reading.
const HIGH_WATER: usize = 64 * 1024;
/// Most deliveries taken from the mailbox per turn.
const DRAIN_BATCH: usize = 256;
/// Deliveries taken from the mailbox per lock.
const DRAIN_CHUNK: usize = 16;
/// Publishes in one read from which the link yields to other tasks.
const YIELD_AFTER: u64 = 8;
/// An empty write buffer larger than this is released.
const KEEP_WBUF: usize = 16 * 1024;

/// What every link shares.
pub struct LinkContext {
    /// The router's command channel.
    pub router: tokio::sync::mpsc::Sender<RouterCmd>,
    /// Settings and limits.
    pub config: Arc<Config>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Authorisation of PUBLISH and SUBSCRIBE.
    pub auth: Arc<dyn Authorizer>,
    /// Authentication at CONNECT; closes connections whose token expires
    /// or is revoked.
    pub authn: Arc<Authenticator>,
    /// Called with each accepted publication before it is acknowledged.
    pub hook: Option<Arc<dyn PublishHook>>,
    /// Broker shutdown.
    pub shutdown: CancellationToken,
    /// The broker-wide keep-alive checker (no timer per connection).
    pub keep_alive: Arc<KeepAlive>,
}

/// Why a connection ended.
#[derive(Debug)]
enum Exit {
    /// The client sent DISCONNECT.
    Client {
        /// Reason 0x04 asks for the will to be sent.
        send_will: bool,
        /// New session expiry from the DISCONNECT.
        session_expiry: Option<u32>,
    },
    /// Socket closed or failed.
    Closed,
    /// No packet within 1.5 × keep-alive.
    KeepAlive,
    /// Malformed or forbidden packet: close with this v5 reason.
    Violation(u8, String),
    /// Another connection took the session over.
    Kicked(u8),
    /// The broker is shutting down.
    Shutdown,
}

/// What handling one packet asks the (async) loop to do next.
enum Step {
    /// Nothing more.
    Done,
    /// Close the connection.
    Exit(Exit),
    /// Send this to the router.
    Route(RouterCmd),
    /// Pass an accepted publication through the hook, then route it.
    Publish {
        /// The message.
        publication: Arc<Publication>,
        /// Packet id (0 for QoS 0).
        pkid: u16,
    },
}

/// Who is at the other end of a socket, as far as the listener knows.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// The remote address (for logs).
    pub addr: Option<std::net::SocketAddr>,
    /// The common name of a verified TLS client certificate.
    pub certificate: Option<Arc<str>>,
    /// The SHA-256 fingerprint of that certificate, for certificate-only
    /// login, when the link's own socket cannot tell it
    /// ([`Socket::peer_certificate_sha256`]): a secure WebSocket's TLS
    /// session belongs to the bridge. Set only while certificate-only
    /// login is on.
    pub fingerprint: Option<plantd_shared::device_certs::Fingerprint>,
}

/// Topic aliases of one connection (MQTT 5).
#[derive(Debug, Default)]
struct Aliases {
    /// Set by the client: alias → topic.
    inbound: HashMap<u16, String>,
    /// Set by the broker towards the client: topic → alias.
    outbound: HashMap<Arc<str>, u16>,
}

/// Per-connection protocol state.
struct Link {
    /// Who this is, for authorisation and hooks.
    info: ClientInfo,
    /// Protocol version.
    wire: Wire,
    /// This connection's id (control messages are tagged with it).
    conn_id: u64,
    /// Shared context.
    ctx: Arc<LinkContext>,
    /// The session's delivery and control queue.
    mailbox: Arc<Mailbox>,
    /// Outgoing QoS 1/2 in flight.
    window: OutgoingWindow,
    /// Incoming QoS 2 packet ids awaiting PUBREL.
    incoming_qos2: HashSet<u16>,
    /// Incoming QoS 1/2 publishes the router has not acknowledged yet.
    pending_acks: u32,
    /// Topic aliases in both directions, allocated on first use.
    aliases: Option<Box<Aliases>>,
    /// How many aliases the client accepts.
    out_alias_max: u16,
    /// Largest packet the client accepts.
    client_max_packet: u32,
    /// Whether the client wants reason strings.
    problem_info: bool,
    /// Session expiry in force.
    session_expiry: u32,
    /// A DISCONNECT may not raise an expiry that CONNECT set to 0.
    connect_expiry_zero: bool,
    /// Bytes waiting to be written.
    wbuf: BytesMut,
    /// Buffers of a connection with traffic (none until it has some).
    scratch: Option<Box<Scratch>>,
    /// PUBLISH packets received on this connection (wrapping: only
    /// differences within one read are used).
    received: u32,
    /// PUBLISH packets received and sent, by QoS, not yet added to the
    /// shared metrics (added once per turn, not once per message).
    received_by_qos: [u32; 3],
    /// See `received_by_qos`.
    sent_by_qos: [u32; 3],
    /// Where a persistent session's QoS progress goes (with a session
    /// store): sent once per turn.
    log: Option<Box<SessionLog>>,
    /// Whether each delivery is checked against the permissions in force
    /// before it is written: set once the connection's read permissions
    /// may have narrowed since its queued deliveries were routed (a
    /// re-authentication, a resumed session that lost subscriptions), so
    /// a message queued under the old ones is dropped, not delivered
    /// (`docs/decisions/0051-edge-reauthentication-narrows.md`).
    check_reads: bool,
}

/// Buffers reused turn after turn while a connection has traffic. Boxed
/// and made on first use, so a connection that only connected — thousands
/// of them after a reconnect storm — carries none of them (issue 12).
#[derive(Default)]
struct Scratch {
    /// Control messages taken from the mailbox.
    ctl: Vec<LinkCtl>,
    /// Deliveries taken from the mailbox.
    batch: Vec<Delivery>,
    /// Accepted publications not yet handed to the router (sent once per
    /// read, so a burst costs one channel send).
    routed: Vec<Routed>,
    /// What the publish hook asked to wait for before `routed` may go to
    /// the router (the journal making the batch durable).
    pending: Vec<crate::hooks::Pending>,
    /// Topic of the last PUBLISH received, shared by the next one if equal.
    last_topic: Option<Arc<str>>,
}

impl Link {
    /// The traffic buffers, made on first use.
    pub(super) fn scratch(&mut self) -> &mut Scratch {
        self.scratch.get_or_insert_with(Box::default)
    }

    pub(super) fn send(&mut self, p: &v5::Packet) {
        // A Reason String or User Property that would push a packet over
        // the client's Maximum Packet Size is left out [MQTT-3.2.2-19].
        let max = self.client_max_packet as usize;
        if p.has_diagnostics() && p.encoded_len() > max {
            let mut p = p.clone();
            p.fit(max);
            self.wire.encode(&p, &mut self.wbuf);
            return;
        }
        self.wire.encode(p, &mut self.wbuf);
    }

    /// Whether the permissions in force let this connection read `topic`:
    /// the SUBSCRIBE rule ([`reauth::may_subscribe`]) applied to the topic
    /// as a filter.
    pub(super) fn may_read(&self, topic: &str) -> bool {
        plantd_shared::topic::Filter::new(topic)
            .is_ok_and(|filter| reauth::may_subscribe(&self.info, &self.ctx.auth, &filter))
    }

    /// A stored delivery is finished (acknowledged or dropped).
    pub(super) fn stored_done(&mut self, stored: Option<u64>) {
        if let (Some(log), Some(seq)) = (self.log.as_mut(), stored) {
            log.done(seq);
        }
    }

    /// Hands this turn's QoS progress to the session store.
    pub(super) fn flush_log(&mut self) {
        if let Some(log) = self.log.as_mut() {
            log.flush();
        }
    }

    /// Adds the per-connection message counts to the shared metrics.
    pub(super) fn publish_counts(&mut self) {
        let m = &self.ctx.metrics;
        for q in 0..3 {
            if self.received_by_qos[q] > 0 {
                let n = std::mem::take(&mut self.received_by_qos[q]);
                m.messages_in[q].fetch_add(u64::from(n), Relaxed);
            }
            if self.sent_by_qos[q] > 0 {
                let n = std::mem::take(&mut self.sent_by_qos[q]);
                m.messages_out[q].fetch_add(u64::from(n), Relaxed);
            }
        }
    }
}
