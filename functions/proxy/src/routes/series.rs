//! `GET /v1/sites/{site}/series`: one topic's telemetry between two
//! times, downsampled on the server for a chart — min/max/avg per time
//! bucket or LTTB points ([`crate::downsample`]) — so a year of 1 Hz
//! readings arrives as a thousand values. Permission
//! `telemetry:<site>:read`, the site's organisation checked as at every
//! site door.
//!
//! A sibling of `/history` rather than a mode of it: history pages through
//! messages of a filter, a series folds one topic's numbers into a fixed
//! number of values and has no pages.
//!
//! The topic's readings are kept in the process as two columns (time,
//! number) by [`crate::series_cache`]: the first request reads the stream
//! from `from` with a throw-away ordered consumer filtered on the topic's
//! subject (the server skips to `from` by time); later ones read only what
//! was stored since, then fold the slice of their range in one pass with
//! nothing allocated per reading.

use std::time::Duration;

use async_nats::jetstream::consumer::push::OrderedConfig;
use async_nats::jetstream::consumer::{DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::stream::{DirectGetErrorKind, Stream};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use plantd_shared::streams::TELEMETRY;
use plantd_shared::subject::{Channel, topic_to_subject};
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::downsample::{Bucket, Buckets, Grid, Lttb, Point};
use crate::json::Params;
use crate::reading::{self, FieldPath};
use crate::routes::site;
use crate::routes::telemetry::{parse_time, permission};
use crate::scan::millis;
use crate::series_cache::Column;
use crate::{AppError, AppState};

/// Buckets when the caller does not say.
pub const DEFAULT_BUCKETS: usize = 1000;
/// Most buckets one series may ask for.
pub const MAX_BUCKETS: usize = 10_000;

/// How long the read may wait for the next message the stream said it
/// has: a healthy server answers in milliseconds, a stalled one is a 503.
const STALL: Duration = Duration::from_secs(5);

/// How a series is downsampled.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Agg {
    /// Per bucket: count, min, max, avg, first, last (the default).
    #[default]
    Minmaxavg,
    /// Largest-triangle-three-buckets: real readings, at most one per
    /// bucket plus the first and the last.
    Lttb,
}

/// `GET /v1/sites/{site}/series` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SeriesQuery {
    /// The topic (no wildcards).
    pub topic: String,
    /// Readings stored at or after this time (RFC 3339 or ms since the
    /// epoch); default: the topic's first stored message.
    pub from: Option<String>,
    /// Readings stored at or before this time; default: now.
    pub to: Option<String>,
    /// How many time buckets to cut `[from, to]` into (1 to 10000,
    /// default 1000).
    pub buckets: Option<String>,
    /// `minmaxavg` (default) or `lttb`.
    #[serde(default)]
    pub agg: Agg,
    /// A JSON field path (`a.b`, `values.0`) to the number in each
    /// payload; without it the whole payload must be a number.
    pub field: Option<String>,
}

/// A downsampled series.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Series {
    /// The topic.
    pub topic: String,
    /// The field path, when one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// How it was downsampled.
    pub agg: Agg,
    /// The range's first millisecond (since the Unix epoch).
    pub from: u64,
    /// The range's last millisecond.
    pub to: u64,
    /// The width of each bucket, ms.
    pub bucket_ms: u64,
    /// Messages of the topic in the range.
    pub read: u64,
    /// Of them, those whose payload (or field) is not a finite number:
    /// counted here and left out of the values.
    pub skipped: u64,
    /// `agg=minmaxavg`: the non-empty buckets, oldest first (empty buckets
    /// are omitted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buckets: Option<Vec<Bucket>>,
    /// `agg=lttb`: the chosen readings, oldest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub points: Option<Vec<Point>>,
}

/// Either downsampler.
enum Sink {
    Buckets(Buckets),
    Lttb(Lttb),
}

impl Sink {
    fn push(&mut self, t: u64, v: f64) {
        match self {
            Self::Buckets(b) => b.push(t, v),
            Self::Lttb(l) => l.push(t, v),
        }
    }
}

fn buckets_param(text: Option<&str>) -> Result<usize, AppError> {
    let Some(text) = text else {
        return Ok(DEFAULT_BUCKETS);
    };
    text.parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_BUCKETS).contains(n))
        .ok_or_else(|| {
            AppError::bad_request(format!(
                "buckets must be a whole number from 1 to {MAX_BUCKETS}"
            ))
        })
}

/// `GET /v1/sites/{site}/series?topic=…&from=…&to=…&buckets=1000&agg=minmaxavg|lttb&field=a.b`:
/// the topic's readings in `[from, to]`, downsampled.
///
/// # Errors
/// 400 naming the parameter, 403 (permission or another organisation's
/// site), 404 (site not registered), 503.
#[utoipa::path(get, path = "/v1/sites/{site}/series", tag = "sites",
    params(("site" = String, Path, description = "Site name"), SeriesQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The downsampled series", body = Series),
        (status = 400, description = "Malformed or invalid request (the message names the parameter)", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, invalid or revoked token", body = crate::openapi::ErrorBody),
        (status = 403, description = "A permission is missing, or the site belongs to another organisation", body = crate::openapi::ErrorBody),
        (status = 404, description = "The site is not registered", body = crate::openapi::ErrorBody),
        (status = 503, description = "NATS or JetStream unavailable", body = crate::openapi::ErrorBody)))]
pub async fn series(
    State(state): State<AppState>,
    caller: Caller,
    Path(site_name): Path<String>,
    Params(q): Params<SeriesQuery>,
) -> Result<Response, AppError> {
    let site = site::site(&site_name)?;
    caller.require(&permission(site.as_str()))?;
    site::owned(&state, &caller, &site).await?;
    let topic = site::topic(&q.topic)?;
    let buckets = buckets_param(q.buckets.as_deref())?;
    let field = q
        .field
        .as_deref()
        .map(FieldPath::new)
        .transpose()
        .map_err(|e| AppError::bad_request(format!("field: {e}")))?;
    let from = parse_time("from", q.from.as_deref())?;
    let to = parse_time("to", q.to.as_deref())?
        .unwrap_or_else(|| millis(time::OffsetDateTime::now_utc()));
    if from.is_some_and(|f| f > to) {
        return Err(AppError::bad_request("from must not be after to"));
    }
    let subject = topic_to_subject(&site, Channel::Up, &topic);
    let stream = state
        .js
        .get_stream_no_info(TELEMETRY)
        .await
        .map_err(AppError::unavailable)?;
    let from = match from {
        Some(f) => Some(f),
        None => first_time(&stream, &subject).await?,
    };
    let Some(from) = from.filter(|f| *f <= to) else {
        // Nothing stored for the topic (or only after `to`).
        return Ok(
            axum::Json(answer(q.topic, field, q.agg, Grid::new(to, to, 1), None)).into_response(),
        );
    };
    let grid = Grid::new(from, to, buckets);
    let mut sink = match q.agg {
        Agg::Minmaxavg => Sink::Buckets(Buckets::new(grid)),
        Agg::Lttb => Sink::Lttb(Lttb::new(grid)),
    };
    let counts = fold(&state, &stream, &subject, grid, field.as_ref(), &mut sink).await?;
    tracing::debug!(site = %site, topic = %topic, read = counts.read, skipped = counts.skipped, "series read");
    Ok(axum::Json(answer(q.topic, field, q.agg, grid, Some((sink, counts)))).into_response())
}

fn answer(
    topic: String,
    field: Option<FieldPath>,
    agg: Agg,
    grid: Grid,
    folded: Option<(Sink, Counts)>,
) -> Series {
    let (sink, counts) = match folded {
        Some((sink, counts)) => (Some(sink), counts),
        None => (None, Counts::default()),
    };
    let (buckets, points) = match (agg, sink) {
        (_, Some(Sink::Buckets(b))) => (Some(b.finish()), None),
        (_, Some(Sink::Lttb(l))) => (None, Some(l.finish())),
        (Agg::Minmaxavg, None) => (Some(Vec::new()), None),
        (Agg::Lttb, None) => (None, Some(Vec::new())),
    };
    Series {
        topic,
        field: field.map(|f| f.as_str().to_owned()),
        agg,
        from: grid.from,
        to: grid.to,
        bucket_ms: grid.width,
        read: counts.read,
        skipped: counts.skipped,
        buckets,
        points,
    }
}

/// When the topic's first stored message was stored, `None` when the
/// stream holds nothing for it.
async fn first_time(stream: &Stream<()>, subject: &str) -> Result<Option<u64>, AppError> {
    match stream.direct_get_first_for_subject(subject).await {
        Ok(m) => Ok(Some(millis(m.time))),
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
        Err(e) => Err(AppError::unavailable(e)),
    }
}

/// What a read saw.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    read: u64,
    skipped: u64,
}

/// Brings the column of `subject` up to date with the stream (from
/// `grid.from` when it starts later or is empty, else from the sequence
/// after the last read) and folds its readings in `grid` into `sink`.
async fn fold(
    state: &AppState,
    stream: &Stream<()>,
    subject: &str,
    grid: Grid,
    field: Option<&FieldPath>,
    sink: &mut Sink,
) -> Result<Counts, AppError> {
    let field_key = field.map_or("", FieldPath::as_str);
    let column = state.series.column(subject, field_key);
    let mut column = column.lock().await;
    let deliver_policy = if column.start_ms.is_none_or(|s| grid.from < s) {
        column.reset();
        column.start_ms = Some(grid.from);
        DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::from_unix_timestamp_nanos(
                i128::from(grid.from) * 1_000_000,
            )
            .map_err(|_| AppError::bad_request("from is out of range"))?,
        }
    } else {
        DeliverPolicy::ByStartSequence {
            start_sequence: column.next_sequence,
        }
    };
    append(
        &state.client,
        stream,
        subject,
        deliver_policy,
        field,
        &mut column,
    )
    .await?;
    let mut counts = Counts::default();
    for i in column.range(grid.from, grid.to) {
        counts.read += 1;
        let v = column.values[i];
        if v.is_nan() {
            counts.skipped += 1;
        } else {
            sink.push(column.times[i], v);
        }
    }
    let points = column.times.len();
    drop(column);
    state.series.resized(subject, field_key, points);
    Ok(counts)
}

/// Reads `subject` from `deliver_policy` to the end of the stream into
/// `column` (NaN for a payload with no number).
async fn append(
    client: &async_nats::Client,
    stream: &Stream<()>,
    subject: &str,
    deliver_policy: DeliverPolicy,
    field: Option<&FieldPath>,
    column: &mut Column,
) -> Result<(), AppError> {
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_subject: client.new_inbox(),
            filter_subject: subject.to_owned(),
            deliver_policy,
            replay_policy: ReplayPolicy::Instant,
            ..Default::default()
        })
        .await
        .map_err(AppError::unavailable)?;
    if consumer.cached_info().num_pending == 0 {
        return Ok(());
    }
    let mut messages = consumer.messages().await.map_err(AppError::unavailable)?;
    loop {
        let next = tokio::time::timeout(STALL, messages.next())
            .await
            .map_err(|_| AppError::unavailable("stream read stalled"))?;
        let Some(message) = next else { break };
        let message = message.map_err(AppError::unavailable)?;
        let info = message.info().map_err(AppError::internal)?;
        column.times.push(millis(info.published));
        column
            .values
            .push(reading::number(&message.payload, field).unwrap_or(f64::NAN));
        column.next_sequence = info.stream_sequence + 1;
        if info.pending == 0 {
            break;
        }
    }
    Ok(())
}
