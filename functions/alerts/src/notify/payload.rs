//! What a notification says: which [`Event`] a record is, the JSON body
//! every channel sends ([`Notification`]), its id, and the webhook
//! signature.
//!
//! ## The body (version 1)
//! ```json
//! {
//!   "version": 1,
//!   "id": "ops:overheat:9f2c1a:3",
//!   "channel": "ops",
//!   "event": "firing",
//!   "record": { "id": "overheat:9f2c1a:3", "kind": "transition", "org": "acme", … }
//! }
//! ```
//! `record` is the `PLANTD_ALERTS` record as stored
//! ([`AlertRecord`]); fields are only ever added. The same `id` is sent
//! on every retry and redelivery of one notification (also as the
//! `Plantd-Notification-Id` header), so a receiver can drop repeats.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::record::{AlertRecord, AlertState, RecordKind};

/// The `version` of the body this build sends.
pub const VERSION: u32 = 1;
/// Header: the notification's id (the same on every retry).
pub const ID_HEADER: &str = "Plantd-Notification-Id";
/// Header: seconds since the Unix epoch when the attempt was signed.
pub const TIMESTAMP_HEADER: &str = "Plantd-Timestamp";
/// Header: `sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`.
pub const SIGNATURE_HEADER: &str = "Plantd-Signature";

/// What a record means for the people notified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// An instance started firing.
    Firing,
    /// A firing instance stopped (`firing → inactive`).
    Resolved,
    /// The rule's input went silent: the condition cannot be evaluated.
    NoData,
    /// Input came back after no-data and the condition does not hold.
    DataBack,
    /// Still firing after the rule's repeat interval.
    Repeat,
    /// An operator acknowledged the alert.
    Ack,
    /// `POST /v1/alert-channels/{name}/test`: not an alert.
    Test,
}

impl Event {
    /// The event a record is, or `None` for records nobody is told about
    /// (pending, and pending that never fired).
    pub fn of(record: &AlertRecord) -> Option<Self> {
        match record.kind {
            RecordKind::Ack => Some(Self::Ack),
            RecordKind::Repeat => Some(Self::Repeat),
            RecordKind::Transition => match (record.from, record.to) {
                (_, AlertState::Firing) => Some(Self::Firing),
                (_, AlertState::NoData) => Some(Self::NoData),
                (AlertState::Firing, AlertState::Inactive | AlertState::Pending) => {
                    Some(Self::Resolved)
                }
                (AlertState::NoData, AlertState::Inactive | AlertState::Pending) => {
                    Some(Self::DataBack)
                }
                _ => None,
            },
        }
    }

    /// True for the events `send_resolved = false` suppresses.
    pub fn is_resolution(self) -> bool {
        matches!(self, Self::Resolved | Self::DataBack)
    }

    /// The snake-case name (`firing`, `no_data`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
            Self::NoData => "no_data",
            Self::DataBack => "data_back",
            Self::Repeat => "repeat",
            Self::Ack => "ack",
            Self::Test => "test",
        }
    }
}

/// The JSON document every channel sends (module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// The body's version ([`VERSION`]).
    pub version: u32,
    /// The notification's id: `<channel>:<record id>`.
    pub id: String,
    /// The channel's name.
    pub channel: String,
    /// What happened.
    pub event: Event,
    /// The alert record.
    pub record: AlertRecord,
}

impl Notification {
    /// The notification of `record` on `channel`.
    pub fn new(channel: &str, event: Event, record: AlertRecord) -> Self {
        Self {
            version: VERSION,
            id: notification_id(channel, &record.id),
            channel: channel.to_owned(),
            event,
            record,
        }
    }

    /// One line for people (SNS subject, logs): `[FIRING] rule name on
    /// site`.
    pub fn title(&self) -> String {
        let event = self.event.as_str().replace('_', " ").to_uppercase();
        format!(
            "[{event}] {} on {}",
            self.record.rule_name, self.record.site
        )
    }
}

/// `<channel>:<record id>`: the same for every attempt of one record on one
/// channel.
pub fn notification_id(channel: &str, record_id: &str) -> String {
    format!("{channel}:{record_id}")
}

/// `sha256=<hex>` of HMAC-SHA256 with `secret` over `"<timestamp>.<body>"`:
/// the `Plantd-Signature` header.
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + tag.len() * 2);
    out.push_str("sha256=");
    for b in tag {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// True when `header` is the signature of `body` at `timestamp` under
/// `secret` (compared in constant time).
pub fn verify(secret: &[u8], timestamp: u64, body: &[u8], header: &str) -> bool {
    let Some(hex) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Some(tag) = decode_hex(hex) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&tag).is_ok()
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_refuse_tampering() {
        let sig = signature(b"k", 1_700_000_000, b"{\"a\":1}");
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64, "{sig}");
        assert!(verify(b"k", 1_700_000_000, b"{\"a\":1}", &sig));
        assert!(!verify(b"k", 1_700_000_001, b"{\"a\":1}", &sig));
        assert!(!verify(b"k", 1_700_000_000, b"{\"a\":2}", &sig));
        assert!(!verify(b"other", 1_700_000_000, b"{\"a\":1}", &sig));
        assert!(!verify(b"k", 1_700_000_000, b"{\"a\":1}", "sha1=00"));
    }

    #[test]
    fn records_map_to_events_and_pending_is_never_sent() {
        use AlertState::{Firing, Inactive, NoData, Pending};
        let record = |kind, from, to| {
            let mut r: AlertRecord = serde_json::from_value(serde_json::json!({
                "id": "r:k:1", "kind": "transition", "org": "o", "site": "s", "rule": "r",
                "rule_name": "R", "key": "", "labels": {}, "severity": "warning",
                "from": "inactive", "to": "firing", "n": 1, "at": "2026-01-01T00:00:00Z",
                "summary": ""
            }))
            .expect("a record");
            r.kind = kind;
            r.from = from;
            r.to = to;
            r
        };
        let t = RecordKind::Transition;
        assert_eq!(Event::of(&record(t, Pending, Firing)), Some(Event::Firing));
        assert_eq!(
            Event::of(&record(t, Firing, Inactive)),
            Some(Event::Resolved)
        );
        assert_eq!(Event::of(&record(t, Firing, NoData)), Some(Event::NoData));
        assert_eq!(
            Event::of(&record(t, NoData, Inactive)),
            Some(Event::DataBack)
        );
        assert_eq!(Event::of(&record(t, Inactive, Pending)), None);
        assert_eq!(Event::of(&record(t, Pending, Inactive)), None);
        assert_eq!(
            Event::of(&record(RecordKind::Ack, Firing, Firing)),
            Some(Event::Ack)
        );
        assert_eq!(
            Event::of(&record(RecordKind::Repeat, Firing, Firing)),
            Some(Event::Repeat)
        );
        assert!(Event::Resolved.is_resolution() && Event::DataBack.is_resolution());
        assert!(!Event::Firing.is_resolution());
        assert_eq!(
            serde_json::to_value(Event::NoData).expect("json"),
            Event::NoData.as_str()
        );
    }

    #[test]
    fn a_known_vector() {
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"secret",b"1.body",hashlib.sha256).hexdigest())'
        assert_eq!(
            signature(b"secret", 1, b"body"),
            "sha256=842b24d9575dee4b6ec460b7e3af7d683501d84fe6279102340787c79d2e2bab"
        );
    }
}
