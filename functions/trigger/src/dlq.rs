//! The dead-letter stream `PLANTD_DLQ`: how a parked item is written, read
//! and replayed.
//!
//! ## The record
//! An item a function failed on `max_deliver` times is published to
//! `plantd.dlq.<consumer>` (the consumer's durable name,
//! `<function>_<stream>`) with its **payload byte for byte** and its
//! original headers, plus:
//!
//! | header | value |
//! |---|---|
//! | `Plantd-Dlq-Function` | the function that failed |
//! | `Plantd-Dlq-Stream` | the source stream |
//! | `Plantd-Dlq-Sequence` | the item's sequence in that stream |
//! | `Plantd-Dlq-Subject` | the subject it was published on |
//! | `Plantd-Dlq-Error` | the handler's last error (one line, at most 1 KiB) |
//! | `Plantd-Dlq-Deliveries` | how many deliveries failed |
//! | `Plantd-Dlq-Parked` | when it was parked (RFC 3339) |
//! | `Plantd-Dlq-Msg-Id` | the original `Nats-Msg-Id`, if any |
//!
//! Original `Nats-*` headers are directives of the original publish
//! (`Nats-Expected-*` would make the DLQ publish fail); they are not
//! copied, the message id is kept as `Plantd-Dlq-Msg-Id`. The DLQ publish
//! carries its own `Nats-Msg-Id` `<consumer>:<stream>:<sequence>`, so parking
//! the same item twice (the trigger crashed between parking and terminating
//! the source delivery) stores it once.
//!
//! ## Replay
//! `plantd dlq replay <seq>` does **not** republish the item to its
//! original subject: that would give it a new stream sequence (every
//! handler's idempotency key would change, so a function that had applied
//! it would apply it again), hand it to every function consuming the
//! stream, not only the one that failed, and be dropped by the stream's
//! de-duplication window when the original message id is kept. Instead the
//! CLI sends a request on `plantd.trigger.replay.<consumer>`; the running
//! trigger hands the parked item — with its original `(stream, sequence)`
//! and [`crate::Item::replay`] set — to that consumer's handler alone, and
//! deletes the record once the handler succeeded. A replay that fails again
//! leaves the record where it was and answers with the error.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::StreamMessage};
use bytes::Bytes;
use plantd_shared::streams;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::item::Item;
use crate::settings::split_durable;

/// Header: the function that failed.
pub const FUNCTION: &str = "Plantd-Dlq-Function";
/// Header: the source stream.
pub const STREAM: &str = "Plantd-Dlq-Stream";
/// Header: the item's sequence in the source stream.
pub const SEQUENCE: &str = "Plantd-Dlq-Sequence";
/// Header: the subject the item was published on.
pub const SUBJECT: &str = "Plantd-Dlq-Subject";
/// Header: the handler's last error.
pub const ERROR: &str = "Plantd-Dlq-Error";
/// Header: how many deliveries failed.
pub const DELIVERIES: &str = "Plantd-Dlq-Deliveries";
/// Header: when the item was parked (RFC 3339).
pub const PARKED: &str = "Plantd-Dlq-Parked";
/// Header: the original `Nats-Msg-Id`.
pub const MSG_ID: &str = "Plantd-Dlq-Msg-Id";

/// Longest error text kept in a record.
pub const MAX_ERROR_BYTES: usize = 1024;

/// The queue group replay requests are answered in: one trigger answers
/// even when several run the same consumer.
pub const REPLAY_QUEUE: &str = "plantd-trigger";

/// The dead-letter subject of consumer `durable`.
pub fn subject(durable: &str) -> String {
    format!("plantd.dlq.{durable}")
}

/// The subject a running trigger answers replay requests of consumer
/// `durable` on (core NATS request/reply; the body is the DLQ sequence in
/// decimal).
pub fn replay_subject(durable: &str) -> String {
    format!("plantd.trigger.replay.{durable}")
}

/// A parked item, read back from `PLANTD_DLQ`.
#[derive(Debug, Clone)]
pub struct ParkedItem {
    /// Its sequence in `PLANTD_DLQ` (what `plantd dlq replay` takes).
    pub dlq_sequence: u64,
    /// The consumer that parked it (`<function>_<stream>`).
    pub consumer: String,
    /// The function that failed.
    pub function: String,
    /// The source stream.
    pub stream: String,
    /// Its sequence in the source stream.
    pub sequence: u64,
    /// The subject it was published on.
    pub subject: String,
    /// The handler's last error.
    pub error: String,
    /// How many deliveries failed.
    pub deliveries: u64,
    /// When it was parked.
    pub parked: OffsetDateTime,
    /// Its original headers (without the `Plantd-Dlq-*` ones).
    pub headers: HeaderMap,
    /// Its payload, byte for byte.
    pub payload: Bytes,
}

impl ParkedItem {
    /// The item as the handler sees it on a replay: original stream,
    /// sequence, subject, headers and payload; `replay` set.
    pub fn to_item(&self) -> Item {
        Item {
            stream: self.stream.as_str().into(),
            sequence: self.sequence,
            subject: self.subject.as_str().into(),
            headers: self.headers.clone(),
            payload: self.payload.clone(),
            published: self.parked,
            delivered: self.deliveries.saturating_add(1),
            replay: Some(self.dlq_sequence),
        }
    }
}

/// Errors of the dead-letter operations.
#[derive(Debug, Error)]
pub enum DlqError {
    /// `PLANTD_DLQ` holds no record at that sequence.
    #[error("no dead-letter record {0} in PLANTD_DLQ")]
    NotFound(u64),
    /// The record is not one the trigger wrote (a header is missing or
    /// malformed).
    #[error("dead-letter record {sequence} is malformed: {reason}")]
    Malformed {
        /// Its DLQ sequence.
        sequence: u64,
        /// What is wrong.
        reason: String,
    },
    /// No trigger answers replays for the record's consumer.
    #[error("no running trigger serves consumer {0}; start it (plantd up) and try again")]
    NoTrigger(String),
    /// The trigger did not answer in time.
    #[error("the trigger did not answer the replay of record {0} in time")]
    TimedOut(u64),
    /// NATS or JetStream refused or failed.
    #[error("{0}")]
    Nats(String),
}

impl DlqError {
    fn nats(e: impl std::fmt::Display) -> Self {
        Self::Nats(e.to_string())
    }
}

/// What a trigger answers to a replay request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReplayReply {
    /// The DLQ record.
    pub dlq_sequence: u64,
    /// True when the handler succeeded and the record was removed.
    pub ok: bool,
    /// The source stream, when the record was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// The item's source sequence, when the record was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    /// Why the replay failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One line of printable text of at most [`MAX_ERROR_BYTES`].
fn one_line(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if out.len() > MAX_ERROR_BYTES {
        let mut end = MAX_ERROR_BYTES;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out
}

/// Parks `item`, which `function`'s consumer `durable` failed on
/// `deliveries` times with `error`, and waits for `PLANTD_DLQ` to store it.
///
/// # Errors
/// [`DlqError::Nats`] when the record was not stored (the caller must then
/// not acknowledge the source delivery).
pub async fn park(
    js: &jetstream::Context,
    durable: &str,
    function: &str,
    item: &Item,
    error: &str,
    deliveries: u64,
) -> Result<u64, DlqError> {
    let mut headers = HeaderMap::new();
    for (name, values) in item.headers.iter() {
        let name = name.to_string();
        if name.starts_with("Nats-") || name.starts_with("Plantd-Dlq-") {
            continue;
        }
        for v in values {
            headers.append(name.as_str(), v.as_str());
        }
    }
    if let Some(id) = item.headers.get(async_nats::header::NATS_MESSAGE_ID) {
        headers.insert(MSG_ID, id.as_str());
    }
    let parked = OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .map_err(DlqError::nats)?;
    headers.insert(FUNCTION, function);
    headers.insert(STREAM, &*item.stream);
    headers.insert(SEQUENCE, item.sequence.to_string().as_str());
    headers.insert(SUBJECT, item.subject.as_str());
    headers.insert(ERROR, one_line(error).as_str());
    headers.insert(DELIVERIES, deliveries.to_string().as_str());
    headers.insert(PARKED, parked.as_str());
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        format!("{durable}:{}:{}", item.stream, item.sequence).as_str(),
    );
    let ack = js
        .publish_with_headers(subject(durable), headers, item.payload.clone())
        .await
        .map_err(DlqError::nats)?
        .await
        .map_err(DlqError::nats)?;
    Ok(ack.sequence)
}

fn header<'a>(m: &'a StreamMessage, name: &str) -> Result<&'a str, DlqError> {
    m.headers
        .get(name)
        .map(|v| v.as_str())
        .ok_or_else(|| DlqError::Malformed {
            sequence: m.sequence,
            reason: format!("header {name} missing"),
        })
}

fn number(m: &StreamMessage, name: &str) -> Result<u64, DlqError> {
    header(m, name)?.parse().map_err(|_| DlqError::Malformed {
        sequence: m.sequence,
        reason: format!("header {name} is not a number"),
    })
}

/// Reads a record the trigger wrote.
///
/// # Errors
/// [`DlqError::Malformed`] naming the header that is missing or malformed.
pub fn decode(m: &StreamMessage) -> Result<ParkedItem, DlqError> {
    let consumer = m
        .subject
        .strip_prefix("plantd.dlq.")
        .filter(|d| split_durable(d).is_some())
        .ok_or_else(|| DlqError::Malformed {
            sequence: m.sequence,
            reason: format!(
                "subject {} is not plantd.dlq.<function>_<stream>",
                m.subject
            ),
        })?
        .to_owned();
    let parked =
        OffsetDateTime::parse(header(m, PARKED)?, &Rfc3339).map_err(|_| DlqError::Malformed {
            sequence: m.sequence,
            reason: format!("header {PARKED} is not RFC 3339"),
        })?;
    let mut headers = HeaderMap::new();
    for (name, values) in m.headers.iter() {
        let name = name.to_string();
        if name.starts_with("Plantd-Dlq-") || name.starts_with("Nats-") {
            continue;
        }
        for v in values {
            headers.append(name.as_str(), v.as_str());
        }
    }
    if let Some(id) = m.headers.get(MSG_ID) {
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
    }
    Ok(ParkedItem {
        dlq_sequence: m.sequence,
        consumer,
        function: header(m, FUNCTION)?.to_owned(),
        stream: header(m, STREAM)?.to_owned(),
        sequence: number(m, SEQUENCE)?,
        subject: header(m, SUBJECT)?.to_owned(),
        error: header(m, ERROR)?.to_owned(),
        deliveries: number(m, DELIVERIES)?,
        parked,
        headers,
        payload: m.payload.clone(),
    })
}

async fn dlq_stream(js: &jetstream::Context) -> Result<jetstream::stream::Stream, DlqError> {
    js.get_stream(streams::DLQ)
        .await
        .map_err(|e| DlqError::Nats(format!("stream {}: {e}", streams::DLQ)))
}

/// The record at DLQ sequence `sequence`.
///
/// # Errors
/// [`DlqError::NotFound`], [`DlqError::Malformed`], or [`DlqError::Nats`].
pub async fn get(js: &jetstream::Context, sequence: u64) -> Result<ParkedItem, DlqError> {
    let stream = dlq_stream(js).await?;
    match stream.get_raw_message(sequence).await {
        Ok(m) => decode(&m),
        Err(e) if e.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => {
            Err(DlqError::NotFound(sequence))
        }
        Err(e) => Err(DlqError::nats(e)),
    }
}

/// Up to `limit` records from the oldest, of consumer `consumer` or of
/// all. Records the trigger did not write are skipped with a warning.
///
/// # Errors
/// [`DlqError::Nats`] when the stream cannot be read.
pub async fn list(
    js: &jetstream::Context,
    consumer: Option<&str>,
    limit: usize,
) -> Result<Vec<ParkedItem>, DlqError> {
    let stream = dlq_stream(js).await?;
    let filter = consumer.map_or_else(|| streams::DLQ_SUBJECTS.to_owned(), subject);
    let mut out = Vec::new();
    let mut next = 1u64;
    while out.len() < limit {
        let m = match stream
            .direct_get_next_for_subject(filter.as_str(), Some(next))
            .await
        {
            Ok(m) => m,
            Err(e) if e.kind() == jetstream::stream::DirectGetErrorKind::NotFound => break,
            Err(e) => return Err(DlqError::nats(e)),
        };
        next = m.sequence.saturating_add(1);
        match decode(&m) {
            Ok(p) => out.push(p),
            Err(e) => tracing::warn!(error = %e, "skipping a dead-letter record"),
        }
    }
    Ok(out)
}

/// How many records consumer `durable` has in `PLANTD_DLQ`.
///
/// # Errors
/// [`DlqError::Nats`] when the stream cannot be read.
pub async fn depth(js: &jetstream::Context, durable: &str) -> Result<u64, DlqError> {
    use futures::TryStreamExt as _;
    let stream = dlq_stream(js).await?;
    let subjects = stream
        .info_with_subjects(subject(durable))
        .await
        .map_err(DlqError::nats)?;
    let counts: Vec<(String, usize)> = subjects.try_collect().await.map_err(DlqError::nats)?;
    Ok(counts.iter().map(|(_, n)| *n as u64).sum())
}

/// Asks the running trigger to replay record `sequence` and waits up to
/// `timeout` for its answer.
///
/// # Errors
/// [`DlqError::NotFound`] / [`DlqError::Malformed`] for the record,
/// [`DlqError::NoTrigger`] when no trigger serves its consumer,
/// [`DlqError::TimedOut`], or [`DlqError::Nats`]. A replay the handler
/// failed is `Ok` with `ok: false` and the error.
pub async fn request_replay(
    js: &jetstream::Context,
    sequence: u64,
    timeout: Duration,
) -> Result<ReplayReply, DlqError> {
    let parked = get(js, sequence).await?;
    let client = js.client();
    let request = client.send_request(
        replay_subject(&parked.consumer),
        async_nats::Request::new()
            .payload(Bytes::from(sequence.to_string()))
            .timeout(Some(timeout)),
    );
    let reply = match tokio::time::timeout(timeout, request).await {
        Err(_) => return Err(DlqError::TimedOut(sequence)),
        Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
            return Err(DlqError::NoTrigger(parked.consumer));
        }
        Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::TimedOut => {
            return Err(DlqError::TimedOut(sequence));
        }
        Ok(Err(e)) => return Err(DlqError::nats(e)),
        Ok(Ok(m)) => m,
    };
    serde_json::from_slice(&reply.payload)
        .map_err(|e| DlqError::Nats(format!("the trigger's replay answer is not JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_become_one_bounded_line() {
        assert_eq!(one_line("a\r\nb\tc"), "a  b c");
        let long = "é".repeat(MAX_ERROR_BYTES);
        let cut = one_line(&long);
        assert!(cut.len() <= MAX_ERROR_BYTES);
        assert!(cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn subjects_carry_the_durable_name() {
        assert_eq!(
            subject("logger_PLANTD_LOGS"),
            "plantd.dlq.logger_PLANTD_LOGS"
        );
        assert_eq!(
            replay_subject("logger_PLANTD_LOGS"),
            "plantd.trigger.replay.logger_PLANTD_LOGS"
        );
    }
}
