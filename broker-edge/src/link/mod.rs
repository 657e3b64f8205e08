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

pub mod handshake;
pub mod socket;
pub mod wire;

use std::collections::{HashMap, HashSet};
use std::io::ErrorKind;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use plantd_shared::topic::{SubscriptionFilter, validate_topic};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::auth::{Authenticator, REASON_EXPIRED, REASON_REVOKED};
use crate::config::Config;
use crate::hooks::{Authorizer, ClientInfo, PublishHook};
use crate::mailbox::{LinkCtl, Mailbox};
use crate::message::{Delivery, MessageProperties, Publication, Will};
use crate::metrics::{DropReason, Metrics};
use crate::protocol::v5::{self, Ack, ConnAck, Disconnect, Properties, SubAck, UnsubAck};
use crate::protocol::{self, QoS, v4};
use crate::router::subscriptions::SubEntry;
use crate::router::{AckTo, ConnectOutcome, ConnectRequest, Routed, RouterCmd};
use crate::session::{OutFlight, OutgoingWindow, RecOutcome};
use crate::store::SessionLog;
use handshake::{HandshakeError, Hello};
pub use socket::Socket;
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
}

/// Serves one accepted socket until it closes.
pub async fn serve<S: Socket>(mut stream: S, peer: Peer, conn_id: u64, ctx: Arc<LinkContext>) {
    let Peer {
        addr: peer,
        certificate,
    } = peer;
    let limits = &ctx.config.limits;
    let mut rbuf = BytesMut::new();
    let hello = match Box::pin(handshake::read_connect(
        &mut stream,
        &mut rbuf,
        limits.max_packet_size as usize,
        Duration::from_millis(limits.connect_timeout_ms),
    ))
    .await
    {
        Ok(h) => h,
        Err(HandshakeError::Timeout) => {
            debug!(?peer, "no CONNECT within the connect timeout; closing");
            ctx.metrics.connections_refused.fetch_add(1, Relaxed);
            return;
        }
        Err(HandshakeError::Io) => return,
        Err(HandshakeError::Refuse(wire, reason, why)) => {
            warn!(?peer, reason = format_args!("{reason:#04x}"), %why, "refusing CONNECT");
            ctx.metrics.connections_refused.fetch_add(1, Relaxed);
            Box::pin(handshake::refuse(&mut stream, wire, reason, Some(why))).await;
            return;
        }
    };
    let mut hello = hello;
    let identity = match authenticate(&ctx, &mut hello) {
        Ok(identity) => identity,
        Err(refused) => {
            warn!(?peer, client_id = %hello.client_id, reason = format_args!("{:#04x}", refused.reason), why = %refused.why, "refusing CONNECT: authentication");
            ctx.metrics.connections_refused.fetch_add(1, Relaxed);
            Box::pin(handshake::refuse(
                &mut stream,
                Some(hello.wire),
                refused.reason,
                Some(refused.why),
            ))
            .await;
            return;
        }
    };

    let (reply_tx, reply_rx) = oneshot::channel();
    let session_expiry = hello.session_expiry.min(limits.max_session_expiry_secs);
    let client_id: Arc<str> = Arc::from(hello.client_id.as_str());
    let req = ConnectRequest {
        conn_id,
        client_id: client_id.clone(),
        clean_start: hello.clean_start,
        session_expiry,
        reply: reply_tx,
    };
    if ctx.router.send(RouterCmd::Connect(req)).await.is_err() {
        return;
    }
    let outcome = tokio::select! {
        o = reply_rx => o,
        () = ctx.shutdown.cancelled() => return,
    };
    let (mailbox, mut carry, session_present, log) = match outcome {
        Ok(ConnectOutcome::Accepted {
            mailbox,
            carry,
            session_present,
            log,
        }) => (mailbox, carry, session_present, log),
        Ok(ConnectOutcome::Refused(reason)) => {
            Box::pin(handshake::refuse(
                &mut stream,
                Some(hello.wire),
                reason,
                None,
            ))
            .await;
            return;
        }
        Err(_) => return,
    };

    // Expiry and revocation close the connection through its mailbox.
    let _admission = identity
        .as_ref()
        .map(|i| Box::new(ctx.authn.admit(i, conn_id, &mailbox)));
    let keep_alive = match (hello.wire, limits.server_keep_alive) {
        (Wire::V5, Some(k)) => k,
        _ => hello.keep_alive,
    };
    let window_limit = usize::from(hello.receive_maximum.min(limits.max_inflight));
    let window = OutgoingWindow::new(window_limit, &mut carry);
    let mut link = Link {
        info: ClientInfo {
            client_id: client_id.clone(),
            username: hello.username.clone(),
            identity,
            certificate,
        },
        wire: hello.wire,
        conn_id,
        ctx: ctx.clone(),
        mailbox,
        ctl: Vec::new(),
        window,
        incoming_qos2: std::mem::take(&mut carry.incoming_qos2),
        pending_acks: 0,
        aliases: None,
        out_alias_max: hello.topic_alias_maximum,
        client_max_packet: hello.max_packet_size as usize,
        problem_info: hello.request_problem_info,
        session_expiry,
        connect_expiry_zero: session_expiry == 0,
        wbuf: BytesMut::new(),
        batch: Vec::new(),
        last_topic: None,
        received: 0,
        received_by_qos: [0; 3],
        sent_by_qos: [0; 3],
        routed: Vec::new(),
        pending: Vec::new(),
        log: log.map(Box::new),
    };
    link.send_connack(&hello, session_present, keep_alive, session_expiry);
    link.redeliver();
    ctx.metrics.connections.fetch_add(1, Relaxed);
    ctx.metrics.connections_total.fetch_add(1, Relaxed);
    let mut guard = EndGuard {
        ctx: ctx.clone(),
        client_id: client_id.clone(),
        conn_id,
        session_expiry,
        armed: true,
    };
    info!(client_id = %client_id, ?peer, certificate = link.info.certificate.as_deref(), version = ?hello.wire, session_present, "client connected");
    // Only the will is needed after this point.
    let will: Option<Box<Will>> = {
        let h = hello;
        h.will.map(Box::new)
    };

    if rbuf.is_empty() {
        rbuf = BytesMut::new();
    }
    let exit = link.run(&stream, rbuf, keep_alive).await;
    link.publish_counts();
    guard.armed = false;
    ctx.metrics.connections.fetch_sub(1, Relaxed);
    // Boxed: the goodbye's state is not part of every idle connection's task.
    Box::pin(finish(stream, link, exit, will, peer)).await;
}

/// Checks the CONNECT's credentials (the password is taken out of
/// `hello`) and, for a token, that its grants allow the will topic.
fn authenticate(
    ctx: &LinkContext,
    hello: &mut Hello,
) -> Result<Option<Arc<crate::auth::Identity>>, crate::auth::Refused> {
    let password = hello.password.take();
    let identity = ctx.authn.authenticate(
        hello.username.as_deref(),
        password.as_ref().map(|p| &p.0[..]),
    )?;
    if let (Some(id), Some(will)) = (&identity, &hello.will)
        && !id.can_publish(&will.topic)
    {
        return Err(crate::auth::Refused {
            reason: 0x87,
            why: "the token does not allow publishing to the will topic".into(),
        });
    }
    Ok(identity)
}

/// Ends a connection: DISCONNECT for v5 clients the server closes, then the
/// session state and the decided will go back to the router.
async fn finish<S: Socket>(
    mut stream: S,
    mut link: Link,
    exit: Exit,
    will: Option<Box<Will>>,
    peer: Option<std::net::SocketAddr>,
) {
    let ctx = link.ctx.clone();
    let client_id = link.info.client_id.clone();
    let conn_id = link.conn_id;

    // Tell a v5 client why the server closes.
    let server_reason = match &exit {
        Exit::Violation(r, _) | Exit::Kicked(r) => Some(*r),
        Exit::KeepAlive => Some(0x8d),
        Exit::Shutdown => Some(0x8b),
        Exit::Client { .. } | Exit::Closed => None,
    };
    if let Exit::Violation(reason, why) = &exit {
        ctx.metrics.protocol_errors.fetch_add(1, Relaxed);
        warn!(client_id = %client_id, ?peer, reason = format_args!("{reason:#04x}"), %why, "closing connection: bad packet");
    } else {
        info!(client_id = %client_id, ?peer, ?exit, "client disconnected");
    }
    if let Some(reason) = server_reason
        && link.wire.is_v5()
    {
        let mut d = Disconnect::new(reason);
        if let Exit::Violation(_, why) = &exit
            && link.problem_info
        {
            d.properties.reason_string = Some(why.clone());
        }
        link.send(&v5::Packet::Disconnect(d));
    }
    if !link.wbuf.is_empty() {
        let _ = Box::pin(tokio::time::timeout(
            Duration::from_secs(1),
            stream.write_all(&link.wbuf),
        ))
        .await;
    }
    let _ = stream.shutdown().await;

    let (send_will, expiry) = match exit {
        Exit::Client {
            send_will,
            session_expiry,
        } => (send_will, session_expiry.unwrap_or(link.session_expiry)),
        Exit::Shutdown => (false, link.session_expiry),
        // The client's authority ended: it publishes nothing more.
        Exit::Kicked(REASON_EXPIRED | REASON_REVOKED) => (false, link.session_expiry),
        _ => (true, link.session_expiry),
    };
    let will = if send_will { will } else { None };
    // The last turn's progress reaches the store before the router hears
    // that the connection ended (and may write or delete the session).
    link.flush_log();
    let carry = link.window.into_carry(link.incoming_qos2);
    let _ = ctx
        .router
        .send(RouterCmd::Disconnected {
            client_id,
            conn_id,
            carry: Box::new(carry),
            will,
            session_expiry: expiry,
        })
        .await;
}

/// Tells the router that a connection ended even when its task unwinds
/// (a bug must not leave a session marked connected forever, which would
/// make every later connection with that client id wait for a takeover).
struct EndGuard {
    /// Router and metrics.
    ctx: Arc<LinkContext>,
    /// Session.
    client_id: Arc<str>,
    /// Connection.
    conn_id: u64,
    /// Session expiry in force.
    session_expiry: u32,
    /// False once the normal path took over.
    armed: bool,
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        if self.armed {
            self.ctx.metrics.connections.fetch_sub(1, Relaxed);
            let _ = self.ctx.router.try_send(RouterCmd::Disconnected {
                client_id: self.client_id.clone(),
                conn_id: self.conn_id,
                carry: Box::default(),
                will: None,
                session_expiry: self.session_expiry,
            });
        }
    }
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
    /// Reused buffer for control messages.
    ctl: Vec<LinkCtl>,
    /// Outgoing QoS 1/2 in flight.
    window: OutgoingWindow,
    /// Incoming QoS 2 packet ids awaiting PUBREL.
    incoming_qos2: HashSet<u16>,
    /// Incoming QoS 1/2 publishes the router has not acknowledged yet.
    pending_acks: usize,
    /// Topic aliases in both directions, allocated on first use.
    aliases: Option<Box<Aliases>>,
    /// How many aliases the client accepts.
    out_alias_max: u16,
    /// Largest packet the client accepts.
    client_max_packet: usize,
    /// Whether the client wants reason strings.
    problem_info: bool,
    /// Session expiry in force.
    session_expiry: u32,
    /// A DISCONNECT may not raise an expiry that CONNECT set to 0.
    connect_expiry_zero: bool,
    /// Bytes waiting to be written.
    wbuf: BytesMut,
    /// Reused buffer for mailbox batches.
    batch: Vec<Delivery>,
    /// Topic of the last PUBLISH received, shared by the next one if equal.
    last_topic: Option<Arc<str>>,
    /// PUBLISH packets received on this connection.
    received: u64,
    /// PUBLISH packets received and sent, by QoS, not yet added to the
    /// shared metrics (added once per turn, not once per message).
    received_by_qos: [u64; 3],
    /// See `received_by_qos`.
    sent_by_qos: [u64; 3],
    /// Accepted publications not yet handed to the router (sent once per
    /// read, so a burst costs one channel send).
    routed: Vec<Routed>,
    /// What the publish hook asked to wait for before `routed` may go to
    /// the router (the journal making the batch durable).
    pending: Vec<crate::hooks::Pending>,
    /// Where a persistent session's QoS progress goes (with a session
    /// store): sent once per turn.
    log: Option<Box<SessionLog>>,
}

impl Link {
    fn send(&mut self, p: &v5::Packet) {
        self.wire.encode(p, &mut self.wbuf);
    }

    fn send_connack(&mut self, hello: &Hello, session_present: bool, keep_alive: u16, expiry: u32) {
        let limits = &self.ctx.config.limits;
        let mut p = Properties::default();
        if self.wire.is_v5() {
            p.receive_maximum = Some(limits.max_inflight);
            p.maximum_packet_size = Some(limits.max_packet_size);
            p.topic_alias_maximum = Some(limits.topic_alias_maximum);
            if hello.assigned {
                p.assigned_client_identifier = Some(hello.client_id.clone());
            }
            if expiry != hello.session_expiry {
                p.session_expiry_interval = Some(expiry);
            }
            if keep_alive != hello.keep_alive {
                p.server_keep_alive = Some(keep_alive);
            }
            if hello.request_response_info {
                p.response_information = Some(format!("response/{}", hello.client_id));
            }
        }
        self.send(&v5::Packet::ConnAck(ConnAck {
            session_present,
            reason: 0,
            properties: p,
        }));
    }

    /// Resends what was in flight when the previous connection ended.
    fn redeliver(&mut self) {
        for (id, f) in self.window.in_order() {
            match f {
                OutFlight::Publish(d) => {
                    if !self.write_delivery(&d, id, true) {
                        // Expired or too large: it will never be
                        // acknowledged, so it leaves the window.
                        self.window.forget(id);
                        self.stored_done(d.stored);
                    }
                }
                OutFlight::Released(_) => self.send(&v5::Packet::PubRel(Ack::new(id, 0))),
            }
        }
    }

    /// A stored delivery is finished (acknowledged or dropped).
    fn stored_done(&mut self, stored: Option<u64>) {
        if let (Some(log), Some(seq)) = (self.log.as_mut(), stored) {
            log.done(seq);
        }
    }

    /// Hands this turn's QoS progress to the session store.
    fn flush_log(&mut self) {
        if let Some(log) = self.log.as_mut() {
            log.flush();
        }
    }

    /// Adds the per-connection message counts to the shared metrics.
    fn publish_counts(&mut self) {
        let m = &self.ctx.metrics;
        for q in 0..3 {
            if self.received_by_qos[q] > 0 {
                m.messages_in[q].fetch_add(std::mem::take(&mut self.received_by_qos[q]), Relaxed);
            }
            if self.sent_by_qos[q] > 0 {
                m.messages_out[q].fetch_add(std::mem::take(&mut self.sent_by_qos[q]), Relaxed);
            }
        }
    }

    /// Writes as much of the write buffer as the socket takes now.
    fn flush<S: Socket>(&mut self, stream: &S) -> Result<(), Exit> {
        while !self.wbuf.is_empty() {
            match stream.try_write(&self.wbuf) {
                Ok(n) => {
                    self.wbuf.advance(n);
                    self.ctx.metrics.bytes_out.fetch_add(n as u64, Relaxed);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => return Err(Exit::Closed),
            }
        }
        if self.wbuf.is_empty() && self.wbuf.capacity() > KEEP_WBUF {
            self.wbuf = BytesMut::new();
        }
        Ok(())
    }

    async fn run<S: Socket>(&mut self, stream: &S, mut rbuf: BytesMut, keep_alive: u16) -> Exit {
        let ka = (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500));
        let mut last_rx = Instant::now();
        let ka_sleep = tokio::time::sleep(ka.unwrap_or(Duration::from_secs(86_400)));
        tokio::pin!(ka_sleep);
        let shutdown = self.ctx.shutdown.clone();
        let max_packet = self.ctx.config.limits.max_packet_size as usize;
        let max_pending = usize::from(self.ctx.config.limits.max_inflight);
        let mailbox = self.mailbox.clone();
        // Bytes from a previous read (the handshake) are processed first.
        let mut got_input = !rbuf.is_empty();
        loop {
            if got_input {
                got_input = false;
                let before = self.received;
                // Boxed: its state exists only while input is processed, so
                // an idle connection's task stays small.
                if let Some(exit) = Box::pin(self.process_input(&mut rbuf, max_packet)).await {
                    return exit;
                }
                if rbuf.is_empty() {
                    // Idle connections hold no read buffer.
                    rbuf = BytesMut::new();
                }
                // A publisher that always has input would otherwise keep
                // its worker thread and starve the links that deliver: give
                // them a turn after a read that carried a burst (the coop
                // budget, spent by each send to the router, bounds the rest).
                // A read of a few publishes on a TCP socket does not yield:
                // a yield queues this task behind the others and wakes the
                // other worker thread to steal it — a futex wake and a
                // context switch for every lone message, which doubled the
                // broker's CPU per ping-pong round trip. Bridged sockets
                // (TLS, WebSocket) still yield after every such read: their
                // task also runs the bridge, and without that yield a
                // message was seen to stall in `tests/reload.rs` (cause not
                // found yet; see docs/performance.md).
                let publishes = self.received - before;
                if publishes > 0 && (S::BRIDGED || publishes >= YIELD_AFTER) {
                    tokio::task::yield_now().await;
                }
            }
            // Control first (a SUBACK goes out before the retained messages
            // that follow it), then deliveries, then write what we can.
            let mut ctl = std::mem::take(&mut self.ctl);
            mailbox.pop_ctl(self.conn_id, &mut ctl);
            for c in ctl.drain(..) {
                if let Some(exit) = self.on_ctl(c) {
                    return exit;
                }
            }
            self.ctl = ctl;
            let more = self.drain_mailbox();
            self.flush_log();
            self.publish_counts();
            if let Err(exit) = self.flush(stream) {
                return exit;
            }

            let can_read = self.wbuf.len() < HIGH_WATER && self.pending_acks < max_pending;
            let more = more && self.wbuf.len() < HIGH_WATER;
            let interest = match (can_read, !self.wbuf.is_empty()) {
                (true, true) => Some(Interest::READABLE | Interest::WRITABLE),
                (true, false) => Some(Interest::READABLE),
                (false, true) => Some(Interest::WRITABLE),
                (false, false) => None,
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Exit::Shutdown,
                // One readiness future for both directions keeps an idle
                // connection's task small.
                r = stream.ready(interest.unwrap_or(Interest::READABLE)), if interest.is_some() => {
                    let Ok(ready) = r else {
                        return Exit::Closed;
                    };
                    if can_read && (ready.is_readable() || ready.is_read_closed()) {
                        if rbuf.capacity() - rbuf.len() < 1024 {
                            rbuf.reserve(4096);
                        }
                        match stream.try_read_buf(&mut rbuf) {
                            Ok(0) => return Exit::Closed,
                            Ok(n) => {
                                self.ctx.metrics.bytes_in.fetch_add(n as u64, Relaxed);
                                last_rx = Instant::now();
                                got_input = true;
                            }
                            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                            Err(_) => return Exit::Closed,
                        }
                    }
                }
                () = mailbox.notified() => {}
                () = std::future::ready(()), if more => {}
                () = &mut ka_sleep, if ka.is_some() => {
                    let timeout = ka.unwrap_or_default();
                    if last_rx.elapsed() >= timeout {
                        return Exit::KeepAlive;
                    }
                    ka_sleep.as_mut().reset((last_rx + timeout).into());
                }
            }
        }
    }

    /// Decodes and handles every complete frame in `rbuf`.
    async fn process_input(&mut self, rbuf: &mut BytesMut, max_packet: usize) -> Option<Exit> {
        let exit = loop {
            let (header, body) = match protocol::split_frame(rbuf, max_packet) {
                Ok(Some(f)) => f,
                Ok(None) => break None,
                Err(e) => break Some(Exit::Violation(e.reason_code(), e.to_string())),
            };
            let packet = match self.wire.decode(&header, body) {
                Ok(p) => p,
                Err(e) => break Some(Exit::Violation(e.reason_code(), e.to_string())),
            };
            match self.on_packet(packet) {
                Step::Done => {}
                Step::Exit(e) => break Some(e),
                Step::Route(cmd) => {
                    // Keep order: publications read before this go first.
                    if !self.flush_routed().await || self.ctx.router.send(cmd).await.is_err() {
                        return Some(Exit::Shutdown);
                    }
                }
                Step::Publish { publication, pkid } => {
                    if let Some(exit) = self.accept_publish(publication, pkid).await {
                        break Some(exit);
                    }
                    if self.routed.len() >= DRAIN_BATCH && !self.flush_routed().await {
                        return Some(Exit::Shutdown);
                    }
                }
            }
        };
        // What was accepted before a bad packet is still delivered.
        if !self.flush_routed().await {
            return Some(Exit::Shutdown);
        }
        exit
    }

    /// Hands the accepted publications to the router, once everything the
    /// publish hook asked to wait for is done; false when the router is gone
    /// or the hook failed (the connection then closes without acknowledging,
    /// so the client sends again: nothing is lost).
    async fn flush_routed(&mut self) -> bool {
        for pending in std::mem::take(&mut self.pending) {
            if let Err(e) = pending.await {
                warn!(client_id = %self.info.client_id, error = %e, "publish hook failed; closing without acknowledging");
                self.routed.clear();
                return false;
            }
        }
        if self.routed.is_empty() {
            return true;
        }
        let batch = std::mem::replace(&mut self.routed, Vec::with_capacity(64));
        self.ctx
            .router
            .send(RouterCmd::Publish(batch))
            .await
            .is_ok()
    }

    fn on_ctl(&mut self, ctl: LinkCtl) -> Option<Exit> {
        match ctl {
            LinkCtl::PubAck { pkid, qos, reason } => {
                self.pending_acks = self.pending_acks.saturating_sub(1);
                let ack = Ack::new(pkid, reason);
                if qos == QoS::ExactlyOnce {
                    if reason >= 0x80 {
                        self.incoming_qos2.remove(&pkid);
                    }
                    self.send(&v5::Packet::PubRec(ack));
                } else {
                    self.send(&v5::Packet::PubAck(ack));
                }
            }
            LinkCtl::SubAck { pkid, reasons } => self.send(&v5::Packet::SubAck(SubAck {
                pkid,
                properties: Properties::default(),
                reasons,
            })),
            LinkCtl::UnsubAck { pkid, reasons } => self.send(&v5::Packet::UnsubAck(UnsubAck {
                pkid,
                properties: Properties::default(),
                reasons,
            })),
            LinkCtl::PubRel { pkid } => self.send(&v5::Packet::PubRel(Ack::new(pkid, 0))),
            LinkCtl::PubComp { pkid } => self.send(&v5::Packet::PubComp(Ack::new(pkid, 0))),
            LinkCtl::Kick { reason } => return Some(Exit::Kicked(reason)),
        }
        None
    }

    /// Moves ready deliveries into the write buffer; true when it stopped at
    /// its batch limit or the write buffer's high water mark, so more may be
    /// waiting (the mailbox only signals when it turns non-empty).
    fn drain_mailbox(&mut self) -> bool {
        let mut batch = std::mem::take(&mut self.batch);
        let mut taken = 0;
        let mut exhausted = false;
        // Small chunks, so that large messages stop the drain soon after the
        // write buffer passes its high water mark.
        while taken < DRAIN_BATCH && self.wbuf.len() < HIGH_WATER {
            self.mailbox
                .pop_ready(&mut batch, self.window.free(), DRAIN_CHUNK);
            if batch.is_empty() {
                exhausted = true;
                break;
            }
            taken += batch.len();
            for d in batch.drain(..) {
                if d.qos == QoS::AtMostOnce {
                    self.write_delivery(&d, 0, false);
                } else {
                    let id = self.window.next_id();
                    if self.write_delivery(&d, id, false) {
                        if let (Some(log), Some(seq)) = (self.log.as_mut(), d.stored) {
                            log.sent(seq, id);
                        }
                        self.window.sent(id, d);
                    } else {
                        self.stored_done(d.stored);
                    }
                }
            }
        }
        self.batch = batch;
        !exhausted
    }

    /// Encodes one delivery; false when it was dropped (expired or larger
    /// than the client accepts).
    fn write_delivery(&mut self, d: &Delivery, pkid: u16, dup: bool) -> bool {
        let p = &d.publication;
        let remaining = p.remaining_expiry();
        if remaining == Some(0) {
            self.ctx.metrics.dropped(DropReason::Expired);
            return false;
        }
        let start = self.wbuf.len();
        let mut new_alias = None;
        match self.wire {
            Wire::V4 { .. } => {
                v4::write_publish(
                    &mut self.wbuf,
                    dup,
                    d.qos,
                    d.retain,
                    &p.topic,
                    pkid,
                    &p.payload,
                );
            }
            Wire::V5 => {
                let mut alias = None;
                if self.out_alias_max > 0 {
                    let out = &mut self.aliases.get_or_insert_with(Box::default).outbound;
                    if let Some(&a) = out.get(&p.topic) {
                        alias = Some((a, true));
                    } else if out.len() < usize::from(self.out_alias_max) {
                        let a = out.len() as u16 + 1;
                        out.insert(p.topic.clone(), a);
                        alias = Some((a, false));
                        new_alias = Some(p.topic.clone());
                    }
                }
                let needs_props = alias.is_some()
                    || remaining.is_some()
                    || !d.subscription_ids.is_empty()
                    || !p.properties.is_empty();
                let props = needs_props.then(|| {
                    let mut props = Properties::default();
                    p.properties.apply(&mut props);
                    props.message_expiry_interval = remaining;
                    props
                        .subscription_identifiers
                        .clone_from(&d.subscription_ids);
                    props.topic_alias = alias.map(|(a, _)| a);
                    props
                });
                let topic = if matches!(alias, Some((_, true))) {
                    ""
                } else {
                    &p.topic
                };
                v5::write_publish(
                    &mut self.wbuf,
                    dup,
                    d.qos,
                    d.retain,
                    topic,
                    pkid,
                    props.as_ref(),
                    &p.payload,
                );
            }
        }
        if self.wbuf.len() - start > self.client_max_packet {
            self.wbuf.truncate(start);
            if let Some(t) = new_alias
                && let Some(a) = self.aliases.as_mut()
            {
                a.outbound.remove(&t);
            }
            self.ctx.metrics.dropped(DropReason::TooLarge);
            return false;
        }
        self.sent_by_qos[d.qos.index()] += 1;
        true
    }

    fn on_packet(&mut self, packet: v5::Packet) -> Step {
        match packet {
            v5::Packet::Publish(p) => return self.on_publish(p),
            v5::Packet::PubAck(a) => {
                if let Some(stored) = self.window.puback(a.pkid) {
                    self.stored_done(stored);
                }
            }
            v5::Packet::PubRec(a) => match self.window.pubrec(a.pkid, a.reason) {
                RecOutcome::Released(stored) => {
                    // With a store, PUBREL waits until the release is
                    // recorded: after a crash the broker then repeats the
                    // PUBREL, never the PUBLISH the client completed.
                    match (self.log.as_mut(), stored) {
                        (Some(log), Some(seq)) => log.released(seq, a.pkid),
                        _ => self.send(&v5::Packet::PubRel(Ack::new(a.pkid, 0))),
                    }
                }
                RecOutcome::Again => self.send(&v5::Packet::PubRel(Ack::new(a.pkid, 0))),
                RecOutcome::Ended(stored) => self.stored_done(stored),
                RecOutcome::Unknown => self.send(&v5::Packet::PubRel(Ack::new(a.pkid, 0x92))),
            },
            v5::Packet::PubRel(a) => {
                if self.incoming_qos2.remove(&a.pkid) {
                    // With a store, PUBCOMP waits until the packet id is
                    // forgotten there: the client may reuse it after
                    // PUBCOMP, and a stale id would swallow its next message.
                    match self.log.as_mut() {
                        Some(log) => log.incoming_done(a.pkid),
                        None => self.send(&v5::Packet::PubComp(Ack::new(a.pkid, 0))),
                    }
                } else {
                    self.send(&v5::Packet::PubComp(Ack::new(a.pkid, 0x92)));
                }
            }
            v5::Packet::PubComp(a) => {
                if let Some(stored) = self.window.pubcomp(a.pkid) {
                    self.stored_done(stored);
                }
            }
            v5::Packet::Subscribe(s) => return self.on_subscribe(s),
            v5::Packet::Unsubscribe(u) => {
                let filters = u
                    .filters
                    .iter()
                    .map(|f| SubscriptionFilter::parse(f).map_err(|_| 0x8f))
                    .collect();
                return Step::Route(RouterCmd::Unsubscribe {
                    client_id: self.info.client_id.clone(),
                    pkid: u.pkid,
                    filters,
                });
            }
            v5::Packet::PingReq => self.send(&v5::Packet::PingResp),
            v5::Packet::Disconnect(d) => {
                let expiry = d.properties.session_expiry_interval;
                if self.connect_expiry_zero && expiry.is_some_and(|e| e > 0) {
                    return Step::Exit(Exit::Violation(
                        0x82,
                        "session expiry raised from 0 at DISCONNECT".into(),
                    ));
                }
                return Step::Exit(Exit::Client {
                    send_will: d.reason == 0x04,
                    session_expiry: expiry
                        .map(|e| e.min(self.ctx.config.limits.max_session_expiry_secs)),
                });
            }
            v5::Packet::Auth(_) => {
                return Step::Exit(Exit::Violation(
                    0x82,
                    "AUTH without extended authentication".into(),
                ));
            }
            v5::Packet::Connect(_)
            | v5::Packet::ConnAck(_)
            | v5::Packet::SubAck(_)
            | v5::Packet::UnsubAck(_)
            | v5::Packet::PingResp => {
                return Step::Exit(Exit::Violation(
                    0x82,
                    "unexpected packet from a client".into(),
                ));
            }
        }
        Step::Done
    }

    /// Acknowledges a QoS 1/2 publish that is not routed, with a v5 reason.
    fn refuse_publish(&mut self, qos: QoS, pkid: u16, reason: u8) {
        let ack = Ack::new(pkid, reason);
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send(&v5::Packet::PubAck(ack)),
            QoS::ExactlyOnce => self.send(&v5::Packet::PubRec(ack)),
        }
    }

    fn on_publish(&mut self, mut p: v5::Publish) -> Step {
        let limits = &self.ctx.config.limits;
        let v5 = self.wire.is_v5();
        self.received_by_qos[p.qos.index()] += 1;
        self.received += 1;
        if p.qos != QoS::AtMostOnce
            && v5
            && self.pending_acks + self.incoming_qos2.len() >= usize::from(limits.max_inflight)
            && !self.incoming_qos2.contains(&p.pkid)
        {
            return Step::Exit(Exit::Violation(0x93, "Receive Maximum exceeded".into()));
        }
        if !p.properties.subscription_identifiers.is_empty() {
            return Step::Exit(Exit::Violation(
                0x82,
                "subscription identifier in PUBLISH".into(),
            ));
        }
        // Topic alias (v5 only; a v3 decode never sets one).
        if let Some(alias) = p.properties.topic_alias.take() {
            if alias > limits.topic_alias_maximum {
                return Step::Exit(Exit::Violation(0x94, "topic alias out of range".into()));
            }
            let inbound = &mut self.aliases.get_or_insert_with(Box::default).inbound;
            if p.topic.is_empty() {
                match inbound.get(&alias) {
                    Some(t) => p.topic.clone_from(t),
                    None => return Step::Exit(Exit::Violation(0x82, "unknown topic alias".into())),
                }
            } else {
                inbound.insert(alias, p.topic.clone());
            }
        }
        if let Err(e) = validate_topic(&p.topic) {
            return Step::Exit(Exit::Violation(0x90, format!("invalid topic name: {e}")));
        }
        if p.topic.len() > limits.max_topic_length
            || p.topic.split('/').count() > limits.max_topic_levels
        {
            if !v5 {
                return Step::Exit(Exit::Violation(
                    0x90,
                    "topic exceeds length or level limit".into(),
                ));
            }
            self.refuse_publish(p.qos, p.pkid, 0x90);
            return Step::Done;
        }
        if p.qos == QoS::ExactlyOnce && self.incoming_qos2.contains(&p.pkid) {
            // A resent QoS 2 publish we already took: acknowledge again only.
            if self.log.is_some() {
                // The first copy's PUBREC may still wait for the session
                // store (a resend right after a reconnect): this one waits
                // behind it, through the router.
                self.pending_acks += 1;
                return Step::Route(RouterCmd::Ack(AckTo {
                    mailbox: self.mailbox.clone(),
                    conn_id: self.conn_id,
                    pkid: p.pkid,
                    qos: QoS::ExactlyOnce,
                }));
            }
            self.send(&v5::Packet::PubRec(Ack::new(p.pkid, 0)));
            return Step::Done;
        }
        if !self.info.token_allows_publish(&p.topic)
            || !self.ctx.auth.can_publish(&self.info, &p.topic)
        {
            debug!(client_id = %self.info.client_id, topic = %p.topic, "publish not authorised");
            self.ctx.metrics.dropped(DropReason::NotAuthorized);
            // v3 has no negative acknowledgement: acknowledge and drop.
            self.refuse_publish(p.qos, p.pkid, if v5 { 0x87 } else { 0 });
            return Step::Done;
        }
        if p.properties.payload_format_indicator == Some(1)
            && std::str::from_utf8(&p.payload).is_err()
        {
            self.refuse_publish(p.qos, p.pkid, 0x99);
            return Step::Done;
        }
        // Publishers repeat topics: reuse the last one's allocation.
        let topic = match &self.last_topic {
            Some(t) if **t == *p.topic => t.clone(),
            _ => {
                let t: Arc<str> = Arc::from(p.topic.as_str());
                self.last_topic = Some(t.clone());
                t
            }
        };
        let properties = MessageProperties::from_properties(&mut p.properties);
        Step::Publish {
            publication: Arc::new(Publication {
                topic,
                payload: p.payload,
                qos: p.qos,
                retain: p.retain,
                received: Publication::stamp(&properties),
                properties,
                origin: Some(self.info.client_id.clone()),
            }),
            pkid: p.pkid,
        }
    }

    /// Runs the publish hook, then hands the publication to the router with
    /// the acknowledgement it owes.
    async fn accept_publish(&mut self, publication: Arc<Publication>, pkid: u16) -> Option<Exit> {
        let qos = publication.qos;
        if let Some(hook) = self.ctx.hook.clone() {
            match hook.begin(&self.info, &publication).await {
                Ok(Some(pending)) => self.pending.push(pending),
                Ok(None) => {}
                Err(e) => {
                    warn!(client_id = %self.info.client_id, error = %e, "publish hook refused a message");
                    if !self.wire.is_v5() && qos != QoS::AtMostOnce {
                        return Some(Exit::Violation(0x80, e.to_string()));
                    }
                    self.refuse_publish(qos, pkid, 0x80);
                    return None;
                }
            }
        }
        let ack = if qos == QoS::AtMostOnce {
            None
        } else {
            if qos == QoS::ExactlyOnce {
                self.incoming_qos2.insert(pkid);
            }
            self.pending_acks += 1;
            Some(AckTo {
                mailbox: self.mailbox.clone(),
                conn_id: self.conn_id,
                pkid,
                qos,
            })
        };
        self.routed.push(Routed { publication, ack });
        None
    }

    fn on_subscribe(&mut self, s: v5::Subscribe) -> Step {
        let limits = &self.ctx.config.limits;
        let id = s.properties.subscription_identifiers.first().copied();
        let mut items = Vec::with_capacity(s.filters.len());
        for (raw, options) in s.filters {
            let sf = match SubscriptionFilter::parse(&raw) {
                Ok(sf) => sf,
                Err(_) => {
                    items.push(Err(0x8f));
                    continue;
                }
            };
            if sf.group.is_some() && options.no_local {
                return Step::Exit(Exit::Violation(
                    0x82,
                    "no-local on a shared subscription".into(),
                ));
            }
            if raw.len() > limits.max_topic_length
                || sf.filter.levels().count() > limits.max_topic_levels
            {
                items.push(Err(0x8f));
                continue;
            }
            if !self.info.token_allows_subscribe(&sf.filter)
                || !self.ctx.auth.can_subscribe(&self.info, &sf.filter)
            {
                info!(client_id = %self.info.client_id, filter = %raw, "subscription not authorised");
                items.push(Err(0x87));
                continue;
            }
            items.push(Ok((sf, SubEntry { options, id })));
        }
        Step::Route(RouterCmd::Subscribe {
            client_id: self.info.client_id.clone(),
            pkid: s.pkid,
            items,
        })
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    #[tokio::test]
    async fn an_idle_connection_future_stays_small() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let s = tokio::net::TcpStream::connect(l.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        let ctx = Arc::new(LinkContext {
            router: tx,
            config: Arc::new(Config::default()),
            metrics: Arc::new(Metrics::default()),
            auth: Arc::new(crate::hooks::StaticRules::default()),
            authn: Arc::new(Authenticator::new(
                plantd_shared::subject::Site::new("local").expect("valid site"),
                None,
                true,
            )),
            hook: None,
            shutdown: CancellationToken::new(),
        });
        let f = serve(s, Peer::default(), 1, ctx);
        let size = std::mem::size_of_val(&f);
        eprintln!("serve future: {size} bytes");
        // The idle-connection memory budget (< 4 KB per connection, see
        // docs/performance.md) leaves about 2.5 KB for the task.
        assert!(size < 2560, "per-connection task state is {size} bytes");
    }
}
