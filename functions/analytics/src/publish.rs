//! Results to `PLANTD_AGGREGATES`: one message per [`Output`] on
//! `plantd.<site>.agg.<rule>.<key>` with `Nats-Msg-Id` = [`message_id`],
//! all sent at once, then every acknowledgement awaited — or, for the
//! results of items delivered for the first time, as one fast-ingest batch
//! ([`crate::fast_ingest`], [`FastIngest`]). Encoding ([`encode`]) is
//! apart from sending ([`send`]): the handler encodes while its fencing
//! reads are on the way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream;
use plantd_analytics::Output;
use plantd_shared::subject::{Site, aggregate_subject};

use crate::error::Error;
use crate::fast_ingest::{self, FastError};
use crate::metrics::Metrics;

/// Fewest results worth a fast-ingest batch (it costs a subscription).
const FAST_MIN: usize = 16;

/// How long a fast batch waits for each answer of nats-server.
const FAST_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether results go out as fast-ingest batches: on until nats-server
/// says the stream does not allow them (an older server, or a
/// `PLANTD_AGGREGATES` created before `allow_batched` and not updated),
/// then off for the life of the process.
#[derive(Debug)]
pub struct FastIngest(AtomicBool);

impl Default for FastIngest {
    fn default() -> Self {
        Self(AtomicBool::new(true))
    }
}

impl FastIngest {
    /// Whether fast batches are still tried.
    pub fn enabled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The message id of a cloud result: `<site>:<rule>:<key>:<window_start>:<revision>`
/// (site first: rule names are per organisation, so two organisations'
/// rules may share a name). The same result always has the same id, so
/// JetStream stores a result published again after a crash once.
pub fn message_id(site: &Site, output: &Output) -> String {
    format!("{site}:{}", output.id())
}

/// What a publish did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Published {
    /// Results stored.
    pub stored: u64,
    /// Results JetStream already held (a replay after a crash).
    pub duplicates: u64,
}

/// Results encoded for sending ([`encode`]): subject, headers and body
/// of each, so the CPU work is done before — and while — the handler waits
/// for anything on the network.
#[derive(Debug, Default)]
pub struct Encoded {
    messages: Vec<(String, HeaderMap, bytes::Bytes)>,
}

impl Encoded {
    /// How many results.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

/// Encodes `outputs` of `site`: subject [`aggregate_subject`], header
/// `Nats-Msg-Id` [`message_id`], body the JSON of the [`Output`].
///
/// # Errors
/// [`Error::Encode`] when a result cannot be encoded.
pub fn encode(site: &Site, outputs: &[Output]) -> Result<Encoded, Error> {
    let mut messages = Vec::with_capacity(outputs.len());
    for o in outputs {
        let mut headers = HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            message_id(site, o).as_str(),
        );
        let body = serde_json::to_vec(o)?;
        messages.push((
            aggregate_subject(site, &o.rule, &o.key),
            headers,
            body.into(),
        ));
    }
    Ok(Encoded { messages })
}

/// Sends `encoded` results and waits until JetStream stored each. With
/// `fast` (the caller's items were all delivered for the first time, so
/// no result is expected to be a duplicate — the count of duplicates is
/// not known on that path) and enough results, as one fast-ingest batch;
/// when that fails, and otherwise, one publish per result, all at once.
///
/// # Errors
/// [`Error::Nats`] when one was not acknowledged (the batch fails; the
/// retry publishes the same ids again).
pub async fn send(
    js: &jetstream::Context,
    encoded: Encoded,
    fast: Option<(&FastIngest, &Metrics)>,
) -> Result<Published, Error> {
    if let Some((switch, metrics)) = fast
        && switch.enabled()
        && encoded.len() >= FAST_MIN
    {
        match fast_ingest::publish(&js.client(), &encoded.messages, FAST_TIMEOUT).await {
            Ok(count) => {
                metrics.fast_batches.fetch_add(1, Ordering::Relaxed);
                return Ok(Published {
                    stored: count,
                    duplicates: 0,
                });
            }
            Err(FastError::Unavailable(why)) => {
                switch.0.store(false, Ordering::Relaxed);
                metrics.fast_fallbacks.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %why, "analytics: results cannot go out as fast-ingest batches; publishing them one by one from now on");
            }
            Err(FastError::Failed(why)) => {
                metrics.fast_fallbacks.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %why, results = encoded.len(), "analytics: a fast-ingest batch of results failed; publishing them again one by one");
            }
        }
    }
    one_by_one(js, encoded).await
}

/// [`send`]'s path of one publish per result.
async fn one_by_one(js: &jetstream::Context, encoded: Encoded) -> Result<Published, Error> {
    let mut acks = Vec::with_capacity(encoded.messages.len());
    for (subject, headers, body) in encoded.messages {
        let ack = js
            .publish_with_headers(subject, headers, body)
            .await
            .map_err(|e| Error::nats("publish a result", e))?;
        acks.push(ack);
    }
    let mut done = Published::default();
    for ack in acks {
        let ack = ack
            .await
            .map_err(|e| Error::nats("store a result in PLANTD_AGGREGATES", e))?;
        if ack.duplicate {
            done.duplicates += 1;
        } else {
            done.stored += 1;
        }
    }
    Ok(done)
}

/// Publishes `outputs` of `site` ([`encode`] then [`send`]) and waits
/// until JetStream stored each.
///
/// # Errors
/// As [`encode`] and [`send`].
pub async fn publish(
    js: &jetstream::Context,
    site: &Site,
    outputs: &[Output],
) -> Result<Published, Error> {
    send(js, encode(site, outputs)?, None).await
}
