//! The router: the one owner of sessions, subscriptions and retained
//! messages, reached only through [`RouterCmd`]s on a bounded channel — no
//! lock is shared with the links.
//!
//! Fan-out never waits on a subscriber: each delivery is pushed into the
//! session's [`Mailbox`], whose policy drops or
//! refuses when full. Acknowledgements to publishers come back on the
//! publisher's control channel with the reason the routing produced
//! (0x10 no matching subscribers, 0x97 quota exceeded).
//!
//! With a session store, a QoS 1/2 delivery to a persistent session and the
//! acknowledgement of its message wait for the store's next commit: the
//! router collects them per turn ([`RouteBatch`]) and the store's writer
//! delivers and answers once they are on disk (see [`crate::store`]).

pub mod subscriptions;

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasherDefault;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;
use plantd_shared::topic::SubscriptionFilter;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::mailbox::{Mailbox, PushOutcome};
use crate::message::{Delivery, MessageProperties, Publication, Will};
use crate::metrics::{DropReason, Metrics};
use crate::protocol::v5::RetainHandling;
use crate::protocol::{QoS, ReasonCode};
use crate::retained::RetainedStore;
use crate::session::{Carry, OutFlight};
use crate::store::codec::{SessionState, now_unix_ms, raw_filter};
use crate::store::{Loaded, Op, Release, RouteBatch, SessionLog, StoreHandle, StoredDelivery};
use subscriptions::{Member, SubEntry, SubscriptionIndex};

pub use crate::mailbox::LinkCtl;

/// A link asking to start or resume a session.
#[derive(Debug)]
pub struct ConnectRequest {
    /// Identifies this connection among all connections of the client id.
    pub conn_id: u64,
    /// Client identifier (assigned by the link when the client sent none).
    pub client_id: Arc<str>,
    /// Discard any existing session.
    pub clean_start: bool,
    /// Seconds the session outlives the connection (`u32::MAX`: forever).
    pub session_expiry: u32,
    /// The router's answer.
    pub reply: oneshot::Sender<ConnectOutcome>,
}

/// The router's answer to a [`ConnectRequest`].
#[derive(Debug)]
pub enum ConnectOutcome {
    /// The session is ready.
    Accepted {
        /// The session's delivery queue.
        mailbox: Arc<Mailbox>,
        /// QoS state to resume (empty for a new session).
        carry: Carry,
        /// True when an existing session was resumed.
        session_present: bool,
        /// Where the link records its QoS progress, for a persistent
        /// session with a session store.
        log: Option<SessionLog>,
    },
    /// Refused with a v5 CONNACK reason code.
    Refused(u8),
}

/// One filter of a SUBSCRIBE, validated and authorised by the link, or the
/// reason code it was refused with.
pub type SubItem = Result<(SubscriptionFilter, SubEntry), u8>;

/// Where to send the acknowledgement of a QoS 1/2 publish.
#[derive(Debug)]
pub struct AckTo {
    /// The publisher's session mailbox.
    pub mailbox: Arc<Mailbox>,
    /// The publisher's connection (a later connection ignores the ack).
    pub conn_id: u64,
    /// Packet id to acknowledge.
    pub pkid: u16,
    /// QoS of the publish.
    pub qos: QoS,
}

/// One accepted publication on its way to the router.
#[derive(Debug)]
pub struct Routed {
    /// The message.
    pub publication: Arc<Publication>,
    /// Acknowledgement target for QoS 1/2.
    pub ack: Option<AckTo>,
}

/// Everything a link can ask of the router.
#[derive(Debug)]
pub enum RouterCmd {
    /// Start or resume a session.
    Connect(ConnectRequest),
    /// Route accepted publications (and acknowledge them), in order.
    Publish(Vec<Routed>),
    /// Add subscriptions.
    Subscribe {
        /// Session.
        client_id: Arc<str>,
        /// Packet id for the SUBACK.
        pkid: u16,
        /// The filters.
        items: Vec<SubItem>,
    },
    /// Remove subscriptions.
    Unsubscribe {
        /// Session.
        client_id: Arc<str>,
        /// Packet id for the UNSUBACK.
        pkid: u16,
        /// The filters, or the reason each was refused.
        filters: Vec<Result<SubscriptionFilter, u8>>,
    },
    /// A publication from the broker itself (a command from the cloud, a
    /// service request): routed like a client's, and `reply` hears the v5
    /// reason — 0 delivered or queued, 0x10 nobody subscribes, 0x97 every
    /// subscriber's queue was full.
    Inject {
        /// The message.
        publication: Arc<Publication>,
        /// Where the outcome goes.
        reply: Option<oneshot::Sender<u8>>,
    },
    /// Acknowledge a QoS 2 PUBLISH resent by a persistent session (its
    /// packet id is known): PUBREC 0, after any earlier acknowledgement of
    /// the session still waiting for the store.
    Ack(AckTo),
    /// A connection ended.
    Disconnected {
        /// Session.
        client_id: Arc<str>,
        /// Which connection.
        conn_id: u64,
        /// QoS state to keep for the next connection.
        carry: Box<Carry>,
        /// The will to publish (already decided by the link).
        will: Option<Box<Will>>,
        /// Session expiry in force at the end (DISCONNECT may change it).
        session_expiry: u32,
    },
}

/// A connected session's link.
#[derive(Debug)]
struct Conn {
    /// Connection id; control messages in the mailbox are tagged with it.
    id: u64,
}

/// The router's record of one session.
#[derive(Debug)]
struct SessionRecord {
    /// Delivery queue, kept while the client is away.
    mailbox: Arc<Mailbox>,
    /// The link while connected.
    conn: Option<Conn>,
    /// QoS state while disconnected.
    carry: Carry,
    /// Raw filter (with any `$share/` prefix) → parsed filter and options.
    subs: HashMap<String, (SubscriptionFilter, SubEntry)>,
    /// Session expiry interval in seconds.
    expiry: u32,
    /// Bumped on each connect, so that stale timers do nothing.
    generation: u64,
    /// A will waiting out its delay.
    pending_will: Option<Box<Will>>,
    /// Whether the session store holds a record of this session.
    persisted: bool,
    /// Wall-clock time (ms since the epoch) the session went offline, kept
    /// only with a session store (its expiry deadline counts from here).
    offline_since_ms: Option<u64>,
}

impl SessionRecord {
    /// What the session store keeps of this session (besides its queue).
    fn stored_state(&self) -> Box<SessionState> {
        Box::new(SessionState {
            expiry: self.expiry,
            disconnected_at_ms: self.offline_since_ms,
            next_pkid: self.carry.next_pkid,
            // Incoming QoS 2 ids and stored in-flight messages have tables
            // of their own, kept up to date as they change; the record
            // keeps only in-flight state that is not stored there.
            incoming_qos2: Vec::new(),
            outgoing: self
                .carry
                .outgoing
                .iter()
                .filter(|(_, f)| match f {
                    OutFlight::Publish(d) => d.stored.is_none(),
                    OutFlight::Released(stored) => stored.is_none(),
                })
                .cloned()
                .collect(),
            subs: self
                .subs
                .iter()
                .map(|(raw, (_, e))| (raw.clone(), *e))
                .collect(),
        })
    }
}

#[derive(Debug, Clone)]
enum TimerKind {
    WillDelay,
    SessionExpiry,
}

#[derive(Debug, Clone)]
struct Timer {
    kind: TimerKind,
    client_id: Arc<str>,
    generation: u64,
}

/// Per-client merge of overlapping subscriptions for one message.
#[derive(Debug, Default)]
struct Target {
    qos: QoS,
    retain_as_published: bool,
    subscription_ids: Vec<u32>,
}

/// The routing task's state.
pub struct Router {
    /// Commands from links.
    rx: mpsc::Receiver<RouterCmd>,
    /// Limits and settings.
    config: Arc<Config>,
    /// Counters.
    metrics: Arc<Metrics>,
    /// All sessions by client id.
    sessions: HashMap<Arc<str>, Box<SessionRecord>>,
    /// Subscriptions.
    index: SubscriptionIndex,
    /// Retained messages.
    retained: RetainedStore,
    /// Connects waiting for the session's previous link to close.
    pending: HashMap<Arc<str>, ConnectRequest>,
    /// Will delays and session expiries, by deadline.
    timers: BTreeMap<(Instant, u64), Timer>,
    /// Tie-breaker for timers with equal deadlines.
    timer_seq: u64,
    /// Reused per-message target map, keyed by the address of the
    /// session's client id (every subscription of a session shares it).
    scratch: Targets,
    /// Start time, for `$SYS/broker/uptime`.
    started: Instant,
    /// The durable session store (`--data-dir`).
    store: Option<StoreHandle>,
    /// Persisted sessions (connected or not) by mailbox address: client id
    /// and the sequence number of the next delivery stored for it.
    persisted: HashMap<usize, (Arc<str>, u64), BuildHasherDefault<PtrHasher>>,
    /// What this turn stores before it may deliver and answer (sent to the
    /// store at the end of the turn, see [`Router::flush_route`]).
    route: RouteBatch,
}

impl Router {
    /// A router reading `rx`.
    pub fn new(rx: mpsc::Receiver<RouterCmd>, config: Arc<Config>, metrics: Arc<Metrics>) -> Self {
        Router {
            rx,
            config,
            metrics,
            sessions: HashMap::new(),
            index: SubscriptionIndex::default(),
            retained: RetainedStore::default(),
            pending: HashMap::new(),
            timers: BTreeMap::new(),
            timer_seq: 0,
            scratch: HashMap::default(),
            started: Instant::now(),
            store: None,
            persisted: HashMap::default(),
            route: RouteBatch::default(),
        }
    }

    /// The broker's settings.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// Restores what the session store held — retained messages and
    /// persistent sessions (offline, with their subscriptions, queues and
    /// QoS state, their expiry counting from when they went offline) — and
    /// from now on mirrors every change of them into `store`.
    pub fn with_store(mut self, store: StoreHandle, loaded: Loaded) -> Self {
        for p in loaded.retained {
            self.retained.restore(p);
        }
        self.metrics
            .retained
            .store(self.retained.len() as u64, Relaxed);
        let now_ms = now_unix_ms();
        let now = Instant::now();
        for s in loaded.sessions {
            let id = s.client_id;
            let deadline = s.state.deadline_ms();
            let incoming_qos2 = s.state.incoming_set();
            let will = s.will;
            let SessionState {
                expiry,
                disconnected_at_ms,
                next_pkid,
                outgoing,
                subs: stored_subs,
                ..
            } = s.state;
            let mailbox = Arc::new(Mailbox::new(
                self.config.limits.max_queued_messages,
                self.metrics.clone(),
            ));
            let mut subs = HashMap::with_capacity(stored_subs.len());
            for (raw, entry) in stored_subs {
                match SubscriptionFilter::parse(&raw) {
                    Ok(sf) => {
                        let member = Member {
                            entry,
                            mailbox: mailbox.clone(),
                        };
                        if !self.index.insert(&id, &sf, member) {
                            self.metrics.subscriptions.fetch_add(1, Relaxed);
                        }
                        subs.insert(raw, (sf, entry));
                    }
                    Err(e) => {
                        warn!(client_id = %id, filter = %raw, error = %e, "stored subscription dropped: invalid filter");
                    }
                }
            }
            for d in s.queue {
                mailbox.push(d);
            }
            if let Some(deadline) = deadline {
                let left = Duration::from_millis(deadline.saturating_sub(now_ms));
                self.add_timer(now + left, TimerKind::SessionExpiry, &id, 0);
            }
            self.persisted
                .insert(mailbox_key(&mailbox), (id.clone(), s.next_seq));
            let pending_will = will.map(|(w, fire_at_ms)| {
                let left = Duration::from_millis(fire_at_ms.saturating_sub(now_ms));
                self.add_timer(now + left, TimerKind::WillDelay, &id, 0);
                Box::new(w)
            });
            let rec = SessionRecord {
                mailbox,
                conn: None,
                carry: Carry {
                    outgoing,
                    incoming_qos2,
                    next_pkid,
                },
                subs,
                expiry,
                generation: 0,
                pending_will,
                persisted: true,
                offline_since_ms: disconnected_at_ms,
            };
            self.sessions.insert(id, Box::new(rec));
        }
        self.metrics
            .sessions
            .store(self.sessions.len() as u64, Relaxed);
        self.store = Some(store);
        for (id, will) in loaded.expired_wills {
            self.publish(Arc::new(will.into_publication(Some(id))));
        }
        self
    }

    /// Runs until every sender of the command channel is dropped.
    pub async fn run(mut self) {
        let mut batch = Vec::with_capacity(256);
        let sys_every = Duration::from_secs(self.config.sys_interval_secs.max(1));
        // Statistics exist (retained) from the start, then refresh.
        self.publish_sys();
        self.flush_route();
        let mut sys = tokio::time::interval_at(tokio::time::Instant::now() + sys_every, sys_every);
        sys.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next_timer = self.timers.first_key_value().map(|((t, _), _)| *t);
            tokio::select! {
                n = self.rx.recv_many(&mut batch, 256) => {
                    if n == 0 {
                        break;
                    }
                    for cmd in batch.drain(..) {
                        self.handle(cmd);
                    }
                }
                () = sleep_until_opt(next_timer) => self.fire_timers(),
                _ = sys.tick() => self.publish_sys(),
            }
            self.flush_route();
        }
        if let Some(store) = self.store.take() {
            // Every link has handed its session back: commit the last
            // changes before the broker reports it has stopped.
            store.close().await;
            info!("session store flushed and closed");
        }
        debug!("router stopped");
    }

    fn handle(&mut self, cmd: RouterCmd) {
        match cmd {
            RouterCmd::Connect(req) => self.connect(req),
            RouterCmd::Publish(batch) => {
                for Routed { publication, ack } in batch {
                    let before = self.route.changes();
                    let reason = self.publish(publication);
                    let Some(ack) = ack else { continue };
                    // A persistent publisher's QoS 2 packet id is stored
                    // with the message, so that a PUBLISH resent after a
                    // crash is recognised as the same one.
                    if ack.qos == QoS::ExactlyOnce
                        && !ReasonCode::is_error_code(reason)
                        && self.store.is_some()
                        && let Some((id, _)) = self.persisted.get(&mailbox_key(&ack.mailbox))
                    {
                        self.route.incoming.push((id.clone(), ack.pkid));
                    }
                    self.answer_publisher(before, ack, reason);
                }
            }
            RouterCmd::Ack(ack) => {
                let before = self.route.changes();
                self.answer_publisher(before, ack, ReasonCode::Success.code());
            }
            RouterCmd::Inject { publication, reply } => {
                let before = self.route.changes();
                let reason = self.publish(publication);
                if let Some(reply) = reply {
                    let r = Release::Reply { reply, reason };
                    if self.route.changes() > before {
                        self.route.releases.push(r);
                    } else {
                        r.send();
                    }
                }
            }
            RouterCmd::Subscribe {
                client_id,
                pkid,
                items,
            } => self.subscribe(&client_id, pkid, items),
            RouterCmd::Unsubscribe {
                client_id,
                pkid,
                filters,
            } => self.unsubscribe(&client_id, pkid, filters),
            RouterCmd::Disconnected {
                client_id,
                conn_id,
                carry,
                will,
                session_expiry,
            } => self.disconnected(client_id, conn_id, *carry, will.map(|w| *w), session_expiry),
        }
    }

    fn connect(&mut self, req: ConnectRequest) {
        if let Some(rec) = self.sessions.get(&req.client_id)
            && let Some(conn) = &rec.conn
        {
            info!(client_id = %req.client_id, "session taken over by a new connection");
            rec.mailbox.push_ctl(
                conn.id,
                LinkCtl::Kick {
                    reason: ReasonCode::SessionTakenOver.code(),
                },
            );
            if let Some(older) = self.pending.insert(req.client_id.clone(), req) {
                let _ = older
                    .reply
                    .send(ConnectOutcome::Refused(ReasonCode::SessionTakenOver.code()));
            }
            return;
        }
        self.complete_connect(req);
    }

    fn complete_connect(&mut self, req: ConnectRequest) {
        // A resumed session keeps its key: the subscription index holds that
        // very `Arc`, and routing tells sessions apart by its address.
        let mut id = req.client_id.clone();
        let existing = self.sessions.remove_entry(&id);
        let (mut rec, session_present) = match existing {
            Some((key, mut old)) if !req.clean_start => {
                // Resumed before its will delay ran out: the will is not sent.
                if old.pending_will.take().is_some()
                    && old.persisted
                    && let Some(store) = &self.store
                {
                    store.send(Op::WillDelete(key.clone()));
                }
                id = key;
                (old, true)
            }
            other => {
                if let Some((key, old)) = other {
                    self.discard(&key, *old);
                }
                let rec = Box::new(SessionRecord {
                    mailbox: Arc::new(Mailbox::new(
                        self.config.limits.max_queued_messages,
                        self.metrics.clone(),
                    )),
                    conn: None,
                    carry: Carry::default(),
                    subs: HashMap::new(),
                    expiry: 0,
                    generation: 0,
                    pending_will: None,
                    persisted: false,
                    offline_since_ms: None,
                });
                (rec, false)
            }
        };
        rec.generation += 1;
        rec.expiry = req.session_expiry;
        let carry = std::mem::take(&mut rec.carry);
        let log = match &self.store {
            Some(store) if rec.expiry > 0 => {
                store.session_log(id.clone(), rec.mailbox.clone(), req.conn_id)
            }
            _ => None,
        };
        let outcome = ConnectOutcome::Accepted {
            mailbox: rec.mailbox.clone(),
            carry,
            session_present,
            log,
        };
        match req.reply.send(outcome) {
            Ok(()) => {
                rec.conn = Some(Conn { id: req.conn_id });
                rec.mailbox.set_online(true);
                rec.offline_since_ms = None;
                if let Some(store) = &self.store {
                    // A persistent session stays in the store while it is
                    // connected: its messages (queued and in flight) stay
                    // there until the client acknowledges them.
                    let key = mailbox_key(&rec.mailbox);
                    if rec.expiry > 0 {
                        rec.persisted = true;
                        self.persisted.entry(key).or_insert_with(|| (id.clone(), 0));
                        store.send(Op::SessionPut {
                            client_id: id.clone(),
                            state: rec.stored_state(),
                        });
                    } else {
                        self.persisted.remove(&key);
                        if rec.persisted {
                            rec.persisted = false;
                            store.send(Op::SessionDelete(id.clone()));
                        }
                    }
                }
            }
            Err(ConnectOutcome::Accepted { carry, .. }) => {
                // The link went away before the answer: keep the state.
                rec.carry = carry;
            }
            Err(ConnectOutcome::Refused(_)) => {}
        }
        self.sessions.insert(id, rec);
        self.metrics
            .sessions
            .store(self.sessions.len() as u64, Relaxed);
    }

    /// Ends a session: its will (if waiting) is published, its subscriptions
    /// and queue are dropped.
    fn discard(&mut self, id: &Arc<str>, mut rec: SessionRecord) {
        if let Some(store) = &self.store {
            self.persisted.remove(&mailbox_key(&rec.mailbox));
            if rec.persisted {
                store.send(Op::SessionDelete(id.clone()));
            }
        }
        for (_, (sf, _)) in rec.subs.drain() {
            if self.index.remove(id, &sf) {
                self.metrics.subscriptions.fetch_sub(1, Relaxed);
            }
        }
        rec.mailbox.clear();
        if let Some(will) = rec.pending_will.take() {
            self.publish(Arc::new((*will).into_publication(Some(id.clone()))));
        }
    }

    fn disconnected(
        &mut self,
        id: Arc<str>,
        conn_id: u64,
        carry: Carry,
        will: Option<Will>,
        expiry: u32,
    ) {
        let Some(rec) = self.sessions.get_mut(&id) else {
            return;
        };
        if rec.conn.as_ref().map(|c| c.id) != Some(conn_id) {
            return;
        }
        rec.conn = None;
        rec.mailbox.set_online(false);
        rec.carry = carry;
        rec.expiry = expiry;
        let generation = rec.generation;
        if let Some(req) = self.pending.remove(&id) {
            // Takeover: the new connection resumes (or replaces) the session
            // at once, so only an undelayed will is sent.
            if let Some(w) = will
                && w.delay_secs == 0
            {
                self.publish(Arc::new(w.into_publication(Some(id.clone()))));
            }
            self.complete_connect(req);
            return;
        }
        let now = Instant::now();
        if let Some(w) = will {
            if w.delay_secs == 0 || expiry == 0 {
                self.publish(Arc::new(w.into_publication(Some(id.clone()))));
            } else {
                let delay = w.delay_secs.min(expiry);
                if let Some(rec) = self.sessions.get_mut(&id) {
                    rec.pending_will = Some(Box::new(w));
                }
                self.add_timer(
                    now + Duration::from_secs(u64::from(delay)),
                    TimerKind::WillDelay,
                    &id,
                    generation,
                );
            }
        }
        if expiry == 0 {
            if let Some(rec) = self.sessions.remove(&id) {
                self.discard(&id, *rec);
            }
            self.metrics
                .sessions
                .store(self.sessions.len() as u64, Relaxed);
        } else {
            self.persist_offline(&id);
            if expiry != u32::MAX {
                self.add_timer(
                    now + Duration::from_secs(u64::from(expiry)),
                    TimerKind::SessionExpiry,
                    &id,
                    generation,
                );
            }
        }
    }

    /// Records in the store that a session went offline: its record (the
    /// offline time its expiry counts from, the next packet id) and a will
    /// waiting out its delay. Its messages are in the store already.
    fn persist_offline(&mut self, id: &Arc<str>) {
        let Some(store) = &self.store else { return };
        let Some(rec) = self.sessions.get_mut(id) else {
            return;
        };
        rec.persisted = true;
        rec.offline_since_ms = Some(now_unix_ms());
        self.persisted
            .entry(mailbox_key(&rec.mailbox))
            .or_insert_with(|| (id.clone(), 0));
        store.send(Op::SessionPut {
            client_id: id.clone(),
            state: rec.stored_state(),
        });
        if let Some(w) = &rec.pending_will {
            let delay = u64::from(w.delay_secs.min(rec.expiry));
            store.send(Op::WillPut {
                client_id: id.clone(),
                will: w.clone(),
                fire_at_ms: now_unix_ms().saturating_add(delay * 1000),
            });
        }
    }

    /// Queues `d` for the session whose mailbox this is. A QoS 1/2
    /// delivery for a persisted session takes a slot in the mailbox now and
    /// goes through the store: it reaches the mailbox once committed
    /// (see [`Router::flush_route`]).
    fn deliver(&mut self, mailbox: &Arc<Mailbox>, mut d: Delivery) -> PushOutcome {
        if d.qos != QoS::AtMostOnce
            && self.store.is_some()
            && let Some((id, seq)) = self.persisted.get_mut(&mailbox_key(mailbox))
        {
            let outcome = mailbox.reserve();
            if outcome != PushOutcome::Refused {
                d.stored = Some(*seq);
                *seq += 1;
                self.route.deliveries.push(StoredDelivery {
                    client_id: id.clone(),
                    mailbox: mailbox.clone(),
                    delivery: d,
                });
            }
            return outcome;
        }
        mailbox.push(d)
    }

    /// Sends a publisher its PUBACK/PUBREC now, or holds it until this
    /// turn's changes are committed: when its message stored something
    /// (`before` is the number of changes before it was routed), or when an
    /// earlier answer to the same publisher is held (PUBACKs keep the order
    /// of the PUBLISHes; other publishers are not held up).
    fn answer_publisher(&mut self, before: usize, ack: AckTo, reason: u8) {
        if self.route.changes() > before || ack.mailbox.holds_acks() {
            ack.mailbox.hold_ack();
            self.route.releases.push(Release::Ack {
                ack,
                reason,
                held: true,
            });
        } else {
            Release::Ack {
                ack,
                reason,
                held: false,
            }
            .send();
        }
    }

    /// Hands this turn's stored deliveries, QoS 2 ids and held answers to
    /// the store, which commits them, then delivers and answers.
    fn flush_route(&mut self) {
        if self.route.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.route);
        match &self.store {
            Some(store) => store.route(batch),
            // Without a store nothing is ever held (`deliver` and
            // `answer_publisher` only hold with one); release what is there.
            None => {
                for d in batch.deliveries {
                    d.mailbox.push_reserved(d.delivery);
                }
                for r in batch.releases {
                    r.send();
                }
            }
        }
    }

    fn add_timer(&mut self, at: Instant, kind: TimerKind, id: &Arc<str>, generation: u64) {
        self.timer_seq += 1;
        self.timers.insert(
            (at, self.timer_seq),
            Timer {
                kind,
                client_id: id.clone(),
                generation,
            },
        );
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let t = entry.remove();
            let Some(rec) = self.sessions.get_mut(&t.client_id) else {
                continue;
            };
            if rec.generation != t.generation || rec.conn.is_some() {
                continue;
            }
            match t.kind {
                TimerKind::WillDelay => {
                    if let Some(w) = rec.pending_will.take() {
                        if rec.persisted
                            && let Some(store) = &self.store
                        {
                            store.send(Op::WillDelete(t.client_id.clone()));
                        }
                        self.publish(Arc::new((*w).into_publication(Some(t.client_id.clone()))));
                    }
                }
                TimerKind::SessionExpiry => {
                    debug!(client_id = %t.client_id, "session expired");
                    if let Some(rec) = self.sessions.remove(&t.client_id) {
                        self.discard(&t.client_id, *rec);
                    }
                    self.metrics
                        .sessions
                        .store(self.sessions.len() as u64, Relaxed);
                }
            }
        }
    }

    /// Stores (if retained) and fans out a publication; returns the v5
    /// reason code for the publisher's acknowledgement.
    fn publish(&mut self, p: Arc<Publication>) -> u8 {
        if p.retain {
            let kept = self.retained.apply(&p);
            // `$SYS/` statistics are regenerated at start, not stored.
            if let Some(store) = &self.store
                && !p.topic.starts_with("$SYS/")
            {
                store.send(match kept {
                    Some(kept) => Op::RetainedPut(kept),
                    None => Op::RetainedDelete(p.topic.clone()),
                });
            }
            self.metrics
                .retained
                .store(self.retained.len() as u64, Relaxed);
        }
        let mut targets = std::mem::take(&mut self.scratch);
        let origin = p.origin.as_deref();
        self.index.for_each_match(&p.topic, |subs| {
            for (client, m) in &subs.clients {
                if m.entry.options.no_local && origin == Some(&**client) {
                    continue;
                }
                merge(&mut targets, m);
            }
            for group in subs.groups.values_mut() {
                let n = group.members.len();
                if n == 0 {
                    continue;
                }
                // Next member in turn, preferring connected ones.
                let start = group.next % n;
                let pick = (0..n)
                    .map(|i| (start + i) % n)
                    .find(|&i| group.members[i].1.mailbox.is_online())
                    .unwrap_or(start);
                group.next = pick + 1;
                merge(&mut targets, &group.members[pick].1);
            }
        });
        let matched = targets.len();
        let mut refused = 0;
        // Offline sessions may keep a message for long: they get a copy that
        // owns its bytes, made once per message.
        let mut compact: Option<Arc<Publication>> = None;
        for (_, (mailbox, t)) in targets.drain() {
            let qos = p.qos.min(t.qos);
            let online = mailbox.is_online();
            if qos == QoS::AtMostOnce && !self.config.limits.queue_qos0_offline && !online {
                self.metrics.dropped(DropReason::Offline);
                continue;
            }
            let publication = if online {
                p.clone()
            } else {
                compact
                    .get_or_insert_with(|| Arc::new(p.compacted()))
                    .clone()
            };
            let delivery = Delivery {
                publication,
                qos,
                retain: p.retain && t.retain_as_published,
                subscription_ids: t.subscription_ids,
                stored: None,
            };
            // QoS 1/2 deliveries of persisted sessions go through the
            // store (QoS 0 ones are not persisted).
            if self.deliver(&mailbox, delivery) == PushOutcome::Refused {
                refused += 1;
            }
        }
        self.scratch = targets;
        if matched == 0 {
            ReasonCode::NoMatchingSubscribers.code()
        } else if refused == matched {
            ReasonCode::QuotaExceeded.code()
        } else {
            ReasonCode::Success.code()
        }
    }

    fn subscribe(&mut self, id: &Arc<str>, pkid: u16, items: Vec<SubItem>) {
        // Index under the session's own key (see `complete_connect`).
        let Some(key) = self.sessions.get_key_value(id).map(|(k, _)| k.clone()) else {
            return;
        };
        let id = &key;
        let Some(rec) = self.sessions.get_mut(id) else {
            return;
        };
        let mut reasons = Vec::with_capacity(items.len());
        let mut retained = Vec::new();
        for item in items {
            let (sf, entry) = match item {
                Ok(x) => x,
                Err(code) => {
                    reasons.push(code);
                    continue;
                }
            };
            let raw = raw_filter(&sf);
            if !rec.subs.contains_key(&raw)
                && rec.subs.len() >= self.config.limits.max_subscriptions_per_client
            {
                reasons.push(ReasonCode::QuotaExceeded.code());
                continue;
            }
            let member = Member {
                entry,
                mailbox: rec.mailbox.clone(),
            };
            let existed = self.index.insert(id, &sf, member);
            if !existed {
                self.metrics.subscriptions.fetch_add(1, Relaxed);
            }
            reasons.push(ReasonCode::granted(entry.options.qos).code());
            let send_retained = sf.group.is_none()
                && match entry.options.retain_handling {
                    RetainHandling::OnSubscribe => true,
                    RetainHandling::OnNewSubscription => !existed,
                    RetainHandling::Never => false,
                };
            if send_retained {
                for p in self.retained.matching(sf.filter.as_str()) {
                    retained.push(Delivery {
                        qos: p.qos.min(entry.options.qos),
                        publication: p,
                        retain: true,
                        subscription_ids: entry.id.into_iter().collect(),
                        stored: None,
                    });
                }
            }
            rec.subs.insert(raw, (sf, entry));
        }
        if rec.persisted
            && let Some(store) = &self.store
        {
            store.send(Op::SessionPut {
                client_id: id.clone(),
                state: rec.stored_state(),
            });
        }
        if let Some(conn) = &rec.conn {
            rec.mailbox
                .push_ctl(conn.id, LinkCtl::SubAck { pkid, reasons });
        }
        let mailbox = rec.mailbox.clone();
        for d in retained {
            self.deliver(&mailbox, d);
        }
    }

    fn unsubscribe(
        &mut self,
        id: &Arc<str>,
        pkid: u16,
        filters: Vec<Result<SubscriptionFilter, u8>>,
    ) {
        let Some(rec) = self.sessions.get_mut(id) else {
            return;
        };
        let mut reasons = Vec::with_capacity(filters.len());
        for f in filters {
            match f {
                Err(code) => reasons.push(code),
                Ok(sf) => {
                    let raw = raw_filter(&sf);
                    if rec.subs.remove(&raw).is_some() {
                        if self.index.remove(id, &sf) {
                            self.metrics.subscriptions.fetch_sub(1, Relaxed);
                        }
                        reasons.push(ReasonCode::Success.code());
                    } else {
                        reasons.push(ReasonCode::NoSubscriptionExisted.code());
                    }
                }
            }
        }
        if rec.persisted
            && let Some(store) = &self.store
        {
            store.send(Op::SessionPut {
                client_id: id.clone(),
                state: rec.stored_state(),
            });
        }
        if let Some(conn) = &rec.conn {
            rec.mailbox
                .push_ctl(conn.id, LinkCtl::UnsubAck { pkid, reasons });
        }
    }

    /// Publishes broker statistics as retained `$SYS/broker/...` messages.
    fn publish_sys(&mut self) {
        let m = &self.metrics;
        let stats: [(&str, u64); 9] = [
            ("$SYS/broker/uptime", self.started.elapsed().as_secs()),
            ("$SYS/broker/clients/connected", m.connections.load(Relaxed)),
            ("$SYS/broker/clients/total", self.sessions.len() as u64),
            (
                "$SYS/broker/subscriptions/count",
                m.subscriptions.load(Relaxed),
            ),
            (
                "$SYS/broker/retained messages/count",
                m.retained.load(Relaxed),
            ),
            (
                "$SYS/broker/messages/received",
                m.messages_in.iter().map(|c| c.load(Relaxed)).sum(),
            ),
            (
                "$SYS/broker/messages/sent",
                m.messages_out.iter().map(|c| c.load(Relaxed)).sum(),
            ),
            ("$SYS/broker/bytes/received", m.bytes_in.load(Relaxed)),
            ("$SYS/broker/bytes/sent", m.bytes_out.load(Relaxed)),
        ];
        for (topic, v) in stats {
            self.publish(Arc::new(Publication {
                topic: Arc::from(topic),
                payload: Bytes::from(v.to_string()),
                qos: QoS::AtMostOnce,
                retain: true,
                properties: MessageProperties::default(),
                origin: None,
                received: None,
            }));
        }
    }
}

/// Per-message targets keyed by the address of the session's mailbox (one
/// per session, whichever filters matched).
type Targets = HashMap<usize, (Arc<Mailbox>, Target), BuildHasherDefault<PtrHasher>>;

/// A session's identity for the offline map: its mailbox's address.
fn mailbox_key(mailbox: &Arc<Mailbox>) -> usize {
    Arc::as_ptr(mailbox) as usize
}

fn merge(targets: &mut Targets, m: &Member) {
    let key = Arc::as_ptr(&m.mailbox) as usize;
    let (_, t) = targets
        .entry(key)
        .or_insert_with(|| (m.mailbox.clone(), Target::default()));
    t.qos = t.qos.max(m.entry.options.qos);
    t.retain_as_published |= m.entry.options.retain_as_published;
    if let Some(id) = m.entry.id {
        t.subscription_ids.push(id);
    }
}

/// Hashes a pointer-sized key with one multiplication (the keys are
/// addresses, already unique; SipHash would be wasted on them).
#[derive(Debug, Default)]
struct PtrHasher(u64);

impl std::hash::Hasher for PtrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 =
                (self.0.rotate_left(5) ^ u64::from(*b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
