//! `GET /v1/audit` (one organisation's audit records, filtered and paged)
//! and `GET /v1/audit/verify` (its hash chain checked).
//!
//! Both need `identity:audit:read` (built-in role `admin`) and answer for
//! the caller's own organisation; `org=<id>` names another one, which also
//! needs `identity:org:list` (the `superadmin`). Every malformed parameter
//! is a 400 naming it.

use axum::Json;
use axum::extract::State;
use plantd_shared::audit::{self, Action, AuditError, Broken, Query, Stored};
use plantd_shared::http::Params;
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::model::Org;
use crate::{AppError, AppState};

/// The permission to read an organisation's audit trail.
pub const READ: &str = "identity:audit:read";
/// The permission to read another organisation's.
pub const ANY_ORG: &str = "identity:org:list";

/// Records per page when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 100;
/// Most records per page.
pub const MAX_LIMIT: usize = 1000;

/// The query parameters of `GET /v1/audit` (all optional; text, checked
/// here so a bad one is named).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// The organisation (default: the caller's).
    pub org: Option<String>,
    /// Only this actor id (`*` at the end: a prefix).
    pub actor: Option<String>,
    /// Only this action (`auth.login`), or a prefix (`auth.*`).
    pub action: Option<String>,
    /// Only this target (`user:<id>`; `*` at the end: a prefix).
    pub target: Option<String>,
    /// Records at or after this RFC 3339 time.
    pub since: Option<String>,
    /// Records at or before this RFC 3339 time.
    pub until: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Records per page, 1-1000 (default 100).
    pub limit: Option<String>,
}

/// `GET /v1/audit/verify` parameters.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyParams {
    /// The organisation (default: the caller's).
    pub org: Option<String>,
}

/// One page of records.
#[derive(Debug, Serialize)]
pub struct AuditPage {
    /// The organisation.
    pub org: String,
    /// Matching records, oldest first, each with `seq` and `hash`.
    pub records: Vec<Stored>,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// The answer of `GET /v1/audit/verify`.
#[derive(Debug, Serialize)]
pub struct VerifyAnswer {
    /// Whether the chain is intact.
    pub ok: bool,
    /// The organisation.
    pub org: String,
    /// Records checked.
    pub records: u64,
    /// `n` of the last intact record.
    pub last_n: u64,
    /// Hash of the last intact record.
    pub last_hash: String,
    /// The first broken record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broken: Option<Broken>,
}

fn bad(param: &str, why: impl std::fmt::Display) -> AppError {
    AppError::bad_request(format!("{param}: {why}"))
}

fn audit_error(e: AuditError) -> AppError {
    match e {
        AuditError::BadOrg(_) | AuditError::UnknownAction(_) => bad("org", e),
        other => AppError::unavailable(other),
    }
}

/// The organisation the caller may read: its own, or `org` with
/// [`ANY_ORG`]; 404 for an organisation that does not exist.
async fn organisation(
    state: &AppState,
    caller: &Caller,
    org: Option<String>,
) -> Result<String, AppError> {
    caller.require(READ)?;
    let org = match org {
        None => return Ok(caller.org().to_owned()),
        Some(o) => o,
    };
    audit::subject(&org).map_err(|e| bad("org", e))?;
    if org == caller.org() {
        return Ok(org);
    }
    caller.require(ANY_ORG)?;
    state
        .store
        .get::<Org>(&format!("org.{org}"))
        .await?
        .ok_or_else(|| AppError::not_found("organisation"))?;
    Ok(org)
}

fn time_param(name: &str, value: Option<String>) -> Result<Option<u64>, AppError> {
    value
        .map(|v| {
            plantd_shared::headers::parse_time(&v).ok_or_else(|| {
                bad(
                    name,
                    format!("{v:?} is not an RFC 3339 time (like 2026-12-06T10:00:00Z)"),
                )
            })
        })
        .transpose()
}

fn text_param(name: &str, value: Option<String>) -> Result<Option<String>, AppError> {
    match value {
        Some(v) if v.is_empty() || v.len() > 256 || v.chars().any(char::is_control) => {
            Err(bad(name, "must be 1-256 printable characters"))
        }
        other => Ok(other),
    }
}

/// The [`Query`] of `params` for `org`.
///
/// # Errors
/// 400 naming the first malformed parameter.
pub fn query(org: String, params: AuditParams) -> Result<Query, AppError> {
    let action = text_param("action", params.action)?;
    if let Some(a) = &action
        && !a.ends_with('*')
    {
        a.parse::<Action>().map_err(|e| bad("action", e))?;
    }
    let since_ms = time_param("since", params.since)?;
    let until_ms = time_param("until", params.until)?;
    if let (Some(s), Some(u)) = (since_ms, until_ms)
        && u < s
    {
        return Err(bad("until", "is before since"));
    }
    let after = params
        .cursor
        .map(|c| {
            c.parse::<u64>()
                .map_err(|_| bad("cursor", "not a next_cursor of a previous page"))
        })
        .transpose()?;
    let limit = match params.limit {
        None => DEFAULT_LIMIT,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| bad("limit", format!("must be a number from 1 to {MAX_LIMIT}")))?,
    };
    Ok(Query {
        org,
        actor: text_param("actor", params.actor)?,
        action,
        target: text_param("target", params.target)?,
        since_ms,
        until_ms,
        after,
        limit,
    })
}

/// `GET /v1/audit`: one page of an organisation's records, oldest first.
///
/// # Errors
/// 400 naming a malformed parameter, 403 without [`READ`] (or [`ANY_ORG`]
/// for another organisation), 404 for an unknown organisation, 503 when
/// JetStream is unavailable.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Params(params): Params<AuditParams>,
) -> Result<Json<AuditPage>, AppError> {
    let org = organisation(&state, &caller, params.org.clone()).await?;
    let q = query(org.clone(), params)?;
    let page = audit::read(state.audit.jetstream(), &q)
        .await
        .map_err(audit_error)?;
    Ok(Json(AuditPage {
        org,
        records: page.records,
        next_cursor: page.next.map(|n| n.to_string()),
    }))
}

/// `GET /v1/audit/verify`: walks the organisation's whole chain.
///
/// # Errors
/// As [`list`]. A broken chain is a 200 with `ok: false` and the first
/// broken record.
pub async fn verify(
    State(state): State<AppState>,
    caller: Caller,
    Params(params): Params<VerifyParams>,
) -> Result<Json<VerifyAnswer>, AppError> {
    let org = organisation(&state, &caller, params.org).await?;
    let v = audit::verify(state.audit.jetstream(), &org)
        .await
        .map_err(audit_error)?;
    Ok(Json(VerifyAnswer {
        ok: v.ok(),
        org: v.org,
        records: v.records,
        last_n: v.last_n,
        last_hash: v.last_hash,
        broken: v.broken,
    }))
}
