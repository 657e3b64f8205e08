//! Sequenced live subscriptions: where one starts in `PLANTD_TELEMETRY`
//! (or, for a sequenced log tail, `PLANTD_LOGS`), and the ordered consumer
//! that delivers it.
//!
//! One definition for both sockets — the local `/v1/ws`
//! ([`crate::routes::live`]) and the AWS WebSocket API, whose fan-out
//! process delivers them ([`crate::aws::sequenced`]) — so a client resumes
//! the same way against either (docs/api.md, "Resuming without a gap").

use async_nats::jetstream::{self, consumer::push::Ordered};
use plantd_shared::subject::{Channel, Site, filter_to_subjects};
use plantd_shared::topic::Filter;

use crate::AppError;

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Live only, from NATS core subscriptions: no sequences.
    Live,
    /// From the stream, at the next message stored.
    Next,
    /// From the stream, at this sequence.
    From(u64),
}

impl Resume {
    /// The start a `subscribe` frame asks for: `from_sequence` (≥ 1), or
    /// `sequenced: true` (the next message), or neither (live only).
    ///
    /// # Errors
    /// `bad_request` for `from_sequence` 0.
    pub fn of(from_sequence: Option<u64>, sequenced: bool) -> Result<Self, AppError> {
        match (from_sequence, sequenced) {
            (Some(0), _) => Err(AppError::bad_request(
                "from_sequence: stream sequences start at 1",
            )),
            (Some(n), _) => Ok(Self::From(n)),
            (None, true) => Ok(Self::Next),
            (None, false) => Ok(Self::Live),
        }
    }
}

/// Where a sequenced subscription starts in the stream now: the sequence
/// delivery starts at, and whether the stream no longer holds some of the
/// sequences asked for (retention dropped them: `missed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    /// The first sequence delivered (the stream's next one for
    /// [`Resume::Next`]).
    pub sequence: u64,
    /// Sequences before the stream's first were asked for.
    pub missed: bool,
}

/// Resolves `resume` against the stream's first and last sequence.
///
/// # Errors
/// `unavailable` when the stream cannot be read.
pub async fn start(js: &jetstream::Context, resume: Resume) -> Result<Start, AppError> {
    start_in(js, plantd_shared::streams::TELEMETRY, resume).await
}

/// [`start`] in stream `stream`.
///
/// # Errors
/// `unavailable` when the stream cannot be read.
pub async fn start_in(
    js: &jetstream::Context,
    stream: &str,
    resume: Resume,
) -> Result<Start, AppError> {
    let mut stream = js.get_stream(stream).await.map_err(AppError::unavailable)?;
    let info = stream.info().await.map_err(AppError::unavailable)?;
    let (first, last) = (info.state.first_sequence, info.state.last_sequence);
    Ok(match resume {
        Resume::From(n) => Start {
            sequence: n.max(first),
            missed: n < first && first > 1,
        },
        Resume::Next | Resume::Live => Start {
            sequence: last + 1,
            missed: false,
        },
    })
}

/// An ordered consumer of `site`'s upward messages matching `filter`
/// (NATS wildcards; the caller applies MQTT's `$` rule), from stream
/// sequence `start`, delivered to `inbox` (a fresh inbox of the client).
///
/// # Errors
/// `unavailable` when the stream or the consumer cannot be had.
pub async fn consumer(
    js: &jetstream::Context,
    inbox: String,
    site: &Site,
    filter: &Filter,
    start: u64,
) -> Result<Ordered, AppError> {
    let up = (plantd_shared::streams::TELEMETRY, Channel::Up);
    consumer_in(js, up, inbox, site, filter, start).await
}

/// [`consumer`] of `stream`'s `channel` subjects (`PLANTD_LOGS` and
/// [`Channel::Log`] for a sequenced log tail).
///
/// # Errors
/// `unavailable` when the stream or the consumer cannot be had.
pub async fn consumer_in(
    js: &jetstream::Context,
    (stream, channel): (&str, Channel),
    inbox: String,
    site: &Site,
    filter: &Filter,
    start: u64,
) -> Result<Ordered, AppError> {
    use async_nats::jetstream::consumer::{DeliverPolicy, ReplayPolicy, push::OrderedConfig};
    let stream = js.get_stream(stream).await.map_err(AppError::unavailable)?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_subject: inbox,
            filter_subjects: filter_to_subjects(site, channel, filter),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            replay_policy: ReplayPolicy::Instant,
            ..Default::default()
        })
        .await
        .map_err(AppError::unavailable)?;
    consumer.messages().await.map_err(AppError::unavailable)
}

/// The stream sequence and stored time (`plantd_shared::headers::format_time`)
/// of a message from a [`consumer`], for its `message` frame.
pub fn position(m: &jetstream::Message) -> Option<(u64, String)> {
    let info = m.info().ok()?;
    let ms = info.published.unix_timestamp_nanos() / 1_000_000;
    Some((
        info.stream_sequence,
        plantd_shared::headers::format_time(u64::try_from(ms).unwrap_or(0)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscribe_asks_for_live_next_or_a_sequence() {
        assert_eq!(Resume::of(None, false).expect("live"), Resume::Live);
        assert_eq!(Resume::of(None, true).expect("next"), Resume::Next);
        assert_eq!(Resume::of(Some(7), false).expect("from"), Resume::From(7));
        assert_eq!(Resume::of(Some(7), true).expect("from"), Resume::From(7));
        assert_eq!(
            Resume::of(Some(0), true).expect_err("zero").code,
            "bad_request"
        );
    }
}
