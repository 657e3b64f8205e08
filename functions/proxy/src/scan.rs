//! Reading a stream in order without a durable consumer: an ordered push
//! consumer that is read until the stream has nothing more for its filter,
//! then dropped. Used to list keys (last message per subject), a key's
//! history and telemetry history.

use std::time::Duration;

use async_nats::jetstream::consumer::push::OrderedConfig;
use async_nats::jetstream::stream::Stream;
use futures::StreamExt as _;

use crate::AppError;

/// A message read from a stream: where, when, what.
#[derive(Debug, Clone)]
pub struct Scanned {
    /// Its subject.
    pub subject: String,
    /// Its stream sequence.
    pub sequence: u64,
    /// When the stream stored it, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Its headers.
    pub headers: async_nats::HeaderMap,
    /// Its payload (empty when the scan is headers-only).
    pub payload: bytes::Bytes,
}

/// How long one scan may wait for the next message the stream said it
/// has. Not a synchronisation: a healthy server answers in milliseconds,
/// and a stalled one turns into a 503.
const STALL: Duration = Duration::from_secs(5);

/// Milliseconds since the Unix epoch of a JetStream time.
pub fn millis(t: time::OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// Reads messages with `config` (filter, start, headers-only...) in
/// stream order until the stream has no more, `keep_going` says stop, or
/// `max` are kept. `keep_going` sees every message and says whether to
/// keep it and whether to go on.
///
/// # Errors
/// 503 when JetStream cannot create the consumer or stalls.
pub async fn scan(
    client: &async_nats::Client,
    stream: &Stream,
    config: OrderedConfig,
    max: usize,
    mut keep_going: impl FnMut(&Scanned) -> (bool, bool),
) -> Result<Vec<Scanned>, AppError> {
    let mut out = Vec::new();
    if max == 0 {
        return Ok(out);
    }
    let config = OrderedConfig {
        deliver_subject: client.new_inbox(),
        replay_policy: async_nats::jetstream::consumer::ReplayPolicy::Instant,
        ..config
    };
    let consumer = stream
        .create_consumer(config)
        .await
        .map_err(AppError::unavailable)?;
    if consumer.cached_info().num_pending == 0 {
        return Ok(out);
    }
    let mut messages = consumer.messages().await.map_err(AppError::unavailable)?;
    loop {
        let next = tokio::time::timeout(STALL, messages.next())
            .await
            .map_err(|_| AppError::unavailable("stream scan stalled"))?;
        let Some(message) = next else { break };
        let message = message.map_err(AppError::unavailable)?;
        let info = message.info().map_err(AppError::internal)?;
        let pending = info.pending;
        let scanned = Scanned {
            subject: message.subject.to_string(),
            sequence: info.stream_sequence,
            time_ms: millis(info.published),
            headers: message.headers.clone().unwrap_or_default(),
            payload: message.payload.clone(),
        };
        let (keep, go_on) = keep_going(&scanned);
        if keep {
            out.push(scanned);
        }
        if !go_on || out.len() >= max || pending == 0 {
            break;
        }
    }
    Ok(out)
}
