//! The operations of login and tokens, service accounts, devices, sites
//! and revoking a user. Identity's router registers the real handlers
//! (`crate::routes::router`); these functions only carry the annotations
//! the document is made from and are never routed.
#![allow(dead_code, clippy::unused_async)]

use super::schemas::{
    CreateDevice, CreateServiceAccount, CreateSite, Credentials, DeviceView, ErrorBody,
    LoginRequest, LogoutRequest, PasswordRequest, RefreshRequest, Revoked, ServiceAccountView,
    SiteRecord, TokenRequest, TokenResponse, UpdateDevice, UpdateServiceAccount, UpdateSite,
};

#[utoipa::path(post, path = "/v1/auth/login", tag = "auth",
    description = "Logs a user in: an access token and a refresh token.",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Tokens", body = TokenResponse),
        (status = 400, description = "Malformed request or bad site", body = ErrorBody),
        (status = 401, description = "Invalid email or password", body = ErrorBody),
        (status = 429, description = "Throttled; see Retry-After", body = ErrorBody)))]
pub(super) async fn login() {}

#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth",
    description = "Exchanges a refresh token for new tokens (rotation: each refresh token works once).",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "New tokens", body = TokenResponse),
        (status = 401, description = "Invalid, expired, reused or revoked refresh token", body = ErrorBody)))]
pub(super) async fn refresh() {}

#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth",
    description = "Revokes the caller's access token and, if given, the refresh token's family.",
    request_body(content = LogoutRequest, description = "Optional: without a body (or with `{}`) only the access token is revoked"),
    responses(
        (status = 204, description = "Logged out"),
        (status = 401, description = "Missing, invalid or revoked token", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn logout() {}

#[utoipa::path(get, path = "/v1/auth/whoami", tag = "auth",
    description = "The caller's verified token claims.",
    responses(
        (status = 200, description = "The claims", body = super::admin::Claims),
        (status = 401, description = "Missing, invalid or revoked token", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn whoami() {}

#[utoipa::path(post, path = "/v1/auth/token", tag = "auth",
    description = "A token for a service account or a device (OAuth 2 client credentials).",
    request_body = TokenRequest,
    responses(
        (status = 200, description = "An access token", body = TokenResponse),
        (status = 400, description = "Another grant type, or a bad site", body = ErrorBody),
        (status = 401, description = "Bad credentials", body = ErrorBody)))]
pub(super) async fn token() {}

#[utoipa::path(post, path = "/v1/auth/password", tag = "auth",
    description = "Changes the caller's own password and ends every session of the user (every live access token, this one too, and every refresh token): log in again. A wrong current password counts as a failed login.",
    request_body = PasswordRequest,
    responses(
        (status = 204, description = "Changed"),
        (status = 400, description = "The new password is too short", body = ErrorBody),
        (status = 401, description = "Wrong current password", body = ErrorBody),
        (status = 429, description = "Throttled like a login; see Retry-After", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn password() {}

#[utoipa::path(get, path = "/v1/service-accounts", tag = "clients",
    responses(
        (status = 200, description = "The organisation's service accounts", body = Vec<ServiceAccountView>),
        (status = 403, description = "Missing identity:service-account:read", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn list_service_accounts() {}

#[utoipa::path(post, path = "/v1/service-accounts", tag = "clients",
    request_body = CreateServiceAccount,
    responses(
        (status = 201, description = "Created; the secret is shown only now", body = Credentials),
        (status = 403, description = "Missing identity:service-account:create, or roles beyond the caller's", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn create_service_account() {}

#[utoipa::path(patch, path = "/v1/service-accounts/{id}", tag = "clients",
    params(("id" = String, Path, description = "The client id")),
    request_body = UpdateServiceAccount,
    responses(
        (status = 200, description = "Updated", body = ServiceAccountView),
        (status = 403, description = "Missing identity:service-account:update, or the account holds a permission or MQTT grant the caller lacks", body = ErrorBody),
        (status = 404, description = "Unknown", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn update_service_account() {}

#[utoipa::path(delete, path = "/v1/service-accounts/{id}", tag = "clients",
    params(("id" = String, Path, description = "The client id")),
    responses(
        (status = 204, description = "Deleted (its tokens are revoked)"),
        (status = 404, description = "Unknown", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn delete_service_account() {}

#[utoipa::path(post, path = "/v1/service-accounts/{id}/revoke", tag = "clients",
    params(("id" = String, Path, description = "The client id")),
    responses(
        (status = 200, description = "Every live token revoked", body = Revoked),
        (status = 404, description = "Unknown", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn revoke_service_account() {}

#[utoipa::path(get, path = "/v1/devices", tag = "clients",
    responses(
        (status = 200, description = "The organisation's devices", body = Vec<DeviceView>),
        (status = 403, description = "Missing identity:device:read", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn list_devices() {}

#[utoipa::path(post, path = "/v1/devices", tag = "clients",
    request_body = CreateDevice,
    responses(
        (status = 201, description = "Registered; the secret is shown only now", body = Credentials),
        (status = 400, description = "Bad site or filter", body = ErrorBody),
        (status = 403, description = "Missing identity:device:create, another organisation's site, or a topic filter beyond the caller's own MQTT grants on the site", body = ErrorBody),
        (status = 404, description = "Unregistered site", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn create_device() {}

#[utoipa::path(patch, path = "/v1/devices/{id}", tag = "clients",
    params(("id" = String, Path, description = "The client id")),
    request_body = UpdateDevice,
    responses(
        (status = 200, description = "Updated", body = DeviceView),
        (status = 404, description = "Unknown", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn update_device() {}

#[utoipa::path(delete, path = "/v1/devices/{id}", tag = "clients",
    params(("id" = String, Path, description = "The client id")),
    responses(
        (status = 204, description = "Deleted (its tokens are revoked)"),
        (status = 404, description = "Unknown", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn delete_device() {}

#[utoipa::path(post, path = "/v1/devices/{id}/revoke", tag = "clients",
    params(("id" = String, Path, description = "The client id")),
    responses(
        (status = 200, description = "Every live token revoked (its MQTT connections close)", body = Revoked),
        (status = 404, description = "Unknown", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn revoke_device() {}

#[utoipa::path(post, path = "/v1/users/{id}/revoke", tag = "users",
    description = "Logs a user out everywhere: every live access token revoked, refresh tokens issued so far stop working.",
    params(("id" = String, Path, description = "The user id")),
    responses(
        (status = 200, description = "Revoked", body = Revoked),
        (status = 403, description = "Missing identity:user:update", body = ErrorBody),
        (status = 404, description = "Unknown", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn revoke_user() {}

#[utoipa::path(get, path = "/v1/sites", tag = "sites",
    params(("org" = Option<String>, Query, description = "Another organisation's sites (the superadmin)")),
    responses(
        (status = 200, description = "Sites", body = Vec<SiteRecord>),
        (status = 403, description = "Missing identity:site:read", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn list_sites() {}

#[utoipa::path(post, path = "/v1/sites", tag = "sites",
    request_body = CreateSite,
    responses(
        (status = 201, description = "Registered", body = SiteRecord),
        (status = 400, description = "Bad id, name or labels", body = ErrorBody),
        (status = 409, description = "Some organisation has this id, or another organisation had it before deleting it", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn create_site() {}

#[utoipa::path(get, path = "/v1/sites/{id}", tag = "sites",
    params(("id" = String, Path, description = "The site id")),
    responses(
        (status = 200, description = "The site", body = SiteRecord),
        (status = 403, description = "Another organisation's", body = ErrorBody),
        (status = 404, description = "Unknown", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn get_site() {}

#[utoipa::path(patch, path = "/v1/sites/{id}", tag = "sites",
    params(("id" = String, Path, description = "The site id")),
    request_body = UpdateSite,
    responses(
        (status = 200, description = "Updated", body = SiteRecord),
        (status = 404, description = "Unknown", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn update_site() {}

#[utoipa::path(delete, path = "/v1/sites/{id}", tag = "sites",
    params(("id" = String, Path, description = "The site id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "Unknown", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn delete_site() {}
