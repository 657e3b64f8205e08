//! A session's subscriptions checked again when its connection's
//! permissions change: after a re-authentication (AUTH 0x19) and when a
//! session is resumed by a new CONNECT, every subscription the connection
//! may no longer make is removed, as if it had unsubscribed
//! (`docs/decisions/0051-edge-reauthentication-narrows.md`).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use plantd_shared::topic::Filter;
use tracing::info;

use super::Router;

/// Whether the connection may (still) subscribe to a filter (without any
/// `$share/` prefix): the link's SUBSCRIBE rule with the permissions in
/// force now.
pub struct SubscriptionCheck(Box<dyn Fn(&Filter) -> bool + Send>);

impl SubscriptionCheck {
    /// A check answering with `allows`.
    pub fn new(allows: impl Fn(&Filter) -> bool + Send + 'static) -> Self {
        Self(Box::new(allows))
    }

    /// May the connection subscribe to `filter`?
    pub fn allows(&self, filter: &Filter) -> bool {
        (self.0)(filter)
    }
}

impl fmt::Debug for SubscriptionCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubscriptionCheck")
    }
}

impl Router {
    /// Removes every subscription of session `id` that `check` no longer
    /// allows, when connection `conn_id` still holds the session (a newer
    /// connection has its own permissions and its own check); true when
    /// any went. Messages already queued for the session stay queued: the
    /// link drops those it may no longer read when it writes them.
    pub(super) fn recheck_subscriptions(
        &mut self,
        id: &Arc<str>,
        conn_id: u64,
        check: &SubscriptionCheck,
    ) -> bool {
        let Some(rec) = self.sessions.get_mut(id) else {
            return false;
        };
        if rec.conn.as_ref().is_none_or(|c| c.id != conn_id) {
            return false;
        }
        let refused: Vec<String> = rec
            .subs
            .iter()
            .filter(|(_, (sf, _))| !check.allows(&sf.filter))
            .map(|(raw, _)| raw.clone())
            .collect();
        if refused.is_empty() {
            return false;
        }
        for raw in &refused {
            if let Some((sf, _)) = rec.subs.remove(raw)
                && self.index.remove(id, &sf)
            {
                self.metrics.subscriptions.fetch_sub(1, Relaxed);
            }
        }
        info!(client_id = %id, removed = ?refused, "subscriptions no longer authorised removed");
        self.persist.subscriptions_changed(id, rec);
        true
    }
}
