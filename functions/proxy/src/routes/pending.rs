//! Pending commands of a site: `GET /v1/sites/{site}/commands?state=pending`
//! lists them, `DELETE /v1/sites/{site}/commands/{id}` cancels one. The id
//! is the command's sequence in `PLANTD_COMMANDS`, as returned by
//! `POST /v1/sites/{site}/commands`.
//!
//! The proxy cannot see the edge's memory, and the edge may be offline, so
//! both read what JetStream keeps (see [`plantd_shared::commands`]):
//!
//! * **queued** — in the stream, not yet taken by the edge: above the
//!   `delivered` sequence of the edge's durable consumer
//!   ([`consumer_name`]). Known even when the edge never connected.
//!   Cancelling deletes it from the stream, which JetStream then never
//!   delivers.
//! * **held** — taken by the edge but not delivered (nobody subscribes to
//!   its topic, or it waits behind such a command): a record in the
//!   `plantd_commands` bucket, written by the edge before it acknowledged
//!   the command. Cancelling marks the record `cancel_requested`; the edge
//!   drops the command and answers `cancelled` (or `delivered`, when the
//!   cancel came too late). When the edge does not answer within
//!   [`VERDICT_WAIT`] (it is offline) the answer is 202: the edge drops the
//!   command before anything else when it comes back.
//!
//! A command the edge is handing to the broker at this very moment is in
//! neither list (it is delivered within milliseconds, or held).

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use plantd_shared::commands::{CommandState, HeldCommand, consumer_name, record_id, record_key};
use plantd_shared::headers;
use plantd_shared::http::Params;
use plantd_shared::streams::{COMMANDS, COMMANDS_BUCKET};
use plantd_shared::subject::{Channel, Site, prefix};
use serde::{Deserialize, Serialize};

use crate::audit::{Act, Origin};
use crate::auth::Caller;
use crate::routes::{commands, site};
use crate::{AppError, AppState};
use plantd_shared::audit::Action;

/// How long a cancel waits for the edge's answer before it says 202.
pub const VERDICT_WAIT: Duration = Duration::from_secs(3);

/// How long a cancel waits for the record of a command the edge is taking
/// at that moment.
pub const IN_FLIGHT_WAIT: Duration = Duration::from_secs(1);

/// Most stored commands one list reads.
pub const MAX_SCAN: usize = 10_000;

/// Most commands one list returns.
pub const MAX_LIMIT: usize = 1000;

/// Which commands to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StateFilter {
    /// Not delivered yet: queued for the edge, or held by it.
    Pending,
}

/// `GET /v1/sites/{site}/commands` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `pending` (the default and, for now, the only one).
    #[serde(default)]
    #[param(inline)]
    pub state: Option<StateFilter>,
    /// At most this many, oldest first (default 100, at most 1000).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// Where a pending command is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PendingState {
    /// In the stream; the edge has not taken it yet (offline, or busy).
    Queued,
    /// The edge holds it: nobody subscribes to its topic, or it waits
    /// behind such a command (`reason`).
    Held,
    /// A cancel was requested; the edge has not answered yet.
    CancelRequested,
}

/// A pending command.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PendingCommand {
    /// Its id: the sequence in `PLANTD_COMMANDS`.
    pub id: u64,
    /// The MQTT topic.
    pub topic: String,
    /// Where it is.
    pub state: PendingState,
    /// Why the edge holds it: `no_subscriber`, `behind` (an earlier
    /// command to the same topic is held) or `refused` (subscribers'
    /// queues full).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it was sent (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent: Option<String>,
    /// When the edge held it (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_since: Option<String>,
    /// When the edge drops it if still undelivered (RFC 3339; held ones).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

/// `GET /v1/sites/{site}/commands` answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PendingList {
    /// Oldest first.
    pub commands: Vec<PendingCommand>,
    /// Whether there may be more than listed (more than `limit`, or more
    /// stored commands than one list reads).
    pub truncated: bool,
}

/// `DELETE /v1/sites/{site}/commands/{id}` answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Cancelled {
    /// The command.
    pub id: u64,
    /// `cancelled` (200: it will never be delivered) or `cancel_requested`
    /// (202: the edge is offline; it drops the command when it returns).
    pub state: String,
}

/// The site in the path, once the caller may send commands to it: the
/// permission, and the site belongs to the caller's organisation
/// ([`site::owned`]).
async fn authorized(state: &AppState, caller: &Caller, site_name: &str) -> Result<Site, AppError> {
    let site = site::site(site_name)?;
    caller.require(&commands::permission(site.as_str()))?;
    site::owned(state, caller, &site).await?;
    Ok(site)
}

/// `GET /v1/sites/{site}/commands?state=pending[&limit=n]` → the commands
/// not delivered yet, oldest first.
///
/// # Errors
/// 400 for a bad site, state or limit; 403 without
/// `commands:<site>:send` or for another organisation's site; 404 for a
/// site nobody registered; 503 when JetStream is unreachable.
#[utoipa::path(get, path = "/v1/sites/{site}/commands", tag = "sites",
    params(("site" = String, Path, description = "Site name"), ListQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Pending commands, oldest first", body = PendingList),
        (status = 400, description = "Malformed or invalid request", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, invalid or revoked token", body = crate::openapi::ErrorBody),
        (status = 403, description = "A permission is missing", body = crate::openapi::ErrorBody),
        (status = 503, description = "NATS or JetStream unavailable", body = crate::openapi::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(site_name): Path<String>,
    Params(q): Params<ListQuery>,
) -> Result<Response, AppError> {
    let site = authorized(&state, &caller, &site_name).await?;
    let StateFilter::Pending = q.state.unwrap_or(StateFilter::Pending);
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(AppError::bad_request(format!(
            "limit must be 1 to {MAX_LIMIT}"
        )));
    }
    let mut found: BTreeMap<u64, PendingCommand> = BTreeMap::new();
    let kv = records(&state.js).await?;
    for (record, _) in held(&kv, &site).await? {
        let state = match record.state {
            CommandState::Held => PendingState::Held,
            CommandState::CancelRequested => PendingState::CancelRequested,
            _ => continue,
        };
        let reason = serde_json::to_value(record.reason)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned));
        found.insert(
            record.id,
            PendingCommand {
                id: record.id,
                topic: record.topic,
                state,
                reason,
                sent: record.sent,
                held_since: Some(record.held_since),
                expires: Some(record.expires),
            },
        );
    }
    let stream = state
        .js
        .get_stream_no_info(COMMANDS)
        .await
        .map_err(AppError::unavailable)?;
    let taken = edge_position(&stream, &site).await?;
    let filter = format!("{}.>", prefix(&site, Channel::Down));
    let now = headers::now_ms();
    let mut next = taken.delivered + 1;
    // One more than asked, to tell whether the list is truncated; at most
    // MAX_SCAN stored commands read (expired ones are skipped, and a site
    // offline for days may have many).
    let mut scanned = 0;
    let mut scan_cut = false;
    while found.len() <= limit {
        scanned += 1;
        if scanned > MAX_SCAN {
            scan_cut = true;
            break;
        }
        let m = match stream
            .direct_get_next_for_subject(&filter, Some(next))
            .await
        {
            Ok(m) => m,
            Err(e) if e.kind() == jetstream::stream::DirectGetErrorKind::NotFound => break,
            Err(e) => return Err(AppError::unavailable(e)),
        };
        next = m.sequence + 1;
        if expired(&m.headers, now) {
            continue;
        }
        let Ok(parsed) = plantd_shared::subject::subject_to_topic(m.subject.as_str()) else {
            continue;
        };
        found.entry(m.sequence).or_insert(PendingCommand {
            id: m.sequence,
            topic: parsed.topic.to_string(),
            state: PendingState::Queued,
            reason: None,
            sent: m.headers.get(headers::SENT).map(|v| v.as_str().to_owned()),
            held_since: None,
            expires: None,
        });
    }
    let truncated = scan_cut || found.len() > limit;
    let commands = found.into_values().take(limit).collect();
    Ok(axum::Json(PendingList {
        commands,
        truncated,
    })
    .into_response())
}

/// `DELETE /v1/sites/{site}/commands/{id}` → 200 cancelled, or 202 when
/// the edge holding it is offline (it drops it when it returns).
///
/// # Errors
/// 400 for a bad site or id; 403 without `commands:<site>:send` or for
/// another organisation's site; 404 for an unknown site or command; 409
/// when it was already delivered or expired, or the edge is handing it
/// over at this moment; 503.
#[utoipa::path(delete, path = "/v1/sites/{site}/commands/{id}", tag = "sites",
    params(("site" = String, Path, description = "Site name"),
        ("id" = u64, Path, description = "The command's id (its sequence in PLANTD_COMMANDS)")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Cancelled: it will never be delivered", body = Cancelled),
        (status = 202, description = "The edge holding it is offline: it drops it when it returns", body = Cancelled),
        (status = 400, description = "Malformed or invalid request", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, invalid or revoked token", body = crate::openapi::ErrorBody),
        (status = 403, description = "A permission is missing", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such command on this site", body = crate::openapi::ErrorBody),
        (status = 409, description = "Already delivered or expired, or being delivered right now", body = crate::openapi::ErrorBody),
        (status = 503, description = "NATS or JetStream unavailable", body = crate::openapi::ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    origin: Origin,
    Path((site_name, id)): Path<(String, String)>,
) -> Result<Response, AppError> {
    let result = cancel_command(&state, &caller, &site_name, &id).await;
    // (The status, not the response, is kept across the awaits below: a
    // response is not `Sync`.)
    if let Some(status) = result.as_ref().ok().map(|r| r.status().as_u16()) {
        // In the chain of the site's owner (the caller's when unknown).
        let owner = match state.sites.get(&site_name).await {
            Ok(Some((record, _))) => record.org,
            _ => String::new(),
        };
        let target = format!("command:{site_name}/{id}");
        let act = Act::new(Action::CommandCancel, &owner, target)
            .detail(serde_json::json!({ "status": status }));
        origin.record(&state, &caller, act).await;
    }
    result
}

/// [`cancel`] without its audit record.
async fn cancel_command(
    state: &AppState,
    caller: &Caller,
    site_name: &str,
    id: &str,
) -> Result<Response, AppError> {
    let site = authorized(state, caller, site_name).await?;
    let id: u64 = id
        .parse()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| AppError::bad_request("the command id is a positive whole number"))?;
    let kv = records(&state.js).await?;
    let stream = state
        .js
        .get_stream_no_info(COMMANDS)
        .await
        .map_err(AppError::unavailable)?;
    let key = record_key(&site, id);
    // Each turn either answers or sees the record change under it (the
    // edge wrote it meanwhile): a handful of turns settle any race.
    for _ in 0..5 {
        let entry = kv.entry(&key).await.map_err(AppError::unavailable)?;
        let record = entry.as_ref().and_then(|e| {
            HeldCommand::from_bytes(&e.value)
                .ok()
                .map(|r| (r, e.revision))
        });
        match record {
            Some((record, revision)) => match record.state {
                CommandState::Held => {
                    let mut changes = kv.watch(&key).await.map_err(AppError::unavailable)?;
                    let request = HeldCommand {
                        state: CommandState::CancelRequested,
                        ..record
                    };
                    if kv
                        .update(&key, request.to_bytes().into(), revision)
                        .await
                        .is_err()
                    {
                        continue;
                    }
                    return verdict(&mut changes, id).await;
                }
                CommandState::CancelRequested => {
                    let mut changes = kv.watch(&key).await.map_err(AppError::unavailable)?;
                    // It may have been answered before the watch started.
                    if let Some(done) = kv.entry(&key).await.map_err(AppError::unavailable)?
                        && done.revision != revision
                    {
                        continue;
                    }
                    return verdict(&mut changes, id).await;
                }
                finished => return answer(finished, id),
            },
            None => {
                if let Some(r) = cancel_queued(&stream, &kv, &site, id).await? {
                    return Ok(r);
                }
            }
        }
    }
    Err(AppError::conflict(format!(
        "command {id} is changing state; try again"
    )))
}

/// Cancels a command the edge has not taken, by deleting it from the
/// stream. `None` when the edge is taking it at this moment (look again:
/// it has waited up to [`IN_FLIGHT_WAIT`] for the edge's record).
async fn cancel_queued(
    stream: &jetstream::stream::Stream<()>,
    kv: &kv::Store,
    site: &Site,
    id: u64,
) -> Result<Option<Response>, AppError> {
    let ours = format!("{}.", prefix(site, Channel::Down));
    match stream.get_raw_message(id).await {
        Ok(m) if m.subject.as_str().starts_with(&ours) => {}
        Ok(_) => return Err(not_found(site, id)),
        Err(e)
            if matches!(
                e.kind(),
                jetstream::stream::RawMessageErrorKind::NoMessageFound
            ) =>
        {
            return Err(not_found(site, id));
        }
        Err(e) => return Err(AppError::unavailable(e)),
    }
    let before = edge_position(stream, site).await?;
    if before.delivered >= id {
        if before.acknowledged >= id {
            // Taken, finished, and no record: delivered (or dropped as
            // expired or invalid).
            return Err(AppError::conflict(format!(
                "command {id} was already delivered"
            )));
        }
        // The edge is handing it over now: a record appears if it holds
        // it, the floor passes it if it delivered it. Wait for the record
        // (briefly), then look again.
        let key = record_key(site, id);
        let mut changes = kv.watch(&key).await.map_err(AppError::unavailable)?;
        if kv
            .entry(&key)
            .await
            .map_err(AppError::unavailable)?
            .is_none()
        {
            let _ = tokio::time::timeout(IN_FLIGHT_WAIT, changes.next()).await;
        }
        return Ok(None);
    }
    stream
        .delete_message(id)
        .await
        .map_err(AppError::unavailable)?;
    let after = edge_position(stream, site).await?;
    if after.delivered < id {
        tracing::info!(%site, id, "queued command cancelled");
        return Ok(Some(
            (
                StatusCode::OK,
                axum::Json(Cancelled {
                    id,
                    state: "cancelled".into(),
                }),
            )
                .into_response(),
        ));
    }
    Err(AppError::conflict(format!(
        "the edge took command {id} as it was cancelled; it may have been delivered"
    )))
}

/// Waits for the edge's answer to a cancel request.
async fn verdict(changes: &mut kv::Watch, id: u64) -> Result<Response, AppError> {
    let wait = async {
        while let Some(e) = changes.next().await {
            let Ok(e) = e else { break };
            if e.operation != kv::Operation::Put {
                // Removed by the edge: it delivered it before it saw the
                // request.
                return Some(CommandState::Delivered);
            }
            match HeldCommand::from_bytes(&e.value) {
                Ok(r) if r.state.is_final() => return Some(r.state),
                _ => {}
            }
        }
        None
    };
    match tokio::time::timeout(VERDICT_WAIT, wait).await {
        Ok(Some(state)) => answer(state, id),
        _ => Ok((
            StatusCode::ACCEPTED,
            axum::Json(Cancelled {
                id,
                state: "cancel_requested".into(),
            }),
        )
            .into_response()),
    }
}

/// The answer for a command in a final (or pending-cancel) state.
fn answer(state: CommandState, id: u64) -> Result<Response, AppError> {
    match state {
        CommandState::Cancelled => Ok((
            StatusCode::OK,
            axum::Json(Cancelled {
                id,
                state: "cancelled".into(),
            }),
        )
            .into_response()),
        CommandState::Delivered => Err(AppError::conflict(format!(
            "command {id} was already delivered"
        ))),
        CommandState::Expired => Err(AppError::conflict(format!(
            "command {id} expired before it was delivered"
        ))),
        CommandState::Held | CommandState::CancelRequested => Ok((
            StatusCode::ACCEPTED,
            axum::Json(Cancelled {
                id,
                state: "cancel_requested".into(),
            }),
        )
            .into_response()),
    }
}

fn not_found(site: &Site, id: u64) -> AppError {
    AppError::not_found(format!("command {id} on site {site}"))
}

/// The held-command bucket (created with the streams).
async fn records(js: &jetstream::Context) -> Result<kv::Store, AppError> {
    js.get_key_value(COMMANDS_BUCKET)
        .await
        .map_err(AppError::unavailable)
}

/// Every record of `site`, with its revision.
async fn held(kv: &kv::Store, site: &Site) -> Result<Vec<(HeldCommand, u64)>, AppError> {
    let mut keys = kv.keys().await.map_err(AppError::unavailable)?;
    let mut out = Vec::new();
    while let Some(k) = keys.next().await {
        let k = k.map_err(AppError::unavailable)?;
        if record_id(site, &k).is_none() {
            continue;
        }
        if let Some(e) = kv.entry(&k).await.map_err(AppError::unavailable)?
            && let Ok(r) = HeldCommand::from_bytes(&e.value)
        {
            out.push((r, e.revision));
        }
    }
    Ok(out)
}

/// How far the edge's consumer got, in stream sequences.
#[derive(Debug, Clone, Copy, Default)]
struct Position {
    /// The newest command handed to the edge.
    delivered: u64,
    /// Every command up to here is done (delivered, dropped or held with
    /// its record written).
    acknowledged: u64,
}

/// The edge's position; zero when its consumer does not exist (the edge
/// never connected).
async fn edge_position(
    stream: &jetstream::stream::Stream<()>,
    site: &Site,
) -> Result<Position, AppError> {
    match stream.consumer_info(consumer_name(site)).await {
        Ok(info) => Ok(Position {
            delivered: info.delivered.stream_sequence,
            acknowledged: info.ack_floor.stream_sequence,
        }),
        Err(e)
            if matches!(
                e.kind(),
                jetstream::context::ConsumerInfoErrorKind::NotFound
            ) =>
        {
            Ok(Position::default())
        }
        Err(e) => Err(AppError::unavailable(e)),
    }
}

/// Whether a stored command's time to live has passed (the edge drops it).
fn expired(h: &async_nats::HeaderMap, now_ms: u64) -> bool {
    let Some(ttl) = h
        .get(headers::TTL)
        .and_then(|v| v.as_str().parse::<u64>().ok())
    else {
        return false;
    };
    h.get(headers::SENT)
        .and_then(|v| headers::parse_time(v.as_str()))
        .is_some_and(|sent| now_ms > sent.saturating_add(ttl.saturating_mul(1000)))
}
