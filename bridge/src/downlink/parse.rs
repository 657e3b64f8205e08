//! Reading a command out of a `PLANTD_COMMANDS` message: its topic from the
//! subject, delivery options and time to live from the headers.

use async_nats::HeaderMap;
use bytes::Bytes;
use plantd_shared::headers;
use plantd_shared::subject::subject_to_topic;

use super::Command;

/// What a stream message is.
pub(crate) enum Parsed {
    /// A command to deliver, and when it must be dropped if undelivered.
    Command(Command, Deadline),
    /// Its time to live had passed.
    Expired,
    /// Not a command: a bad subject or header.
    Invalid(&'static str),
}

/// When an undelivered command is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deadline {
    /// Milliseconds since the Unix epoch.
    pub(crate) at_ms: u64,
    /// Whether it is the sender's time to live (`Plantd-Ttl`) rather than
    /// the edge's hold: dropping it then counts as expired, not
    /// undelivered.
    pub(crate) from_ttl: bool,
}

/// One stream message, as received from the consumer or read back by
/// sequence.
pub(crate) struct Raw<'a> {
    /// Its subject, `plantd.<site>.down.<topic>`.
    pub(crate) subject: &'a str,
    /// Its headers.
    pub(crate) headers: Option<&'a HeaderMap>,
    /// Its payload.
    pub(crate) payload: &'a Bytes,
    /// Its sequence in the stream.
    pub(crate) stream_seq: u64,
    /// When the stream stored it (ms since the epoch; 0 unknown).
    pub(crate) published_ms: u64,
}

/// Reads `raw` at time `now_ms`; without a time to live a command is held
/// at most `hold_ms` after the stream stored it.
pub(crate) fn parse(raw: &Raw<'_>, now_ms: u64, hold_ms: u64) -> Parsed {
    let Ok(parsed) = subject_to_topic(raw.subject) else {
        return Parsed::Invalid("subject is not plantd.<site>.down.<topic>");
    };
    let header = |name: &str| {
        raw.headers
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_owned())
    };
    let qos = match header(headers::QOS).as_deref() {
        None => 1,
        Some("0") => 0,
        Some("1") => 1,
        Some("2") => 2,
        Some(_) => return Parsed::Invalid("Plantd-Qos must be 0, 1 or 2"),
    };
    let retain = match header(headers::RETAIN).as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Parsed::Invalid("Plantd-Retain must be true or false"),
    };
    let deadline = match header(headers::TTL) {
        Some(ttl) => {
            let Ok(ttl) = ttl.parse::<u64>() else {
                return Parsed::Invalid("Plantd-Ttl must be whole seconds");
            };
            let sent = header(headers::SENT)
                .and_then(|s| headers::parse_time(&s))
                .unwrap_or(raw.published_ms);
            let at_ms = sent.saturating_add(ttl.saturating_mul(1000));
            if now_ms > at_ms {
                return Parsed::Expired;
            }
            Deadline {
                at_ms,
                from_ttl: true,
            }
        }
        None => Deadline {
            at_ms: raw.published_ms.saturating_add(hold_ms),
            from_ttl: false,
        },
    };
    Parsed::Command(
        Command {
            topic: parsed.topic,
            payload: raw.payload.clone(),
            qos,
            retain,
            content_type: header(headers::CONTENT_TYPE),
            stream_seq: raw.stream_seq,
        },
        deadline,
    )
}

/// The sender's time (`Plantd-Sent`) as written, if any.
pub(crate) fn sent(headers: Option<&HeaderMap>) -> Option<String> {
    headers
        .and_then(|h| h.get(plantd_shared::headers::SENT))
        .map(|v| v.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw<'a>(subject: &'a str, h: &'a HeaderMap, payload: &'a Bytes) -> Raw<'a> {
        Raw {
            subject,
            headers: Some(h),
            payload,
            stream_seq: 9,
            published_ms: 1_000,
        }
    }

    #[test]
    fn without_a_ttl_the_hold_counts_from_the_stream_time() {
        let h = HeaderMap::new();
        let p = Bytes::from_static(b"x");
        let Parsed::Command(c, d) = parse(&raw("plantd.s.down.a.b", &h, &p), 2_000, 500) else {
            panic!("a command");
        };
        assert_eq!((c.topic.as_str(), c.qos, c.stream_seq), ("a/b", 1, 9));
        assert_eq!(
            d,
            Deadline {
                at_ms: 1_500,
                from_ttl: false
            }
        );
    }

    #[test]
    fn a_ttl_counts_from_the_sent_time_and_expires() {
        let mut h = HeaderMap::new();
        h.insert(headers::TTL, "2");
        h.insert(headers::SENT, headers::format_time(10_000).as_str());
        let p = Bytes::new();
        let Parsed::Command(_, d) = parse(&raw("plantd.s.down.t", &h, &p), 11_000, 0) else {
            panic!("a command");
        };
        assert_eq!(
            d,
            Deadline {
                at_ms: 12_000,
                from_ttl: true
            }
        );
        assert!(matches!(
            parse(&raw("plantd.s.down.t", &h, &p), 12_001, 0),
            Parsed::Expired
        ));
        h.insert(headers::QOS, "3");
        assert!(matches!(
            parse(&raw("plantd.s.down.t", &h, &p), 0, 0),
            Parsed::Invalid(_)
        ));
    }
}
