//! Sites (`/v1/sites`): which organisation owns each site. The records
//! live in `plantd_sites` ([`plantd_shared::sites`]) where the proxy and the
//! edges read them; every site-scoped door checks the caller's organisation
//! against them with [`plantd_shared::sites::authorize`].
//!
//! Permissions: `identity:site:create|read|update|delete` (the built-in
//! `admin` holds `identity:site:*`; `operator` and `viewer` hold
//! `identity:site:read`). A caller manages its own organisation's sites;
//! the bootstrap superadmin may name another organisation (`org` in the
//! create body, `?org=` on the list) and act on any site — such acts are
//! logged with `cross_org = true` for the audit.
//!
//! Site ids are global (subjects are `plantd.<site>.…`): creating an id
//! that any organisation registered answers 409 — and so does an id another
//! organisation used and deleted (its data stays in the streams under the
//! id: [`crate::model::RetiredSite`]). Ids starting with `_` are
//! reserved (400): `_plantd` is the pseudo-site of plantd's own logs.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use plantd_shared::http::Params;
use plantd_shared::sites::{self, Access, SiteRecord, SitesError};
use plantd_shared::subject::Site;
use serde::Deserialize;

use super::json::Body;
use crate::audit::Origin;
use crate::auth::Caller;
use crate::model::{self, Org, RetiredSite};
use crate::{AppError, AppState};
use plantd_shared::audit::Action;

/// How many times an update is retried when a concurrent write wins.
const CAS_ATTEMPTS: usize = 8;

/// `POST /v1/sites`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSite {
    /// The site id: 1-64 of `A-Z a-z 0-9 _ -`, unique across organisations.
    pub id: String,
    /// The owning organisation (default: the caller's; another one only
    /// for the bootstrap superadmin).
    #[serde(default)]
    pub org: Option<String>,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// What and where it is.
    #[serde(default)]
    pub description: String,
    /// Free-form labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `PATCH /v1/sites/{id}`: the fields to change (the owner cannot change).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateSite {
    /// New display name.
    #[serde(default)]
    pub name: Option<String>,
    /// New description.
    #[serde(default)]
    pub description: Option<String>,
    /// New labels (replace the old ones whole).
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

/// `GET /v1/sites` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this organisation's sites (another one than the caller's only
    /// for the bootstrap superadmin).
    #[serde(default)]
    pub org: Option<String>,
}

/// A valid site id from the path or body, or 400 naming the rule.
fn site_id(id: &str) -> Result<Site, AppError> {
    Site::new(id).map_err(|e| AppError::bad_request(e.to_string()))
}

/// 403 unless the caller may act for organisation `org`: its own, or any
/// for the superadmin.
fn acting_for(caller: &Caller, org: &str) -> Result<Access, AppError> {
    sites::authorize_org(&caller.claims, org).map_err(|_| {
        AppError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("only the bootstrap superadmin may manage the sites of organisation {org}"),
        )
    })
}

/// Logs an act on another organisation's site (the superadmin's).
fn note_cross_org(caller: &Caller, access: Access, action: &'static str, site: &SiteRecord) {
    if access == Access::AsSuperadmin {
        tracing::warn!(
            actor = %caller.claims.sub,
            actor_org = %caller.org(),
            org = %site.org,
            site = %site.id,
            action,
            cross_org = true,
            "superadmin acted on another organisation's site"
        );
    }
}

/// The record of `id` if the caller may act on it.
///
/// # Errors
/// 400 for a malformed id, 404 unknown, 403 another organisation's.
async fn visible(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<(SiteRecord, u64, Access), AppError> {
    let site = site_id(id)?;
    let found = state.sites.get(site.as_str()).await?;
    let access = sites::authorize(&caller.claims, found.as_ref().map(|(r, _)| r))
        .map_err(|d| d.to_app_error(site.as_str()))?;
    let (record, revision) = found.ok_or_else(|| AppError::not_found(format!("site {site}")))?;
    Ok((record, revision, access))
}

/// Registers a site.
///
/// # Errors
/// 400 for a bad id, name, description or label; 403 without
/// `identity:site:create` or for another organisation (unless
/// superadmin); 404 for an unknown organisation; 409 when the id is taken,
/// or was another organisation's before it was deleted ([`RetiredSite`]).
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    origin: Origin,
    Body(req): Body<CreateSite>,
) -> Result<(StatusCode, Json<SiteRecord>), AppError> {
    caller.require("identity:site:create")?;
    let site = site_id(&req.id)?;
    if site.as_str().starts_with('_') {
        // `_plantd` (sites::PLATFORM_SITE) carries plantd's own logs.
        return Err(AppError::bad_request(format!(
            "id {:?}: site ids starting with '_' are reserved for plantd ({} holds its own components' logs)",
            site.as_str(),
            sites::PLATFORM_SITE
        )));
    }
    let org = req.org.unwrap_or_else(|| caller.org().to_owned());
    let access = acting_for(&caller, &org)?;
    if state
        .store
        .get::<Org>(&format!("org.{org}"))
        .await?
        .is_none()
    {
        return Err(AppError::not_found(format!("organisation {org}")));
    }
    if let Some((retired, _)) = state
        .store
        .get::<RetiredSite>(&model::retired_site_key(site.as_str()))
        .await?
        && retired.org != org
    {
        // Its data is still in the streams under this id.
        return Err(AppError::conflict(format!(
            "site id {site} was used before and its data is kept: only its former organisation may register it again; choose another id"
        )));
    }
    let mut record = SiteRecord::new(&site, &org);
    record.name = req.name;
    record.description = req.description;
    record.labels = req.labels;
    record.validate().map_err(AppError::bad_request)?;
    state.sites.create(&record).await?;
    note_cross_org(&caller, access, "site.create", &record);
    origin
        .record(
            &state,
            &caller,
            Action::SiteCreate,
            &record.org,
            format!("site:{}", record.id),
        )
        .await;
    tracing::info!(site = %record.id, org = %record.org, actor = %caller.claims.sub, "site registered");
    Ok((StatusCode::CREATED, Json(record)))
}

/// The sites of the caller's organisation (the superadmin: every site, or
/// `?org=`'s).
///
/// # Errors
/// 403 without `identity:site:read`, or for another organisation's list.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Params(q): Params<ListQuery>,
) -> Result<Json<Vec<SiteRecord>>, AppError> {
    caller.require("identity:site:read")?;
    let all = state.sites.list().await?;
    let org = match q.org {
        Some(org) => {
            acting_for(&caller, &org)?;
            Some(org)
        }
        None if sites::is_superadmin(&caller.claims) => None,
        None => Some(caller.org().to_owned()),
    };
    Ok(Json(
        all.into_iter()
            .filter(|s| org.as_deref().is_none_or(|o| s.org == o))
            .collect(),
    ))
}

/// One site.
///
/// # Errors
/// 400 malformed id, 403 without `identity:site:read` or another
/// organisation's site, 404 unknown.
pub async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<SiteRecord>, AppError> {
    caller.require("identity:site:read")?;
    let (record, _, _) = visible(&state, &caller, &id).await?;
    Ok(Json(record))
}

/// Changes a site's name, description or labels.
///
/// # Errors
/// 400 for bad fields, 403, 404 as [`get_one`]; 409 after too many
/// concurrent changes.
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    origin: Origin,
    Path(id): Path<String>,
    Body(req): Body<UpdateSite>,
) -> Result<Json<SiteRecord>, AppError> {
    caller.require("identity:site:update")?;
    for _ in 0..CAS_ATTEMPTS {
        let (mut record, revision, access) = visible(&state, &caller, &id).await?;
        if let Some(name) = &req.name {
            record.name = name.clone();
        }
        if let Some(description) = &req.description {
            record.description = description.clone();
        }
        if let Some(labels) = &req.labels {
            record.labels = labels.clone();
        }
        record.validate().map_err(AppError::bad_request)?;
        match state.sites.update(&record, revision).await {
            Ok(_) => {
                note_cross_org(&caller, access, "site.update", &record);
                origin
                    .record(
                        &state,
                        &caller,
                        Action::SiteUpdate,
                        &record.org,
                        format!("site:{}", record.id),
                    )
                    .await;
                return Ok(Json(record));
            }
            Err(SitesError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(AppError::conflict(format!(
        "site {id}: too many concurrent changes"
    )))
}

/// Remembers that `record`'s organisation owned its id ([`RetiredSite`]).
///
/// # Errors
/// 503 on storage errors.
async fn retire(state: &AppState, record: &SiteRecord) -> Result<(), AppError> {
    let key = model::retired_site_key(&record.id);
    let retired = RetiredSite {
        org: record.org.clone(),
        deleted_ms: plantd_shared::headers::now_ms(),
    };
    match state.store.get::<RetiredSite>(&key).await? {
        Some((_, rev)) => state.store.update(&key, &retired, rev).await.map(|_| ()),
        None => state.store.create(&key, &retired).await.map(|_| ()),
    }
}

/// Removes a site. Its devices stay registered but get no tokens until a
/// site of that id is registered to their organisation again; its data in
/// the streams stays, so the id stays its organisation's: another one
/// cannot register it (409; [`RetiredSite`]).
///
/// # Errors
/// 400, 403, 404 as [`get_one`].
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    origin: Origin,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    caller.require("identity:site:delete")?;
    let (record, _, access) = visible(&state, &caller, &id).await?;
    // Retired first, so no other organisation can register the id in
    // between (and read this one's history under it).
    retire(&state, &record).await?;
    state.sites.delete(&record.id).await?;
    note_cross_org(&caller, access, "site.delete", &record);
    origin
        .record(
            &state,
            &caller,
            Action::SiteDelete,
            &record.org,
            format!("site:{}", record.id),
        )
        .await;
    tracing::info!(site = %record.id, org = %record.org, actor = %caller.claims.sub, "site deleted");
    Ok(StatusCode::NO_CONTENT)
}
