//! The AWS path's Lambda side: an SQS event (what a queue fed by the
//! forwarder hands a Lambda function) turned back into [`Item`]s, handed
//! to any [`Handler`], and answered with an SQS partial batch response.
//!
//! ## The envelope (the forwarder's message body)
//! One SQS message carries one stream item as a JSON [`Envelope`]:
//!
//! ```json
//! {"v":1,"stream":"PLANTD_LOGS","sequence":42,"subject":"plantd.plant-1.log.line1.plc",
//!  "headers":{"Nats-Msg-Id":["plant-1:…:7"],"Plantd-Topic":["$plantd/log/line1/plc"]},
//!  "payload":"bW90b3Igb3ZlcmhlYXRlZA==","published":"2026-12-06T14:00:00.123456789Z",
//!  "delivered":1}
//! ```
//!
//! `payload` is the item's bytes in standard base64 (padded); `headers`
//! are every header with all its values, in order; `published` is when the
//! stream stored it (RFC 3339); `delivered` is the JetStream delivery that
//! was forwarded; `replay` (absent normally) is the `PLANTD_DLQ` sequence
//! when an operator replayed a parked item. The message's attributes
//! repeat `stream`, `sequence`, `subject` and `delivered`
//! ([`ATTR_STREAM`] …) for filtering and debugging without decoding the
//! body. The body is the contract; the attributes are a convenience.
//!
//! ## What a handler sees
//! `(stream, sequence)` comes from the envelope, so the idempotency key is
//! the same as in `plantd up` — an SQS redelivery, a duplicate send after
//! a forwarder crash, and a replay all carry the same pair.
//! [`Item::delivered`] is the queue's `ApproximateReceiveCount` (the
//! attempt the queue's `maxReceiveCount` counts toward a dead-letter
//! queue), or the envelope's count when the event lacks it.
//!
//! ## What the function answers
//! `{"batchItemFailures":[{"itemIdentifier":"<messageId>"}]}` lists the
//! records to retry (the event source mapping needs
//! `FunctionResponseTypes: [ReportBatchItemFailures]`); an empty list
//! deletes the whole batch from the queue. A record whose body is not an
//! envelope fails alone: the rest of the batch is handled. A handler that
//! panics on a batch is given each item alone, so only the item that
//! panics fails (as in the trigger's own loop), not the invocation.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;

use std::str::FromStr as _;

use async_nats::HeaderMap;
use async_nats::header::{HeaderName, HeaderValue};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures::FutureExt as _;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use time::OffsetDateTime;

use crate::item::{BatchOutcome, Handler, Item};

/// The envelope format version written in `v`.
pub const ENVELOPE_VERSION: u32 = 1;
/// Message attribute: the source stream.
pub const ATTR_STREAM: &str = "plantd-stream";
/// Message attribute: the stream sequence (a `Number`).
pub const ATTR_SEQUENCE: &str = "plantd-sequence";
/// Message attribute: the subject.
pub const ATTR_SUBJECT: &str = "plantd-subject";
/// Message attribute: the JetStream delivery that was forwarded (a `Number`).
pub const ATTR_DELIVERED: &str = "plantd-delivered";

/// One stream item as the forwarder sends it to SQS (the message body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Format version ([`ENVELOPE_VERSION`]); a reader refuses others.
    pub v: u32,
    /// The source stream.
    pub stream: String,
    /// The item's sequence in it.
    pub sequence: u64,
    /// The subject it was published on.
    pub subject: String,
    /// Every header with all its values, in order.
    #[serde(default)]
    pub headers: BTreeMap<String, Vec<String>>,
    /// The payload, standard base64 with padding.
    pub payload: String,
    /// When the stream stored it.
    #[serde(with = "time::serde::rfc3339")]
    pub published: OffsetDateTime,
    /// The JetStream delivery count of the forwarded delivery.
    pub delivered: u64,
    /// The `PLANTD_DLQ` sequence when this is a replay of a parked item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<u64>,
}

/// Why an SQS message body is not an item.
#[derive(Debug, Error)]
pub enum EnvelopeError {
    /// Not JSON of the envelope's shape.
    #[error("the body is not a plantd envelope: {0}")]
    Json(#[from] serde_json::Error),
    /// Another format version.
    #[error("envelope version {0} is not {ENVELOPE_VERSION}")]
    Version(u32),
    /// `payload` is not base64.
    #[error("field payload is not base64: {0}")]
    Payload(#[from] base64::DecodeError),
    /// A header name or value cannot be a NATS header.
    #[error("field headers: {0}")]
    Header(String),
}

impl Envelope {
    /// The envelope of `item`.
    pub fn of(item: &Item) -> Self {
        let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, values) in item.headers.iter() {
            headers
                .entry(name.to_string())
                .or_default()
                .extend(values.iter().map(|v| v.as_str().to_owned()));
        }
        Self {
            v: ENVELOPE_VERSION,
            stream: item.stream.to_string(),
            sequence: item.sequence,
            subject: item.subject.to_string(),
            headers,
            payload: STANDARD.encode(&item.payload),
            published: item.published,
            delivered: item.delivered,
            replay: item.replay,
        }
    }

    /// The JSON body.
    pub fn to_json(&self) -> String {
        // Serialising a struct of strings, numbers and maps of strings
        // cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads an envelope from a message body.
    ///
    /// # Errors
    /// [`EnvelopeError`] when it is not JSON of this shape or another version.
    pub fn from_json(body: &str) -> Result<Self, EnvelopeError> {
        let e: Self = serde_json::from_str(body)?;
        if e.v != ENVELOPE_VERSION {
            return Err(EnvelopeError::Version(e.v));
        }
        Ok(e)
    }

    /// The item it carries; `delivered` is the caller's count.
    ///
    /// # Errors
    /// [`EnvelopeError`] when the payload is not base64 or a header cannot
    /// be a NATS header.
    pub fn into_item(self, delivered: u64) -> Result<Item, EnvelopeError> {
        let payload = Bytes::from(STANDARD.decode(self.payload.as_bytes())?);
        let mut headers = HeaderMap::new();
        for (name, values) in self.headers {
            let header = HeaderName::from_str(&name)
                .map_err(|e| EnvelopeError::Header(format!("name {name:?}: {e}")))?;
            for value in values {
                let value = HeaderValue::from_str(&value)
                    .map_err(|e| EnvelopeError::Header(format!("{name}: {e}")))?;
                headers.append(header.clone(), value);
            }
        }
        Ok(Item {
            stream: self.stream.into(),
            sequence: self.sequence,
            subject: self.subject.into(),
            headers,
            payload,
            published: self.published,
            delivered: delivered.max(1),
            replay: self.replay,
        })
    }
}

/// The SQS event a Lambda function receives (the fields plantd reads).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct SqsEvent {
    /// The messages.
    #[serde(rename = "Records", default)]
    pub records: Vec<SqsMessage>,
}

/// One message of an [`SqsEvent`].
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SqsMessage {
    /// The message id: what a partial batch response names.
    pub message_id: String,
    /// The body (an [`Envelope`]).
    #[serde(default)]
    pub body: Option<String>,
    /// System attributes (`ApproximateReceiveCount`, …).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// The queue's ARN.
    #[serde(default)]
    pub event_source_arn: Option<String>,
}

/// An SQS partial batch response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SqsBatchResponse {
    /// The records to retry.
    pub batch_item_failures: Vec<BatchItemFailure>,
}

/// One record to retry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchItemFailure {
    /// Its `messageId`.
    pub item_identifier: String,
}

impl SqsBatchResponse {
    /// The failed message ids, in order.
    pub fn failed_ids(&self) -> Vec<&str> {
        self.batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect()
    }
}

/// Decodes `message` into the item it carries.
///
/// # Errors
/// [`EnvelopeError`] when the body is missing or not an envelope.
pub fn decode(message: &SqsMessage) -> Result<Item, EnvelopeError> {
    let body = message.body.as_deref().unwrap_or_default();
    let envelope = Envelope::from_json(body)?;
    let delivered = message
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|c| c.parse::<u64>().ok())
        .unwrap_or(envelope.delivered);
    envelope.into_item(delivered)
}

/// One handler call on `items`; when it panics, each item is handed over
/// again alone, so only the item that panics fails (as in the trigger's
/// consumer loop) instead of the whole invocation.
async fn run_handler<H: Handler>(handler: &H, items: &[Item]) -> BatchOutcome {
    match AssertUnwindSafe(handler.handle(items)).catch_unwind().await {
        Ok(outcome) => outcome,
        Err(_) => {
            tracing::error!(
                items = items.len(),
                "handler panicked on a batch; handing each item over alone"
            );
            let mut outcome = BatchOutcome::success();
            for (i, item) in items.iter().enumerate() {
                let alone = std::slice::from_ref(item);
                match AssertUnwindSafe(handler.handle(alone)).catch_unwind().await {
                    Ok(o) => {
                        if let Some(e) = o.failure(0) {
                            outcome.record_failure(i, e);
                        }
                    }
                    Err(_) => outcome.record_failure(i, "handler panicked"),
                }
            }
            outcome
        }
    }
}

/// Hands the items of `event` to `handler` in one call and answers which
/// records failed: those whose body is not an envelope (logged, never
/// handed over) and those the handler's outcome lists. The handler is
/// not called when no record decodes.
pub async fn handle<H: Handler>(handler: &H, event: SqsEvent) -> SqsBatchResponse {
    let mut failed = Vec::new();
    let mut ids = Vec::with_capacity(event.records.len());
    let mut items = Vec::with_capacity(event.records.len());
    for message in &event.records {
        match decode(message) {
            Ok(item) => {
                ids.push(message.message_id.as_str());
                items.push(item);
            }
            Err(e) => {
                tracing::warn!(message_id = %message.message_id, queue = message.event_source_arn.as_deref().unwrap_or(""), error = %e, "undecodable SQS record; reported as a batch item failure");
                failed.push(message.message_id.clone());
            }
        }
    }
    if !items.is_empty() {
        let outcome = run_handler(handler, &items).await;
        for (i, error) in outcome.failures() {
            let (Some(id), Some(item)) = (ids.get(i), items.get(i)) else {
                tracing::error!(
                    index = i,
                    "the handler failed an item that is not in the batch"
                );
                continue;
            };
            tracing::warn!(message_id = %id, stream = %item.stream, stream_seq = item.sequence, error, "item failed; SQS will redeliver it");
            failed.push((*id).to_owned());
        }
    }
    // In the event's order, once each.
    let order: BTreeMap<&str, usize> = event
        .records
        .iter()
        .enumerate()
        .map(|(i, m)| (m.message_id.as_str(), i))
        .collect();
    failed.sort_by_key(|id| order.get(id.as_str()).copied().unwrap_or(usize::MAX));
    failed.dedup();
    SqsBatchResponse {
        batch_item_failures: failed
            .into_iter()
            .map(|item_identifier| BatchItemFailure { item_identifier })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn item(seq: u64, payload: &[u8]) -> Item {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", "m-1");
        headers.append("Plantd-User-level", "warn");
        headers.append("Plantd-User-level", "second");
        Item {
            stream: "PLANTD_LOGS".into(),
            sequence: seq,
            subject: "plantd.plant-1.log.line1".into(),
            headers,
            payload: Bytes::copy_from_slice(payload),
            published: OffsetDateTime::from_unix_timestamp_nanos(1_765_000_000_123_456_789)
                .expect("time"),
            delivered: 2,
            replay: Some(9),
        }
    }

    fn message(id: &str, body: &str, received: u64) -> SqsMessage {
        SqsMessage {
            message_id: id.into(),
            body: Some(body.into()),
            attributes: [("ApproximateReceiveCount".to_owned(), received.to_string())].into(),
            event_source_arn: None,
        }
    }

    #[test]
    fn an_envelope_carries_an_item_byte_for_byte() {
        let original = item(42, b"\x00\xffbinary \xe2\x82\xac");
        let body = Envelope::of(&original).to_json();
        let back = decode(&message("a", &body, 3)).expect("decodes");
        assert_eq!(back.key(), ("PLANTD_LOGS", 42));
        assert_eq!(back.subject, original.subject);
        assert_eq!(back.payload, original.payload);
        assert_eq!(back.published, original.published);
        assert_eq!(back.replay, Some(9));
        assert_eq!(back.delivered, 3, "the queue's receive count");
        let levels: Vec<&str> = back
            .headers
            .get_all("Plantd-User-level")
            .map(|v| v.as_str())
            .collect();
        assert_eq!(levels, ["warn", "second"]);
        assert_eq!(
            back.headers.get("Nats-Msg-Id").map(|v| v.as_str()),
            Some("m-1")
        );
    }

    #[test]
    fn bad_bodies_name_what_is_wrong() {
        for (body, what) in [
            ("not json", "not a plantd envelope"),
            (
                r#"{"v":2,"stream":"S","sequence":1,"subject":"s","payload":"","published":"2026-01-01T00:00:00Z","delivered":1}"#,
                "version 2",
            ),
            (
                r#"{"v":1,"stream":"S","sequence":1,"subject":"s","payload":"***","published":"2026-01-01T00:00:00Z","delivered":1}"#,
                "payload",
            ),
            (
                r#"{"v":1,"stream":"S","sequence":1,"subject":"s","headers":{"a b":["x"]},"payload":"","published":"2026-01-01T00:00:00Z","delivered":1}"#,
                "headers",
            ),
        ] {
            let e = decode(&message("x", body, 1)).expect_err(body);
            assert!(e.to_string().contains(what), "{e} lacks {what}");
        }
    }

    /// Fails items whose payload is `fail`, records what it was handed.
    #[derive(Default)]
    struct Picky(Mutex<Vec<u64>>);

    impl Handler for Picky {
        async fn handle(&self, batch: &[Item]) -> BatchOutcome {
            let mut seen = self.0.lock().expect("lock");
            let mut outcome = BatchOutcome::success();
            for (i, item) in batch.iter().enumerate() {
                seen.push(item.sequence);
                if item.payload.as_ref() == b"fail" {
                    outcome.record_failure(i, "asked to fail");
                }
            }
            outcome
        }
    }

    #[tokio::test]
    async fn only_undecodable_and_failed_records_are_retried() {
        let event = SqsEvent {
            records: vec![
                message("m1", &Envelope::of(&item(1, b"ok")).to_json(), 1),
                message("m2", "{garbage", 1),
                message("m3", &Envelope::of(&item(3, b"fail")).to_json(), 1),
                message("m4", &Envelope::of(&item(4, b"ok")).to_json(), 1),
            ],
        };
        let handler = Picky::default();
        let response = handle(&handler, event).await;
        assert_eq!(response.failed_ids(), ["m2", "m3"]);
        assert_eq!(*handler.0.lock().expect("lock"), [1, 3, 4]);
        let json = serde_json::to_value(&response).expect("JSON");
        assert_eq!(
            json,
            serde_json::json!({"batchItemFailures":[{"itemIdentifier":"m2"},{"itemIdentifier":"m3"}]})
        );
    }

    /// Panics on a batch holding the payload `panic`.
    struct Panicky;

    impl Handler for Panicky {
        async fn handle(&self, batch: &[Item]) -> BatchOutcome {
            assert!(
                batch.iter().all(|i| i.payload.as_ref() != b"panic"),
                "cannot handle this"
            );
            BatchOutcome::success()
        }
    }

    #[tokio::test]
    async fn a_panicking_item_fails_alone() {
        let event = SqsEvent {
            records: vec![
                message("m1", &Envelope::of(&item(1, b"ok")).to_json(), 1),
                message("m2", &Envelope::of(&item(2, b"panic")).to_json(), 1),
                message("m3", &Envelope::of(&item(3, b"ok")).to_json(), 1),
            ],
        };
        assert_eq!(handle(&Panicky, event).await.failed_ids(), ["m2"]);
    }

    #[tokio::test]
    async fn an_event_of_only_garbage_never_calls_the_handler() {
        let handler = Picky::default();
        let event: SqsEvent = serde_json::from_str(
            r#"{"Records":[{"messageId":"a","body":"x","attributes":{},"messageAttributes":{},"eventSource":"aws:sqs"}]}"#,
        )
        .expect("event");
        assert_eq!(handle(&handler, event).await.failed_ids(), ["a"]);
        assert!(handler.0.lock().expect("lock").is_empty());
        let empty = handle(&handler, SqsEvent::default()).await;
        assert!(empty.batch_item_failures.is_empty());
    }
}
