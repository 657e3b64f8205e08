//! [`TopicFilter`]: the MQTT filter a rule reads (`line1/+/temp`,
//! `site/#`), matched against each event's topic without allocating.
//!
//! The rule is `plantd_shared::topic::matches` (MQTT §4.7, a leading
//! wildcard never matches a `$` topic), restated here because this crate
//! stays free of `plantd-shared`'s async and NATS dependencies (the edge
//! and the cloud embed it); the tests pin the same cases.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// An MQTT topic filter: `/`-separated levels, `+` one level, `#` (last)
/// any number of levels including none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicFilter {
    /// The text as written, kept for display and serialisation.
    text: String,
    /// Whether the filter has no wildcard (then matching is one comparison).
    exact: bool,
}

/// Why a topic filter was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TopicFilterError {
    /// The filter is empty.
    #[error("the topic filter is empty")]
    Empty,
    /// `#` is not alone in the last level, or `+` shares a level.
    #[error("wildcards must fill a whole level ('+'), and '#' only the last one: {0:?}")]
    Wildcard(String),
}

impl TopicFilter {
    /// Checks and wraps a filter.
    ///
    /// # Errors
    /// [`TopicFilterError`] when it is empty or its wildcards are misplaced.
    pub fn new(text: &str) -> Result<Self, TopicFilterError> {
        if text.is_empty() {
            return Err(TopicFilterError::Empty);
        }
        let levels: Vec<&str> = text.split('/').collect();
        for (i, level) in levels.iter().enumerate() {
            let wild = level.contains('+') || level.contains('#');
            let ok = !wild || *level == "+" || (*level == "#" && i + 1 == levels.len());
            if !ok {
                return Err(TopicFilterError::Wildcard(text.to_owned()));
            }
        }
        Ok(Self {
            text: text.to_owned(),
            exact: !text.contains(['+', '#']),
        })
    }

    /// The filter as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `topic` matches.
    pub fn matches(&self, topic: &str) -> bool {
        if self.exact {
            return self.text == topic;
        }
        // A wildcard first level never matches a $-topic (MQTT 4.7.2).
        if topic.starts_with('$') && self.text.starts_with(['+', '#']) {
            return false;
        }
        let mut filter = self.text.split('/');
        let mut levels = topic.split('/');
        loop {
            match (filter.next(), levels.next()) {
                (Some("#"), _) => return true,
                (Some("+"), Some(_)) => {}
                (Some(f), Some(t)) if f == t => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }
}

impl Serialize for TopicFilter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for TopicFilter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        TopicFilter::new(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_levels() {
        let f = TopicFilter::new("line1/+/temp").expect("ok");
        assert!(f.matches("line1/m3/temp"));
        assert!(!f.matches("line1/m3/temp/x"));
        assert!(!f.matches("line2/m3/temp"));
        let all = TopicFilter::new("line1/#").expect("ok");
        assert!(all.matches("line1"));
        assert!(all.matches("line1/a/b"));
        assert!(!TopicFilter::new("#").expect("ok").matches("$plantd/log"));
        assert!(
            TopicFilter::new("$plantd/#")
                .expect("ok")
                .matches("$plantd/log")
        );
        assert!(TopicFilter::new("a/#/b").is_err());
        assert!(TopicFilter::new("a/b+").is_err());
    }
}
