//! The inbound protocol state machine: what each client packet does —
//! QoS 1/2 receipt (PUBREC/PUBREL, the Receive Maximum), acknowledgements of
//! the broker's own deliveries, topic aliases set by the client, and the
//! checks on PUBLISH and SUBSCRIBE before they reach the router.

use std::sync::Arc;

use plantd_shared::topic::{SubscriptionFilter, validate_topic};
use tracing::{debug, info, warn};

use super::{Exit, Link, Step};
use crate::message::{MessageProperties, Publication};
use crate::metrics::DropReason;
use crate::protocol::QoS;
use crate::protocol::v5::{self, Ack};
use crate::router::subscriptions::SubEntry;
use crate::router::{AckTo, Routed, RouterCmd};
use crate::session::RecOutcome;

impl Link {
    pub(super) fn on_packet(&mut self, packet: v5::Packet) -> Step {
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
            v5::Packet::Auth(a) => return self.on_auth(a),
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
    pub(super) fn refuse_publish(&mut self, qos: QoS, pkid: u16, reason: u8) {
        let ack = Ack::new(pkid, reason);
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send(&v5::Packet::PubAck(ack)),
            QoS::ExactlyOnce => self.send(&v5::Packet::PubRec(ack)),
        }
    }

    pub(super) fn on_publish(&mut self, mut p: v5::Publish) -> Step {
        let limits = &self.ctx.config.limits;
        let v5 = self.wire.is_v5();
        self.received_by_qos[p.qos.index()] += 1;
        self.received = self.received.wrapping_add(1);
        if p.qos != QoS::AtMostOnce
            && v5
            && self.pending_acks as usize + self.incoming_qos2.len()
                >= usize::from(limits.max_inflight)
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
        let last_topic = &mut self.scratch().last_topic;
        let topic = match last_topic {
            Some(t) if **t == *p.topic => t.clone(),
            _ => {
                let t: Arc<str> = Arc::from(p.topic.as_str());
                *last_topic = Some(t.clone());
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
                received: Publication::stamp(&properties, &self.ctx.config.clock),
                properties,
                origin: Some(self.info.client_id.clone()),
            }),
            pkid: p.pkid,
        }
    }

    /// Runs the publish hook, then hands the publication to the router with
    /// the acknowledgement it owes.
    pub(super) async fn accept_publish(
        &mut self,
        publication: Arc<Publication>,
        pkid: u16,
    ) -> Option<Exit> {
        let qos = publication.qos;
        if let Some(hook) = self.ctx.hook.clone() {
            match hook.begin(&self.info, &publication).await {
                Ok(Some(pending)) => self.scratch().pending.push(pending),
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
        self.scratch().routed.push(Routed { publication, ack });
        None
    }

    pub(super) fn on_subscribe(&mut self, s: v5::Subscribe) -> Step {
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
            if !super::reauth::may_subscribe(&self.info, &self.ctx.auth, &sf.filter) {
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
