//! Per-session QoS state that outlives a connection: messages sent to the
//! client and not yet acknowledged, and QoS 2 messages received from it whose
//! PUBREL has not arrived. The link owns it while connected and hands it back
//! to the router as a [`Carry`] when the connection ends.

use std::collections::{HashMap, HashSet};

use crate::message::Delivery;
use crate::protocol::ReasonCode;

/// Where an outgoing QoS 1/2 message stands.
#[derive(Debug, Clone)]
pub enum OutFlight {
    /// PUBLISH sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Publish(Delivery),
    /// PUBREL sent, waiting for PUBCOMP; the delivery's sequence number
    /// in the session store, when it was stored.
    Released(Option<u64>),
}

/// What a PUBREC did to the outgoing window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecOutcome {
    /// The message moved on to the release step: send PUBREL. Carries the
    /// delivery's sequence number in the session store, if stored.
    Released(Option<u64>),
    /// The message was already released (a repeated PUBREC): PUBREL again.
    Again,
    /// A failure reason ended the exchange; the message is gone.
    Ended(Option<u64>),
    /// No such packet id in flight.
    Unknown,
}

/// Session QoS state handed from a closing link to the router and on to the
/// next connection of the same session.
#[derive(Debug, Default)]
pub struct Carry {
    /// Unacknowledged outgoing messages in the order they were first sent.
    pub outgoing: Vec<(u16, OutFlight)>,
    /// Packet ids of incoming QoS 2 messages awaiting PUBREL.
    pub incoming_qos2: HashSet<u16>,
    /// Next outgoing packet id to try.
    pub next_pkid: u16,
}

/// The outgoing in-flight window of a connected session.
#[derive(Debug)]
pub struct OutgoingWindow {
    /// Packet id → (send order, state).
    inflight: HashMap<u16, (u64, OutFlight)>,
    /// Monotonic send order, to redeliver in the original order.
    seq: u64,
    /// Next packet id to try.
    next_pkid: u16,
    /// Most unacknowledged messages (min of the client's Receive Maximum and
    /// the broker's limit).
    limit: usize,
}

impl OutgoingWindow {
    /// A window of `limit` slots resuming `carry`'s state.
    pub fn new(limit: usize, carry: &mut Carry) -> Self {
        let mut w = OutgoingWindow {
            inflight: HashMap::new(),
            seq: 0,
            next_pkid: carry.next_pkid.max(1),
            limit: limit.max(1),
        };
        for (id, f) in carry.outgoing.drain(..) {
            w.seq += 1;
            w.inflight.insert(id, (w.seq, f));
        }
        w
    }

    /// Free slots for new QoS 1/2 messages.
    pub fn free(&self) -> usize {
        self.limit.saturating_sub(self.inflight.len())
    }

    /// Messages in flight.
    pub fn len(&self) -> usize {
        self.inflight.len()
    }

    /// True when nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.inflight.is_empty()
    }

    /// Allocates an unused packet id.
    pub fn next_id(&mut self) -> u16 {
        loop {
            let id = self.next_pkid;
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if !self.inflight.contains_key(&id) {
                return id;
            }
        }
    }

    /// Records a PUBLISH sent with `id`.
    pub fn sent(&mut self, id: u16, d: Delivery) {
        self.seq += 1;
        self.inflight.insert(id, (self.seq, OutFlight::Publish(d)));
    }

    /// PUBACK: frees the slot. `None` when `id` was not a QoS 1 in flight,
    /// else the delivery's sequence number in the session store (if stored).
    pub fn puback(&mut self, id: u16) -> Option<Option<u64>> {
        match self.inflight.get(&id) {
            Some((_, OutFlight::Publish(d))) if d.qos == crate::protocol::QoS::AtLeastOnce => {
                let stored = d.stored;
                self.inflight.remove(&id);
                Some(stored)
            }
            _ => None,
        }
    }

    /// PUBREC: the message moves on to the release step. A failure reason
    /// ([`ReasonCode::is_error_code`]) ends the exchange instead.
    pub fn pubrec(&mut self, id: u16, reason: u8) -> RecOutcome {
        match self.inflight.get_mut(&id) {
            Some((_, state @ OutFlight::Publish(_))) => {
                let stored = match state {
                    OutFlight::Publish(d) => d.stored,
                    OutFlight::Released(s) => *s,
                };
                if ReasonCode::is_error_code(reason) {
                    self.inflight.remove(&id);
                    RecOutcome::Ended(stored)
                } else {
                    *state = OutFlight::Released(stored);
                    RecOutcome::Released(stored)
                }
            }
            Some((_, OutFlight::Released(_))) => RecOutcome::Again,
            None => RecOutcome::Unknown,
        }
    }

    /// PUBCOMP: frees the slot. `None` when `id` was not released, else the
    /// delivery's sequence number in the session store (if stored).
    pub fn pubcomp(&mut self, id: u16) -> Option<Option<u64>> {
        match self.inflight.remove(&id) {
            Some((_, OutFlight::Released(stored))) => Some(stored),
            Some(other) => {
                // Not released yet: a protocol error of the client; keep it.
                self.inflight.insert(id, other);
                None
            }
            None => None,
        }
    }

    /// Removes `id` from the window whatever its state (a redelivery that
    /// could not be written: expired or too large).
    pub fn forget(&mut self, id: u16) -> Option<OutFlight> {
        self.inflight.remove(&id).map(|(_, f)| f)
    }

    /// Everything in flight, in the order first sent (for redelivery).
    pub fn in_order(&self) -> Vec<(u16, OutFlight)> {
        let mut v: Vec<_> = self
            .inflight
            .iter()
            .map(|(id, (seq, f))| (*seq, *id, f.clone()))
            .collect();
        v.sort_by_key(|(seq, _, _)| *seq);
        v.into_iter().map(|(_, id, f)| (id, f)).collect()
    }

    /// Hands the state back for the next connection.
    pub fn into_carry(self, incoming_qos2: HashSet<u16>) -> Carry {
        let next_pkid = self.next_pkid;
        Carry {
            outgoing: self.in_order(),
            incoming_qos2,
            next_pkid,
        }
    }
}
