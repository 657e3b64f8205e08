//! Logging in, refreshing, logging out, client credentials, passwords.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use plantd_shared::claims::{Claims, MqttGrant, PrincipalKind, site_audience};
use serde::Deserialize;

use super::json::Body;
use axum::response::{IntoResponse, Response};

use crate::audit::Origin;
use crate::auth::{Caller, ClientSource};
use crate::model::{self, ClientIndex, Device, EmailIndex, RefreshToken, ServiceAccount, User};
use crate::revocation::{self, Reason};
use crate::store::Change;
use crate::tokens::{self, Subject, TokenResponse};
use crate::{AppError, AppState, password, throttle};
use plantd_shared::audit::{Action, ActorKind, Event, Outcome};
use serde_json::json;

/// `POST /v1/auth/login`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The user's email.
    pub email: String,
    /// The password.
    pub password: String,
    /// Sites whose edge brokers the token should also be valid for.
    #[serde(default)]
    pub sites: Vec<String>,
}

fn invalid_login() -> AppError {
    AppError::unauthorized("invalid email or password")
}

/// Logs a user in. Unknown email, wrong password and inactive user give
/// the same answer and take the same time (a dummy hash is verified for
/// unknown users). Every attempt is counted by [`throttle`] *before* the
/// password is checked: repeated failures for one email from one source
/// are delayed (429 with `Retry-After`), and so is a source failing across
/// many accounts; the same email from another source is unaffected.
///
/// # Errors
/// 400 for a bad site, 401 on bad credentials, 429 while throttled.
pub async fn login(
    State(state): State<AppState>,
    ClientSource(source): ClientSource,
    origin: Origin,
    Body(req): Body<LoginRequest>,
) -> Result<Json<TokenResponse>, Response> {
    let email = model::normalise_email(&req.email);
    let email_hash = model::sha256_hex(&email);
    // A bad site name is a 400 before any credential is looked at.
    tokens::user_audience(&req.sites).map_err(IntoResponse::into_response)?;
    let index = state
        .store
        .get::<EmailIndex>(&format!("email.{email_hash}"))
        .await
        .map_err(IntoResponse::into_response)?
        .map(|(i, _)| i);
    let attempt = match throttle::begin(
        &state,
        &email,
        index.as_ref().map(|i| i.org.as_str()),
        &source,
    )
    .await
    {
        Ok(a) => a,
        Err(refusal) => {
            if let throttle::Refusal::Throttled(t) = &refusal {
                let detail = json!({
                    "reason": "throttled",
                    "limit": format!("{:?}", t.kind).to_lowercase(),
                    "retry_after_secs": t.retry_after_secs,
                });
                let e = login_event(&origin, index.as_ref(), &email);
                state
                    .audit
                    .record(e.outcome(Outcome::Denied).detail(detail))
                    .await;
            }
            return Err(refusal.into_response());
        }
    };
    let user = match &index {
        Some(idx) => state
            .store
            .get::<User>(&format!("user.{}.{}", idx.org, idx.user))
            .await
            .map_err(IntoResponse::into_response)?
            .map(|(u, _)| u),
        None => None,
    };
    let hash = user
        .as_ref()
        .map(|u| u.password_hash.as_str())
        .unwrap_or(&state.dummy_hash);
    let ok = password::verify(&req.password, hash);
    let user = match (ok, user) {
        (true, Some(u)) if u.active => u,
        (ok, user) => {
            let reason = match (ok, user) {
                (_, None) => "unknown account",
                (true, Some(_)) => "inactive user",
                (false, Some(_)) => "wrong password",
            };
            let e = login_event(&origin, index.as_ref(), &email);
            state
                .audit
                .record(
                    e.outcome(Outcome::Failure)
                        .detail(json!({ "reason": reason })),
                )
                .await;
            tracing::info!(%source, "login failed");
            return Err(invalid_login().into_response());
        }
    };
    attempt
        .succeeded(&state)
        .await
        .map_err(IntoResponse::into_response)?;
    let sites = req.sites.clone();
    let tokens = user_tokens(&state, &user, None, req.sites)
        .await
        .map_err(IntoResponse::into_response)?;
    let e = login_event(&origin, index.as_ref(), &email);
    state
        .audit
        .record(e.detail(json!({ "sites": sites })))
        .await;
    tracing::info!(user = %user.id, org = %user.org, %source, "login");
    Ok(Json(tokens))
}

/// The audit event of a login for `email`: by and on the user when the
/// email is known, else anonymous in the bootstrap organisation's chain.
fn login_event(origin: &Origin, index: Option<&EmailIndex>, email: &str) -> Event {
    match index {
        Some(i) => origin
            .event(Action::Login, &i.org)
            .actor(ActorKind::User, i.user.clone())
            .target(format!("user:{}", i.user)),
        None => origin
            .event(Action::Login, model::SYSTEM_ORG)
            .target(format!("email:{}", clip(email))),
    }
}

/// An access token and a refresh token (in `family`, or a new one) for
/// `user`, valid for the API and the given sites.
async fn user_tokens(
    state: &AppState,
    user: &User,
    family: Option<String>,
    sites: Vec<String>,
) -> Result<TokenResponse, AppError> {
    let (perms, mqtt) = tokens::expand_roles(state, &user.org, &user.roles).await?;
    let (access, ttl) = tokens::access_token(
        state,
        Subject {
            id: user.id.clone(),
            org: user.org.clone(),
            kind: PrincipalKind::User,
            roles: user.roles.clone(),
            perms,
            mqtt,
            audience: tokens::site_audiences(
                state,
                (plantd_shared::audit::ActorKind::User, &user.id),
                &user.org,
                &user.roles,
                &sites,
            )
            .await?,
        },
    )
    .await?;
    let refresh = tokens::new_refresh(
        state,
        &user.id,
        &user.org,
        family,
        sites,
        user.sessions_epoch,
    )
    .await?;
    Ok(TokenResponse {
        access_token: access,
        token_type: "Bearer",
        expires_in: ttl,
        refresh_token: Some(refresh),
    })
}

/// `POST /v1/auth/refresh`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token from login or the last refresh.
    pub refresh_token: String,
}

/// Exchanges a refresh token for a new access token and a new refresh
/// token (rotation). Reusing a token that was already exchanged revokes
/// every token of its login.
///
/// # Errors
/// 401 for an invalid, expired, reused or revoked token, or an inactive
/// user.
pub async fn refresh(
    State(state): State<AppState>,
    origin: Origin,
    Body(req): Body<RefreshRequest>,
) -> Result<Json<TokenResponse>, AppError> {
    let record: RefreshToken = tokens::consume_refresh(&state, &req.refresh_token).await?;
    let user = state
        .store
        .get::<User>(&format!("user.{}.{}", record.org, record.user))
        .await?
        .map(|(u, _)| u)
        .filter(|u| u.active)
        .ok_or_else(|| AppError::unauthorized("refresh token is not valid"))?;
    if record.epoch < user.sessions_epoch {
        // Logged out everywhere since this login: the whole chain ends.
        tokens::revoke_family(&state, &record.family, "user revoked").await?;
        return Err(AppError::unauthorized("refresh token is not valid"));
    }
    let tokens = user_tokens(&state, &user, Some(record.family), record.sites).await?;
    state
        .audit
        .record(
            origin
                .event(Action::Refresh, &user.org)
                .actor(ActorKind::User, user.id.clone())
                .target(format!("user:{}", user.id)),
        )
        .await;
    Ok(Json(tokens))
}

/// `POST /v1/auth/logout`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LogoutRequest {
    /// The refresh token to revoke with its whole family.
    #[serde(default)]
    pub refresh_token: Option<String>,
}

/// Revokes the caller's access token (edges drop connections using it)
/// and, if given, the refresh token's family.
///
/// # Errors
/// 401 without a valid token.
pub async fn logout(
    State(state): State<AppState>,
    caller: Caller,
    origin: Origin,
    body: bytes::Bytes,
) -> Result<StatusCode, AppError> {
    let req: LogoutRequest = if body.is_empty() {
        LogoutRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| AppError::bad_request(e.to_string()))?
    };
    state
        .store
        .revoke_token(&caller.claims.jti, caller.claims.exp)
        .await?;
    let mut family_revoked = false;
    if let Some(rt) = req.refresh_token {
        let key = format!("refresh.{}", model::sha256_hex(&rt));
        if let Some((r, _)) = state.store.get::<RefreshToken>(&key).await?
            && r.user == caller.claims.sub
        {
            tokens::revoke_family(&state, &r.family, "logout").await?;
            family_revoked = true;
        }
    }
    state
        .audit
        .record(
            origin
                .event(Action::Logout, caller.org())
                .by(&caller.claims)
                .target(format!(
                    "{}:{}",
                    target_kind(caller.claims.kind),
                    caller.claims.sub
                ))
                .detail(json!({ "refresh_family_revoked": family_revoked })),
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's claims.
///
/// # Errors
/// 401 without a valid token.
pub async fn whoami(caller: Caller) -> Json<Claims> {
    Json(caller.claims)
}

/// `POST /v1/auth/token` (OAuth 2 client credentials).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// Must be `client_credentials`.
    pub grant_type: String,
    /// A service account's or device's client id.
    pub client_id: String,
    /// Its secret.
    pub client_secret: String,
    /// Sites a service account's token should also be valid for.
    #[serde(default)]
    pub sites: Vec<String>,
}

/// Issues an access token to a service account (API audience, its roles'
/// permissions) or a device (its site's audience, its own MQTT grants).
///
/// # Errors
/// 400 for another grant type, 401 for bad credentials.
pub async fn token(
    State(state): State<AppState>,
    origin: Origin,
    Body(req): Body<TokenRequest>,
) -> Result<Json<TokenResponse>, AppError> {
    let client_id = clip(&req.client_id).to_owned();
    let result = issue_token(state.clone(), req).await;
    if result
        .as_ref()
        .is_err_and(|e| e.status == StatusCode::BAD_REQUEST)
    {
        // Not an authentication attempt (a malformed request).
        return result;
    }
    let index = state
        .store
        .get::<ClientIndex>(&format!("client.{client_id}"))
        .await
        .ok()
        .flatten()
        .map(|(i, _)| i);
    let (org, kind, actor_kind) = match &index {
        Some(i) if i.kind == "service" => (i.org.as_str(), "service_account", ActorKind::Service),
        Some(i) => (i.org.as_str(), "device", ActorKind::Device),
        None => (model::SYSTEM_ORG, "client", ActorKind::Anonymous),
    };
    let event = origin
        .event(Action::TokenIssue, org)
        .actor(actor_kind, client_id.clone())
        .target(format!("{kind}:{client_id}"));
    let event = match &result {
        Ok(_) => event,
        Err(e) => event
            .actor(ActorKind::Anonymous, client_id.clone())
            .outcome(Outcome::Failure)
            .detail(json!({ "reason": e.message })),
    };
    state.audit.record(event).await;
    result
}

/// At most the first 256 bytes of `s` (on a character boundary), for
/// caller-chosen text in audit records.
fn clip(s: &str) -> &str {
    let mut end = s.len().min(256);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The audit target kind of a principal.
fn target_kind(kind: PrincipalKind) -> &'static str {
    match kind {
        PrincipalKind::User => "user",
        PrincipalKind::Service => "service_account",
        PrincipalKind::Device => "device",
    }
}

/// [`token`] without the audit record.
async fn issue_token(state: AppState, req: TokenRequest) -> Result<Json<TokenResponse>, AppError> {
    if req.grant_type != "client_credentials" {
        return Err(AppError::bad_request(
            "grant_type must be client_credentials",
        ));
    }
    let invalid = || AppError::unauthorized("invalid client credentials");
    let index = state
        .store
        .get::<ClientIndex>(&format!("client.{}", req.client_id))
        .await?
        .map(|(i, _)| i);
    let subject = match index {
        Some(ClientIndex { org, kind }) if kind == "service" => {
            let sa = state
                .store
                .get::<ServiceAccount>(&format!("sa.{org}.{}", req.client_id))
                .await?
                .map(|(s, _)| s)
                .ok_or_else(invalid)?;
            if !sa.active || !password::verify(&req.client_secret, &sa.secret_hash) {
                return Err(invalid());
            }
            let (perms, mqtt) = tokens::expand_roles(&state, &org, &sa.roles).await?;
            let audience = tokens::site_audiences(
                &state,
                (plantd_shared::audit::ActorKind::Service, &sa.client_id),
                &org,
                &sa.roles,
                &req.sites,
            )
            .await?;
            Subject {
                id: sa.client_id,
                org,
                kind: PrincipalKind::Service,
                roles: sa.roles,
                perms,
                mqtt,
                audience,
            }
        }
        Some(ClientIndex { org, .. }) => {
            let dev = state
                .store
                .get::<Device>(&format!("device.{org}.{}", req.client_id))
                .await?
                .map(|(d, _)| d)
                .ok_or_else(invalid)?;
            if !dev.active || !password::verify(&req.client_secret, &dev.secret_hash) {
                return Err(invalid());
            }
            let site = tokens::device_site(&state, &org, &dev.site).await?;
            Subject {
                id: dev.id,
                org,
                kind: PrincipalKind::Device,
                roles: vec!["device".into()],
                perms: Vec::new(),
                mqtt: [(
                    dev.site.clone(),
                    MqttGrant {
                        publish: dev.publish,
                        subscribe: dev.subscribe,
                    },
                )]
                .into_iter()
                .collect(),
                audience: vec![site_audience(&site)],
            }
        }
        None => {
            // Same work as a real check, so timing does not tell.
            let _ = password::verify(&req.client_secret, &state.dummy_hash);
            return Err(invalid());
        }
    };
    let (access, ttl) = tokens::access_token(&state, subject).await?;
    Ok(Json(TokenResponse {
        access_token: access,
        token_type: "Bearer",
        expires_in: ttl,
        refresh_token: None,
    }))
}

/// `POST /v1/auth/password`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordRequest {
    /// The current password.
    pub current_password: String,
    /// The new one.
    pub new_password: String,
}

/// Changes the caller's own password, and ends every session of the user:
/// all live access tokens (this request's too) are revoked and every
/// refresh token stops working, so whoever knew the old password — or
/// holds a stolen token — is out; the user logs in again with the new one.
///
/// The current password is a password guess like a login's, and counted
/// by the same [`throttle`] (the user's email, the client's address): a
/// stolen token cannot be used to guess the password at full speed.
///
/// # Errors
/// 400 for a short new password, 401 for a wrong current one, 429 while
/// throttled.
pub async fn password(
    State(state): State<AppState>,
    ClientSource(source): ClientSource,
    caller: Caller,
    origin: Origin,
    Body(req): Body<PasswordRequest>,
) -> Result<StatusCode, Response> {
    change_password(&state, &source, &caller, &origin, req).await
}

/// [`password`], its answers.
async fn change_password(
    state: &AppState,
    source: &plantd_shared::http::source::Source,
    caller: &Caller,
    origin: &Origin,
    req: PasswordRequest,
) -> Result<StatusCode, Response> {
    let err = IntoResponse::into_response;
    if caller.claims.kind != PrincipalKind::User {
        return Err(err(AppError::forbidden("a user token")));
    }
    if req.new_password.len() < state.settings.min_password_len {
        return Err(err(AppError::bad_request(format!(
            "password must be at least {} characters",
            state.settings.min_password_len
        ))));
    }
    let key = format!("user.{}.{}", caller.org(), caller.claims.sub);
    let (user, _) = state
        .store
        .get::<User>(&key)
        .await
        .map_err(err)?
        .ok_or_else(|| err(AppError::unauthorized("user no longer exists")))?;
    let attempt = throttle::begin(state, &user.email, Some(caller.org()), source)
        .await
        .map_err(IntoResponse::into_response)?;
    if !password::verify(&req.current_password, &user.password_hash) {
        state
            .audit
            .record(
                origin
                    .event(Action::PasswordChange, caller.org())
                    .by(&caller.claims)
                    .target(format!("user:{}", caller.claims.sub))
                    .outcome(Outcome::Failure)
                    .detail(json!({ "reason": "wrong current password" })),
            )
            .await;
        return Err(err(AppError::unauthorized("current password is wrong")));
    }
    attempt.succeeded(state).await.map_err(err)?;
    let new_hash = password::hash(&req.new_password).map_err(err)?;
    state
        .store
        .modify::<User, _>(&key, |u| {
            u.password_hash = new_hash.clone();
            u.revoked_before_ms = plantd_shared::headers::now_ms();
            u.sessions_epoch += 1;
            u.version += 1;
            Ok(Change::Put(()))
        })
        .await
        .map_err(err)?;
    let target = format!("user:{}", caller.claims.sub);
    origin
        .record(state, caller, Action::PasswordChange, caller.org(), &target)
        .await;
    let reason = Reason::PasswordChanged;
    let n = revocation::revoke_all(state, caller.org(), &caller.claims.sub, reason)
        .await
        .map_err(err)?;
    origin
        .revoked(state, caller, caller.org(), target, reason, n)
        .await;
    Ok(StatusCode::NO_CONTENT)
}
