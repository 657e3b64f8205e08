//! Logs: `GET /v1/logs` (records from the in-memory log index, paged),
//! `GET /v1/logs/stats` (`count_over_time` / `rate` for charts),
//! `GET /v1/logs/aggregates` (the logger's per-minute counts and top
//! patterns in KV `plantd_log_aggregates`), and the `tail` operation of
//! `/v1/ws` ([`tail()`]).
//!
//! Permission: `telemetry:<site>:read` — logs are the site's data as much
//! as its telemetry, and every built-in role that reads one reads the
//! other. Organisation: the site must be the caller's organisation's
//! ([`site::owned`]: 404 unregistered, 403 another's); the pseudo-site
//! `_plantd` (plantd's own components' warnings) only for the bootstrap
//! organisation. Only the superadmin may leave `site` out, to read every
//! site at once.
//!
//! The index lives in a long-running process beside the trigger
//! (`plantd up`); a proxy without one ([`AppState::logs`] `None`, e.g. on
//! Lambda) answers 503 for `/v1/logs` and `/v1/logs/stats`.
//! `/v1/logs/aggregates` reads KV and works everywhere.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use plantd_logger::aggregate::{AggregateSettings, Aggregates, MAX_RANGE_MINUTES, MinuteAggregate};
use plantd_logger::index::MAX_LIMIT;
use plantd_logger::{
    Cursor, Direction, Filter, GroupLabel, Level, LogQuery, LogRecord, StatsFunction, StatsQuery,
    parse_filter,
};
use plantd_shared::audit;
use plantd_shared::sites::{self, BOOTSTRAP_ORG, PLATFORM_SITE};
use plantd_shared::subject::Site;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

pub mod tail;

pub use tail::{Tail, tail};

use crate::auth::Caller;
use crate::json::Params;
use crate::routes::{site, telemetry};
use crate::{AppError, AppState};

/// Records one page returns when the caller does not say.
pub const DEFAULT_LIMIT: usize = 100;
/// Patterns per minute `/v1/logs/aggregates` returns when not told.
pub const DEFAULT_TOP: usize = 10;

/// One log record as the API shows it (`plantd_logger::LogRecord`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LogLine {
    /// The stream it came from (`PLANTD_LOGS`; empty on a live tail).
    pub stream: String,
    /// Its sequence in that stream (0 on a live tail).
    pub sequence: u64,
    /// When it happened (RFC 3339): the line's own time, else the edge's,
    /// else the stream's.
    pub time: String,
    /// The site.
    pub site: String,
    /// The source (`line1/plc`: the MQTT topic after `$plantd/log/`).
    pub source: String,
    /// `trace`, `debug`, `info`, `warn`, `error` or `fatal`.
    pub level: String,
    /// The message (the whole line when it could not be parsed).
    pub message: String,
    /// The line's other keys (JSON and logfmt lines).
    #[schema(value_type = Object)]
    pub fields: Map<String, Value>,
    /// `json`, `logfmt` or `text`.
    pub format: String,
    /// Why the line could not be parsed as the format it looked like.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parse_error: Option<String>,
}

/// The JSON of a record (the API's [`LogLine`] shape).
pub fn record_json(r: &LogRecord) -> Value {
    serde_json::to_value(r).unwrap_or(Value::Null)
}

/// `GET /v1/logs` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    /// The site (required unless the caller is the superadmin, who may
    /// leave it out to read every site).
    pub site: Option<String>,
    /// Only this source (exact, or a glob with `*` and `?`).
    pub source: Option<String>,
    /// Only this level and above (`warn`).
    pub level: Option<String>,
    /// Only records at or after this time (RFC 3339 or ms since the epoch).
    pub from: Option<String>,
    /// Only records before this time.
    pub to: Option<String>,
    /// A filter in the log query language (`|= "overheat" | temp > 80`;
    /// see docs/api.md).
    pub filter: Option<String>,
    /// `backward` (newest first, the default) or `forward`.
    #[param(value_type = Option<String>)]
    pub direction: Option<Direction>,
    /// At most this many records (default 100, at most 5000).
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One page of `GET /v1/logs`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LogsPage {
    /// The records, in the direction asked for.
    #[schema(value_type = Vec<LogLine>)]
    pub records: Vec<Value>,
    /// Pass back as `cursor` for the next page; `null` at the end.
    pub next_cursor: Option<String>,
}

/// Which sites a request reads: checked against the caller.
async fn sites_for(
    state: &AppState,
    caller: &Caller,
    site: Option<&str>,
) -> Result<Option<Vec<String>>, AppError> {
    let Some(name) = site.filter(|s| !s.is_empty()) else {
        if sites::is_superadmin(&caller.claims) {
            // Every organisation's lines at once: a privileged read, audited
            // in the superadmin's own chain (no one owner to record it for).
            tracing::warn!(actor = %caller.claims.sub, actor_org = %caller.org(), cross_org = true, "superadmin reading the logs of every site");
            state
                .audit
                .record(
                    audit::Event::new(audit::Action::SiteCrossOrg, caller.org().to_owned())
                        .by(&caller.claims)
                        .target("site:*")
                        .detail(json!({"via": "logs", "sites": "every site"})),
                )
                .await;
            return Ok(None);
        }
        return Err(AppError::bad_request(
            "site is required (only the superadmin reads every site at once)",
        ));
    };
    let site = site::site(name)?;
    caller.require(&telemetry::permission(site.as_str()))?;
    check_site(state, caller, &site).await?;
    Ok(Some(vec![site.as_str().to_owned()]))
}

/// The organisation check for logs: [`site::owned`], except the
/// pseudo-site `_plantd`, which belongs to the bootstrap organisation and
/// is never registered.
///
/// # Errors
/// 403 another organisation's site (or `_plantd` outside the bootstrap
/// organisation), 404 unregistered, 503.
pub async fn check_site(state: &AppState, caller: &Caller, site: &Site) -> Result<(), AppError> {
    if site.as_str() == PLATFORM_SITE {
        return sites::authorize_org(&caller.claims, BOOTSTRAP_ORG)
            .map(|_| ())
            .map_err(|denied| denied.to_app_error(site.as_str()));
    }
    site::owned(state, caller, site).await.map(|_| ())
}

fn index(state: &AppState) -> Result<&std::sync::Arc<plantd_logger::LogIndex>, AppError> {
    state.logs.as_ref().ok_or_else(|| {
        AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "log index not running here (it runs with plantd up; on AWS query CloudWatch Logs Insights, or /v1/logs/aggregates)",
        )
    })
}

fn time_param(name: &str, text: Option<&str>) -> Result<Option<OffsetDateTime>, AppError> {
    text.map(|t| {
        t.parse::<i64>()
            .ok()
            .and_then(|ms| {
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
            })
            .or_else(|| {
                OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            })
            .ok_or_else(|| {
                AppError::bad_request(format!(
                    "{name} must be RFC 3339 or milliseconds since the epoch"
                ))
            })
    })
    .transpose()
}

pub(crate) fn level_param(text: Option<&str>) -> Result<Option<Level>, AppError> {
    text.filter(|t| !t.is_empty())
        .map(|t| {
            Level::from_name(t).ok_or_else(|| {
                AppError::bad_request(format!(
                    "level: unknown level {t:?} (trace, debug, info, warn, error, fatal)"
                ))
            })
        })
        .transpose()
}

/// Parses `filter`, a 400 naming the position on error.
///
/// # Errors
/// 400 `filter: filter error at position N near `tok`: why`.
pub fn filter_param(text: Option<&str>) -> Result<Filter, AppError> {
    match text {
        None => Ok(Filter::all()),
        Some(t) => parse_filter(t).map_err(|e| AppError::bad_request(format!("filter: {e}"))),
    }
}

/// `GET /v1/logs`: one page of log records, newest first unless
/// `direction=forward`.
///
/// # Errors
/// 400 (naming the parameter; a filter error names its position), 401,
/// 403, 404, 503 when no log index runs in this process.
#[utoipa::path(get, path = "/v1/logs", tag = "logs",
    params(LogsQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of records", body = LogsPage),
        (status = 400, description = "Malformed or invalid request (a filter error names its position)", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, invalid or revoked token", body = crate::openapi::ErrorBody),
        (status = 403, description = "A permission is missing, or the site belongs to another organisation", body = crate::openapi::ErrorBody),
        (status = 404, description = "The site is not registered", body = crate::openapi::ErrorBody),
        (status = 503, description = "The log index does not run in this process", body = crate::openapi::ErrorBody)))]
pub async fn logs(
    State(state): State<AppState>,
    caller: Caller,
    Params(q): Params<LogsQuery>,
) -> Result<Json<LogsPage>, AppError> {
    let filter = filter_param(q.filter.as_deref())?;
    let min_level = level_param(q.level.as_deref())?;
    let from = time_param("from", q.from.as_deref())?;
    let to = time_param("to", q.to.as_deref())?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(AppError::bad_request(format!(
            "limit must be 1..={MAX_LIMIT}"
        )));
    }
    let cursor = q
        .cursor
        .as_deref()
        .map(Cursor::decode)
        .transpose()
        .map_err(|e| AppError::bad_request(format!("cursor: {e}")))?;
    let sites = sites_for(&state, &caller, q.site.as_deref()).await?;
    let index = index(&state)?.clone();
    let query = LogQuery {
        sites,
        source: q.source,
        min_level,
        from,
        to,
        filter,
        direction: q.direction.unwrap_or_default(),
        limit,
        cursor,
    };
    // A scan of a large index is CPU work: off the async workers.
    let page = tokio::task::spawn_blocking(move || index.query(&query))
        .await
        .map_err(AppError::internal)?;
    Ok(Json(LogsPage {
        records: page.records.iter().map(record_json).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// `GET /v1/logs/stats` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StatsParams {
    /// The site (required unless superadmin).
    pub site: Option<String>,
    /// Only this source (exact or glob).
    pub source: Option<String>,
    /// Only this level and above.
    pub level: Option<String>,
    /// The filter (log query language).
    pub filter: Option<String>,
    /// Range start (default: an hour before `to`).
    pub from: Option<String>,
    /// Range end (default: now).
    pub to: Option<String>,
    /// Step: `30s`, `5m`, `1h` or seconds (default `1m`).
    pub step: Option<String>,
    /// Group by labels, comma-separated: `site`, `source`, `level`.
    pub by: Option<String>,
    /// `count_over_time` (default) or `rate` (lines per second).
    #[serde(rename = "fn")]
    #[param(rename = "fn", value_type = Option<String>)]
    pub function: Option<StatsFunction>,
}

/// One point of a series.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatsPoint {
    /// The step's start (RFC 3339).
    pub time: String,
    /// Lines in the step, or lines per second for `rate`.
    pub value: f64,
}

/// One series of `GET /v1/logs/stats`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatsSeries {
    /// The `by` labels and their values.
    pub labels: BTreeMap<String, String>,
    /// One point per step.
    pub points: Vec<StatsPoint>,
}

/// `GET /v1/logs/stats` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatsAnswer {
    /// The series.
    pub series: Vec<StatsSeries>,
}

/// Reads a step: `30s`, `5m`, `2h`, `1d`, or plain seconds.
///
/// # Errors
/// 400 naming `step`.
pub fn duration_param(name: &str, text: &str) -> Result<time::Duration, AppError> {
    let bad = || {
        AppError::bad_request(format!(
            "{name} must be a positive duration like 30s, 5m, 1h, 1d or seconds"
        ))
    };
    let t = text.trim();
    let (num, unit) = t
        .find(|c: char| !c.is_ascii_digit())
        .map_or((t, "s"), |i| t.split_at(i));
    let n: i64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(bad()),
    };
    if secs <= 0 {
        return Err(bad());
    }
    Ok(time::Duration::seconds(secs))
}

/// `GET /v1/logs/stats`: `count_over_time` or `rate` of matching records
/// over a range, per step, grouped by labels.
///
/// # Errors
/// 400 (parameters; too many points), 401, 403, 404, 503 without an index.
#[utoipa::path(get, path = "/v1/logs/stats", tag = "logs",
    params(StatsParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The series", body = StatsAnswer),
        (status = 400, description = "Malformed or invalid request", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, invalid or revoked token", body = crate::openapi::ErrorBody),
        (status = 403, description = "A permission is missing, or the site belongs to another organisation", body = crate::openapi::ErrorBody),
        (status = 404, description = "The site is not registered", body = crate::openapi::ErrorBody),
        (status = 503, description = "The log index does not run in this process", body = crate::openapi::ErrorBody)))]
pub async fn stats(
    State(state): State<AppState>,
    caller: Caller,
    Params(q): Params<StatsParams>,
) -> Result<Json<StatsAnswer>, AppError> {
    let filter = filter_param(q.filter.as_deref())?;
    let min_level = level_param(q.level.as_deref())?;
    let to = time_param("to", q.to.as_deref())?.unwrap_or_else(OffsetDateTime::now_utc);
    let from = time_param("from", q.from.as_deref())?.unwrap_or(to - time::Duration::HOUR);
    let step = duration_param("step", q.step.as_deref().unwrap_or("1m"))?;
    let mut by = Vec::new();
    for name in
        q.by.as_deref()
            .unwrap_or("")
            .split(',')
            .filter(|s| !s.trim().is_empty())
    {
        let label = GroupLabel::from_name(name).ok_or_else(|| {
            AppError::bad_request(format!("by: unknown label {name:?} (site, source, level)"))
        })?;
        if !by.contains(&label) {
            by.push(label);
        }
    }
    let sites = sites_for(&state, &caller, q.site.as_deref()).await?;
    let index = index(&state)?.clone();
    let query = StatsQuery {
        sites,
        source: q.source,
        min_level,
        filter,
        from,
        to,
        step,
        by,
        function: q.function.unwrap_or_default(),
    };
    let series = tokio::task::spawn_blocking(move || index.stats_over_time(&query))
        .await
        .map_err(AppError::internal)?
        .map_err(|e| AppError::bad_request(e.to_string()))?;
    let rfc = |t: OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    Ok(Json(StatsAnswer {
        series: series
            .into_iter()
            .map(|s| StatsSeries {
                labels: s.labels,
                points: s
                    .points
                    .into_iter()
                    .map(|p| StatsPoint {
                        time: rfc(p.time),
                        value: p.value,
                    })
                    .collect(),
            })
            .collect(),
    }))
}

/// `GET /v1/logs/aggregates` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AggregatesParams {
    /// The site.
    pub site: String,
    /// Range start (default: an hour before `to`).
    pub from: Option<String>,
    /// Range end (default: now; at most a day after `from`).
    pub to: Option<String>,
    /// Patterns per minute (default 10).
    pub top: Option<usize>,
}

/// One minute of a site's lines.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MinuteView {
    /// The minute (RFC 3339).
    pub minute: String,
    /// Lines in it.
    pub total: u64,
    /// Lines by source and level: `[{source, level, count}]`.
    #[schema(value_type = Vec<Object>)]
    pub counts: Vec<Value>,
    /// The most frequent message patterns: `[{pattern, count, level}]`.
    #[schema(value_type = Vec<Object>)]
    pub patterns: Vec<Value>,
    /// Lines whose pattern is not among `patterns`.
    pub other_patterns: u64,
}

/// `GET /v1/logs/aggregates` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AggregatesAnswer {
    /// The site.
    pub site: String,
    /// Minutes that had lines, oldest first.
    pub minutes: Vec<MinuteView>,
}

fn minute_view(a: MinuteAggregate, top: usize) -> MinuteView {
    let in_top: u64 = a.patterns.iter().take(top).map(|p| p.count).sum();
    let all: u64 = a.patterns.iter().map(|p| p.count).sum();
    MinuteView {
        minute: a
            .minute
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        total: a.total,
        counts: a.counts.iter().map(|c| json!(c)).collect(),
        patterns: a.patterns.iter().take(top).map(|p| json!(p)).collect(),
        other_patterns: a.other_patterns + (all - in_top),
    }
}

/// `GET /v1/logs/aggregates`: the logger's per-minute counts by source and
/// level and top message patterns of a site (from KV, counted exactly
/// once).
///
/// # Errors
/// 400 (a range over a day), 401, 403, 404, 503.
#[utoipa::path(get, path = "/v1/logs/aggregates", operation_id = "log_aggregates", tag = "logs",
    params(AggregatesParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Per-minute aggregates", body = AggregatesAnswer),
        (status = 400, description = "Malformed or invalid request", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, invalid or revoked token", body = crate::openapi::ErrorBody),
        (status = 403, description = "A permission is missing, or the site belongs to another organisation", body = crate::openapi::ErrorBody),
        (status = 404, description = "The site is not registered", body = crate::openapi::ErrorBody),
        (status = 503, description = "NATS or JetStream unavailable", body = crate::openapi::ErrorBody)))]
pub async fn aggregates(
    State(state): State<AppState>,
    caller: Caller,
    Params(q): Params<AggregatesParams>,
) -> Result<Json<AggregatesAnswer>, AppError> {
    let to = time_param("to", q.to.as_deref())?.unwrap_or_else(OffsetDateTime::now_utc);
    let from = time_param("from", q.from.as_deref())?.unwrap_or(to - time::Duration::HOUR);
    if to <= from || (to - from).whole_minutes() > MAX_RANGE_MINUTES {
        return Err(AppError::bad_request(format!(
            "from/to: `to` must be after `from`, at most {MAX_RANGE_MINUTES} minutes"
        )));
    }
    let site = site::site(&q.site)?;
    caller.require(&telemetry::permission(site.as_str()))?;
    check_site(&state, &caller, &site).await?;
    let store = state
        .log_aggregates
        .get_or_try_init(|| Aggregates::open(&state.js, AggregateSettings::default()))
        .await
        .map_err(AppError::unavailable)?;
    let minutes = store
        .read_range(site.as_str(), from, to)
        .await
        .map_err(AppError::unavailable)?;
    let top = q.top.unwrap_or(DEFAULT_TOP);
    Ok(Json(AggregatesAnswer {
        site: site.as_str().to_owned(),
        minutes: minutes.into_iter().map(|m| minute_view(m, top)).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps() {
        assert_eq!(
            duration_param("step", "30s").expect("30s"),
            time::Duration::seconds(30)
        );
        assert_eq!(
            duration_param("step", "5m").expect("5m"),
            time::Duration::minutes(5)
        );
        assert_eq!(
            duration_param("step", "90").expect("90"),
            time::Duration::seconds(90)
        );
        assert!(duration_param("step", "0s").is_err());
        assert!(duration_param("step", "5y").is_err());
    }
}
