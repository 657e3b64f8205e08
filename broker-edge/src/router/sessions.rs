//! Session lifecycle: connect (new, resumed or taken over), disconnect
//! (will now or after its delay, session kept or ended) and discard.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use plantd_shared::topic::SubscriptionFilter;
use tracing::info;

use super::subscriptions::SubEntry;
use super::timers::TimerKind;
use super::{ConnectOutcome, ConnectRequest, LinkCtl, Router};
use crate::mailbox::Mailbox;
use crate::message::Will;
use crate::protocol::ReasonCode;
use crate::session::Carry;

/// A connected session's link.
#[derive(Debug)]
pub(super) struct Conn {
    /// Connection id; control messages in the mailbox are tagged with it.
    pub(super) id: u64,
}

/// The router's record of one session.
#[derive(Debug)]
pub(super) struct SessionRecord {
    /// Delivery queue, kept while the client is away.
    pub(super) mailbox: Arc<Mailbox>,
    /// The link while connected.
    pub(super) conn: Option<Conn>,
    /// QoS state while disconnected, boxed and only when there is some
    /// (a connected session's is with its link): an idle session keeps a
    /// pointer, not an empty `Carry` (issue 12).
    pub(super) carry: Option<Box<Carry>>,
    /// Raw filter (with any `$share/` prefix) → parsed filter and options.
    pub(super) subs: HashMap<String, (SubscriptionFilter, SubEntry)>,
    /// Session expiry interval in seconds.
    pub(super) expiry: u32,
    /// Bumped on each connect, so that stale timers do nothing.
    pub(super) generation: u64,
    /// A will waiting out its delay.
    pub(super) pending_will: Option<Box<Will>>,
    /// Whether the session store holds a record of this session.
    pub(super) persisted: bool,
    /// Wall-clock time (ms since the epoch) the session went offline, kept
    /// only with a session store (its expiry deadline counts from here).
    pub(super) offline_since_ms: Option<u64>,
}

impl SessionRecord {
    /// Keeps a closed link's QoS state for the next connection; a state
    /// with nothing to resume (no message in flight either way, packet ids
    /// from the start) is not kept.
    pub(super) fn keep_carry(&mut self, carry: Carry) {
        let resumes =
            !carry.outgoing.is_empty() || !carry.incoming_qos2.is_empty() || carry.next_pkid > 1;
        self.carry = resumes.then(|| Box::new(carry));
    }
}

impl Router {
    /// A link asks for a session: a session still connected elsewhere is
    /// taken over (its link is kicked with Session taken over and the
    /// request waits in `pending` until that link has handed the session
    /// back); otherwise the request completes at once.
    pub(super) fn connect(&mut self, req: ConnectRequest) {
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
                if old.pending_will.take().is_some() {
                    self.persist.will_gone(&key, old.persisted);
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
                    carry: None,
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
        let carry = rec.carry.take().map(|c| *c).unwrap_or_default();
        let log = self.persist.session_log(&id, &rec, req.conn_id);
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
                if self.closing {
                    rec.mailbox.push_ctl(req.conn_id, LinkCtl::Shutdown);
                }
                rec.offline_since_ms = None;
                self.persist.connected(&id, &mut rec);
            }
            Err(ConnectOutcome::Accepted { carry, .. }) => {
                // The link went away before the answer: keep the state.
                rec.keep_carry(carry);
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
    pub(super) fn discard(&mut self, id: &Arc<str>, mut rec: SessionRecord) {
        self.persist.discarded(id, &rec);
        for (_, (sf, _)) in rec.subs.drain() {
            if self.index.remove(id, &sf) {
                self.metrics.subscriptions.fetch_sub(1, Relaxed);
            }
        }
        rec.mailbox.clear();
        if let Some(will) = rec.pending_will.take() {
            self.publish(Arc::new(
                (*will).into_publication(Some(id.clone()), &self.config.clock),
            ));
        }
    }

    /// A link ended: the session keeps the link's QoS state and the expiry
    /// in force at the end; the will is published now, after its delay, or
    /// (with a takeover waiting) only when undelayed.
    pub(super) fn disconnected(
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
        rec.keep_carry(carry);
        rec.expiry = expiry;
        let generation = rec.generation;
        if let Some(req) = self.pending.remove(&id) {
            // Takeover: the new connection resumes (or replaces) the session
            // at once, so only an undelayed will is sent — unless the
            // session ended with this connection (expiry 0, possibly set
            // by its DISCONNECT): then the will is due and the new
            // connection finds no session to resume.
            if let Some(w) = will
                && (w.delay_secs == 0 || expiry == 0)
            {
                self.publish(Arc::new(
                    w.into_publication(Some(id.clone()), &self.config.clock),
                ));
            }
            if expiry == 0
                && let Some(rec) = self.sessions.remove(&id)
            {
                self.discard(&id, *rec);
            }
            self.complete_connect(req);
            return;
        }
        let now = self.config.clock.read();
        if let Some(w) = will {
            if w.delay_secs == 0 || expiry == 0 {
                self.publish(Arc::new(
                    w.into_publication(Some(id.clone()), &self.config.clock),
                ));
            } else {
                let delay = w.delay_secs.min(expiry);
                if let Some(rec) = self.sessions.get_mut(&id) {
                    rec.pending_will = Some(Box::new(w));
                }
                self.timers.add(
                    now.at + Duration::from_secs(u64::from(delay)),
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
            if let Some(rec) = self.sessions.get_mut(&id) {
                self.persist.went_offline(&id, rec, now.unix_ms);
            }
            if expiry != u32::MAX {
                self.timers.add(
                    now.at + Duration::from_secs(u64::from(expiry)),
                    TimerKind::SessionExpiry,
                    &id,
                    generation,
                );
            }
        }
    }
}
