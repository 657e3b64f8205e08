//! The commands the downlink holds, one queue per topic: a topic with a
//! held command takes nothing new past it (order per topic), other topics
//! are not concerned.

use std::collections::{HashMap, VecDeque};

use plantd_shared::commands::HeldCommand;
use plantd_shared::topic::Topic;

use super::Command;
use super::parse::Deadline;

/// One held command.
#[derive(Debug)]
pub(crate) struct HeldEntry {
    /// The command, ready to offer again.
    pub(crate) command: Command,
    /// When it is dropped if still undelivered.
    pub(crate) deadline: Deadline,
    /// Its record as written to the KV bucket.
    pub(crate) record: HeldCommand,
    /// Revision of its record; `None` while the record is being written
    /// (it is not offered again before: delivering it must be able to
    /// remove the record).
    pub(crate) revision: Option<u64>,
}

/// Held commands by topic, each queue in stream order.
#[derive(Debug, Default)]
pub(crate) struct Held {
    /// The queues; a topic is here only while its queue is not empty.
    topics: HashMap<Topic, VecDeque<HeldEntry>>,
    /// Topic of every held command, by stream sequence.
    index: HashMap<u64, Topic>,
}

impl Held {
    /// How many commands are held.
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    /// The newest held command on `topic`: a new command to it must wait
    /// behind.
    pub(crate) fn last_on(&self, topic: &Topic) -> Option<u64> {
        self.topics
            .get(topic)
            .and_then(|q| q.back())
            .map(|e| e.command.stream_seq)
    }

    /// Holds `entry` behind those on its topic. Entries must come in stream
    /// order per topic.
    pub(crate) fn push(&mut self, entry: HeldEntry) {
        let topic = entry.command.topic.clone();
        self.index.insert(entry.command.stream_seq, topic.clone());
        self.topics.entry(topic).or_default().push_back(entry);
    }

    /// Records that `seq`'s record was written at `revision`.
    pub(crate) fn set_revision(&mut self, seq: u64, revision: u64) {
        if let Some(e) = self.get_mut(seq) {
            e.revision = Some(revision);
        }
    }

    fn get_mut(&mut self, seq: u64) -> Option<&mut HeldEntry> {
        let topic = self.index.get(&seq)?;
        self.topics
            .get_mut(topic)?
            .iter_mut()
            .find(|e| e.command.stream_seq == seq)
    }

    /// Takes `seq` out, wherever it is in its queue.
    pub(crate) fn remove(&mut self, seq: u64) -> Option<HeldEntry> {
        let topic = self.index.remove(&seq)?;
        let queue = self.topics.get_mut(&topic)?;
        let at = queue.iter().position(|e| e.command.stream_seq == seq)?;
        let entry = queue.remove(at);
        if queue.is_empty() {
            self.topics.remove(&topic);
        }
        entry
    }

    /// The topics with held commands.
    pub(crate) fn topics(&self) -> Vec<Topic> {
        self.topics.keys().cloned().collect()
    }

    /// The oldest held command on `topic`.
    pub(crate) fn front(&self, topic: &Topic) -> Option<&HeldEntry> {
        self.topics.get(topic).and_then(|q| q.front())
    }

    /// Takes the oldest held command on `topic` out.
    pub(crate) fn pop_front(&mut self, topic: &Topic) -> Option<HeldEntry> {
        let seq = self.front(topic)?.command.stream_seq;
        self.remove(seq)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use plantd_shared::commands::{CommandState, HoldReason};

    use super::*;

    fn entry(topic: &str, seq: u64) -> HeldEntry {
        HeldEntry {
            command: Command {
                topic: Topic::new(topic).expect("topic"),
                payload: Bytes::new(),
                qos: 1,
                retain: false,
                content_type: None,
                stream_seq: seq,
            },
            deadline: Deadline {
                at_ms: 0,
                from_ttl: false,
            },
            record: HeldCommand {
                id: seq,
                topic: topic.into(),
                state: CommandState::Held,
                reason: HoldReason::NoSubscriber,
                sent: None,
                held_since: String::new(),
                expires: String::new(),
                finished: None,
            },
            revision: None,
        }
    }

    #[test]
    fn queues_per_topic_in_order_and_removal_anywhere() {
        let mut h = Held::default();
        let a = Topic::new("a").expect("topic");
        h.push(entry("a", 1));
        h.push(entry("b", 2));
        h.push(entry("a", 3));
        assert_eq!(h.len(), 3);
        assert_eq!(h.last_on(&a), Some(3));
        assert!(h.remove(1).is_some());
        assert_eq!(h.front(&a).map(|e| e.command.stream_seq), Some(3));
        assert!(h.pop_front(&a).is_some());
        assert_eq!(h.last_on(&a), None, "an emptied topic no longer blocks");
        assert_eq!(h.topics().len(), 1);
        h.set_revision(2, 5);
        assert_eq!(
            h.front(&Topic::new("b").expect("topic"))
                .and_then(|e| e.revision),
            Some(5)
        );
    }
}
