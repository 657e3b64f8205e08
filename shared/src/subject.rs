//! The one reversible mapping between MQTT topics and NATS subjects.
//!
//! MQTT topic `a/b/c` published on site `s` travels as
//! `plantd.s.up.a.b.c`; a command for it as `plantd.s.down.a.b.c`; a
//! service request as `plantd.s.svc.a.b.c`, logs and alerts under `log` and
//! `alert`. See [`Channel`].
//!
//! # Escaping
//! NATS subject tokens cannot be empty or contain `.`, `*`, `>` or white
//! space, while MQTT levels may contain any of those. Each MQTT level becomes
//! one NATS token:
//!
//! * an empty level becomes the lone token `%`;
//! * the bytes of `.`, `*`, `>`, `%`, any Unicode white space and any
//!   control character are written as `%XX` (upper-case hex of each UTF-8
//!   byte);
//! * everything else is kept as it is, so ordinary topics stay readable.
//!
//! A lone `%` can never come from a non-empty level (a real `%` is `%25`),
//! so decoding is unambiguous and `subject_to_topic(topic_to_subject(t)) == t`
//! for every valid topic (a property test proves it).
//!
//! Filters map `+` to `*` and `#` to `>`. Because MQTT's `a/#` also matches
//! `a` while NATS's `a.>` does not, [`filter_to_subjects`] returns one or two
//! subjects whose union matches exactly what the MQTT filter matches (apart
//! from MQTT's `$`-topic rule, which NATS does not have; apply
//! [`crate::topic::matches`] where that matters).

use std::fmt;

use thiserror::Error;

use crate::topic::{Filter, Topic};

/// The root token of every plantd subject.
pub const ROOT: &str = "plantd";

/// Why a string is not a plantd subject (or not a valid site name).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SubjectError {
    /// The subject does not start with `plantd.<site>.<channel>.`.
    #[error("not a plantd subject: {0:?}")]
    NotPlantd(String),
    /// The channel token is not one of up/down/svc/log/alert.
    #[error("unknown channel {0:?} (expected up, down, svc, log or alert)")]
    UnknownChannel(String),
    /// A token has a `%` escape that is not `%XX` hex, or decodes to bytes
    /// that are not UTF-8.
    #[error("bad escape in subject token {0:?}")]
    BadEscape(String),
    /// The decoded topic is not a valid MQTT topic.
    #[error("decoded topic is invalid: {0}")]
    BadTopic(#[from] crate::topic::TopicError),
    /// Site names are 1 to 64 characters of `A-Z a-z 0-9 _ -`.
    #[error("invalid site name {0:?}: use 1-64 letters, digits, '_' or '-'")]
    BadSite(String),
}

/// A site's name: one NATS token of `[A-Za-z0-9_-]{1,64}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct Site(String);

impl Site {
    /// Validates a site name.
    ///
    /// # Errors
    /// [`SubjectError::BadSite`] when `name` is empty, longer than 64 bytes
    /// or has characters other than letters, digits, `_` and `-`.
    pub fn new(name: impl Into<String>) -> Result<Self, SubjectError> {
        let name = name.into();
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(name))
        } else {
            Err(SubjectError::BadSite(name))
        }
    }

    /// The site name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Site {
    type Err = SubjectError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl<'de> serde::Deserialize<'de> for Site {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Site::new(s).map_err(serde::de::Error::custom)
    }
}

/// Which way, or what kind of traffic, a subject carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Device → cloud telemetry (`plantd.<site>.up.<topic>`).
    Up,
    /// Cloud → device commands (`plantd.<site>.down.<topic>`).
    Down,
    /// Request/reply to a service on the site (`plantd.<site>.svc.<topic>`).
    Svc,
    /// Log records (`plantd.<site>.log.<topic>`).
    Log,
    /// Alerts (`plantd.<site>.alert.<topic>`).
    Alert,
    /// Analytics results (`plantd.<site>.agg.<rule>.<key>`, stream
    /// `PLANTD_AGGREGATES`): from the cloud's analytics function, or from an
    /// edge's rules through its journal (`$plantd/agg/<rule>/<key>`).
    Agg,
}

impl Channel {
    /// Every channel, in a stable order.
    pub const ALL: [Channel; 6] = [
        Channel::Up,
        Channel::Down,
        Channel::Svc,
        Channel::Log,
        Channel::Alert,
        Channel::Agg,
    ];

    /// The subject token for this channel.
    pub fn token(self) -> &'static str {
        match self {
            Channel::Up => "up",
            Channel::Down => "down",
            Channel::Svc => "svc",
            Channel::Log => "log",
            Channel::Alert => "alert",
            Channel::Agg => "agg",
        }
    }

    fn from_token(t: &str) -> Option<Self> {
        Channel::ALL.into_iter().find(|c| c.token() == t)
    }
}

/// `plantd.<site>.<channel>` — the prefix of every subject on that channel.
pub fn prefix(site: &Site, channel: Channel) -> String {
    format!("{ROOT}.{}.{}", site.as_str(), channel.token())
}

/// `plantd.*.<channel>.>` — every site's subjects on one channel (a stream's
/// subject set).
pub fn all_sites(channel: Channel) -> String {
    format!("{ROOT}.*.{}.>", channel.token())
}

fn needs_escape(c: char) -> bool {
    matches!(c, '.' | '*' | '>' | '%') || c.is_whitespace() || c.is_control()
}

/// Appends the NATS token for one MQTT level to `out`.
pub fn encode_level(level: &str, out: &mut String) {
    if level.is_empty() {
        out.push('%');
        return;
    }
    for c in level.chars() {
        if needs_escape(c) {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xF)]));
            }
        } else {
            out.push(c);
        }
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes one NATS token back into the MQTT level it came from.
///
/// # Errors
/// [`SubjectError::BadEscape`] for a `%` not followed by two hex digits or
/// bytes that are not UTF-8.
pub fn decode_token(token: &str) -> Result<String, SubjectError> {
    if token == "%" {
        return Ok(String::new());
    }
    if !token.contains('%') {
        return Ok(token.to_owned());
    }
    let bad = || SubjectError::BadEscape(token.to_owned());
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = bytes
                .get(i + 1)
                .copied()
                .and_then(hex_val)
                .ok_or_else(bad)?;
            let lo = bytes
                .get(i + 2)
                .copied()
                .and_then(hex_val)
                .ok_or_else(bad)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// The NATS subject for an MQTT topic on a site and channel.
pub fn topic_to_subject(site: &Site, channel: Channel, topic: &Topic) -> String {
    let mut s = prefix(site, channel);
    s.reserve(topic.as_str().len() + 8);
    for level in topic.levels() {
        s.push('.');
        encode_level(level, &mut s);
    }
    s
}

/// The subject a publication on `topic` goes up to from `site`: a log
/// topic `$plantd/log/<source>` ([`crate::topic::LOG_PREFIX`]) goes to
/// `plantd.<site>.log.<source>` (stream `PLANTD_LOGS`), every other topic to
/// `plantd.<site>.up.<topic>` (`PLANTD_TELEMETRY`). Returns the channel with
/// the subject.
///
/// An edge's analytics result `$plantd/agg/<rule>/<key>`
/// ([`crate::topic::AGG_PREFIX`]) goes to `plantd.<site>.agg.<rule>.<key>`
/// (`PLANTD_AGGREGATES`).
pub fn uplink_subject(site: &Site, topic: &Topic) -> (Channel, String) {
    if let Some(Ok(source)) = crate::topic::log_source(topic.as_str()).map(Topic::new) {
        return (Channel::Log, topic_to_subject(site, Channel::Log, &source));
    }
    if let Some(Ok(rest)) = crate::topic::agg_rest(topic.as_str()).map(Topic::new) {
        return (Channel::Agg, topic_to_subject(site, Channel::Agg, &rest));
    }
    (Channel::Up, topic_to_subject(site, Channel::Up, topic))
}

/// The subject of an analytics result: `plantd.<site>.agg.<rule>.<key>`,
/// the rule one token and the key's MQTT levels one token each (a key that
/// is a topic keeps its levels).
pub fn aggregate_subject(site: &Site, rule: &str, key: &str) -> String {
    let mut s = prefix(site, Channel::Agg);
    s.push('.');
    encode_level(rule, &mut s);
    for level in key.split('/') {
        s.push('.');
        encode_level(level, &mut s);
    }
    s
}

/// A subject taken apart: which site, which channel, which MQTT topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedSubject {
    /// The site token.
    pub site: Site,
    /// The channel token.
    pub channel: Channel,
    /// The MQTT topic the remaining tokens decode to.
    pub topic: Topic,
}

/// The inverse of [`topic_to_subject`].
///
/// # Errors
/// [`SubjectError`] when `subject` is not `plantd.<site>.<channel>.<tokens>`
/// or a token does not decode.
pub fn subject_to_topic(subject: &str) -> Result<ParsedSubject, SubjectError> {
    let not = || SubjectError::NotPlantd(subject.to_owned());
    let mut parts = subject.splitn(4, '.');
    if parts.next() != Some(ROOT) {
        return Err(not());
    }
    let site = Site::new(parts.next().ok_or_else(not)?)?;
    let channel_tok = parts.next().ok_or_else(not)?;
    let channel = Channel::from_token(channel_tok)
        .ok_or_else(|| SubjectError::UnknownChannel(channel_tok.to_owned()))?;
    let rest = parts.next().ok_or_else(not)?;
    let topic = tokens_to_topic(rest)?;
    Ok(ParsedSubject {
        site,
        channel,
        topic,
    })
}

/// Decodes the tokens after the channel (`a.b.%`) into an MQTT topic
/// (`a/b/`).
///
/// # Errors
/// As [`decode_token`], and [`SubjectError::BadTopic`] if the result is not a
/// valid topic name.
pub fn tokens_to_topic(tokens: &str) -> Result<Topic, SubjectError> {
    let mut topic = String::with_capacity(tokens.len());
    for (i, tok) in tokens.split('.').enumerate() {
        if tok.is_empty() {
            return Err(SubjectError::NotPlantd(tokens.to_owned()));
        }
        if i > 0 {
            topic.push('/');
        }
        topic.push_str(&decode_token(tok)?);
    }
    Ok(Topic::new(topic)?)
}

/// The NATS subjects whose union matches what `filter` matches on a site
/// and channel: one subject, or two when the filter ends in `/#` (the
/// parent level itself, and `>` below it).
pub fn filter_to_subjects(site: &Site, channel: Channel, filter: &Filter) -> Vec<String> {
    let mut s = prefix(site, channel);
    let levels: Vec<&str> = filter.levels().collect();
    let mut parent = None;
    for (i, level) in levels.iter().enumerate() {
        match *level {
            "#" => {
                if i > 0 {
                    parent = Some(s.clone());
                }
                s.push_str(".>");
            }
            "+" => s.push_str(".*"),
            l => {
                s.push('.');
                encode_level(l, &mut s);
            }
        }
    }
    match parent {
        Some(p) => vec![p, s],
        None => vec![s],
    }
}

/// NATS subject matching: `*` matches one token, `>` one or more trailing
/// tokens. Used to check that both sides of the mapping agree, and by
/// services that filter subjects in memory.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(pt), Some(st)) => {
                if pt != st {
                    return false;
                }
            }
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> Site {
        Site::new("plant-1").expect("site")
    }

    fn up(t: &str) -> String {
        topic_to_subject(&site(), Channel::Up, &Topic::new(t).expect("topic"))
    }

    #[test]
    fn ordinary_topics_stay_readable() {
        assert_eq!(up("line1/press/temp"), "plantd.plant-1.up.line1.press.temp");
        assert_eq!(
            topic_to_subject(&site(), Channel::Down, &Topic::new("a").expect("t")),
            "plantd.plant-1.down.a"
        );
    }

    #[test]
    fn dots_wildcards_space_and_empty_levels_are_escaped() {
        assert_eq!(up("v1.2/x"), "plantd.plant-1.up.v1%2E2.x");
        assert_eq!(up("a*b/c>d"), "plantd.plant-1.up.a%2Ab.c%3Ed");
        assert_eq!(up("a b\tc"), "plantd.plant-1.up.a%20b%09c");
        assert_eq!(up("/a//b/"), "plantd.plant-1.up.%.a.%.b.%");
        assert_eq!(up("100%"), "plantd.plant-1.up.100%25");
        assert_eq!(up("é"), "plantd.plant-1.up.é");
        assert_eq!(up("\u{a0}"), "plantd.plant-1.up.%C2%A0");
    }

    #[test]
    fn round_trip_examples() {
        for t in ["a", "/", "a/b", "v1.2/x y/%/%25", "$SYS/x", "//", "*/>"] {
            let parsed = subject_to_topic(&up(t)).expect("parses");
            assert_eq!(parsed.topic.as_str(), t);
            assert_eq!(parsed.channel, Channel::Up);
            assert_eq!(parsed.site, site());
        }
    }

    #[test]
    fn malformed_subjects_are_refused() {
        assert!(matches!(
            subject_to_topic("other.s.up.a"),
            Err(SubjectError::NotPlantd(_))
        ));
        assert!(matches!(
            subject_to_topic("plantd.s.sideways.a"),
            Err(SubjectError::UnknownChannel(_))
        ));
        assert!(matches!(
            subject_to_topic("plantd.s.up.a%2"),
            Err(SubjectError::BadEscape(_))
        ));
        assert!(matches!(
            subject_to_topic("plantd.s.up.%FF"),
            Err(SubjectError::BadEscape(_))
        ));
        assert!(subject_to_topic("plantd.s.up").is_err());
        assert!(subject_to_topic("plantd.s.up.a..b").is_err());
        assert!(matches!(
            subject_to_topic("plantd.s.up.a%23"),
            Err(SubjectError::BadTopic(_))
        ));
    }

    #[test]
    fn filters_map_to_wildcards() {
        let f = |s: &str| filter_to_subjects(&site(), Channel::Up, &Filter::new(s).expect("f"));
        assert_eq!(f("a/+/c"), vec!["plantd.plant-1.up.a.*.c"]);
        assert_eq!(f("#"), vec!["plantd.plant-1.up.>"]);
        assert_eq!(
            f("a/b/#"),
            vec!["plantd.plant-1.up.a.b", "plantd.plant-1.up.a.b.>"]
        );
        assert_eq!(f("+/x.y"), vec!["plantd.plant-1.up.*.x%2Ey"]);
    }

    #[test]
    fn sites_are_single_tokens() {
        assert!(Site::new("a.b").is_err());
        assert!(Site::new("").is_err());
        assert!(Site::new("*").is_err());
        assert!(Site::new("x".repeat(65)).is_err());
        assert!(Site::new("Plant_7-b").is_ok());
    }

    #[test]
    fn nats_matching() {
        assert!(subject_matches("a.*.c", "a.b.c"));
        assert!(!subject_matches("a.*", "a.b.c"));
        assert!(subject_matches("a.>", "a.b.c"));
        assert!(!subject_matches("a.>", "a"));
        assert!(subject_matches("a.b", "a.b"));
    }

    #[test]
    fn log_topics_go_up_on_the_log_channel() {
        let t = |s: &str| Topic::new(s).expect("topic");
        assert_eq!(
            uplink_subject(&site(), &t("$plantd/log/pump1")),
            (Channel::Log, "plantd.plant-1.log.pump1".to_owned())
        );
        assert_eq!(
            uplink_subject(&site(), &t("$plantd/log/line1/p.l c")),
            (
                Channel::Log,
                "plantd.plant-1.log.line1.p%2El%20c".to_owned()
            )
        );
        assert_eq!(
            uplink_subject(&site(), &t("line1/temp")),
            (Channel::Up, "plantd.plant-1.up.line1.temp".to_owned())
        );
        // The logger reads the source back from the subject.
        let parsed = subject_to_topic("plantd.plant-1.log.line1.plc").expect("parses");
        assert_eq!(parsed.channel, Channel::Log);
        assert_eq!(parsed.topic.as_str(), "line1/plc");
    }
}
