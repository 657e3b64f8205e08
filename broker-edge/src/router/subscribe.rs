//! A session's SUBSCRIBE and UNSUBSCRIBE: the session's own filter table,
//! the shared [`SubscriptionIndex`](super::subscriptions::SubscriptionIndex),
//! the SUBACK/UNSUBACK reasons and the retained messages a new
//! subscription receives.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use plantd_shared::topic::SubscriptionFilter;

use super::subscriptions::Member;
use super::{LinkCtl, Router, SubItem};
use crate::message::Delivery;
use crate::protocol::ReasonCode;
use crate::protocol::v5::RetainHandling;
use crate::store::codec::raw_filter;

impl Router {
    /// Adds subscriptions (each item validated and authorised by the link,
    /// or the reason it was refused with), answers with a SUBACK and sends
    /// the matching retained messages as the Retain Handling option asks.
    pub(super) fn subscribe(&mut self, id: &Arc<str>, pkid: u16, items: Vec<SubItem>) {
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
                for p in self
                    .retained
                    .matching(sf.filter.as_str(), &self.config.clock)
                {
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
        self.persist.subscriptions_changed(id, rec);
        if let Some(conn) = &rec.conn {
            rec.mailbox
                .push_ctl(conn.id, LinkCtl::SubAck { pkid, reasons });
        }
        let mailbox = rec.mailbox.clone();
        for d in retained {
            self.persist.deliver(&mailbox, d);
        }
    }

    /// Removes subscriptions and answers with an UNSUBACK (Success, No
    /// subscription existed, or the reason the link refused the filter).
    pub(super) fn unsubscribe(
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
        self.persist.subscriptions_changed(id, rec);
        if let Some(conn) = &rec.conn {
            rec.mailbox
                .push_ctl(conn.id, LinkCtl::UnsubAck { pkid, reasons });
        }
    }
}
