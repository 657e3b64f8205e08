//! The subscription index: which sessions want which topics.
//!
//! Filters without wildcards are found by an exact lookup on the topic;
//! wildcard filters are tested with `plantd_shared::topic::matches`, the one
//! matching rule of the project. Shared subscriptions (`$share/<group>/...`)
//! sit beside plain ones under the same filter, one member picked per
//! message in turn.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use plantd_shared::topic::{SubscriptionFilter, matches};

use crate::mailbox::Mailbox;
use crate::protocol::v5::SubscriptionOptions;

/// One subscription's options and identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubEntry {
    /// QoS, no-local, retain-as-published, retain handling.
    pub options: SubscriptionOptions,
    /// v5 Subscription Identifier, if given.
    pub id: Option<u32>,
}

/// One session's subscription under one filter: its options and the
/// session's mailbox, so that routing needs no session lookup.
#[derive(Debug, Clone)]
pub struct Member {
    /// Options and identifier.
    pub entry: SubEntry,
    /// Where deliveries for the session go.
    pub mailbox: Arc<Mailbox>,
}

/// The members of one share group under one filter.
#[derive(Debug, Default)]
pub struct SharedGroup {
    /// Members in join order.
    pub members: Vec<(Arc<str>, Member)>,
    /// Round-robin cursor.
    pub next: usize,
}

/// Everyone subscribed to one filter.
#[derive(Debug, Default)]
pub struct FilterSubscribers {
    /// Plain subscriptions by client id.
    pub clients: HashMap<Arc<str>, Member>,
    /// Shared subscriptions by group name.
    pub groups: BTreeMap<String, SharedGroup>,
}

impl FilterSubscribers {
    fn is_empty(&self) -> bool {
        self.clients.is_empty() && self.groups.is_empty()
    }
}

/// All subscriptions of all sessions.
///
/// Filters without wildcards are keyed by the topic they match. Wildcard
/// filters whose first level is literal are bucketed by that level, so a
/// topic is only tested against filters that can share its first level;
/// filters starting with `+` or `#` are tested for every topic.
#[derive(Debug, Default)]
pub struct SubscriptionIndex {
    /// Filters without wildcards, keyed by the topic they match.
    exact: HashMap<String, FilterSubscribers>,
    /// Wildcard filters by their (literal) first level.
    wild: HashMap<String, HashMap<String, FilterSubscribers>>,
    /// Wildcard filters starting with a wildcard.
    wild_any: HashMap<String, FilterSubscribers>,
}

/// The first level of a filter or topic.
fn first_level(s: &str) -> &str {
    s.split('/').next().unwrap_or(s)
}

impl SubscriptionIndex {
    fn table(&mut self, sf: &SubscriptionFilter) -> &mut HashMap<String, FilterSubscribers> {
        if !sf.filter.has_wildcards() {
            return &mut self.exact;
        }
        let first = first_level(sf.filter.as_str());
        if first == "+" || first == "#" {
            &mut self.wild_any
        } else {
            self.wild.entry(first.to_owned()).or_default()
        }
    }

    /// Adds or replaces `client`'s subscription; true when it existed.
    pub fn insert(&mut self, client: &Arc<str>, sf: &SubscriptionFilter, member: Member) -> bool {
        let subs = self
            .table(sf)
            .entry(sf.filter.as_str().to_owned())
            .or_default();
        match &sf.group {
            None => subs.clients.insert(client.clone(), member).is_some(),
            Some(g) => {
                let group = subs.groups.entry(g.clone()).or_default();
                if let Some(m) = group.members.iter_mut().find(|(c, _)| c == client) {
                    m.1 = member;
                    true
                } else {
                    group.members.push((client.clone(), member));
                    false
                }
            }
        }
    }

    /// Removes `client`'s subscription; true when it existed.
    pub fn remove(&mut self, client: &Arc<str>, sf: &SubscriptionFilter) -> bool {
        let table = self.table(sf);
        let Some(subs) = table.get_mut(sf.filter.as_str()) else {
            return false;
        };
        let existed = match &sf.group {
            None => subs.clients.remove(client).is_some(),
            Some(g) => match subs.groups.get_mut(g) {
                Some(group) => {
                    let before = group.members.len();
                    group.members.retain(|(c, _)| c != client);
                    let existed = group.members.len() != before;
                    if group.members.is_empty() {
                        subs.groups.remove(g);
                    }
                    existed
                }
                None => false,
            },
        };
        if subs.is_empty() {
            table.remove(sf.filter.as_str());
            if sf.filter.has_wildcards() {
                let first = first_level(sf.filter.as_str());
                if self.wild.get(first).is_some_and(HashMap::is_empty) {
                    self.wild.remove(first);
                }
            }
        }
        existed
    }

    /// Calls `f` for every filter whose subscribers should see `topic`.
    pub fn for_each_match(&mut self, topic: &str, mut f: impl FnMut(&mut FilterSubscribers)) {
        if let Some(subs) = self.exact.get_mut(topic) {
            f(subs);
        }
        if let Some(bucket) = self.wild.get_mut(first_level(topic)) {
            for (filter, subs) in bucket {
                if matches(filter, topic) {
                    f(subs);
                }
            }
        }
        for (filter, subs) in &mut self.wild_any {
            if matches(filter, topic) {
                f(subs);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::Mailbox;
    use crate::protocol::v5::SubscriptionOptions;

    fn sf(s: &str) -> SubscriptionFilter {
        SubscriptionFilter::parse(s).expect("valid filter")
    }

    fn matched(idx: &mut SubscriptionIndex, topic: &str) -> Vec<String> {
        let mut out = Vec::new();
        idx.for_each_match(topic, |subs| {
            out.extend(subs.clients.keys().map(|c| c.to_string()));
            out.extend(subs.groups.keys().map(|g| format!("group:{g}")));
        });
        out.sort();
        out
    }

    #[test]
    fn index_finds_exact_bucketed_and_leading_wildcard_filters() {
        let mut idx = SubscriptionIndex::default();
        let e = Member {
            entry: SubEntry {
                options: SubscriptionOptions::default(),
                id: None,
            },
            mailbox: Arc::new(Mailbox::new(10, Default::default())),
        };
        for (client, filter) in [
            ("a", "plant/line1/temp"),
            ("b", "plant/+/temp"),
            ("c", "plant/#"),
            ("d", "+/line1/temp"),
            ("e", "#"),
            ("f", "other/#"),
            ("g", "$share/grp/plant/+/temp"),
        ] {
            assert!(!idx.insert(&Arc::from(client), &sf(filter), e.clone()));
        }
        assert_eq!(
            matched(&mut idx, "plant/line1/temp"),
            ["a", "b", "c", "d", "e", "group:grp"]
        );
        assert_eq!(matched(&mut idx, "$SYS/x"), Vec::<String>::new());
        assert_eq!(matched(&mut idx, "plant"), ["c", "e"]);
        assert!(idx.remove(&Arc::from("c"), &sf("plant/#")));
        assert!(!idx.remove(&Arc::from("c"), &sf("plant/#")));
        assert!(idx.remove(&Arc::from("g"), &sf("$share/grp/plant/+/temp")));
        assert_eq!(matched(&mut idx, "plant/line1/temp"), ["a", "b", "d", "e"]);
    }
}
