//! The `/v1/ws` frames (docs/api.md, "Live data"), as the client reads
//! and writes them.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::Error;
use crate::live::Message;

/// A frame from the server.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum ServerFrame {
    /// A subscription is in place; a sequenced one says where it starts.
    Subscribed {
        id: String,
        #[serde(default)]
        from_sequence: Option<u64>,
        /// Retention dropped some of what was asked for.
        #[serde(default)]
        missed: bool,
    },
    /// A tail is in place; a sequenced one says where it starts.
    Tailing {
        id: String,
        #[serde(default)]
        from_sequence: Option<u64>,
        /// Retention dropped some of what was asked for.
        #[serde(default)]
        missed: bool,
    },
    /// A log line of a tail: the `GET /v1/logs` record.
    Log { id: String, record: Value },
    /// A message of a subscription.
    Message {
        id: String,
        site: String,
        topic: String,
        #[serde(default)]
        payload: Option<String>,
        #[serde(default)]
        payload_base64: Option<String>,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        #[serde(default)]
        sequence: Option<u64>,
        #[serde(default)]
        time: Option<String>,
    },
    /// A command was stored.
    Sent {
        id: String,
        stream: String,
        sequence: u64,
    },
    /// A subscription, command or frame was refused.
    Error {
        #[serde(default)]
        id: Option<String>,
        error: String,
        #[serde(default)]
        message: String,
    },
    /// Anything else (`unsubscribed`, later additions).
    #[serde(other)]
    Other,
}

/// What a subscription asks the server for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// `subscribe`: telemetry on topics matching an MQTT filter.
    Subscribe {
        /// The MQTT topic filter.
        filter: String,
    },
    /// `tail`: log lines (each criterion optional).
    Tail {
        /// A filter in the log query language.
        filter: Option<String>,
        /// Only this source (exact or glob).
        source: Option<String>,
        /// Only this level and above.
        level: Option<String>,
    },
}

impl Op {
    /// How logs and errors name it: the topic filter, or `tail`.
    pub(crate) fn describe(&self) -> &str {
        match self {
            Op::Subscribe { filter } => filter,
            Op::Tail { .. } => "tail",
        }
    }
}

/// `subscribe` or `tail`: sequenced from the next one stored, or resuming
/// at `from` (the last sequence seen + 1).
pub(crate) fn open(id: &str, site: &str, op: &Op, from: u64) -> String {
    let mut frame = match op {
        Op::Subscribe { filter } => {
            json!({"op": "subscribe", "id": id, "site": site, "filter": filter})
        }
        Op::Tail {
            filter,
            source,
            level,
        } => {
            let mut frame = json!({"op": "tail", "id": id, "site": site});
            for (key, value) in [("filter", filter), ("source", source), ("level", level)] {
                if let Some(value) = value {
                    frame[key] = json!(value);
                }
            }
            frame
        }
    };
    if from > 0 {
        frame["from_sequence"] = json!(from);
    } else {
        frame["sequenced"] = json!(true);
    }
    frame.to_string()
}

/// `unsubscribe`.
pub(crate) fn unsubscribe(id: &str) -> String {
    json!({"op": "unsubscribe", "id": id}).to_string()
}

/// `command`: the body of `POST /v1/sites/{site}/commands` with `op`, `id`
/// and `site`.
pub(crate) fn command(id: &str, site: &str, body: &Value) -> Result<String, Error> {
    let mut frame = body.clone();
    let Some(fields) = frame.as_object_mut() else {
        return Err(Error::Invalid("a command is a JSON object".to_owned()));
    };
    fields.insert("op".to_owned(), json!("command"));
    fields.insert("id".to_owned(), json!(id));
    fields.insert("site".to_owned(), json!(site));
    Ok(frame.to_string())
}

/// A `message` frame as a [`Message`].
pub(crate) fn message(
    site: String,
    topic: String,
    payload: Option<String>,
    payload_base64: Option<String>,
    headers: BTreeMap<String, String>,
    sequence: u64,
    time: Option<String>,
) -> Result<Message, Error> {
    let payload = match (payload, payload_base64) {
        (Some(text), _) => text.into_bytes(),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|e| Error::Decode(format!("payload_base64 on {topic}: {e}")))?,
        (None, None) => Vec::new(),
    };
    Ok(Message {
        site,
        topic,
        payload: payload.into(),
        headers,
        sequence,
        time,
        missed_before: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_read_and_write_as_the_protocol_says() {
        let f: ServerFrame = serde_json::from_str(
            r#"{"op":"message","id":"s1","site":"p","topic":"a/b","payload_base64":"AP8=","headers":{"Plantd-Qos":"1"},"sequence":7,"time":"t"}"#,
        )
        .expect("a message frame");
        let ServerFrame::Message {
            payload_base64,
            sequence,
            ..
        } = f
        else {
            panic!("not a message: {f:?}");
        };
        assert_eq!(sequence, Some(7));
        let m = message(
            "p".into(),
            "a/b".into(),
            None,
            payload_base64,
            BTreeMap::new(),
            7,
            None,
        )
        .expect("decodes");
        assert_eq!(&m.payload[..], &[0x00, 0xff]);
        let f: ServerFrame =
            serde_json::from_str(r#"{"op":"unsubscribed","id":"s1"}"#).expect("other");
        assert!(matches!(f, ServerFrame::Other));
        let topics = Op::Subscribe {
            filter: "a/#".into(),
        };
        let sub: Value = serde_json::from_str(&open("s1", "p", &topics, 0)).expect("JSON");
        assert_eq!(
            sub,
            json!({"op": "subscribe", "id": "s1", "site": "p", "filter": "a/#", "sequenced": true})
        );
        assert!(open("s1", "p", &topics, 42).contains(r#""from_sequence":42"#));
        let tail = Op::Tail {
            filter: None,
            source: Some("line1/*".into()),
            level: Some("warn".into()),
        };
        let t: Value = serde_json::from_str(&open("s2", "p", &tail, 9)).expect("JSON");
        assert_eq!(
            t,
            json!({"op": "tail", "id": "s2", "site": "p", "source": "line1/*", "level": "warn", "from_sequence": 9})
        );
        let f: ServerFrame =
            serde_json::from_str(r#"{"op":"tailing","id":"s2","from_sequence":9,"missed":true}"#)
                .expect("tailing");
        assert!(matches!(
            f,
            ServerFrame::Tailing {
                from_sequence: Some(9),
                missed: true,
                ..
            }
        ));
        let f: ServerFrame =
            serde_json::from_str(r#"{"op":"log","id":"s2","record":{"message":"m"}}"#)
                .expect("log");
        assert!(matches!(f, ServerFrame::Log { .. }));
        let c = command("c1", "p", &json!({"topic": "v/set", "payload": "open"})).expect("object");
        assert!(
            c.contains(r#""op":"command""#) && c.contains(r#""site":"p""#),
            "{c}"
        );
    }
}
