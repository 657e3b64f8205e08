//! Reading results back from `PLANTD_AGGREGATES`: every stored message
//! with its message id, for checks (tests, benches, diagnostics) that
//! each result is stored once.

use async_nats::jetstream::{self, consumer};
use futures::StreamExt as _;
use plantd_analytics::Output;
use plantd_shared::streams;

use crate::error::Error;

/// One stored result.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResult {
    /// Its `Nats-Msg-Id`.
    pub id: String,
    /// Its subject.
    pub subject: String,
    /// The result.
    pub output: Output,
}

/// Every result stored on subjects matching `filter` (e.g.
/// `plantd.plant1.agg.>`), in stream order.
///
/// # Errors
/// [`Error::Nats`] when the stream cannot be read, [`Error::Encode`] when
/// a message is not an [`Output`].
pub async fn read(js: &jetstream::Context, filter: &str) -> Result<Vec<StoredResult>, Error> {
    let stream = js
        .get_stream(streams::AGGREGATES)
        .await
        .map_err(|e| Error::nats("open PLANTD_AGGREGATES", e))?;
    let c = stream
        .create_consumer(consumer::push::OrderedConfig {
            deliver_subject: js.client().new_inbox(),
            filter_subject: filter.to_owned(),
            replay_policy: consumer::ReplayPolicy::Instant,
            ..Default::default()
        })
        .await
        .map_err(|e| Error::nats("read PLANTD_AGGREGATES", e))?;
    let mut out = Vec::new();
    if c.cached_info().num_pending == 0 {
        return Ok(out);
    }
    let mut messages = c
        .messages()
        .await
        .map_err(|e| Error::nats("read PLANTD_AGGREGATES", e))?;
    while let Some(m) = messages.next().await {
        let m = m.map_err(|e| Error::nats("read PLANTD_AGGREGATES", e))?;
        let pending = m
            .info()
            .map_err(|e| Error::nats("read PLANTD_AGGREGATES", e))?
            .pending;
        let id = m
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        out.push(StoredResult {
            id,
            subject: m.subject.to_string(),
            output: serde_json::from_slice(&m.payload)?,
        });
        if pending == 0 {
            break;
        }
    }
    Ok(out)
}
