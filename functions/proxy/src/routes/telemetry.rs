//! Telemetry from `PLANTD_TELEMETRY`: the last message of a topic, and
//! the history of a topic filter between two times, paged with a cursor,
//! oldest or newest first. Permission `telemetry:<site>:read`.

use crate::json::Params;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::push::OrderedConfig;
use async_nats::jetstream::stream::DirectGetErrorKind;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use plantd_shared::headers;
use plantd_shared::streams::TELEMETRY;
use plantd_shared::subject::{Channel, filter_to_subjects, subject_to_topic, topic_to_subject};
use plantd_shared::topic::Filter;
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::routes::site;
use crate::scan::{Scanned, millis, scan};
use crate::{AppError, AppState};

/// The permission to read telemetry of `site`.
pub fn permission(site: &str) -> String {
    format!("telemetry:{site}:read")
}

/// One telemetry message as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Message {
    /// The MQTT topic.
    pub topic: String,
    /// The stream sequence (also what cursors are made of).
    pub sequence: u64,
    /// When the stream stored it (RFC 3339 UTC).
    pub time: String,
    /// When the edge received it, if it said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received: Option<String>,
    /// The QoS it was published with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qos: Option<u8>,
    /// Whether it was retained.
    pub retain: bool,
    /// Its MQTT 5 content type, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The payload as JSON (JSON content type) or text ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    /// ... or base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<String>,
}

fn message(m: &Scanned) -> Option<Message> {
    let parsed = subject_to_topic(&m.subject).ok()?;
    let h = |name: &str| m.headers.get(name).map(|v| v.as_str().to_owned());
    let content_type = h(headers::CONTENT_TYPE);
    let render_as = content_type.clone().unwrap_or_else(|| {
        if h(headers::PAYLOAD_FORMAT).as_deref() == Some("1") {
            "text/plain".into()
        } else {
            String::new()
        }
    });
    let (value, value_base64) = crate::payload::render(&render_as, &m.payload);
    Some(Message {
        topic: parsed.topic.into_string(),
        sequence: m.sequence,
        time: headers::format_time(m.time_ms),
        received: h(headers::RECEIVED),
        qos: h(headers::QOS).and_then(|q| q.parse().ok()),
        retain: h(headers::RETAIN).as_deref() == Some("true"),
        content_type,
        value,
        value_base64,
    })
}

/// `GET /v1/sites/{site}/last` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LastQuery {
    /// The topic.
    pub topic: String,
}

/// `GET /v1/sites/{site}/last?topic=…`: the last message of a topic.
///
/// # Errors
/// 400, 403, 404 when the stream holds nothing for it, 503.
#[utoipa::path(get, path = "/v1/sites/{site}/last", tag = "sites",
    params(("site" = String, Path, description = "Site name"), LastQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The last message of the topic", body = Message),
        (status = 400, description = "Malformed or invalid request", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, invalid or revoked token", body = crate::openapi::ErrorBody),
        (status = 403, description = "A permission is missing, or the site belongs to another organisation", body = crate::openapi::ErrorBody),
        (status = 404, description = "The site is not registered, or the stream holds nothing for the topic", body = crate::openapi::ErrorBody),
        (status = 503, description = "NATS or JetStream unavailable, or no responder", body = crate::openapi::ErrorBody)))]
pub async fn last(
    State(state): State<AppState>,
    caller: Caller,
    Path(site_name): Path<String>,
    Params(q): Params<LastQuery>,
) -> Result<Response, AppError> {
    let site = site::site(&site_name)?;
    caller.require(&permission(site.as_str()))?;
    site::owned(&state, &caller, &site).await?;
    let topic = site::topic(&q.topic)?;
    let stream = state
        .js
        .get_stream_no_info(TELEMETRY)
        .await
        .map_err(AppError::unavailable)?;
    let m = match stream
        .direct_get_last_for_subject(topic_to_subject(&site, Channel::Up, &topic))
        .await
    {
        Ok(m) => m,
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => {
            return Err(AppError::not_found(format!(
                "telemetry for {topic} on {site}"
            )));
        }
        Err(e) => return Err(AppError::unavailable(e)),
    };
    let scanned = Scanned {
        subject: m.subject.to_string(),
        sequence: m.sequence,
        time_ms: millis(m.time),
        headers: m.headers,
        payload: m.payload,
    };
    let msg = message(&scanned).ok_or_else(|| AppError::internal("undecodable subject"))?;
    Ok(axum::Json(msg).into_response())
}

/// Which way a history page runs.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Oldest first.
    Asc,
    /// Newest first (the default).
    #[default]
    Desc,
}

/// `GET /v1/sites/{site}/history` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// MQTT topic filter (`line1/+/temp`, `#`).
    pub filter: String,
    /// Only messages stored at or after this time (RFC 3339 or ms since the
    /// epoch).
    pub from: Option<String>,
    /// Only messages stored at or before this time.
    pub to: Option<String>,
    /// At most this many (default 100, at most the configured page).
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// `asc` or `desc` (default).
    #[serde(default)]
    pub order: Order,
}

/// One page of `GET /v1/sites/{site}/history`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HistoryPage {
    /// The messages, in the order asked for.
    pub messages: Vec<Message>,
    /// Pass back as `cursor` for the next page; `null` when there is no
    /// more.
    pub next_cursor: Option<String>,
}

/// Parses the `from`/`to` parameter `name`: RFC 3339 or milliseconds
/// since the epoch, at most [`headers::MAX_QUERY_TIME_MS`] (year 9999).
///
/// # Errors
/// 400 naming the parameter.
pub(crate) fn parse_time(name: &str, text: Option<&str>) -> Result<Option<u64>, AppError> {
    text.map(|t| {
        headers::parse_query_time(t).ok_or_else(|| {
            AppError::bad_request(format!(
                "{name} must be RFC 3339 or milliseconds since the epoch, up to year 9999"
            ))
        })
    })
    .transpose()
}

/// `GET /v1/sites/{site}/history?filter=…`: one page of messages and the
/// cursor of the next (`null` when there is no more).
///
/// # Errors
/// 400, 403 (permission or another organisation's site), 404 (site not
/// registered), 503.
#[utoipa::path(get, path = "/v1/sites/{site}/history", operation_id = "telemetry_history", tag = "sites",
    params(("site" = String, Path, description = "Site name"), HistoryQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page", body = HistoryPage),
        (status = 400, description = "Malformed or invalid request", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, invalid or revoked token", body = crate::openapi::ErrorBody),
        (status = 403, description = "A permission is missing, or the site belongs to another organisation", body = crate::openapi::ErrorBody),
        (status = 404, description = "The site is not registered", body = crate::openapi::ErrorBody),
        (status = 503, description = "NATS or JetStream unavailable, or no responder", body = crate::openapi::ErrorBody)))]
pub async fn history(
    State(state): State<AppState>,
    caller: Caller,
    Path(site_name): Path<String>,
    Params(q): Params<HistoryQuery>,
) -> Result<Response, AppError> {
    let site = site::site(&site_name)?;
    caller.require(&permission(site.as_str()))?;
    site::owned(&state, &caller, &site).await?;
    let filter = site::filter(&q.filter)?;
    let from = parse_time("from", q.from.as_deref())?;
    let to = parse_time("to", q.to.as_deref())?;
    let limit = q.limit.unwrap_or(100).clamp(1, state.settings.max_page);
    let cursor = q
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<u64>().map_err(|_| {
                AppError::bad_request("cursor must be a next_cursor this API returned")
            })
        })
        .transpose()?;
    let subjects = filter_to_subjects(&site, Channel::Up, &filter);
    let stream = state
        .js
        .get_stream(TELEMETRY)
        .await
        .map_err(AppError::unavailable)?;
    let page = Page {
        client: &state.client,
        stream: &stream,
        subjects,
        filter: &filter,
        from,
        to,
        limit,
    };
    let (messages, next) = match q.order {
        Order::Asc => page.ascending(cursor).await?,
        Order::Desc => page.descending(cursor).await?,
    };
    let messages: Vec<Message> = messages.iter().filter_map(message).collect();
    Ok(axum::Json(HistoryPage {
        messages,
        next_cursor: next.map(|n| n.to_string()),
    })
    .into_response())
}

/// One page's question.
struct Page<'a> {
    client: &'a async_nats::Client,
    stream: &'a async_nats::jetstream::stream::Stream,
    subjects: Vec<String>,
    filter: &'a Filter,
    from: Option<u64>,
    to: Option<u64>,
    limit: usize,
}

impl Page<'_> {
    /// Whether a message is in the filter (including MQTT's rule that
    /// wildcards at the start never match `$` topics) and time range.
    fn selects(&self, m: &Scanned) -> bool {
        let in_filter = subject_to_topic(&m.subject).is_ok_and(|p| self.filter.matches(&p.topic));
        in_filter
            && self.from.is_none_or(|f| m.time_ms >= f)
            && self.to.is_none_or(|t| m.time_ms <= t)
    }

    fn config(&self, deliver_policy: DeliverPolicy) -> OrderedConfig {
        OrderedConfig {
            filter_subjects: self.subjects.clone(),
            deliver_policy,
            ..Default::default()
        }
    }

    /// Oldest first, from `cursor` (a sequence) or `from`.
    async fn ascending(
        &self,
        cursor: Option<u64>,
    ) -> Result<(Vec<Scanned>, Option<u64>), AppError> {
        let policy = match (cursor, self.from) {
            (Some(seq), _) => DeliverPolicy::ByStartSequence {
                start_sequence: seq,
            },
            (None, Some(ms)) => DeliverPolicy::ByStartTime {
                start_time: time::OffsetDateTime::from_unix_timestamp_nanos(
                    i128::from(ms) * 1_000_000,
                )
                .map_err(|_| AppError::bad_request("from is out of range"))?,
            },
            (None, None) => DeliverPolicy::All,
        };
        let to = self.to;
        let out = scan(
            self.client,
            self.stream,
            self.config(policy),
            self.limit,
            |m| {
                let past_end = to.is_some_and(|t| m.time_ms > t);
                (!past_end && self.selects(m), !past_end)
            },
        )
        .await?;
        let next = (out.len() == self.limit)
            .then(|| out.last().map(|m| m.sequence + 1))
            .flatten();
        Ok((out, next))
    }

    /// Newest first, below `cursor` (a sequence, exclusive): scans windows
    /// of the stream backwards, each twice the last, until the page is full
    /// or the start of the stream (or of `from`) is reached.
    async fn descending(
        &self,
        cursor: Option<u64>,
    ) -> Result<(Vec<Scanned>, Option<u64>), AppError> {
        let info = self.stream.cached_info();
        let first = info.state.first_sequence.max(1);
        let mut hi = cursor
            .unwrap_or(info.state.last_sequence + 1)
            .min(info.state.last_sequence + 1);
        let mut window = (self.limit as u64 * 4).max(256);
        let mut out: Vec<Scanned> = Vec::new();
        while hi > first && out.len() < self.limit {
            let lo = hi.saturating_sub(window).max(first);
            let upper = hi;
            let mut older_than_from = false;
            let from = self.from;
            let mut chunk = scan(
                self.client,
                self.stream,
                self.config(DeliverPolicy::ByStartSequence { start_sequence: lo }),
                usize::MAX,
                |m| {
                    if from.is_some_and(|f| m.time_ms < f) {
                        older_than_from = true;
                    }
                    let inside = m.sequence < upper;
                    (inside && self.selects(m), inside)
                },
            )
            .await?;
            chunk.reverse();
            let room = self.limit - out.len();
            out.extend(chunk.into_iter().take(room));
            if older_than_from {
                break;
            }
            hi = lo;
            window = window.saturating_mul(2);
        }
        let next = if out.len() == self.limit {
            out.last().map(|m| m.sequence).filter(|s| *s > first)
        } else {
            None
        };
        Ok((out, next))
    }
}
