//! What goes to the client: the router's control messages (acks, SUBACK,
//! kicks), deliveries drained from the mailbox into the write buffer within
//! the in-flight window, PUBLISH encoding with outbound topic aliases, and
//! redelivery of what was in flight when the previous connection ended.

use super::wire::Wire;
use super::{DRAIN_BATCH, DRAIN_CHUNK, Exit, HIGH_WATER, Link};
use crate::mailbox::LinkCtl;
use crate::message::Delivery;
use crate::metrics::DropReason;
use crate::protocol::v5::{self, Ack, Properties, SubAck, UnsubAck};
use crate::protocol::{QoS, v4};
use crate::session::OutFlight;

impl Link {
    /// Resends what was in flight when the previous connection ended.
    pub(super) fn redeliver(&mut self) {
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

    pub(super) fn on_ctl(&mut self, ctl: LinkCtl) -> Option<Exit> {
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
            LinkCtl::KeepAliveExpired => return Some(Exit::KeepAlive),
            LinkCtl::Shutdown => return Some(Exit::Shutdown),
        }
        None
    }

    /// Moves ready deliveries into the write buffer; true when it stopped at
    /// its batch limit or the write buffer's high water mark, so more may be
    /// waiting (the mailbox only signals when it turns non-empty).
    pub(super) fn drain_mailbox(&mut self) -> bool {
        let mut batch = self
            .scratch
            .as_mut()
            .map(|s| std::mem::take(&mut s.batch))
            .unwrap_or_default();
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
        if batch.capacity() > 0 {
            self.scratch().batch = batch;
        }
        !exhausted
    }

    /// Encodes one delivery; false when it was dropped (expired, larger
    /// than the client accepts, or — after the connection's permissions
    /// narrowed — a topic it may no longer read).
    pub(super) fn write_delivery(&mut self, d: &Delivery, pkid: u16, dup: bool) -> bool {
        let p = &d.publication;
        if self.check_reads && !self.may_read(&p.topic) {
            self.ctx.metrics.dropped(DropReason::NotAuthorized);
            return false;
        }
        let remaining = p.remaining_expiry(&self.ctx.config.clock);
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
        if self.wbuf.len() - start > self.client_max_packet as usize {
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
}
