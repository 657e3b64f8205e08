//! Results to `PLANTD_AGGREGATES`: one message per [`Output`] on
//! `plantd.<site>.agg.<rule>.<key>` with `Nats-Msg-Id` = [`message_id`],
//! all sent at once, then every acknowledgement awaited.

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

/// Publishes `outputs` of `site` and waits until JetStream stored each.
///
/// # Errors
/// [`Error::Nats`] when one was not acknowledged (the batch fails; the
/// retry publishes the same ids again).
pub async fn publish(
    js: &jetstream::Context,
    site: &Site,
    outputs: &[Output],
) -> Result<Published, Error> {
    let mut acks = Vec::with_capacity(outputs.len());
    for o in outputs {
        let mut headers = HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            message_id(site, o).as_str(),
        );
        let body = serde_json::to_vec(o)?;
        let ack = js
            .publish_with_headers(
                aggregate_subject(site, &o.rule, &o.key),
                headers,
                body.into(),
            )
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
