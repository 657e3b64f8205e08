//! Fan-out: one publication to every matching session, once per session
//! whichever of its filters matched, never waiting on a subscriber.
//!
//! Each delivery is pushed into the session's [`Mailbox`], whose policy
//! drops or refuses when full; the publisher hears the outcome as a v5
//! reason (Success, No matching subscribers, Quota exceeded when every
//! matching session refused).

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use super::Router;
use super::subscriptions::Member;
use crate::mailbox::{Mailbox, PushOutcome};
use crate::message::{Delivery, Publication};
use crate::metrics::DropReason;
use crate::protocol::{QoS, ReasonCode};

/// Per-client merge of overlapping subscriptions for one message.
#[derive(Debug, Default)]
pub(super) struct Target {
    /// The highest QoS granted by any matching filter.
    qos: QoS,
    /// Whether any matching filter keeps the retain flag.
    retain_as_published: bool,
    /// Subscription identifiers of every matching filter.
    subscription_ids: Vec<u32>,
}

/// Per-message targets keyed by the address of the session's mailbox (one
/// per session, whichever filters matched).
pub(super) type Targets = HashMap<usize, (Arc<Mailbox>, Target), BuildHasherDefault<PtrHasher>>;

impl Router {
    /// Stores (if retained) and fans out a publication; returns the v5
    /// reason code for the publisher's acknowledgement.
    pub(super) fn publish(&mut self, p: Arc<Publication>) -> u8 {
        if p.retain {
            let kept = self.retained.apply(&p);
            self.persist.retained_changed(&p, kept);
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
            if self.persist.deliver(&mailbox, delivery) == PushOutcome::Refused {
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
}

/// A session's identity for per-session maps: its mailbox's address.
pub(super) fn mailbox_key(mailbox: &Arc<Mailbox>) -> usize {
    Arc::as_ptr(mailbox) as usize
}

fn merge(targets: &mut Targets, m: &Member) {
    let (_, t) = targets
        .entry(mailbox_key(&m.mailbox))
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
pub(super) struct PtrHasher(u64);

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
