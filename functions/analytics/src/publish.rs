//! Results to `PLANTD_AGGREGATES`: one message per [`Output`] on
//! `plantd.<site>.agg.<rule>.<key>` with `Nats-Msg-Id` = [`message_id`],
//! all sent at once, then every acknowledgement awaited. Encoding
//! ([`encode`]) is apart from sending ([`send`]): the handler encodes while
//! its fencing reads are on the way.

use async_nats::HeaderMap;
use async_nats::jetstream;
use plantd_analytics::Output;
use plantd_shared::subject::{Site, aggregate_subject};

use crate::error::Error;

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

/// Sends `encoded` results, all at once, then waits until JetStream stored
/// each.
///
/// # Errors
/// [`Error::Nats`] when one was not acknowledged (the batch fails; the
/// retry publishes the same ids again).
pub async fn send(js: &jetstream::Context, encoded: Encoded) -> Result<Published, Error> {
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
    send(js, encode(site, outputs)?).await
}
