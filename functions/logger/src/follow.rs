//! Keeps a [`LogIndex`] filled from `PLANTD_LOGS`: an ordered consumer that
//! starts at `now − retention` (hydration), then stays live; when the
//! consumer breaks (nats-server restarted) it starts again after the last
//! sequence held, and from scratch when the stream was recreated (its last
//! sequence is below the index's).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use plantd_shared::streams::LOGS;
use time::OffsetDateTime;

use crate::index::LogIndex;
use crate::parse::parse;
use crate::record::LogRecord;

/// Most messages inserted under one lock.
const CHUNK: usize = 1024;
/// Wait before recreating a broken consumer (doubles up to [`MAX_BACKOFF`]).
const BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How often the follower checks that the stream was not recreated.
const RECREATED_CHECK: Duration = Duration::from_secs(5);

/// Starts following `PLANTD_LOGS` into `index`. The task runs until
/// aborted (drop the handle does not stop it; call `abort`).
pub fn follow(index: Arc<LogIndex>, js: jetstream::Context) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = BACKOFF;
        // When the stream the index was filled from was created.
        let mut created = None;
        loop {
            match run(&index, &js, &mut created).await {
                Ok(()) => backoff = BACKOFF,
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

/// One consumer's life: from after the last sequence held (or
/// `now − retention`) until it breaks or the stream is found recreated.
async fn run(
    index: &LogIndex,
    js: &jetstream::Context,
    known: &mut Option<OffsetDateTime>,
) -> Result<(), String> {
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
    }
    let messages = consumer
        .messages()
        .await
        .map_err(|e| format!("messages of {LOGS}: {e}"))?;
    let mut chunks = messages.ready_chunks(CHUNK);
    let mut check = tokio::time::interval(RECREATED_CHECK);
    check.tick().await;
    loop {
        let chunk = tokio::select! {
            chunk = chunks.next() => match chunk {
                Some(chunk) => chunk,
                None => return Ok(()),
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
            let headers = m.headers.clone().unwrap_or_default();
            records.push(parse(
                info.stream,
                info.stream_sequence,
                m.subject.as_str(),
                &headers,
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
    }
}
