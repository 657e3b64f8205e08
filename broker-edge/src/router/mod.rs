//! The router: the one owner of sessions, subscriptions and retained
//! messages, reached only through [`RouterCmd`]s on a bounded channel — no
//! lock is shared with the links.
//!
//! Fan-out never waits on a subscriber: each delivery is pushed into the
//! session's [`Mailbox`], whose policy drops or refuses when full.
//! Acknowledgements to publishers come back on the publisher's control
//! channel with the reason the routing produced (No matching subscribers,
//! Quota exceeded).
//!
//! | file | what it does |
//! |---|---|
//! | `mod.rs` | the commands links send, the routing task's loop |
//! | `sessions.rs` | session lifecycle: connect, takeover, disconnect, discard |
//! | `fanout.rs` | one publication to every matching session |
//! | `subscribe.rs` | a session's SUBSCRIBE / UNSUBSCRIBE, retained messages on subscribe |
//! | `recheck.rs` | subscriptions no longer authorised after a re-authentication or a resumption, removed |
//! | [`subscriptions`] | the subscription index (filters → sessions, shared groups) |
//! | `timers.rs` | will delays and session expiries |
//! | `sys.rs` | `$SYS/broker/...` statistics |
//! | `persistence.rs` | everything mirrored into the session store, and the restore from it |
//!
//! With a session store, a QoS 1/2 delivery to a persistent session and the
//! acknowledgement of its message wait for the store's next commit (see
//! `persistence.rs` and [`crate::store`]).

mod fanout;
mod persistence;
mod recheck;
mod sessions;
mod subscribe;
pub mod subscriptions;
mod sys;
mod timers;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use plantd_shared::topic::SubscriptionFilter;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::config::Config;
use crate::mailbox::Mailbox;
use crate::message::{Publication, Will};
use crate::metrics::Metrics;
use crate::protocol::{QoS, ReasonCode};
use crate::retained::RetainedStore;
use crate::session::Carry;
use crate::store::SessionLog;
use fanout::Targets;
use persistence::Persistence;
use sessions::SessionRecord;
use subscriptions::{SubEntry, SubscriptionIndex};
use timers::{Timers, sleep_until_opt};

pub use crate::mailbox::LinkCtl;
pub use recheck::SubscriptionCheck;

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
    /// The permissions of a connection changed (re-authentication) or
    /// now apply to a resumed session: remove the session's subscriptions
    /// `check` does not allow.
    Recheck {
        /// Session.
        client_id: Arc<str>,
        /// Which connection (a newer one is left alone).
        conn_id: u64,
        /// The permissions in force.
        check: SubscriptionCheck,
        /// Answered with whether any subscription was removed.
        removed: Option<oneshot::Sender<bool>>,
    },
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
    timers: Timers,
    /// Reused per-message target map, keyed by the address of the
    /// session's mailbox (every subscription of a session shares it).
    scratch: Targets,
    /// Start time, for `$SYS/broker/uptime`.
    started: Instant,
    /// The session store's side of every change (a pass-through without
    /// a store).
    persist: Persistence,
    /// The broker is shutting down: every link connected now or admitted
    /// later is told to close ([`LinkCtl::Shutdown`]).
    closing: bool,
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
            timers: Timers::default(),
            scratch: HashMap::default(),
            started: Instant::now(),
            persist: Persistence::default(),
            closing: false,
        }
    }

    /// The broker's settings.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// Runs until every sender of the command channel is dropped. When
    /// `shutdown` is cancelled, every connected link is told to close
    /// through its mailbox (and so is any link admitted after that): a
    /// running link waits on no shutdown signal of its own, which keeps
    /// an idle connection small (issue 12,
    /// `docs/decisions/0052-idle-link-wait.md`).
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut batch = Vec::with_capacity(256);
        let sys_every = Duration::from_secs(self.config.sys_interval_secs.max(1));
        // Statistics exist (retained) from the start, then refresh.
        self.publish_sys();
        self.persist.flush();
        let mut sys = tokio::time::interval_at(tokio::time::Instant::now() + sys_every, sys_every);
        sys.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next_timer = self.timers.next_deadline();
            tokio::select! {
                n = self.rx.recv_many(&mut batch, 256) => {
                    if n == 0 {
                        break;
                    }
                    for cmd in batch.drain(..) {
                        self.handle(cmd);
                    }
                }
                () = sleep_until_opt(&self.config.clock, next_timer) => self.fire_timers(),
                _ = sys.tick() => self.publish_sys(),
                () = shutdown.cancelled(), if !self.closing => self.close_links(),
            }
            self.persist.flush();
        }
        // Every link has handed its session back: commit the last changes
        // before the broker reports it has stopped.
        if self.persist.close().await {
            info!("session store flushed and closed");
        }
        debug!("router stopped");
    }

    /// Tells every connected link to close (broker shutdown); links
    /// admitted from now on are told as soon as they are
    /// (`sessions::complete_connect`).
    fn close_links(&mut self) {
        self.closing = true;
        for rec in self.sessions.values() {
            if let Some(conn) = &rec.conn {
                rec.mailbox.push_ctl(conn.id, LinkCtl::Shutdown);
            }
        }
    }

    fn handle(&mut self, cmd: RouterCmd) {
        match cmd {
            RouterCmd::Connect(req) => self.connect(req),
            RouterCmd::Publish(batch) => {
                for Routed { publication, ack } in batch {
                    let before = self.persist.changes();
                    let reason = self.publish(publication);
                    let Some(ack) = ack else { continue };
                    if !ReasonCode::is_error_code(reason) {
                        self.persist.incoming_qos2(&ack);
                    }
                    self.persist.answer_publisher(before, ack, reason);
                }
            }
            RouterCmd::Ack(ack) => {
                let before = self.persist.changes();
                self.persist
                    .answer_publisher(before, ack, ReasonCode::Success.code());
            }
            RouterCmd::Inject { publication, reply } => {
                let before = self.persist.changes();
                let reason = self.publish(publication);
                if let Some(reply) = reply {
                    self.persist.answer_injector(before, reply, reason);
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
            RouterCmd::Recheck {
                client_id,
                conn_id,
                check,
                removed,
            } => {
                let any = self.recheck_subscriptions(&client_id, conn_id, &check);
                if let Some(tx) = removed {
                    let _ = tx.send(any);
                }
            }
            RouterCmd::Disconnected {
                client_id,
                conn_id,
                carry,
                will,
                session_expiry,
            } => self.disconnected(client_id, conn_id, *carry, will.map(|w| *w), session_expiry),
        }
    }
}
