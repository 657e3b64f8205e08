//! A session's queue of deliveries, shared between the router (which
//! pushes) and the session's link (which drains when connected).
//!
//! The same queue holds messages while the client is away, so offline
//! queueing and slow-subscriber handling are one policy: at the limit the
//! oldest queued QoS 0 message is dropped to make room, and when there is
//! none a new QoS 0 message is dropped and a new QoS 1/2 message is refused.
//! Every drop is counted. A push never waits: a slow subscriber cannot stall
//! a publisher.
//!
//! The mailbox also carries the router's control messages for the link
//! ([`LinkCtl`]: acknowledgements, kicks), tagged with the connection they
//! are for, so a link needs no channel of its own (an idle connection costs
//! no channel buffer) and a later connection of the session ignores
//! leftovers. Control messages are bounded by the protocol: one per packet
//! the link read, and the link stops reading while its acknowledgements are
//! outstanding.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;

use crate::message::Delivery;
use crate::metrics::{DropReason, Metrics};
use crate::protocol::QoS;

/// Messages from the router to one connection of a session.
#[derive(Debug)]
pub enum LinkCtl {
    /// Acknowledge an incoming QoS 1 (PUBACK) or QoS 2 (PUBREC) publish.
    PubAck {
        /// Packet id of the publish.
        pkid: u16,
        /// Its QoS, choosing PUBACK or PUBREC.
        qos: QoS,
        /// v5 reason code.
        reason: u8,
    },
    /// Answer a SUBSCRIBE.
    SubAck {
        /// Packet id of the SUBSCRIBE.
        pkid: u16,
        /// One reason code per filter.
        reasons: Vec<u8>,
    },
    /// Answer an UNSUBSCRIBE.
    UnsubAck {
        /// Packet id of the UNSUBSCRIBE.
        pkid: u16,
        /// One reason code per filter.
        reasons: Vec<u8>,
    },
    /// Send PUBREL for an outgoing QoS 2 message, now that its release is
    /// recorded in the session store.
    PubRel {
        /// Packet id.
        pkid: u16,
    },
    /// Send PUBCOMP for an incoming QoS 2 message, now that the session
    /// store no longer holds its packet id (the client may reuse it).
    PubComp {
        /// Packet id.
        pkid: u16,
    },
    /// Close the connection with this v5 reason (0x8E session taken over).
    Kick {
        /// DISCONNECT reason code.
        reason: u8,
    },
    /// The broker is shutting down: close (v5 reason 0x8B). From the
    /// router, so a running link waits on no shutdown signal of its own.
    Shutdown,
    /// Nothing was read for 1.5 × the keep-alive: close (v5 reason 0x8D,
    /// the will is sent). From the broker-wide keep-alive checker.
    KeepAliveExpired,
}

/// What happened to a pushed delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Queued.
    Queued,
    /// Queued after dropping the oldest queued QoS 0 message.
    QueuedDroppedOldest,
    /// The queue was full: a QoS 0 delivery was dropped.
    Dropped,
    /// The queue was full of QoS 1/2 messages: the QoS 1/2 delivery was
    /// refused (reason 0x97 Quota exceeded).
    Refused,
}

#[derive(Debug, Default)]
struct Queue {
    /// Deliveries in arrival order.
    items: VecDeque<Delivery>,
    /// How many of `items` are QoS 0, to skip the search when there are none.
    qos0: usize,
    /// Control messages, tagged with the connection id they are for.
    ctl: VecDeque<(u64, LinkCtl)>,
    /// Slots promised to QoS 1/2 deliveries on their way through the
    /// session store ([`Mailbox::reserve`]); they count against the limit.
    reserved: usize,
}

/// A bounded, lock-per-session delivery queue with a wake-up signal.
#[derive(Debug)]
pub struct Mailbox {
    /// The queue; held only for pushes and batch pops.
    queue: Mutex<Queue>,
    /// The waiting link's waker; woken when something was pushed. A
    /// waker slot, not a list of waiters: an idle link's wait holds no
    /// waiter node (issue 12).
    waker: AtomicWaker,
    /// Something was pushed since the link last waited (a wake-up that
    /// came while it was busy is not lost).
    woken: AtomicBool,
    /// Maximum queued deliveries.
    limit: usize,
    /// Whether the session has a connection (set by the router).
    online: AtomicBool,
    /// Queue depth gauge and drop counters.
    metrics: Arc<Metrics>,
    /// Acknowledgements to this session's publisher held in the session
    /// store's pipeline; while there are any, later ones wait behind them
    /// (PUBACKs go out in the order of the PUBLISHes).
    held_acks: AtomicUsize,
    /// When the connected link last read from its socket, milliseconds on
    /// the keep-alive checker's clock (`crate::link::KeepAlive`).
    last_input: AtomicU64,
}

impl Mailbox {
    /// An empty mailbox holding at most `limit` deliveries.
    pub fn new(limit: usize, metrics: Arc<Metrics>) -> Self {
        Mailbox {
            queue: Mutex::new(Queue::default()),
            waker: AtomicWaker::new(),
            woken: AtomicBool::new(false),
            limit: limit.max(1),
            online: AtomicBool::new(false),
            metrics,
            held_acks: AtomicUsize::new(0),
            last_input: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A poisoned lock only means another thread panicked mid-push; the
        // queue itself is still consistent, so keep serving.
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Marks the session connected or not.
    pub fn set_online(&self, online: bool) {
        self.online.store(online, Relaxed);
    }

    /// Whether the session is connected.
    pub fn is_online(&self) -> bool {
        self.online.load(Relaxed)
    }

    /// Stamps the time of a read from the client (keep-alive).
    pub fn touch(&self, now_ms: u64) {
        self.last_input.store(now_ms, Relaxed);
    }

    /// The last [`touch`](Self::touch).
    pub fn last_touch(&self) -> u64 {
        self.last_input.load(Relaxed)
    }

    /// Queues a delivery according to the policy in the module docs.
    pub fn push(&self, d: Delivery) -> PushOutcome {
        let (outcome, was_empty) = {
            let mut q = self.lock();
            let was_empty = q.items.is_empty();
            let mut outcome = PushOutcome::Queued;
            if q.items.len() + q.reserved >= self.limit {
                if q.qos0 > 0 {
                    if let Some(pos) = q.items.iter().position(|x| x.qos == QoS::AtMostOnce) {
                        q.items.remove(pos);
                        q.qos0 -= 1;
                        self.metrics.queued.fetch_sub(1, Relaxed);
                        self.metrics.dropped(DropReason::QueueFull);
                        outcome = PushOutcome::QueuedDroppedOldest;
                    }
                } else if d.qos == QoS::AtMostOnce {
                    self.metrics.dropped(DropReason::QueueFull);
                    return PushOutcome::Dropped;
                } else {
                    self.metrics.dropped(DropReason::QueueFull);
                    return PushOutcome::Refused;
                }
            }
            if d.qos == QoS::AtMostOnce {
                q.qos0 += 1;
            }
            q.items.push_back(d);
            self.metrics.queued.fetch_add(1, Relaxed);
            (outcome, was_empty)
        };
        // Wake the link when the queue becomes non-empty; while it is not
        // empty the link drains again after each write or acknowledgement.
        if was_empty {
            self.wake();
        }
        outcome
    }

    /// Holds a slot for a QoS 1/2 delivery that is being written to the
    /// session store first; the same policy as [`push`](Self::push): a full
    /// queue drops its oldest QoS 0 message to make room, or refuses.
    /// [`push_reserved`](Self::push_reserved) fills the slot,
    /// [`unreserve`](Self::unreserve) gives it back.
    pub fn reserve(&self) -> PushOutcome {
        let mut q = self.lock();
        let mut outcome = PushOutcome::Queued;
        if q.items.len() + q.reserved >= self.limit {
            let pos = (q.qos0 > 0)
                .then(|| q.items.iter().position(|x| x.qos == QoS::AtMostOnce))
                .flatten();
            let Some(pos) = pos else {
                self.metrics.dropped(DropReason::QueueFull);
                return PushOutcome::Refused;
            };
            q.items.remove(pos);
            q.qos0 -= 1;
            self.metrics.queued.fetch_sub(1, Relaxed);
            self.metrics.dropped(DropReason::QueueFull);
            outcome = PushOutcome::QueuedDroppedOldest;
        }
        q.reserved += 1;
        outcome
    }

    /// Queues a delivery into a slot held by [`reserve`](Self::reserve)
    /// (never refused).
    pub fn push_reserved(&self, d: Delivery) {
        let was_empty = {
            let mut q = self.lock();
            q.reserved = q.reserved.saturating_sub(1);
            let was_empty = q.items.is_empty();
            q.items.push_back(d);
            self.metrics.queued.fetch_add(1, Relaxed);
            was_empty
        };
        if was_empty {
            self.wake();
        }
    }

    /// Gives back a slot held by [`reserve`](Self::reserve).
    pub fn unreserve(&self) {
        let mut q = self.lock();
        q.reserved = q.reserved.saturating_sub(1);
    }

    /// Counts an acknowledgement held back until the session store commits
    /// (see [`holds_acks`](Self::holds_acks)).
    pub fn hold_ack(&self) {
        self.held_acks.fetch_add(1, Ordering::Relaxed);
    }

    /// Queues a held acknowledgement for connection `conn`, then stops
    /// counting it.
    pub fn release_ack(&self, conn: u64, ctl: LinkCtl) {
        self.push_ctl(conn, ctl);
        self.held_acks.fetch_sub(1, Ordering::Release);
    }

    /// True while acknowledgements for this session are held back: a later
    /// one must wait behind them.
    pub fn holds_acks(&self) -> bool {
        self.held_acks.load(Ordering::Acquire) > 0
    }

    /// Queues a control message for connection `conn` and wakes the link.
    pub fn push_ctl(&self, conn: u64, ctl: LinkCtl) {
        self.lock().ctl.push_back((conn, ctl));
        self.wake();
    }

    /// Moves the control messages for `conn` into `out`, dropping any left
    /// for an earlier connection.
    pub fn pop_ctl(&self, conn: u64, out: &mut Vec<LinkCtl>) {
        let mut q = self.lock();
        if q.ctl.is_empty() {
            return;
        }
        for (c, m) in q.ctl.drain(..) {
            if c == conn {
                out.push(m);
            }
        }
    }

    /// Moves deliveries into `out` in order: QoS 0 ones freely, QoS 1/2 ones
    /// while `window` (free in-flight slots) lasts, at most `max` in all.
    /// Stops at the first QoS 1/2 message that does not fit, to keep order.
    pub fn pop_ready(&self, out: &mut Vec<Delivery>, mut window: usize, max: usize) {
        let mut q = self.lock();
        let mut n = 0;
        while n < max {
            let Some(front) = q.items.front() else { break };
            if front.qos == QoS::AtMostOnce {
                q.qos0 -= 1;
            } else if window == 0 {
                break;
            } else {
                window -= 1;
            }
            if let Some(d) = q.items.pop_front() {
                out.push(d);
                n += 1;
            }
        }
        self.metrics.queued.fetch_sub(n as u64, Relaxed);
    }

    /// Number of queued deliveries.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Wakes the waiting link (or the next wait, when none waits now).
    fn wake(&self) {
        self.woken.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Ready when something was pushed since the last wait; otherwise
    /// `cx`'s task is woken at the next push. One task waits on a mailbox
    /// at a time (the session's link): a second waiter replaces the first.
    pub fn poll_notified(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.woken.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // A push between the check and the registration woke no one.
        if self.woken.swap(false, Ordering::AcqRel) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Waits until something is pushed (or was pushed since the last wait).
    pub async fn notified(&self) {
        std::future::poll_fn(|cx| self.poll_notified(cx)).await;
    }

    /// Drops everything (session discarded).
    pub fn clear(&self) {
        let mut q = self.lock();
        self.metrics.queued.fetch_sub(q.items.len() as u64, Relaxed);
        q.items.clear();
        q.qos0 = 0;
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        let n = self.lock().items.len();
        self.metrics.queued.fetch_sub(n as u64, Relaxed);
    }
}
