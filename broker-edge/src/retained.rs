//! Retained messages: the last retained PUBLISH per topic, replaced by the
//! next one and deleted by an empty payload.

use std::collections::HashMap;
use std::sync::Arc;

use plantd_shared::topic::matches;

use crate::clock::Clock;
use crate::message::Publication;

/// The retained message store, owned by the router.
#[derive(Debug, Default)]
pub struct RetainedStore {
    /// Topic → last retained message.
    by_topic: HashMap<Arc<str>, Arc<Publication>>,
}

impl RetainedStore {
    /// Applies a retained PUBLISH: an empty payload deletes, anything else
    /// replaces. Returns the message now retained for the topic (`None`
    /// after a delete), for the session store to persist.
    pub fn apply(&mut self, p: &Arc<Publication>) -> Option<Arc<Publication>> {
        if p.payload.is_empty() {
            self.by_topic.remove(&p.topic);
            None
        } else {
            // Retained messages live long: own their bytes (see
            // `Publication::compacted`).
            let kept = Arc::new(p.compacted());
            self.by_topic.insert(p.topic.clone(), kept.clone());
            Some(kept)
        }
    }

    /// Puts back a retained message loaded from the session store, unless
    /// it has expired by `clock`.
    pub fn restore(&mut self, p: Publication, clock: &Clock) {
        if !p.payload.is_empty() && !p.is_expired(clock) {
            self.by_topic.insert(p.topic.clone(), Arc::new(p));
        }
    }

    /// Retained messages matching `filter`, dropping the ones expired by
    /// `clock`.
    pub fn matching(&mut self, filter: &str, clock: &Clock) -> Vec<Arc<Publication>> {
        self.by_topic.retain(|_, p| !p.is_expired(clock));
        if !filter.contains(['+', '#']) {
            return self.by_topic.get(filter).cloned().into_iter().collect();
        }
        self.by_topic
            .iter()
            .filter(|(t, _)| matches(filter, t))
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// Number of retained messages.
    pub fn len(&self) -> usize {
        self.by_topic.len()
    }

    /// True when nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.by_topic.is_empty()
    }
}
