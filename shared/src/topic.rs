//! MQTT topic names and topic filters, and the one matching function.
//!
//! Every part of plantd that asks "does this filter select this topic?" —
//! the broker's router, the permission checks, the bridge's uplink rules —
//! calls [`Filter::matches`]. The rules are MQTT 5.0 §4.7 (identical in
//! 3.1.1 §4.7):
//!
//! * `/` separates levels; levels may be empty (`a//b`, `/a`, `a/`).
//! * `+` matches exactly one level, `#` matches any number of levels
//!   *including the parent* (`a/#` matches `a`), and must be last.
//! * A filter whose first level is a wildcard does not match a topic whose
//!   first level starts with `$` (`#` never matches `$SYS/uptime`).
//! * `$share/<group>/<filter>` is a shared subscription, parsed by
//!   [`SubscriptionFilter::parse`].

use std::fmt;

use thiserror::Error;

/// The largest topic or filter MQTT can carry (a two-byte length prefix).
pub const MAX_TOPIC_BYTES: usize = 65_535;

/// Why a string is not a valid topic name or filter.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TopicError {
    /// The string is empty; MQTT forbids zero-length topics and filters.
    #[error("topic is empty")]
    Empty,
    /// Longer than the 65,535 bytes an MQTT string can hold.
    #[error("topic is {0} bytes, more than the 65535 MQTT allows")]
    TooLong(usize),
    /// U+0000 is forbidden in MQTT strings.
    #[error("topic contains the null character")]
    NullCharacter,
    /// A topic *name* (what is published to) may not contain `+` or `#`.
    #[error("topic name contains a wildcard ('+' or '#') at level {level}")]
    WildcardInName {
        /// Zero-based level index.
        level: usize,
    },
    /// `+` or `#` share a level with other characters (`a+`, `#b`).
    #[error("wildcard must occupy a whole level (level {level}: {text:?})")]
    PartialWildcard {
        /// Zero-based level index.
        level: usize,
        /// The offending level.
        text: String,
    },
    /// `#` appears before the last level.
    #[error("'#' must be the last level of a filter")]
    HashNotLast,
    /// A `$share/` filter is missing its group or its filter.
    #[error("shared subscription must be $share/<group>/<filter>")]
    BadShare,
    /// A share group name contains a wildcard.
    #[error("share group name must not contain '+' or '#'")]
    BadShareGroup,
}

fn check_common(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_BYTES {
        return Err(TopicError::TooLong(s.len()));
    }
    if s.contains('\0') {
        return Err(TopicError::NullCharacter);
    }
    Ok(())
}

/// A validated MQTT topic name: non-empty, no wildcards, no U+0000.
///
/// Levels are separated by `/`; empty levels are legal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(String);

impl Topic {
    /// Validates `s` as a topic name.
    ///
    /// # Errors
    /// [`TopicError`] when `s` is empty, too long, contains U+0000 or a
    /// wildcard character.
    pub fn new(s: impl Into<String>) -> Result<Self, TopicError> {
        let s = s.into();
        validate_topic(&s)?;
        Ok(Self(s))
    }

    /// The topic as sent on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `/`-separated levels (at least one, possibly empty strings).
    pub fn levels(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// True for `$`-topics (`$SYS/...`), which leading wildcards never match.
    pub fn is_system(&self) -> bool {
        self.0.starts_with('$')
    }

    /// Unwraps the inner string.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// The prefix of log topics: a device or program on a site publishes one
/// log line per message on `$plantd/log/<source>` (`<source>` one or more
/// levels, e.g. `$plantd/log/line1/plc`), and the edge sends it up to
/// `plantd.<site>.log.<source>` instead of `plantd.<site>.up.…`.
///
/// A `$`-topic, so MQTT's rule applies: `#` and `+/…` never match it: only
/// a grant or subscription that names `$plantd/log/…` does.
pub const LOG_PREFIX: &str = "$plantd/log/";

/// The source of a log topic (`line1/plc` for `$plantd/log/line1/plc`):
/// `None` when `topic` is not under [`LOG_PREFIX`], or names no source
/// (`$plantd/log/` — see [`is_log_topic_without_source`]).
pub fn log_source(topic: &str) -> Option<&str> {
    topic.strip_prefix(LOG_PREFIX).filter(|s| !s.is_empty())
}

/// Whether `topic` is in the log namespace but names no source
/// (`$plantd/log` or `$plantd/log/`): such a publish cannot be sent up and
/// is refused.
pub fn is_log_topic_without_source(topic: &str) -> bool {
    topic == "$plantd/log" || topic == LOG_PREFIX
}

/// The prefix of an edge's analytics results: the edge publishes each
/// result of a rule placed at the edge on `$plantd/agg/<rule>/<key>` (local
/// subscribers see it; the journal sends it up to
/// `plantd.<site>.agg.<rule>.<key>`, stream `PLANTD_AGGREGATES`).
pub const AGG_PREFIX: &str = "$plantd/agg/";

/// The prefix of alert signals an edge raises itself: a pattern or anomaly
/// rule placed at the edge publishes each match on
/// `$plantd/alert/<rule>/<key>` for local subscribers (sirens, HMIs) at
/// once, uplink or not. What reaches `PLANTD_ALERTS` comes from the alert
/// manager, from the result the journal carries up.
pub const ALERT_PREFIX: &str = "$plantd/alert/";

/// `<rule>/<key>` of an analytics result topic `$plantd/agg/<rule>/<key>`;
/// `None` for any other topic or an empty rest.
pub fn agg_rest(topic: &str) -> Option<&str> {
    topic.strip_prefix(AGG_PREFIX).filter(|s| !s.is_empty())
}

/// Checks `s` as an MQTT topic name without allocating.
///
/// # Errors
/// As [`Topic::new`].
pub fn validate_topic(s: &str) -> Result<(), TopicError> {
    check_common(s)?;
    if let Some(pos) = s.find(['+', '#']) {
        let level = s[..pos].matches('/').count();
        return Err(TopicError::WildcardInName { level });
    }
    Ok(())
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Topic {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Topic {
    type Err = TopicError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// A validated MQTT topic filter (what is subscribed to): `+` and `#`
/// wildcards each occupy a whole level, and `#` only the last.
///
/// A `Filter` never carries a `$share/` prefix; see [`SubscriptionFilter`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Filter(String);

/// Checks `s` as an MQTT topic filter without allocating.
///
/// # Errors
/// [`TopicError`] when `s` is empty, too long, contains U+0000, a partial
/// wildcard, or a `#` that is not last.
pub fn validate_filter(s: &str) -> Result<(), TopicError> {
    check_common(s)?;
    let mut levels = s.split('/').enumerate().peekable();
    while let Some((i, level)) = levels.next() {
        match level {
            "+" => {}
            "#" if levels.peek().is_some() => return Err(TopicError::HashNotLast),
            "#" => {}
            l if l.contains(['+', '#']) => {
                return Err(TopicError::PartialWildcard {
                    level: i,
                    text: l.to_owned(),
                });
            }
            _ => {}
        }
    }
    Ok(())
}

impl Filter {
    /// Validates `s` as a topic filter.
    ///
    /// # Errors
    /// As [`validate_filter`].
    pub fn new(s: impl Into<String>) -> Result<Self, TopicError> {
        let s = s.into();
        validate_filter(&s)?;
        Ok(Self(s))
    }

    /// The filter as sent on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `/`-separated levels.
    pub fn levels(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// True when the filter contains `+` or `#`.
    pub fn has_wildcards(&self) -> bool {
        self.levels().any(|l| l == "+" || l == "#")
    }

    /// Whether this filter selects `topic` (MQTT §4.7, including the rule
    /// that a leading wildcard does not match a `$`-topic).
    pub fn matches(&self, topic: &Topic) -> bool {
        matches(self.as_str(), topic.as_str())
    }

    /// Whether every topic this filter (`self`) can match is also matched by
    /// `other`: the test a permission check needs for a SUBSCRIBE (a client
    /// allowed `plant/+/temp` may subscribe to `plant/a/temp` but not to
    /// `plant/#`).
    pub fn is_covered_by(&self, other: &Filter) -> bool {
        covered_by(self.as_str(), other.as_str())
    }

    /// Unwraps the inner string.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Filter {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Filter {
    type Err = TopicError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl From<Topic> for Filter {
    /// Every topic name is also a filter that matches exactly itself.
    fn from(t: Topic) -> Self {
        Filter(t.0)
    }
}

/// The matching rule on raw strings, for hot paths that hold validated
/// strings already. `filter` must be a valid filter and `topic` a valid topic
/// name; on invalid input the answer is unspecified but never a panic.
pub fn matches(filter: &str, topic: &str) -> bool {
    // A wildcard first level never matches a $-topic (MQTT 4.7.2).
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) => {
                if fl != tl {
                    return false;
                }
            }
            (None, None) => return true,
            (Some(_), None) | (None, Some(_)) => return false,
        }
    }
}

fn covered_by(narrow: &str, wide: &str) -> bool {
    // A wide filter starting with a wildcard cannot cover $-topics, so it
    // cannot cover a narrow filter whose first level is a literal `$...`.
    let wide_leading_wild = wide.starts_with('+') || wide.starts_with('#');
    if wide_leading_wild && narrow.starts_with('$') {
        return false;
    }
    let mut n = narrow.split('/');
    let mut w = wide.split('/');
    loop {
        match (n.next(), w.next()) {
            (_, Some("#")) => return true,
            (None, None) => return true,
            (Some("#"), Some(_)) => return false,
            (Some(_), Some("+")) => {}
            (Some("+"), Some(_)) => return false,
            (Some(nl), Some(wl)) => {
                if nl != wl {
                    return false;
                }
            }
            // narrow `a` vs wide `a/#` is handled above (wide `#` reached);
            // anything else of different length does not cover.
            (None, Some(_)) | (Some(_), None) => return false,
        }
    }
}

/// What a client puts in a SUBSCRIBE: a plain filter, or a shared
/// subscription `$share/<group>/<filter>` whose messages are balanced
/// across the group's members.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SubscriptionFilter {
    /// The share group, when the filter was `$share/<group>/...`.
    pub group: Option<String>,
    /// The filter that selects topics.
    pub filter: Filter,
}

impl SubscriptionFilter {
    /// Parses a SUBSCRIBE topic filter, splitting off `$share/<group>/`.
    ///
    /// # Errors
    /// [`TopicError::BadShare`] for `$share/` without a group or filter,
    /// [`TopicError::BadShareGroup`] for a group containing wildcards, and
    /// the errors of [`validate_filter`].
    pub fn parse(s: &str) -> Result<Self, TopicError> {
        check_common(s)?;
        if let Some(rest) = s.strip_prefix("$share/") {
            let (group, filter) = rest.split_once('/').ok_or(TopicError::BadShare)?;
            if group.is_empty() || filter.is_empty() {
                return Err(TopicError::BadShare);
            }
            if group.contains(['+', '#']) {
                return Err(TopicError::BadShareGroup);
            }
            Ok(Self {
                group: Some(group.to_owned()),
                filter: Filter::new(filter)?,
            })
        } else if s == "$share" {
            Err(TopicError::BadShare)
        } else {
            Ok(Self {
                group: None,
                filter: Filter::new(s)?,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(f: &str, t: &str) -> bool {
        Filter::new(f)
            .expect("valid filter")
            .matches(&Topic::new(t).expect("valid topic"))
    }

    #[test]
    fn literal_and_single_level() {
        assert!(m("a/b/c", "a/b/c"));
        assert!(!m("a/b/c", "a/b"));
        assert!(!m("a/b", "a/b/c"));
        assert!(m("a/+/c", "a/x/c"));
        assert!(!m("a/+/c", "a/x/y/c"), "+ is exactly one level");
        assert!(m("a/+", "a/"), "+ matches an empty level");
        assert!(!m("a/+", "a"), "+ needs a level to exist");
        assert!(m("+/+", "/finance"));
        assert!(m("/+", "/finance"));
        assert!(!m("+", "/finance"));
    }

    #[test]
    fn multi_level_includes_parent() {
        assert!(m("a/#", "a"));
        assert!(m("a/#", "a/b"));
        assert!(m("a/#", "a/b/c/d"));
        assert!(!m("a/#", "ab"));
        assert!(!m("a/b/#", "a"));
        assert!(m("#", "a/b"));
        assert!(m("#", "/"));
    }

    #[test]
    fn dollar_topics_are_not_matched_by_leading_wildcards() {
        assert!(!m("#", "$SYS/uptime"));
        assert!(!m("+/uptime", "$SYS/uptime"));
        assert!(m("$SYS/#", "$SYS/uptime"));
        assert!(m("$SYS/+", "$SYS/uptime"));
        assert!(m("a/#", "a/$b"), "only the first level is special");
    }

    #[test]
    fn filter_validation() {
        assert!(Filter::new("a/#/b").is_err());
        assert!(Filter::new("a#").is_err());
        assert!(Filter::new("a/b+").is_err());
        assert!(Filter::new("").is_err());
        assert!(Filter::new("a\0b").is_err());
        assert!(Filter::new("+/+/#").is_ok());
        assert!(Filter::new("/").is_ok());
        assert!(Topic::new("a/+").is_err());
        assert!(Topic::new("a/#").is_err());
        assert_eq!(
            Topic::new("a/b/c#"),
            Err(TopicError::WildcardInName { level: 2 })
        );
    }

    #[test]
    fn shared_subscriptions() {
        let s = SubscriptionFilter::parse("$share/g1/a/+/c").expect("valid");
        assert_eq!(s.group.as_deref(), Some("g1"));
        assert_eq!(s.filter.as_str(), "a/+/c");
        let s = SubscriptionFilter::parse("a/b").expect("valid");
        assert_eq!(s.group, None);
        assert_eq!(
            SubscriptionFilter::parse("$share/g1"),
            Err(TopicError::BadShare)
        );
        assert_eq!(
            SubscriptionFilter::parse("$share//a"),
            Err(TopicError::BadShare)
        );
        assert_eq!(
            SubscriptionFilter::parse("$share/g+/a"),
            Err(TopicError::BadShareGroup)
        );
        assert!(SubscriptionFilter::parse("$share/g/a/#/b").is_err());
    }

    #[test]
    fn coverage_for_permissions() {
        let c = |n: &str, w: &str| {
            Filter::new(n)
                .expect("n")
                .is_covered_by(&Filter::new(w).expect("w"))
        };
        assert!(c("plant/a/temp", "plant/+/temp"));
        assert!(c("plant/+/temp", "plant/+/temp"));
        assert!(!c("plant/#", "plant/+/temp"));
        assert!(!c("plant/+/temp", "plant/a/temp"));
        assert!(c("plant/a/#", "plant/#"));
        assert!(c("plant", "plant/#"));
        assert!(!c("plant/#", "plant/a/#"));
        assert!(c("a/b/c", "#"));
        assert!(!c("$SYS/#", "#"));
        assert!(c("$SYS/x", "$SYS/#"));
    }

    #[test]
    fn log_topics_name_their_source() {
        assert_eq!(log_source("$plantd/log/pump1"), Some("pump1"));
        assert_eq!(log_source("$plantd/log/line1/plc"), Some("line1/plc"));
        assert_eq!(log_source("$plantd/log/"), None);
        assert_eq!(log_source("$plantd/log"), None);
        assert_eq!(log_source("plantd/log/pump1"), None);
        assert!(is_log_topic_without_source("$plantd/log"));
        assert!(is_log_topic_without_source("$plantd/log/"));
        assert!(!is_log_topic_without_source("$plantd/log/a"));
        // MQTT's $-rule: a leading wildcard never selects a log topic.
        assert!(!matches("#", "$plantd/log/pump1"));
        assert!(!matches("+/log/pump1", "$plantd/log/pump1"));
        assert!(matches("$plantd/log/#", "$plantd/log/pump1"));
    }
}
