//! Identity's OpenAPI document, served at `GET /v1/identity/openapi.json`
//! (`plantd-identity --print-openapi` prints the same bytes).
//!
//! It describes the routes a client program needs — login, refresh-token
//! rotation, logout, client-credential tokens, service accounts, devices,
//! sites and revoking a user — and is what the SDKs generate their typed
//! calls from (`sdk/rust`, `sdk/python`). The path is under `/v1/` (not
//! `/openapi.json`, which is the proxy's) because `plantd up` serves both
//! APIs from one router and the cloud template routes `/v1/*` to identity.
//!
//! The routes here are not registered through the document (identity's
//! router predates it), so the schemas are written beside the routes'
//! own types and a unit test keeps them honest: every documented request
//! body is accepted by the route's own request type, and every response
//! type's JSON is read by the documented schema, which refuses unknown
//! fields.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// Where the document is served.
pub const PATH: &str = "/v1/identity/openapi.json";

/// The JSON body of every error.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// Stable machine-readable code (`bad_request`, `unauthorized`, …).
    pub error: String,
    /// What went wrong, for people.
    pub message: String,
}

/// `POST /v1/auth/login` body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The user's email.
    pub email: String,
    /// The password.
    pub password: String,
    /// Sites whose edge brokers the token should also be valid for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<String>,
}

/// `POST /v1/auth/refresh` body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token from the login or the last refresh (each is
    /// used once: reusing one revokes the whole login).
    pub refresh_token: String,
}

/// `POST /v1/auth/logout` body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogoutRequest {
    /// The refresh token to revoke with its whole family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

/// `POST /v1/auth/token` body (OAuth 2 client credentials).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// Must be `client_credentials`.
    pub grant_type: String,
    /// A service account's or device's client id.
    pub client_id: String,
    /// Its secret.
    pub client_secret: String,
    /// Sites a service account's token should also be valid for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<String>,
}

/// `POST /v1/auth/password` body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordRequest {
    /// The current password.
    pub current_password: String,
    /// The new one.
    pub new_password: String,
}

/// What the token endpoints answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenResponse {
    /// The access JWT.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The refresh token (user logins only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

/// A new client's credentials, returned once.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// The client id.
    pub client_id: String,
    /// The secret; store it now, it cannot be shown again.
    pub client_secret: String,
}

/// `POST /v1/service-accounts` body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateServiceAccount {
    /// Display name.
    pub name: String,
    /// Roles (at most the caller's).
    #[serde(default)]
    pub roles: Vec<String>,
}

/// `PATCH /v1/service-accounts/{id}` body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateServiceAccount {
    /// Activate or deactivate (deactivating revokes its tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// New roles (removing one revokes its tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
}

/// A service account as listed (no secret).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceAccountView {
    /// Client id.
    pub client_id: String,
    /// Name.
    pub name: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Active flag.
    pub active: bool,
}

/// `POST /v1/devices` body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDevice {
    /// Display name.
    pub name: String,
    /// The site it is on.
    pub site: String,
    /// Topic filters it may publish to.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Topic filters it may subscribe to.
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// The SHA-256 fingerprint of its TLS client certificate (64 hex
    /// digits, `:` separators allowed): it may then connect to its site's
    /// edge without a token (decision 0043).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_sha256: Option<String>,
}

/// `PATCH /v1/devices/{id}` body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateDevice {
    /// Activate or deactivate (deactivating revokes its tokens: its MQTT
    /// connections close).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// Replaces the client certificate it may log in with (its SHA-256,
    /// as at creation; the old certificate's connections close), or with
    /// `""` removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_sha256: Option<String>,
}

/// A device as listed (no secret).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceView {
    /// Client id.
    pub client_id: String,
    /// Name.
    pub name: String,
    /// Site.
    pub site: String,
    /// Publish filters.
    pub publish: Vec<String>,
    /// Subscribe filters.
    pub subscribe: Vec<String>,
    /// Active flag.
    pub active: bool,
}

/// What `POST …/{id}/revoke` answers.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Revoked {
    /// Live access tokens revoked.
    pub revoked: u64,
}

/// `POST /v1/sites` body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSite {
    /// The site id: 1-64 of `A-Z a-z 0-9 _ -`, unique across organisations.
    pub id: String,
    /// The owning organisation (default: the caller's; another one only
    /// for the bootstrap superadmin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

/// `PATCH /v1/sites/{id}` body: the fields to change.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSite {
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What and where it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Labels (replaced whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// A registered site.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteRecord {
    /// The site id.
    pub id: String,
    /// The organisation that owns it.
    pub org: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// What and where it is.
    #[serde(default)]
    pub description: String,
    /// Free-form labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// When it was registered, ms since the Unix epoch.
    #[serde(default)]
    pub created_ms: u64,
}

/// The operations. Identity's router registers the real handlers
/// (`crate::routes::router`); these functions only carry the annotations
/// the document is made from and are never routed.
#[allow(dead_code, clippy::unused_async)]
mod ops {
    use super::{
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
    async fn login() {}

    #[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth",
        description = "Exchanges a refresh token for new tokens (rotation: each refresh token works once).",
        request_body = RefreshRequest,
        responses(
            (status = 200, description = "New tokens", body = TokenResponse),
            (status = 401, description = "Invalid, expired, reused or revoked refresh token", body = ErrorBody)))]
    async fn refresh() {}

    #[utoipa::path(post, path = "/v1/auth/logout", tag = "auth",
        description = "Revokes the caller's access token and, if given, the refresh token's family.",
        request_body = LogoutRequest,
        responses(
            (status = 204, description = "Logged out"),
            (status = 401, description = "Missing, invalid or revoked token", body = ErrorBody)),
        security(("bearer" = [])))]
    async fn logout() {}

    #[utoipa::path(get, path = "/v1/auth/whoami", tag = "auth",
        description = "The caller's verified token claims.",
        responses(
            (status = 200, description = "The claims", body = serde_json::Value),
            (status = 401, description = "Missing, invalid or revoked token", body = ErrorBody)),
        security(("bearer" = [])))]
    async fn whoami() {}

    #[utoipa::path(post, path = "/v1/auth/token", tag = "auth",
        description = "A token for a service account or a device (OAuth 2 client credentials).",
        request_body = TokenRequest,
        responses(
            (status = 200, description = "An access token", body = TokenResponse),
            (status = 400, description = "Another grant type, or a bad site", body = ErrorBody),
            (status = 401, description = "Bad credentials", body = ErrorBody)))]
    async fn token() {}

    #[utoipa::path(post, path = "/v1/auth/password", tag = "auth",
        description = "Changes the caller's own password.",
        request_body = PasswordRequest,
        responses(
            (status = 204, description = "Changed"),
            (status = 400, description = "The new password is too short", body = ErrorBody),
            (status = 401, description = "Wrong current password", body = ErrorBody)),
        security(("bearer" = [])))]
    async fn password() {}

    #[utoipa::path(get, path = "/v1/service-accounts", tag = "clients",
        responses(
            (status = 200, description = "The organisation's service accounts", body = Vec<ServiceAccountView>),
            (status = 403, description = "Missing identity:service-account:read", body = ErrorBody)),
        security(("bearer" = [])))]
    async fn list_service_accounts() {}

    #[utoipa::path(post, path = "/v1/service-accounts", tag = "clients",
        request_body = CreateServiceAccount,
        responses(
            (status = 201, description = "Created; the secret is shown only now", body = Credentials),
            (status = 403, description = "Missing identity:service-account:create, or roles beyond the caller's", body = ErrorBody)),
        security(("bearer" = [])))]
    async fn create_service_account() {}

    #[utoipa::path(patch, path = "/v1/service-accounts/{id}", tag = "clients",
        params(("id" = String, Path, description = "The client id")),
        request_body = UpdateServiceAccount,
        responses(
            (status = 200, description = "Updated", body = ServiceAccountView),
            (status = 403, description = "Missing identity:service-account:update", body = ErrorBody),
            (status = 404, description = "Unknown", body = ErrorBody)),
        security(("bearer" = [])))]
    async fn update_service_account() {}

    #[utoipa::path(delete, path = "/v1/service-accounts/{id}", tag = "clients",
        params(("id" = String, Path, description = "The client id")),
        responses(
            (status = 204, description = "Deleted (its tokens are revoked)"),
            (status = 404, description = "Unknown", body = ErrorBody)),
        security(("bearer" = [])))]
    async fn delete_service_account() {}

    #[utoipa::path(post, path = "/v1/service-accounts/{id}/revoke", tag = "clients",
        params(("id" = String, Path, description = "The client id")),
        responses(
            (status = 200, description = "Every live token revoked", body = Revoked),
            (status = 404, description = "Unknown", body = ErrorBody)),
        security(("bearer" = [])))]
    async fn revoke_service_account() {}

    #[utoipa::path(get, path = "/v1/devices", tag = "clients",
        responses(
            (status = 200, description = "The organisation's devices", body = Vec<DeviceView>),
            (status = 403, description = "Missing identity:device:read", body = ErrorBody)),
        security(("bearer" = [])))]
    async fn list_devices() {}

    #[utoipa::path(post, path = "/v1/devices", tag = "clients",
        request_body = CreateDevice,
        responses(
            (status = 201, description = "Registered; the secret is shown only now", body = Credentials),
            (status = 400, description = "Bad site or filter", body = ErrorBody),
            (status = 403, description = "Missing identity:device:create, or another organisation's site", body = ErrorBody),
            (status = 404, description = "Unregistered site", body = ErrorBody)),
        security(("bearer" = [])))]
    async fn create_device() {}

    #[utoipa::path(patch, path = "/v1/devices/{id}", tag = "clients",
        params(("id" = String, Path, description = "The client id")),
        request_body = UpdateDevice,
        responses(
            (status = 200, description = "Updated", body = DeviceView),
            (status = 404, description = "Unknown", body = ErrorBody)),
        security(("bearer" = [])))]
    async fn update_device() {}

    #[utoipa::path(delete, path = "/v1/devices/{id}", tag = "clients",
        params(("id" = String, Path, description = "The client id")),
        responses(
            (status = 204, description = "Deleted (its tokens are revoked)"),
            (status = 404, description = "Unknown", body = ErrorBody)),
        security(("bearer" = [])))]
    async fn delete_device() {}

    #[utoipa::path(post, path = "/v1/devices/{id}/revoke", tag = "clients",
        params(("id" = String, Path, description = "The client id")),
        responses(
            (status = 200, description = "Every live token revoked (its MQTT connections close)", body = Revoked),
            (status = 404, description = "Unknown", body = ErrorBody)),
        security(("bearer" = [])))]
    async fn revoke_device() {}

    #[utoipa::path(post, path = "/v1/users/{id}/revoke", tag = "users",
        description = "Logs a user out everywhere: every live access token revoked, refresh tokens issued so far stop working.",
        params(("id" = String, Path, description = "The user id")),
        responses(
            (status = 200, description = "Revoked", body = Revoked),
            (status = 403, description = "Missing identity:user:update", body = ErrorBody),
            (status = 404, description = "Unknown", body = ErrorBody)),
        security(("bearer" = [])))]
    async fn revoke_user() {}

    #[utoipa::path(get, path = "/v1/sites", tag = "sites",
        params(("org" = Option<String>, Query, description = "Another organisation's sites (the superadmin)")),
        responses(
            (status = 200, description = "Sites", body = Vec<SiteRecord>),
            (status = 403, description = "Missing identity:site:read", body = ErrorBody)),
        security(("bearer" = [])))]
    async fn list_sites() {}

    #[utoipa::path(post, path = "/v1/sites", tag = "sites",
        request_body = CreateSite,
        responses(
            (status = 201, description = "Registered", body = SiteRecord),
            (status = 400, description = "Bad id, name or labels", body = ErrorBody),
            (status = 409, description = "Some organisation has this id", body = ErrorBody)),
        security(("bearer" = [])))]
    async fn create_site() {}

    #[utoipa::path(get, path = "/v1/sites/{id}", tag = "sites",
        params(("id" = String, Path, description = "The site id")),
        responses(
            (status = 200, description = "The site", body = SiteRecord),
            (status = 403, description = "Another organisation's", body = ErrorBody),
            (status = 404, description = "Unknown", body = ErrorBody)),
        security(("bearer" = [])))]
    async fn get_site() {}

    #[utoipa::path(patch, path = "/v1/sites/{id}", tag = "sites",
        params(("id" = String, Path, description = "The site id")),
        request_body = UpdateSite,
        responses(
            (status = 200, description = "Updated", body = SiteRecord),
            (status = 404, description = "Unknown", body = ErrorBody)),
        security(("bearer" = [])))]
    async fn update_site() {}

    #[utoipa::path(delete, path = "/v1/sites/{id}", tag = "sites",
        params(("id" = String, Path, description = "The site id")),
        responses(
            (status = 204, description = "Removed"),
            (status = 404, description = "Unknown", body = ErrorBody)),
        security(("bearer" = [])))]
    async fn delete_site() {}
}

/// Adds the bearer-token scheme the operations name.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "plantd identity API",
        description = "Login, tokens, service accounts, devices and sites. See docs/api.md."
    ),
    paths(
        ops::login, ops::refresh, ops::logout, ops::whoami, ops::token, ops::password,
        ops::list_service_accounts, ops::create_service_account, ops::update_service_account,
        ops::delete_service_account, ops::revoke_service_account,
        ops::list_devices, ops::create_device, ops::update_device, ops::delete_device,
        ops::revoke_device, ops::revoke_user,
        ops::list_sites, ops::create_site, ops::get_site, ops::update_site, ops::delete_site
    ),
    components(schemas(ErrorBody)),
    modifiers(&Bearer),
    tags(
        (name = "auth", description = "Login, refresh-token rotation, logout and client-credential tokens"),
        (name = "clients", description = "Service accounts and devices"),
        (name = "users", description = "Users"),
        (name = "sites", description = "Sites and their organisations")
    )
)]
pub struct ApiDoc;

/// The document as JSON, built once.
static JSON: LazyLock<String> = LazyLock::new(|| {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"internal\",\"message\":\"{e}\"}}"))
});

/// The document as pretty-printed JSON, exactly what [`PATH`] serves.
pub fn pretty_json() -> &'static str {
    JSON.as_str()
}

/// `GET /v1/identity/openapi.json` (no token needed).
pub async fn serve() -> Response {
    ([(CONTENT_TYPE, "application/json")], JSON.as_str()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::DeserializeOwned;

    /// `documented`'s JSON is read by the route's own type `T`.
    fn accepted<T: DeserializeOwned>(documented: &impl Serialize) {
        let json = serde_json::to_value(documented).expect("serialize");
        if let Err(e) = serde_json::from_value::<T>(json.clone()) {
            panic!(
                "{json} (as documented) is refused by {}: {e}",
                std::any::type_name::<T>()
            );
        }
    }

    /// The route's answer `real` is read by the documented schema `D`.
    fn described<D: DeserializeOwned>(real: &impl Serialize) {
        let json = serde_json::to_value(real).expect("serialize");
        if let Err(e) = serde_json::from_value::<D>(json.clone()) {
            panic!(
                "{json} (a real answer) does not match {}: {e}",
                std::any::type_name::<D>()
            );
        }
    }

    #[test]
    fn documented_bodies_are_what_the_routes_accept() {
        use crate::routes::{auth, clients, sites};
        let s = |v: &str| v.to_owned();
        accepted::<auth::LoginRequest>(&LoginRequest {
            email: s("a@b"),
            password: s("p"),
            sites: vec![s("x")],
        });
        accepted::<auth::RefreshRequest>(&RefreshRequest {
            refresh_token: s("r"),
        });
        accepted::<auth::LogoutRequest>(&LogoutRequest {
            refresh_token: Some(s("r")),
        });
        accepted::<auth::TokenRequest>(&TokenRequest {
            grant_type: s("client_credentials"),
            client_id: s("c"),
            client_secret: s("s"),
            sites: vec![s("x")],
        });
        accepted::<auth::PasswordRequest>(&PasswordRequest {
            current_password: s("a"),
            new_password: s("b"),
        });
        accepted::<clients::CreateServiceAccount>(&CreateServiceAccount {
            name: s("n"),
            roles: vec![s("viewer")],
        });
        accepted::<clients::UpdateServiceAccount>(&UpdateServiceAccount {
            active: Some(false),
            roles: Some(vec![]),
        });
        accepted::<clients::CreateDevice>(&CreateDevice {
            name: s("n"),
            site: s("x"),
            publish: vec![s("a/#")],
            subscribe: vec![s("b/#")],
            certificate_sha256: Some(s("ab").repeat(32)),
        });
        accepted::<clients::UpdateDevice>(&UpdateDevice {
            active: Some(true),
            certificate_sha256: Some(String::new()),
        });
        accepted::<sites::CreateSite>(&CreateSite {
            id: s("x"),
            org: Some(s("o")),
            name: s("n"),
            description: s("d"),
            labels: BTreeMap::from([(s("k"), s("v"))]),
        });
        accepted::<sites::UpdateSite>(&UpdateSite {
            name: Some(s("n")),
            description: Some(s("d")),
            labels: Some(BTreeMap::new()),
        });
    }

    #[test]
    fn real_answers_match_the_documented_schemas() {
        use crate::routes::{clients, users};
        let s = |v: &str| v.to_owned();
        described::<TokenResponse>(&crate::tokens::TokenResponse {
            access_token: s("a"),
            token_type: "Bearer",
            expires_in: 300,
            refresh_token: Some(s("r")),
        });
        described::<Credentials>(&clients::Credentials {
            client_id: s("c"),
            client_secret: s("s"),
        });
        described::<ServiceAccountView>(&clients::ServiceAccountView {
            client_id: s("c"),
            name: s("n"),
            roles: vec![],
            active: true,
        });
        described::<DeviceView>(&clients::DeviceView {
            client_id: s("c"),
            name: s("n"),
            site: s("x"),
            publish: vec![],
            subscribe: vec![],
            active: true,
        });
        described::<Revoked>(&users::Revoked { revoked: 2 });
        described::<SiteRecord>(&plantd_shared::sites::SiteRecord {
            id: s("x"),
            org: s("o"),
            name: s("n"),
            description: s("d"),
            labels: BTreeMap::new(),
            created_ms: 1,
        });
        described::<ErrorBody>(&serde_json::json!({"error": "conflict", "message": "m"}));
    }

    #[test]
    fn the_document_names_every_operation_once() {
        let doc: serde_json::Value = serde_json::from_str(pretty_json()).expect("JSON");
        let ops: usize = doc["paths"]
            .as_object()
            .expect("paths")
            .values()
            .map(|item| item.as_object().map_or(0, serde_json::Map::len))
            .sum();
        assert_eq!(ops, 22, "{doc}");
        assert_eq!(doc["openapi"], "3.1.0");
    }
}
