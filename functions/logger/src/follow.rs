//! Keeps a [`LogIndex`] filled from `PLANTD_LOGS`: an ordered consumer that
//! starts at `now − retention` (hydration), then stays live; when the
//! consumer breaks (nats-server restarted) it starts again after the last
//! sequence held, and from scratch when the stream was recreated (its last
//! sequence is below the index's).
//!
//! When a logger in this process feeds the index ([`crate::feed`]), the
//! follower stops once it has reached the logger's position (or the end of
//! the stream) and only watches: every [`WATCH`] it looks whether lines the
//! stream held a check ago are still missing while the index did not
//! advance (a gap the logger will not fill), and then reads again from
//! after the last sequence held.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use plantd_shared::streams::LOGS;
use time::OffsetDateTime;

use crate::index::LogIndex;
use crate::parse::{Subjects, parse_with};
use crate::record::LogRecord;

/// Most messages inserted under one lock.
const CHUNK: usize = 1024;
/// Wait before recreating a broken consumer (doubles up to [`MAX_BACKOFF`]).
const BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How often the follower checks that the stream was not recreated.
const RECREATED_CHECK: Duration = Duration::from_secs(5);
/// How often a follower that left the lines to the logger checks for gaps.
pub const WATCH: Duration = Duration::from_secs(1);

/// Why one consumer's life ended without an error.
enum Stop {
    /// The message stream ended: start again.
    Ended,
    /// A logger feeds the index from here on: watch for gaps.
    LeftToFeeder,
}

/// Starts following `PLANTD_LOGS` into `index`. The task runs until
/// aborted (drop the handle does not stop it; call `abort`).
pub fn follow(index: Arc<LogIndex>, js: jetstream::Context) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = BACKOFF;
        // When the stream the index was filled from was created.
        let mut created = None;
        loop {
            match run(&index, &js, &mut created).await {
                Ok(Stop::Ended) => backoff = BACKOFF,
                Ok(Stop::LeftToFeeder) => {
                    backoff = BACKOFF;
                    match watch(&index, &js, created).await {
                        Ok(()) => continue,
                        Err(e) => {
                            tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "log index: cannot watch PLANTD_LOGS for gaps; reading it again");
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, last_sequence = index.stats().last_sequence, retry_in_ms = backoff.as_millis() as u64, "log index: following PLANTD_LOGS broke; starting again");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    })
}

/// When `PLANTD_LOGS` was created (a recreated stream starts its
/// sequences again).
async fn created_at(js: &jetstream::Context) -> Result<OffsetDateTime, String> {
    let mut stream = js
        .get_stream(LOGS)
        .await
        .map_err(|e| format!("stream {LOGS}: {e}"))?;
    Ok(stream
        .info()
        .await
        .map_err(|e| format!("stream {LOGS}: {e}"))?
        .created)
}

/// While a logger feeds the index: returns when lines the stream held one
/// [`WATCH`] ago are still missing and the index did not advance since, or
/// when the stream was recreated.
async fn watch(
    index: &LogIndex,
    js: &jetstream::Context,
    known: Option<OffsetDateTime>,
) -> Result<(), String> {
    let mut check = tokio::time::interval(WATCH);
    check.tick().await;
    let mut held_before = index.stats().last_sequence;
    let mut stream_before = 0;
    loop {
        check.tick().await;
        let stream = js
            .get_stream(LOGS)
            .await
            .map_err(|e| format!("stream {LOGS}: {e}"))?;
        let info = stream.cached_info();
        if known.is_some_and(|k| k != info.created) {
            return Ok(());
        }
        let held = index.stats().last_sequence;
        if held == held_before && held < stream_before {
            tracing::debug!(
                held,
                stream_last = info.state.last_sequence,
                "log index: lines the logger did not bring; reading them"
            );
            return Ok(());
        }
        held_before = held;
        stream_before = info.state.last_sequence;
    }
}

/// One consumer's life: from after the last sequence held (or
/// `now − retention`) until it breaks, the stream is found recreated, or a
/// feeding logger takes over.
async fn run(
    index: &LogIndex,
    js: &jetstream::Context,
    known: &mut Option<OffsetDateTime>,
) -> Result<Stop, String> {
    let created = created_at(js).await?;
    let mut last = index.stats().last_sequence;
    if known.is_some_and(|k| k != created) {
        // A wiped store or a deleted stream: its sequences start again, so
        // what the index holds no longer names its lines.
        tracing::warn!(
            held = last,
            "log index: PLANTD_LOGS was recreated; reading it again"
        );
        index.clear();
        last = 0;
    }
    *known = Some(created);
    let stream = js
        .get_stream_no_info(LOGS)
        .await
        .map_err(|e| format!("stream {LOGS}: {e}"))?;
    let policy = if last > 0 {
        consumer::DeliverPolicy::ByStartSequence {
            start_sequence: last + 1,
        }
    } else {
        consumer::DeliverPolicy::ByStartTime {
            start_time: OffsetDateTime::now_utc()
                - time::Duration::try_from(index.settings().retention)
                    .unwrap_or(time::Duration::DAY),
        }
    };
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: policy,
            replay_policy: consumer::ReplayPolicy::Instant,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("ordered consumer on {LOGS}: {e}"))?;
    if consumer.cached_info().num_pending == 0 {
        index.set_hydrated();
        if index.has_feeder() {
            return Ok(Stop::LeftToFeeder);
        }
    }
    let messages = consumer
        .messages()
        .await
        .map_err(|e| format!("messages of {LOGS}: {e}"))?;
    let mut chunks = messages.ready_chunks(CHUNK);
    let mut check = tokio::time::interval(RECREATED_CHECK);
    check.tick().await;
    let mut subjects = Subjects::default();
    // The stream's name, shared by the records (one allocation, not one
    // per line).
    let mut stream: Arc<str> = LOGS.into();
    loop {
        let chunk = tokio::select! {
            chunk = chunks.next() => match chunk {
                Some(chunk) => chunk,
                None => return Ok(Stop::Ended),
            },
            _ = check.tick() => {
                // The ordered consumer follows a recreated stream silently
                // from its old position: look.
                if created_at(js).await? != created {
                    return Err(format!("{LOGS} was recreated"));
                }
                continue;
            }
        };
        let mut records: Vec<LogRecord> = Vec::with_capacity(chunk.len());
        let no_headers = async_nats::HeaderMap::new();
        let mut caught_up = false;
        let mut broke = None;
        for m in chunk {
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    broke = Some(format!("reading {LOGS}: {e}"));
                    break;
                }
            };
            let Ok(info) = m.info() else {
                continue;
            };
            caught_up = info.pending == 0;
            if *stream != *info.stream {
                stream = info.stream.into();
            }
            records.push(parse_with(
                &mut subjects,
                &stream,
                info.stream_sequence,
                m.subject.as_str(),
                m.headers.as_ref().unwrap_or(&no_headers),
                &m.payload,
                info.published,
            ));
        }
        index.insert(records);
        if caught_up {
            index.set_hydrated();
        }
        if let Some(e) = broke {
            return Err(e);
        }
        if (caught_up && index.has_feeder()) || index.feeder_is_close() {
            // What comes next, the logger brings: hydration is done.
            index.set_hydrated();
            return Ok(Stop::LeftToFeeder);
        }
    }
}
