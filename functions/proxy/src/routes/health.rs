//! `GET /v1/sites/{site}/health`: is the site's edge connected, how far
//! behind is its uplink, how much waits in its journal, how long since a
//! device published, and which alerts fire there.
//!
//! The edge puts its status in `plantd_site_status` every few seconds
//! (`plantd_edge::status`, contract [`plantd_shared::site_status`]); this
//! route reads the newest one and judges it by the time the server stored
//! it: a status older than three of its intervals, or one saying the edge
//! stopped, means not connected ([`site_status::connected`]). Ages are
//! computed here (status age on the server's clock, the others as the
//! edge measured them plus the status age), so a browser or edge with a
//! wrong clock does not skew them.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use plantd_alerts::AlertState;
use plantd_shared::claims::ALERTS_READ;
use plantd_shared::headers::format_time;
use plantd_shared::site_status::{self, LinkState, SiteStatus};
use plantd_shared::streams::SITE_STATUS_BUCKET;
use serde::Serialize;

use super::site;
use super::telemetry::permission;
use crate::auth::Caller;
use crate::{AppError, AppState};

/// The site's health.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SiteHealth {
    /// The site.
    pub site: String,
    /// Whether the edge is connected: its newest status is younger than
    /// three of its intervals and does not say it stopped.
    pub connected: bool,
    /// When the cloud last heard from the edge (RFC 3339, the server's
    /// clock; unset: never).
    pub last_seen: Option<String>,
    /// How long ago that was, in ms.
    pub status_age_ms: Option<u64>,
    /// What the edge said in its newest status (unset: it never sent one
    /// — an edge older than site health, or never started).
    pub edge: Option<EdgeHealth>,
    /// The alerts firing on the site (unset: the caller lacks
    /// `alerts:read`, or the alert manager's state is unavailable —
    /// `alerts_note` says which).
    pub alerts: Option<SiteAlerts>,
    /// Why `alerts` is unset.
    pub alerts_note: Option<String>,
}

/// The edge's newest status, with ages as of now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EdgeHealth {
    /// The edge journal's current id (changes when the edge restarts after
    /// a crash or is replaced).
    pub id: String,
    /// The `plantd-edge` version.
    pub version: String,
    /// Host, process id and data directory of the edge.
    pub holder: String,
    /// When the edge process started (RFC 3339, edge clock).
    pub started: String,
    /// Publishes a status every this many ms.
    pub interval_ms: u64,
    /// MQTT clients connected when the status was taken.
    pub clients: u64,
    /// When the newest device publication was accepted (RFC 3339, edge
    /// clock; unset: none since the edge started).
    pub last_message: Option<String>,
    /// How long ago that was, in ms.
    pub last_message_age_ms: Option<u64>,
    /// The journal's backlog.
    pub backlog: BacklogHealth,
    /// The uplink to JetStream.
    pub uplink: UplinkHealth,
}

/// What waits in the edge's journal for the uplink.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BacklogHealth {
    /// Messages JetStream has not acknowledged.
    pub messages: u64,
    /// Bytes of the journal on disk (backlog plus acknowledged records in
    /// segments not yet deleted).
    pub journal_bytes: u64,
    /// The journal's size limit in bytes (0: none).
    pub journal_max_bytes: u64,
    /// Uplink lag: the age of the oldest unacknowledged message, in ms, as
    /// of the status (0 without a backlog). While the edge is not
    /// connected this is a lower bound.
    pub lag_ms: u64,
    /// Publishers are held back: the journal is full.
    pub blocked: bool,
}

/// The uplink's state.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UplinkHealth {
    /// `starting`, `up`, `down`, `stalled`, `refused` (another edge holds
    /// the site's lease) or `stopped` (the edge shut down cleanly).
    #[schema(value_type = String)]
    pub state: LinkState,
    /// Since when (RFC 3339, edge clock; sampled once per status interval).
    pub since: String,
    /// When JetStream last acknowledged a message (RFC 3339, edge clock).
    pub last_ack: Option<String>,
    /// The last failure.
    pub last_error: Option<String>,
}

/// Alerts firing on the site.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SiteAlerts {
    /// How many fire.
    pub firing: usize,
    /// Of those, critical ones.
    pub critical: usize,
    /// The firing alerts, most severe first, then oldest first.
    pub list: Vec<FiringAlert>,
}

/// One firing alert.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FiringAlert {
    /// The alert's id (`/v1/alerts/{id}/history`, `…/ack`).
    pub id: String,
    /// Its rule.
    pub rule: String,
    /// Its group-by key.
    pub key: String,
    /// `info`, `warning` or `critical`, from the rule's labels.
    pub severity: Option<String>,
    /// When it started firing (RFC 3339).
    pub firing_since: Option<String>,
    /// Whether someone acknowledged it.
    pub acknowledged: bool,
}

/// The server's clock in ms since the Unix epoch.
fn now_ms() -> u64 {
    u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// The site's newest status and when the server stored it (ms).
async fn newest_status(
    state: &AppState,
    site: &str,
) -> Result<Option<(SiteStatus, u64)>, AppError> {
    let kv = match state.js.get_key_value(SITE_STATUS_BUCKET).await {
        Ok(kv) => kv,
        // No bucket: no edge has published yet (streams not created by a
        // new version); nothing to say rather than an error.
        Err(e) if e.kind() == async_nats::jetstream::context::KeyValueErrorKind::GetBucket => {
            tracing::debug!(error = %e, "no site status bucket");
            return Ok(None);
        }
        Err(e) => return Err(AppError::unavailable(e)),
    };
    let Some(entry) = kv.entry(site).await.map_err(AppError::unavailable)? else {
        return Ok(None);
    };
    if entry.operation != async_nats::jetstream::kv::Operation::Put {
        return Ok(None);
    }
    let status: SiteStatus = serde_json::from_slice(&entry.value)
        .map_err(|e| AppError::internal(format!("site status of {site} is not readable: {e}")))?;
    let stored = u64::try_from(entry.created.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    Ok(Some((status, stored)))
}

/// The edge part of the answer, ages as of `now` given the status was
/// stored `age` ms ago.
fn edge_health(s: SiteStatus, age: u64) -> EdgeHealth {
    let stopped_or_stale = !site_status::connected(&s, age);
    EdgeHealth {
        id: s.edge.id,
        version: s.edge.version,
        holder: s.edge.holder,
        started: format_time(s.edge.started_ms),
        interval_ms: s.interval_ms,
        clients: if s.uplink.state == LinkState::Stopped {
            0
        } else {
            s.clients
        },
        last_message: s.last_message_ms.map(format_time),
        last_message_age_ms: s
            .last_message_ms
            .map(|t| s.at_ms.saturating_sub(t).saturating_add(age)),
        backlog: BacklogHealth {
            messages: s.backlog.messages,
            journal_bytes: s.backlog.journal_bytes,
            journal_max_bytes: s.backlog.journal_max_bytes,
            // The oldest message waits on while nobody hears from the edge.
            lag_ms: if stopped_or_stale && s.backlog.messages > 0 {
                s.backlog.lag_ms.saturating_add(age)
            } else {
                s.backlog.lag_ms
            },
            blocked: s.backlog.blocked,
        },
        uplink: UplinkHealth {
            state: s.uplink.state,
            since: format_time(s.uplink.since_ms),
            last_ack: s.uplink.last_ack_ms.map(format_time),
            last_error: s.uplink.last_error,
        },
    }
}

/// Severity rank for ordering: critical first.
fn rank(severity: Option<&str>) -> u8 {
    match severity {
        Some("critical") => 0,
        Some("warning") => 1,
        Some("info") => 2,
        _ => 3,
    }
}

/// The alerts firing on `site` of `org`, or why they cannot be told.
async fn firing(
    state: &AppState,
    caller: &Caller,
    org: &str,
    site: &str,
) -> Result<SiteAlerts, String> {
    if !caller.perms.allows(ALERTS_READ) {
        return Err(format!("your roles lack {ALERTS_READ}"));
    }
    let stores = super::alerts::stores(state)
        .await
        .map_err(|e| format!("alert manager state unavailable: {}", e.message))?;
    let all = stores
        .instances()
        .await
        .map_err(|e| format!("alert manager state unavailable: {e}"))?;
    let mut list: Vec<FiringAlert> = all
        .into_iter()
        .map(|(s, _)| s)
        .filter(|s| s.org == org && s.site == site && s.state == AlertState::Firing)
        .map(|s| FiringAlert {
            severity: s.labels.get("severity").cloned(),
            firing_since: s.firing_since.map(|t| {
                format_time(u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0))
            }),
            acknowledged: s.ack.is_some(),
            id: s.id,
            rule: s.rule,
            key: s.key,
        })
        .collect();
    list.sort_by(|a, b| {
        rank(a.severity.as_deref())
            .cmp(&rank(b.severity.as_deref()))
            .then_with(|| a.firing_since.cmp(&b.firing_since))
    });
    Ok(SiteAlerts {
        firing: list.len(),
        critical: list
            .iter()
            .filter(|a| a.severity.as_deref() == Some("critical"))
            .count(),
        list,
    })
}

/// `GET /v1/sites/{site}/health`: the site's edge connection, uplink lag,
/// journal backlog, time since the last message and alerts firing.
///
/// # Errors
/// 400, 401, 403 (permission or another organisation's site), 404 (site
/// not registered), 503.
#[utoipa::path(get, path = "/v1/sites/{site}/health", operation_id = "site_health", tag = "sites",
    params(("site" = String, Path, description = "Site name")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The site's health", body = SiteHealth),
        (status = 400, description = "Malformed site name", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, invalid or revoked token", body = crate::openapi::ErrorBody),
        (status = 403, description = "`telemetry:<site>:read` is missing, or the site belongs to another organisation", body = crate::openapi::ErrorBody),
        (status = 404, description = "The site is not registered", body = crate::openapi::ErrorBody),
        (status = 503, description = "NATS or JetStream unavailable", body = crate::openapi::ErrorBody)))]
pub async fn health(
    State(state): State<AppState>,
    caller: Caller,
    Path(site_name): Path<String>,
) -> Result<Response, AppError> {
    let site = site::site(&site_name)?;
    caller.require(&permission(site.as_str()))?;
    let owned = site::owned(&state, &caller, &site).await?;
    let (status, alerts) = tokio::join!(
        newest_status(&state, site_status::key(&site)),
        firing(&state, &caller, &owned.org, site.as_str())
    );
    let now = now_ms();
    let (connected, last_seen, status_age_ms, edge) = match status? {
        Some((s, stored)) => {
            let age = now.saturating_sub(stored);
            (
                site_status::connected(&s, age),
                Some(format_time(stored)),
                Some(age),
                Some(edge_health(s, age)),
            )
        }
        None => (false, None, None, None),
    };
    let (alerts, alerts_note) = match alerts {
        Ok(a) => (Some(a), None),
        Err(why) => (None, Some(why)),
    };
    Ok(axum::Json(SiteHealth {
        site: site.as_str().to_owned(),
        connected,
        last_seen,
        status_age_ms,
        edge,
        alerts,
        alerts_note,
    })
    .into_response())
}
