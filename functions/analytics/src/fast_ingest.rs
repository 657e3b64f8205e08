//! Fast-ingest batch publishing (nats-server 2.14+, ADR-50 "fast ingest",
//! stream option `allow_batched`): a batch of messages is published with
//! one flow acknowledgement per N messages and one final publish
//! acknowledgement, instead of one acknowledgement per message — each of
//! which costs nats-server a reply to a subject of its own and the client
//! a JSON answer to parse (docs/performance.md, "Analytics end to end").
//!
//! Unlike an atomic batch, every message is stored as it arrives and a
//! `Nats-Msg-Id` the stream already holds is skipped silently (an atomic
//! batch refuses the whole batch, error 10201) — so a batch published again
//! after a crash stores only what was missing, like one publish per
//! message. Measured against nats-server 2.15.1 (decision 0061).
//!
//! ## Wire protocol
//! Every message carries the reply subject
//! `<inbox>.<flow>.<gap>.<seq>.<op>.$FI`: `inbox` is `_INBOX.<batch id>`
//! (exactly two tokens), `flow` the acknowledgement interval asked for,
//! `gap` `fail` (a message lost on the way fails the batch), `seq` the
//! message's place in the batch from 1, `op` 0 to open the batch, 1 in
//! the middle, 2 for the last (stored, then the batch committed). nats-server answers on
//! those subjects with flow acknowledgements `{"type":"ack","seq":N,
//! "msgs":F}` (everything through `N` stored; the next every `F`), gap and
//! per-message error notices, and a final publish acknowledgement
//! `{"stream":…,"seq":…,"batch":…,"count":…}` or `{"error":…}`.
//!
//! [`publish`] keeps at most two flow intervals unacknowledged,
//! and fails — without retrying — on anything but a clean final
//! acknowledgement: the caller publishes the batch again one message at a
//! time (the message ids make that safe).

use std::time::Duration;

use async_nats::{Client, HeaderMap, Subscriber};
use bytes::Bytes;
use futures::StreamExt as _;
use serde::Deserialize;

/// The flow acknowledgement interval asked for (nats-server may choose
/// another; its flow acknowledgements say which).
const FLOW: u64 = 500;

/// Flow intervals sent ahead of the last flow acknowledgement.
const MAX_OUTSTANDING: u64 = 2;

/// JetStream's error code for "fast batch publish not enabled on stream".
const NOT_ENABLED: u64 = 10205;

/// A message's role in its batch: the `<op>` token of its reply subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Op {
    /// The first message: opens the batch.
    Start = 0,
    /// A message in the middle.
    Append = 1,
    /// The last message: stored, then the batch is committed.
    Commit = 2,
}

/// Why a fast batch was not (entirely) stored.
#[derive(Debug, thiserror::Error)]
pub enum FastError {
    /// The stream does not allow fast batches (`allow_batched` off), or the
    /// server does not know them (older than 2.14): publish one by one from
    /// now on.
    #[error("fast batch publishing unavailable: {0}")]
    Unavailable(String),
    /// This batch failed (gap, a message refused, no answer in time, the
    /// connection): publish it again one message at a time.
    #[error("fast batch failed: {0}")]
    Failed(String),
}

/// An answer on the batch's inbox.
#[derive(Debug, Deserialize)]
struct Answer {
    /// `ack`, `gap` or `err` for flow messages; absent on the final one.
    #[serde(rename = "type")]
    kind: Option<String>,
    /// Flow ack: stored through this batch sequence. Final: stream sequence.
    seq: Option<u64>,
    /// Flow ack: the interval of the next flow acks.
    msgs: Option<u64>,
    /// Final: the batch id.
    batch: Option<String>,
    /// Final: messages in the batch.
    count: Option<u64>,
    /// An error (final or per message).
    error: Option<ApiError>,
}

/// A JetStream API error.
#[derive(Debug, Deserialize)]
struct ApiError {
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

/// The batch's state while it is being sent.
struct Flow {
    /// Stored through this batch sequence (flow acks).
    acked: u64,
    /// The flow ack interval in force.
    every: u64,
}

/// Publishes `messages` (subject, headers, payload) as one fast batch on
/// `client` and waits until nats-server committed it, each wait for an
/// answer bounded by `timeout`. Returns how many messages the batch held
/// (stored, or skipped as duplicates of a `Nats-Msg-Id` the stream had).
///
/// # Errors
/// [`FastError::Unavailable`] when the stream or server does not do fast
/// batches; [`FastError::Failed`] on anything else that went wrong. Either
/// way some messages may be stored: publish them again one by one.
pub async fn publish(
    client: &Client,
    messages: &[(String, HeaderMap, Bytes)],
    timeout: Duration,
) -> Result<u64, FastError> {
    let n = messages.len() as u64;
    if n < 2 {
        return Err(FastError::Failed("a fast batch needs two messages".into()));
    }
    let inbox = client.new_inbox();
    if inbox.matches('.').count() != 1 {
        // The server reads the reply subject from the right: a custom inbox
        // prefix with dots would be misread.
        return Err(FastError::Unavailable(format!(
            "the inbox {inbox} is not two tokens"
        )));
    }
    let mut answers = client
        .subscribe(format!("{inbox}.>"))
        .await
        .map_err(|e| FastError::Failed(format!("subscribe to {inbox}: {e}")))?;
    let prefix = format!("{inbox}.{FLOW}.fail.");
    let mut flow = Flow {
        acked: 0,
        every: FLOW,
    };
    for (i, (subject, headers, payload)) in messages.iter().enumerate() {
        let seq = i as u64 + 1;
        while flow.acked + flow.every.max(1) * MAX_OUTSTANDING <= seq {
            if let Some(done) = next(&mut answers, &mut flow, timeout).await? {
                return Err(FastError::Failed(format!(
                    "committed after {done} of {n} messages"
                )));
            }
        }
        let op = match seq {
            1 => Op::Start,
            s if s == n => Op::Commit,
            _ => Op::Append,
        };
        let reply = format!("{prefix}{seq}.{}.$FI", op as u8);
        client
            .publish_with_reply_and_headers(
                subject.clone(),
                reply,
                headers.clone(),
                payload.clone(),
            )
            .await
            .map_err(|e| FastError::Failed(format!("publish: {e}")))?;
    }
    loop {
        if let Some(count) = next(&mut answers, &mut flow, timeout).await? {
            if count != n {
                return Err(FastError::Failed(format!(
                    "committed {count} of {n} messages"
                )));
            }
            return Ok(count);
        }
    }
}

/// Reads the next answer: `Some(count)` for the final acknowledgement,
/// `None` for a flow acknowledgement (recorded in `flow`).
async fn next(
    answers: &mut Subscriber,
    flow: &mut Flow,
    timeout: Duration,
) -> Result<Option<u64>, FastError> {
    let message = match tokio::time::timeout(timeout, answers.next()).await {
        Ok(Some(m)) => m,
        Ok(None) => return Err(FastError::Failed("the answers ended".into())),
        Err(_) => {
            return Err(FastError::Failed(format!(
                "no answer within {timeout:?} (stored through {})",
                flow.acked
            )));
        }
    };
    let answer: Answer = serde_json::from_slice(&message.payload).map_err(|e| {
        FastError::Failed(format!(
            "an answer that does not read: {e}: {}",
            String::from_utf8_lossy(&message.payload)
        ))
    })?;
    match (answer.kind.as_deref(), answer.error) {
        (Some("ack"), _) => {
            flow.acked = flow.acked.max(answer.seq.unwrap_or(0));
            if let Some(every) = answer.msgs.filter(|m| *m > 0) {
                flow.every = every;
            }
            Ok(None)
        }
        (Some("gap"), _) => Err(FastError::Failed(format!(
            "messages lost on the way after batch sequence {}",
            flow.acked
        ))),
        (_, Some(error)) if error.err_code == NOT_ENABLED => Err(FastError::Unavailable(format!(
            "{} (error {})",
            error.description, error.err_code
        ))),
        (_, Some(error)) => Err(FastError::Failed(format!(
            "{} (error {}, message {})",
            error.description,
            error.err_code,
            answer.seq.unwrap_or(0)
        ))),
        (None, None) if answer.batch.is_some() => Ok(Some(answer.count.unwrap_or(0))),
        // A plain publish acknowledgement: the server took the `$FI`
        // reply subject for an ordinary one (older than 2.14).
        _ => Err(FastError::Unavailable(format!(
            "the server answered with a plain acknowledgement: {}",
            String::from_utf8_lossy(&message.payload)
        ))),
    }
}
