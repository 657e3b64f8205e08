//! The `tail` operation of `/v1/ws`: a site's log lines as they come,
//! parsed as `GET /v1/logs` shows them.
//!
//! * Live (the default): core NATS on `plantd.<site>.log.>`; the records
//!   carry no position (`stream` empty, `sequence` 0), and a reconnecting
//!   client misses what was logged while it was away.
//! * Sequenced (`"from_sequence": n`, or `"sequenced": true` for the next
//!   line stored): an ordered consumer of `PLANTD_LOGS` from there, each
//!   record with its `stream` and `sequence` — a client that reconnects
//!   passes its last sequence + 1 and neither misses nor repeats a line the
//!   stream holds (the same [`Resume`] rules as a sequenced `subscribe`,
//!   with `missed` when retention dropped some). Its replay is paced to
//!   the socket (`room`): a slow reader is never closed for it.

use std::sync::Arc;

use axum::extract::ws::Message as Frame;
use futures::StreamExt as _;
use plantd_logger::{Filter, Level, LogRecord};
use plantd_shared::streams::LOGS;
use plantd_shared::subject::{Channel, Site};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{check_site, filter_param, level_param, record_json};
use crate::auth::Caller;
use crate::routes::live::{enqueue, error as error_frame, room};
use crate::routes::resume::{self, Resume};
use crate::routes::{site, telemetry};
use crate::{AppError, AppState};

/// The `tail` operation of `/v1/ws`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tail {
    /// The subscription's id (unsubscribe with it).
    pub id: String,
    /// The site.
    pub site: String,
    /// A filter in the log query language.
    #[serde(default)]
    pub filter: Option<String>,
    /// Only this source (exact or glob).
    #[serde(default)]
    pub source: Option<String>,
    /// Only this level and above.
    #[serde(default)]
    pub level: Option<String>,
    /// From this sequence of `PLANTD_LOGS` (≥ 1): a sequenced tail.
    #[serde(default)]
    pub from_sequence: Option<u64>,
    /// From the next line stored, with sequences (implied by
    /// `from_sequence`).
    #[serde(default)]
    pub sequenced: bool,
}

/// Which lines a tail passes on.
struct Passes {
    site: Site,
    min_level: Option<Level>,
    source: Option<String>,
    filter: Filter,
}

impl Passes {
    fn test(&self, r: &LogRecord) -> bool {
        *r.site == *self.site.as_str()
            && self.min_level.is_none_or(|l| r.level >= l)
            && self
                .source
                .as_deref()
                .is_none_or(|s| glob_match(s, &r.source))
            && self.filter.matches(r)
    }
}

/// `{"op":"tail","id","site","filter"?,"source"?,"level"?,"from_sequence"?,"sequenced"?}`:
/// checks the caller (as `GET /v1/logs`) and returns the
/// `{"op":"tailing","id"}` answer (sequenced: with `from_sequence` and,
/// when retention dropped some of the lines asked for, `missed`) and the
/// task that, once `opened` fires (after the answer is queued), forwards
/// `{"op":"log","id","record":{…}}` for every matching line into `out`
/// (live: cancelling `slow` when `out` is full; sequenced: waiting for
/// room, told by `sent`).
///
/// # Errors
/// As `GET /v1/logs`; 400 for `from_sequence` 0; 503 when NATS or the
/// stream is unavailable.
pub async fn tail(
    state: &AppState,
    caller: &Caller,
    req: Tail,
    (out, sent): (mpsc::Sender<Frame>, Arc<Notify>),
    slow: CancellationToken,
    opened: tokio::sync::oneshot::Receiver<()>,
) -> Result<(Value, JoinHandle<()>), AppError> {
    let filter = filter_param(req.filter.as_deref())?;
    let min_level = level_param(req.level.as_deref())?;
    let resume = Resume::of(req.from_sequence, req.sequenced)?;
    let site = site::site(&req.site)?;
    caller.require(&telemetry::permission(site.as_str()))?;
    check_site(state, caller, &site).await?;
    let everything = plantd_shared::topic::Filter::new("#").map_err(AppError::internal)?;
    let passes = Passes {
        site: site.clone(),
        min_level,
        source: req.source.filter(|s| !s.is_empty()),
        filter,
    };
    let id = req.id;
    if resume != Resume::Live {
        let start = resume::start_in(&state.js, LOGS, resume).await?;
        let messages = resume::consumer_in(
            &state.js,
            (LOGS, Channel::Log),
            state.client.new_inbox(),
            &site,
            &everything,
            start.sequence,
        )
        .await?;
        let mut ack = json!({ "op": "tailing", "id": id, "from_sequence": start.sequence });
        if start.missed {
            ack["missed"] = Value::Bool(true);
        }
        let task = tokio::spawn(async move {
            if opened.await.is_ok() {
                forward_stored(&id, &passes, messages, (&out, &sent), &slow).await;
            }
        });
        return Ok((ack, task));
    }
    let mut subs = Vec::new();
    for subject in plantd_shared::subject::filter_to_subjects(&site, Channel::Log, &everything) {
        subs.push(
            state
                .client
                .subscribe(subject)
                .await
                .map_err(AppError::unavailable)?,
        );
    }
    let mut sub = futures::stream::select_all(subs);
    state.client.flush().await.map_err(AppError::unavailable)?;
    let ack = json!({ "op": "tailing", "id": id });
    let task = tokio::spawn(async move {
        if opened.await.is_err() {
            return;
        }
        while let Some(m) = sub.next().await {
            let headers = m.headers.clone().unwrap_or_default();
            let r = plantd_logger::parse(
                "",
                0,
                m.subject.as_str(),
                &headers,
                &m.payload,
                OffsetDateTime::now_utc(),
            );
            if !passes.test(&r) {
                continue;
            }
            let frame = json!({ "op": "log", "id": id, "record": record_json(&r) });
            if !enqueue(&out, &slow, &frame) {
                return;
            }
        }
    });
    Ok((ack, task))
}

/// The lines of a sequenced tail, each parsed with its stream position,
/// read on only while the queue has [`room`]. A consumer error ends the
/// tail with an `error` frame (`unavailable`); the client tails again
/// from its last sequence + 1.
async fn forward_stored(
    id: &str,
    passes: &Passes,
    mut messages: async_nats::jetstream::consumer::push::Ordered,
    (out, sent): (&mpsc::Sender<Frame>, &Notify),
    slow: &CancellationToken,
) {
    loop {
        room(out, sent).await;
        let m = match messages.next().await {
            None => return,
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                enqueue(out, slow, &error_frame(Some(id), &AppError::unavailable(e)));
                return;
            }
        };
        let (sequence, stored) = match m.info() {
            Ok(info) => (info.stream_sequence, info.published),
            Err(_) => (0, OffsetDateTime::now_utc()),
        };
        let headers = m.headers.clone().unwrap_or_default();
        let r = plantd_logger::parse(
            LOGS,
            sequence,
            m.subject.as_str(),
            &headers,
            &m.payload,
            stored,
        );
        if !passes.test(&r) {
            continue;
        }
        let frame = json!({ "op": "log", "id": id, "record": record_json(&r) });
        if !enqueue(out, slow, &frame) {
            return;
        }
    }
}

/// `*`/`?` glob (or exact) match of a source.
fn glob_match(pattern: &str, source: &str) -> bool {
    if !pattern.contains(['*', '?']) {
        return pattern == source;
    }
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = source.chars().collect();
    let (mut pi, mut si, mut star, mut mark) = (0, 0, None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_match_exactly_or_by_glob() {
        assert!(glob_match("line1/*", "line1/plc"));
        assert!(glob_match("line?/plc", "line2/plc"));
        assert!(!glob_match("line1/*", "line2/plc"));
        assert!(glob_match("gw", "gw") && !glob_match("gw", "gw2"));
    }
}
