//! Issuing tokens.
//!
//! * **Access tokens** are JWTs signed with the service's key (EdDSA or
//!   ES256), short-lived, with a fresh `jti` for revocation. Their
//!   permissions are expanded from the principal's roles when issued.
//! * **Refresh tokens** are opaque random strings, stored only as their
//!   SHA-256. Each refresh exchanges the token for a new one in the same
//!   *family*; presenting an already-exchanged token means it was stolen or
//!   replayed, and revokes the whole family.

use std::collections::BTreeMap;

use plantd_shared::audit::{Action, ActorKind, Event};
use plantd_shared::claims::{API_AUDIENCE, Audience, Claims, MqttGrant, PrincipalKind};
use plantd_shared::jwt::now_secs;
use plantd_shared::subject::Site;
use serde::Serialize;

use crate::model::{self, Family, RefreshToken};
use crate::store::Change;
use crate::{AppError, AppState};

/// What the token endpoints return.
#[derive(Debug, Clone, Serialize)]
pub struct TokenResponse {
    /// The access JWT.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The refresh token (user logins only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

/// Resolves role names to permission strings and MQTT grants (built-in
/// roles from code, custom ones from the organisation's records; unknown
/// names grant nothing).
///
/// # Errors
/// 503 on storage errors.
pub async fn expand_roles(
    state: &AppState,
    org: &str,
    roles: &[String],
) -> Result<(Vec<String>, BTreeMap<String, MqttGrant>), AppError> {
    let mut perms = Vec::new();
    let mut mqtt: BTreeMap<String, MqttGrant> = BTreeMap::new();
    for name in roles {
        let Some(role) = crate::routes::privilege::role(state, org, name).await? else {
            continue;
        };
        for p in role.perms {
            if !perms.contains(&p) {
                perms.push(p);
            }
        }
        for (site, g) in role.mqtt {
            let e = mqtt.entry(site).or_default();
            e.publish.extend(g.publish);
            e.subscribe.extend(g.subscribe);
        }
    }
    Ok((perms, mqtt))
}

/// The parts of an access token that differ between principals.
pub struct Subject {
    /// `sub`.
    pub id: String,
    /// `org`.
    pub org: String,
    /// `kind`.
    pub kind: PrincipalKind,
    /// `roles`.
    pub roles: Vec<String>,
    /// Expanded permission strings.
    pub perms: Vec<String>,
    /// Expanded MQTT grants.
    pub mqtt: BTreeMap<String, MqttGrant>,
    /// Audiences.
    pub audience: Vec<String>,
}

/// Signs an access token for `subject` and remembers its id for
/// [`crate::revocation`].
///
/// # Errors
/// 500 if signing fails, 503 on storage errors.
pub async fn access_token(state: &AppState, subject: Subject) -> Result<(String, u64), AppError> {
    let now = now_secs();
    let ttl = state.settings.access_ttl.as_secs();
    let claims = Claims {
        iss: state.settings.issuer.clone(),
        sub: subject.id,
        aud: Audience::Many(subject.audience),
        exp: now + ttl,
        iat: now,
        nbf: Some(now),
        jti: uuid::Uuid::new_v4().to_string(),
        org: subject.org,
        kind: subject.kind,
        roles: subject.roles,
        perms: subject.perms,
        mqtt: subject.mqtt,
    };
    state.keys.refresh().await;
    let token = state
        .keys
        .signing()
        .sign(&claims)
        .map_err(AppError::internal)?;
    // Remembered so that revoking the principal revokes this token.
    crate::revocation::remember(state, &claims.org, &claims.sub, &claims.jti, claims.exp).await?;
    Ok((token, ttl))
}

/// Audiences for a user token: the API plus each requested site.
///
/// # Errors
/// 400 for a site name that is not valid.
pub fn user_audience(sites: &[String]) -> Result<Vec<String>, AppError> {
    let mut aud = vec![API_AUDIENCE.to_owned()];
    for s in sites {
        let site = plantd_shared::subject::Site::new(s.as_str())
            .map_err(|e| AppError::bad_request(e.to_string()))?;
        aud.push(plantd_shared::claims::site_audience(&site));
    }
    Ok(aud)
}

/// Audiences for a token of a principal of `org` with `roles`: the API
/// plus each requested site, every one of which must be registered to
/// `org` ([`plantd_shared::sites::authorize_principal`]: the bootstrap
/// superadmin may name any organisation's site, and that is logged for the
/// audit, as `site.cross_org` in the owner's chain, by `principal`). Login,
/// refresh and service-account tokens go through here, so a
/// token never carries another organisation's site.
///
/// # Errors
/// 400 for a malformed site name, 404 for a site nobody registered, 403
/// for another organisation's site, 503 when the registry is unreachable.
pub async fn site_audiences(
    state: &AppState,
    principal: (ActorKind, &str),
    org: &str,
    roles: &[String],
    sites: &[String],
) -> Result<Vec<String>, AppError> {
    let audience = user_audience(sites)?;
    for name in sites {
        let owner = state.sites.get(name).await?.map(|(r, _)| r.org);
        let access = plantd_shared::sites::authorize_principal(org, roles, owner.as_deref())
            .map_err(|d| d.to_app_error(name))?;
        if access == plantd_shared::sites::Access::AsSuperadmin {
            tracing::warn!(site = %name, org = ?owner, actor_org = %org, cross_org = true, "superadmin token for another organisation's site");
            let mut event = Event::new(Action::SiteCrossOrg, owner.unwrap_or_default())
                .actor(principal.0, principal.1)
                .target(format!("site:{name}"))
                .detail(serde_json::json!({"via": "token"}));
            event.actor_org = Some(org.to_owned());
            state.audit.record(event).await;
        }
    }
    Ok(audience)
}

/// The site of a device of `org`: valid, and registered to `org` — checked
/// when the device is registered and again whenever it asks for a token
/// (the site may have been deleted since).
///
/// # Errors
/// 400 for a malformed site name, 404 for an unregistered site, 403 for
/// another organisation's, 503 when the registry is unreachable.
pub async fn device_site(state: &AppState, org: &str, site: &str) -> Result<Site, AppError> {
    let site = Site::new(site).map_err(|e| AppError::bad_request(e.to_string()))?;
    let owner = state.sites.get(site.as_str()).await?.map(|(r, _)| r.org);
    // A device has no roles that cross organisations: only its own counts.
    plantd_shared::sites::authorize_principal(org, &[], owner.as_deref())
        .map_err(|d| d.to_app_error(site.as_str()))?;
    Ok(site)
}

fn new_refresh_value() -> String {
    format!("rt_{}", crate::password::random_secret())
}

/// Creates a refresh token in `family` (a new family when `None`).
///
/// # Errors
/// 503 on storage errors.
pub async fn new_refresh(
    state: &AppState,
    user: &str,
    org: &str,
    family: Option<String>,
    sites: Vec<String>,
    epoch: u64,
) -> Result<String, AppError> {
    let family = match family {
        Some(f) => f,
        None => {
            let id = uuid::Uuid::new_v4().to_string();
            state
                .store
                .create(
                    &format!("family.{id}"),
                    &Family {
                        revoked: false,
                        reason: String::new(),
                    },
                )
                .await?;
            id
        }
    };
    let value = new_refresh_value();
    let expires_ms =
        plantd_shared::headers::now_ms() + state.settings.refresh_ttl.as_millis() as u64;
    state
        .store
        .create(
            &format!("refresh.{}", model::sha256_hex(&value)),
            &RefreshToken {
                family,
                user: user.to_owned(),
                org: org.to_owned(),
                expires_ms,
                used: false,
                sites,
                issued_ms: plantd_shared::headers::now_ms(),
                epoch,
            },
        )
        .await?;
    Ok(value)
}

/// Revokes a refresh family (logout, or reuse detected).
///
/// # Errors
/// 503 on storage errors.
pub async fn revoke_family(state: &AppState, family: &str, reason: &str) -> Result<(), AppError> {
    let r = state
        .store
        .modify::<Family, _>(&format!("family.{family}"), |f| {
            if f.revoked {
                return Ok(Change::Keep);
            }
            f.revoked = true;
            f.reason = reason.to_owned();
            Ok(Change::Put(()))
        })
        .await;
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.status == axum::http::StatusCode::NOT_FOUND => Ok(()),
        Err(e) => Err(e),
    }
}

/// Records `auth.revoke` of a refresh family revoked because one of its
/// tokens was used twice (someone holds a stolen copy).
async fn audit_reuse(state: &AppState, record: &RefreshToken, reason: &str) {
    use plantd_shared::audit::{Action, Event};
    let event = Event::new(Action::Revoke, &record.org)
        .target(format!("user:{}", record.user))
        .detail(serde_json::json!({ "reason": reason, "family": record.family }));
    state.audit.record(event).await;
}

/// Exchanges a refresh token: marks it used (compare-and-set, so of two
/// concurrent exchanges only one wins) and returns its record. A token
/// already used revokes its family and fails.
///
/// # Errors
/// 401 for an unknown, expired, reused or revoked token.
pub async fn consume_refresh(state: &AppState, value: &str) -> Result<RefreshToken, AppError> {
    let denied = || AppError::unauthorized("refresh token is not valid");
    let key = format!("refresh.{}", model::sha256_hex(value));
    let Some((record, rev)) = state.store.get::<RefreshToken>(&key).await? else {
        return Err(denied());
    };
    let family = state
        .store
        .get::<Family>(&format!("family.{}", record.family))
        .await?;
    if family.is_some_and(|(f, _)| f.revoked) {
        return Err(denied());
    }
    if record.used {
        tracing::warn!(family = %record.family, user = %record.user, "refresh token reused: revoking its family");
        revoke_family(state, &record.family, "refresh token reused").await?;
        audit_reuse(state, &record, "refresh token reused").await;
        return Err(denied());
    }
    if record.expires_ms < plantd_shared::headers::now_ms() {
        return Err(denied());
    }
    let mut used = record.clone();
    used.used = true;
    match state.store.update(&key, &used, rev).await {
        Ok(_) => Ok(record),
        Err(e) if e.status == axum::http::StatusCode::CONFLICT => {
            // Someone exchanged it at the same moment: that is a reuse.
            revoke_family(state, &record.family, "refresh token reused concurrently").await?;
            audit_reuse(state, &record, "refresh token reused concurrently").await;
            Err(denied())
        }
        Err(e) => Err(e),
    }
}
