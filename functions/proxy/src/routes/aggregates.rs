//! `GET /v1/sites/{site}/aggregates`: analytics results of a site from
//! `PLANTD_AGGREGATES` (`plantd.<site>.agg.<rule>.<key>`), the latest
//! revision of each window, paged. Permission `telemetry:<site>:read`,
//! the site's organisation checked as at every site door.
//!
//! A result is a JSON document `{rule, key, window_start, window_end,
//! revision, values: {name: number}}` stored once per (rule, key, window,
//! revision) (message id `<site>:<rule>:<key>:<window_start>:<revision>`
//! from the cloud's analytics function, the journal's id from an edge); a late
//! reading makes the engine store the window again with a higher revision,
//! which supersedes the earlier ones here. Window times are milliseconds
//! since the epoch or RFC 3339 text.
//!
//! One page is read in one pass over the stream from the page's first
//! window on (a result is stored after its window starts, so nothing
//! before that time is read), keeping only the `limit` smallest windows
//! seen so far with their highest revision.

use std::collections::BTreeMap;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::push::OrderedConfig;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use plantd_shared::headers;
use plantd_shared::streams::AGGREGATES;
use plantd_shared::subject::encode_level;
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::json::Params;
use crate::routes::site;
use crate::routes::telemetry::{parse_time, permission};
use crate::scan::scan;
use crate::{AppError, AppState};

/// One stored result, as the analytics engine writes it.
#[derive(Debug, Clone, Deserialize)]
struct Stored {
    rule: String,
    key: String,
    window_start: serde_json::Value,
    window_end: serde_json::Value,
    revision: u64,
    #[serde(default)]
    values: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    dropped_late: u64,
}

/// One window's result, its latest revision.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Aggregate {
    /// The rule that computed it.
    pub rule: String,
    /// The group key (e.g. the topic of `GROUP BY topic`).
    pub key: String,
    /// Where the window starts, as stored (ms since the epoch or RFC 3339).
    #[schema(value_type = Object)]
    pub window_start: serde_json::Value,
    /// Where the window ends, as stored.
    #[schema(value_type = Object)]
    pub window_end: serde_json::Value,
    /// The revision shown: the highest stored (0 is the first result,
    /// each late reading adds one).
    pub revision: u64,
    /// How many earlier revisions of this window it supersedes (in what
    /// this read saw).
    pub superseded: u64,
    /// The aggregates by name (`avg_value`, `max_value`, …).
    #[schema(value_type = Object)]
    pub values: serde_json::Map<String, serde_json::Value>,
    /// Readings of the key the engine had dropped as later than the rule's
    /// allowed lateness when it computed this (cumulative; non-zero means
    /// the window may miss readings).
    pub dropped_late: u64,
    /// When it was stored (RFC 3339 UTC).
    pub stored: String,
    /// Its stream sequence.
    pub sequence: u64,
}

/// `GET /v1/sites/{site}/aggregates` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AggregatesQuery {
    /// Only this rule's results.
    pub rule: Option<String>,
    /// Only this group key's results.
    pub key: Option<String>,
    /// Windows starting at or after this time (RFC 3339 or ms since the
    /// epoch).
    pub from: Option<String>,
    /// Windows starting at or before this time.
    pub to: Option<String>,
    /// At most this many windows (default 100, at most the configured
    /// page).
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One page of `GET /v1/sites/{site}/aggregates`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AggregatesPage {
    /// The windows, by window start, then rule, then key.
    pub aggregates: Vec<Aggregate>,
    /// Stored results that are not a result document (counted, skipped).
    pub skipped: u64,
    /// Pass back as `cursor` for the next page; `null` when there is no
    /// more.
    pub next_cursor: Option<String>,
}

/// The order of windows in a page, and what a cursor names: the last
/// window of the previous page.
type WindowId = (u64, String, String);

fn cursor_text((start, rule, key): &WindowId) -> String {
    serde_json::json!([start, rule, key]).to_string()
}

fn parse_cursor(text: &str) -> Result<WindowId, AppError> {
    serde_json::from_str(text)
        .map_err(|_| AppError::bad_request("cursor must be a next_cursor this API returned"))
}

/// A window time in ms since the epoch: a number or RFC 3339 text.
fn window_ms(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => headers::parse_time(s),
        _ => None,
    }
}

/// `GET /v1/sites/{site}/aggregates?rule=&key=&from=&to=`: the latest
/// revision of each window, paged by window start.
///
/// # Errors
/// 400 naming the parameter, 403 (permission or another organisation's
/// site), 404 (site not registered), 503.
#[utoipa::path(get, path = "/v1/sites/{site}/aggregates", operation_id = "site_aggregates", tag = "sites",
    params(("site" = String, Path, description = "Site name"), AggregatesQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of windows", body = AggregatesPage),
        (status = 400, description = "Malformed or invalid request (the message names the parameter)", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, invalid or revoked token", body = crate::openapi::ErrorBody),
        (status = 403, description = "A permission is missing, or the site belongs to another organisation", body = crate::openapi::ErrorBody),
        (status = 404, description = "The site is not registered", body = crate::openapi::ErrorBody),
        (status = 503, description = "NATS or JetStream unavailable", body = crate::openapi::ErrorBody)))]
pub async fn aggregates(
    State(state): State<AppState>,
    caller: Caller,
    Path(site_name): Path<String>,
    Params(q): Params<AggregatesQuery>,
) -> Result<Response, AppError> {
    let site = site::site(&site_name)?;
    caller.require(&permission(site.as_str()))?;
    site::owned(&state, &caller, &site).await?;
    let from = parse_time("from", q.from.as_deref())?;
    let to = parse_time("to", q.to.as_deref())?;
    let limit = q.limit.unwrap_or(100).clamp(1, state.settings.max_page);
    let after = q.cursor.as_deref().map(parse_cursor).transpose()?;
    if let Some(rule) = &q.rule
        && rule.is_empty()
    {
        return Err(AppError::bad_request("rule must not be empty"));
    }
    let subject = match &q.rule {
        Some(rule) => {
            let mut s = format!("plantd.{site}.agg.");
            encode_level(rule, &mut s);
            s.push_str(".>");
            s
        }
        None => format!("plantd.{site}.agg.>"),
    };
    // A window's result is stored after the window starts: start reading
    // at the page's first window.
    let start = after.as_ref().map(|c| c.0).max(from);
    let deliver_policy = match start {
        Some(ms) => DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                .map_err(|_| AppError::bad_request("from is out of range"))?,
        },
        None => DeliverPolicy::All,
    };
    let stream = state
        .js
        .get_stream(AGGREGATES)
        .await
        .map_err(AppError::unavailable)?;
    let mut page: BTreeMap<WindowId, Aggregate> = BTreeMap::new();
    let mut more = false;
    let mut skipped = 0u64;
    let config = OrderedConfig {
        filter_subject: subject,
        deliver_policy,
        ..Default::default()
    };
    // `scan` keeps nothing (every message is folded here and dropped).
    scan(&state.client, &stream, config, usize::MAX, |m| {
        let Ok(doc) = serde_json::from_slice::<Stored>(&m.payload) else {
            skipped += 1;
            return (false, true);
        };
        let Some(start) = window_ms(&doc.window_start) else {
            skipped += 1;
            return (false, true);
        };
        let wanted = q.key.as_ref().is_none_or(|k| *k == doc.key)
            && q.rule.as_ref().is_none_or(|r| *r == doc.rule)
            && from.is_none_or(|f| start >= f)
            && to.is_none_or(|t| start <= t);
        if !wanted {
            return (false, true);
        }
        let id: WindowId = (start, doc.rule.clone(), doc.key.clone());
        if after.as_ref().is_some_and(|a| id <= *a) {
            return (false, true);
        }
        let stored = headers::format_time(m.time_ms);
        match page.get_mut(&id) {
            Some(have) => {
                have.superseded += 1;
                if doc.revision >= have.revision {
                    *have = Aggregate {
                        superseded: have.superseded,
                        ..aggregate(doc, stored, m.sequence)
                    };
                }
            }
            None => {
                page.insert(id, aggregate(doc, stored, m.sequence));
                if page.len() > limit {
                    page.pop_last();
                    more = true;
                }
            }
        }
        (false, true)
    })
    .await?;
    let next_cursor = more
        .then(|| page.keys().next_back().map(cursor_text))
        .flatten();
    Ok(axum::Json(AggregatesPage {
        aggregates: page.into_values().collect(),
        skipped,
        next_cursor,
    })
    .into_response())
}

fn aggregate(doc: Stored, stored: String, sequence: u64) -> Aggregate {
    Aggregate {
        rule: doc.rule,
        key: doc.key,
        window_start: doc.window_start,
        window_end: doc.window_end,
        revision: doc.revision,
        superseded: 0,
        values: doc.values,
        dropped_late: doc.dropped_late,
        stored,
        sequence,
    }
}
