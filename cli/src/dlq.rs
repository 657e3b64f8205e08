//! `plantd dlq list|replay`: the items functions gave up on, parked by the
//! trigger in `PLANTD_DLQ` — read and replayed over NATS directly (like
//! `plantd streams`), so it works on any cluster without the HTTP API.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result};
use plantd_trigger::dlq::{self, DlqError, ParkedItem};
use time::format_description::well_known::Rfc3339;

use crate::session::{ExitKind, fail};

async fn connect(url: &str, creds: Option<&Path>) -> Result<async_nats::jetstream::Context> {
    let mut opts = async_nats::ConnectOptions::new();
    if let Some(c) = creds {
        opts = opts
            .credentials_file(c)
            .await
            .with_context(|| format!("cannot read credentials {}", c.display()))?;
    }
    let client = plantd_shared::nats_urls::connect(url, opts)
        .await
        .with_context(|| {
            format!(
                "cannot connect to {}",
                plantd_shared::nats_urls::redacted(url)
            )
        })?;
    Ok(async_nats::jetstream::new(client))
}

/// A [`DlqError`] as a CLI error with the matching exit code.
fn cli_error(e: DlqError) -> anyhow::Error {
    let kind = match e {
        DlqError::NotFound(_) => ExitKind::NotFound,
        DlqError::NoTrigger(_) | DlqError::TimedOut(_) => ExitKind::Unavailable,
        DlqError::Malformed { .. } | DlqError::Nats(_) => ExitKind::Failure,
    };
    fail(kind, e.to_string())
}

fn to_json(p: &ParkedItem) -> serde_json::Value {
    serde_json::json!({
        "dlq_sequence": p.dlq_sequence,
        "consumer": p.consumer,
        "function": p.function,
        "stream": p.stream,
        "sequence": p.sequence,
        "subject": p.subject,
        "error": p.error,
        "deliveries": p.deliveries,
        "parked": p.parked.format(&Rfc3339).unwrap_or_default(),
        "payload": String::from_utf8_lossy(&p.payload),
    })
}

/// Prints up to `limit` parked items (of `consumer`, or all), oldest
/// first: one line each, or a JSON array with `json`.
///
/// # Errors
/// When NATS cannot be reached or `PLANTD_DLQ` cannot be read.
pub async fn list(
    url: &str,
    creds: Option<&Path>,
    consumer: Option<&str>,
    limit: usize,
    json: bool,
) -> Result<()> {
    let js = connect(url, creds).await?;
    let items = dlq::list(&js, consumer, limit).await.map_err(cli_error)?;
    if json {
        let all: Vec<_> = items.iter().map(to_json).collect();
        println!("{}", serde_json::Value::Array(all));
        return Ok(());
    }
    if items.is_empty() {
        eprintln!("no parked items");
        return Ok(());
    }
    println!(
        "{:>6}  {:<28} {:<24} {:>3}  error",
        "seq", "consumer", "source", "n"
    );
    for p in &items {
        println!(
            "{:>6}  {:<28} {:<24} {:>3}  {}",
            p.dlq_sequence,
            p.consumer,
            format!("{}#{}", p.stream, p.sequence),
            p.deliveries,
            p.error
        );
    }
    Ok(())
}

/// Asks the running trigger to hand parked item `sequence` back to the
/// function that failed on it, and prints the answer.
///
/// # Errors
/// Not found (exit 5), no trigger running or no answer within `timeout`
/// (exit 7), or the handler failed again (exit 1, with its error; the item
/// stays parked).
pub async fn replay(
    url: &str,
    creds: Option<&Path>,
    sequence: u64,
    timeout: Duration,
    json: bool,
) -> Result<()> {
    let js = connect(url, creds).await?;
    let reply = dlq::request_replay(&js, sequence, timeout)
        .await
        .map_err(cli_error)?;
    if json {
        println!("{}", serde_json::to_string(&reply)?);
    }
    if !reply.ok {
        anyhow::bail!(
            "replay of {sequence} failed, the item stays parked: {}",
            reply.error.unwrap_or_default()
        );
    }
    if !json {
        println!(
            "replayed {sequence} ({}#{}); removed from PLANTD_DLQ",
            reply.stream.unwrap_or_default(),
            reply.sequence.unwrap_or_default()
        );
    }
    Ok(())
}
