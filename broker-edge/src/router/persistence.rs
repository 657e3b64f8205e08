//! Everything the router mirrors into the session store (`--data-dir`,
//! [`crate::store`]) goes through [`Persistence`]; the rest of the router
//! never touches the store.
//!
//! Without a store every method is a pass-through: deliveries go straight
//! into mailboxes, answers are sent at once and nothing is recorded. With
//! one, a QoS 1/2 delivery to a persistent session and the acknowledgement
//! of its message wait for the store's next commit: they are collected per
//! router turn ([`RouteBatch`]) and handed to the store's writer by
//! [`Persistence::flush`], which delivers and answers once they are on disk.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use plantd_shared::topic::SubscriptionFilter;
use tokio::sync::oneshot;
use tracing::warn;

use super::fanout::{PtrHasher, mailbox_key};
use super::sessions::SessionRecord;
use super::subscriptions::Member;
use super::timers::TimerKind;
use super::{AckTo, Router};
use crate::clock::Now;
use crate::mailbox::{Mailbox, PushOutcome};
use crate::message::{Delivery, Publication};
use crate::protocol::QoS;
use crate::session::{Carry, OutFlight};
use crate::store::codec::SessionState;
use crate::store::{Loaded, Op, Release, RouteBatch, SessionLog, StoreHandle, StoredDelivery};

/// The router's side of the session store.
#[derive(Default)]
pub(super) struct Persistence {
    /// The durable session store (`--data-dir`), if any.
    store: Option<StoreHandle>,
    /// Persisted sessions (connected or not) by mailbox address: client id
    /// and the sequence number of the next delivery stored for it.
    persisted: HashMap<usize, (Arc<str>, u64), BuildHasherDefault<PtrHasher>>,
    /// What this turn stores before it may deliver and answer (sent to the
    /// store at the end of the turn, see [`Persistence::flush`]).
    route: RouteBatch,
}

impl Persistence {
    /// How many changes this turn has staged so far; an answer given after
    /// a routing that raised it must wait for the commit.
    pub(super) fn changes(&self) -> usize {
        self.route.changes()
    }

    /// Where the link of a connecting session records its QoS progress:
    /// only for a persistent session (expiry > 0) with a store.
    pub(super) fn session_log(
        &self,
        id: &Arc<str>,
        rec: &SessionRecord,
        conn_id: u64,
    ) -> Option<SessionLog> {
        match &self.store {
            Some(store) if rec.expiry > 0 => {
                store.session_log(id.clone(), rec.mailbox.clone(), conn_id)
            }
            _ => None,
        }
    }

    /// A session's link was accepted. A persistent session stays in the
    /// store while it is connected — its messages (queued and in flight)
    /// stay there until the client acknowledges them; one that connected
    /// with expiry 0 leaves the store.
    pub(super) fn connected(&mut self, id: &Arc<str>, rec: &mut SessionRecord) {
        let Some(store) = &self.store else { return };
        let key = mailbox_key(&rec.mailbox);
        if rec.expiry > 0 {
            rec.persisted = true;
            self.persisted.entry(key).or_insert_with(|| (id.clone(), 0));
            store.send(Op::SessionPut {
                client_id: id.clone(),
                state: stored_state(rec),
            });
        } else {
            self.persisted.remove(&key);
            if rec.persisted {
                rec.persisted = false;
                store.send(Op::SessionDelete(id.clone()));
            }
        }
    }

    /// A will waiting out its delay was sent or cancelled.
    pub(super) fn will_gone(&self, id: &Arc<str>, persisted: bool) {
        if persisted && let Some(store) = &self.store {
            store.send(Op::WillDelete(id.clone()));
        }
    }

    /// A session ended for good.
    pub(super) fn discarded(&mut self, id: &Arc<str>, rec: &SessionRecord) {
        let Some(store) = &self.store else { return };
        self.persisted.remove(&mailbox_key(&rec.mailbox));
        if rec.persisted {
            store.send(Op::SessionDelete(id.clone()));
        }
    }

    /// A persistent session went offline: its record (the offline time its
    /// expiry counts from, the next packet id) and a will waiting out its
    /// delay are stored. Its messages are in the store already. `now_ms`:
    /// the broker's clock, Unix milliseconds.
    pub(super) fn went_offline(&mut self, id: &Arc<str>, rec: &mut SessionRecord, now_ms: u64) {
        let Some(store) = &self.store else { return };
        rec.persisted = true;
        rec.offline_since_ms = Some(now_ms);
        self.persisted
            .entry(mailbox_key(&rec.mailbox))
            .or_insert_with(|| (id.clone(), 0));
        store.send(Op::SessionPut {
            client_id: id.clone(),
            state: stored_state(rec),
        });
        if let Some(w) = &rec.pending_will {
            let delay = u64::from(w.delay_secs.min(rec.expiry));
            store.send(Op::WillPut {
                client_id: id.clone(),
                will: w.clone(),
                fire_at_ms: now_ms.saturating_add(delay * 1000),
            });
        }
    }

    /// A persisted session's subscriptions changed.
    pub(super) fn subscriptions_changed(&self, id: &Arc<str>, rec: &SessionRecord) {
        if rec.persisted
            && let Some(store) = &self.store
        {
            store.send(Op::SessionPut {
                client_id: id.clone(),
                state: stored_state(rec),
            });
        }
    }

    /// A retained publication was applied: `kept` is what the retained
    /// store now holds for its topic (`None`: deleted). `$SYS/` statistics
    /// are regenerated at start, not stored.
    pub(super) fn retained_changed(&self, p: &Publication, kept: Option<Arc<Publication>>) {
        if let Some(store) = &self.store
            && !p.topic.starts_with("$SYS/")
        {
            store.send(match kept {
                Some(kept) => Op::RetainedPut(kept),
                None => Op::RetainedDelete(p.topic.clone()),
            });
        }
    }

    /// A persistent publisher's QoS 2 packet id is stored with the
    /// message, so that a PUBLISH resent after a crash is recognised as the
    /// same one.
    pub(super) fn incoming_qos2(&mut self, ack: &AckTo) {
        if ack.qos == QoS::ExactlyOnce
            && self.store.is_some()
            && let Some((id, _)) = self.persisted.get(&mailbox_key(&ack.mailbox))
        {
            self.route.incoming.push((id.clone(), ack.pkid));
        }
    }

    /// Queues `d` for the session whose mailbox this is. A QoS 1/2
    /// delivery for a persisted session takes a slot in the mailbox now and
    /// goes through the store: it reaches the mailbox once committed.
    pub(super) fn deliver(&mut self, mailbox: &Arc<Mailbox>, mut d: Delivery) -> PushOutcome {
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
    /// (`before` is [`Persistence::changes`] before it was routed), or when
    /// an earlier answer to the same publisher is held (PUBACKs keep the
    /// order of the PUBLISHes; other publishers are not held up).
    pub(super) fn answer_publisher(&mut self, before: usize, ack: AckTo, reason: u8) {
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

    /// Tells the injector of a publication its outcome, after the commit
    /// when its routing stored something.
    pub(super) fn answer_injector(
        &mut self,
        before: usize,
        reply: oneshot::Sender<u8>,
        reason: u8,
    ) {
        let r = Release::Reply { reply, reason };
        if self.route.changes() > before {
            self.route.releases.push(r);
        } else {
            r.send();
        }
    }

    /// Hands this turn's stored deliveries, QoS 2 ids and held answers to
    /// the store, which commits them, then delivers and answers.
    pub(super) fn flush(&mut self) {
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

    /// Commits the last changes and closes the store (every link has
    /// handed its session back). Returns whether there was a store.
    pub(super) async fn close(&mut self) -> bool {
        match self.store.take() {
            Some(store) => {
                store.close().await;
                true
            }
            None => false,
        }
    }
}

/// What the session store keeps of a session (besides its queue).
fn stored_state(rec: &SessionRecord) -> Box<SessionState> {
    Box::new(SessionState {
        expiry: rec.expiry,
        disconnected_at_ms: rec.offline_since_ms,
        next_pkid: rec.carry.as_ref().map_or(0, |c| c.next_pkid),
        // Incoming QoS 2 ids and stored in-flight messages have tables
        // of their own, kept up to date as they change; the record
        // keeps only in-flight state that is not stored there.
        incoming_qos2: Vec::new(),
        outgoing: rec
            .carry
            .iter()
            .flat_map(|c| c.outgoing.iter())
            .filter(|(_, f)| match f {
                OutFlight::Publish(d) => d.stored.is_none(),
                OutFlight::Released(stored) => stored.is_none(),
            })
            .cloned()
            .collect(),
        subs: rec
            .subs
            .iter()
            .map(|(raw, (_, e))| (raw.clone(), *e))
            .collect(),
    })
}

impl Router {
    /// Restores what the session store held — retained messages and
    /// persistent sessions (offline, with their subscriptions, queues and
    /// QoS state, their expiry counting from when they went offline) — and
    /// from now on mirrors every change of them into `store`.
    pub fn with_store(mut self, store: StoreHandle, loaded: Loaded) -> Self {
        for p in loaded.retained {
            self.retained.restore(p, &self.config.clock);
        }
        self.metrics
            .retained
            .store(self.retained.len() as u64, Relaxed);
        let Now {
            at: now,
            unix_ms: now_ms,
        } = self.config.clock.read();
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
                self.timers
                    .add(now + left, TimerKind::SessionExpiry, &id, 0);
            }
            self.persist
                .persisted
                .insert(mailbox_key(&mailbox), (id.clone(), s.next_seq));
            let pending_will = will.map(|(w, fire_at_ms)| {
                let left = Duration::from_millis(fire_at_ms.saturating_sub(now_ms));
                self.timers.add(now + left, TimerKind::WillDelay, &id, 0);
                Box::new(w)
            });
            let mut rec = SessionRecord {
                mailbox,
                conn: None,
                carry: None,
                subs,
                expiry,
                generation: 0,
                pending_will,
                persisted: true,
                offline_since_ms: disconnected_at_ms,
            };
            rec.keep_carry(Carry {
                outgoing,
                incoming_qos2,
                next_pkid,
            });
            self.sessions.insert(id, Box::new(rec));
        }
        self.metrics
            .sessions
            .store(self.sessions.len() as u64, Relaxed);
        self.persist.store = Some(store);
        for (id, will) in loaded.expired_wills {
            self.publish(Arc::new(
                will.into_publication(Some(id), &self.config.clock),
            ));
        }
        self
    }
}
