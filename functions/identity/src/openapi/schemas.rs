//! The bodies of login and tokens, service accounts, devices and sites,
//! as the document describes them (mirrors of the routes' own types; the
//! unit tests in `super::tests` keep the two in agreement).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The JSON body of every error.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// Stable machine-readable code (`bad_request`, `unauthorized`, …).
    pub error: String,
    /// What went wrong, for people.
    pub message: String,
}

/// `POST /v1/auth/login` body.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token from the login or the last refresh (each is
    /// used once: reusing one revokes the whole login).
    pub refresh_token: String,
}

/// `POST /v1/auth/logout` body.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LogoutRequest {
    /// The refresh token to revoke with its whole family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

/// `POST /v1/auth/token` body (OAuth 2 client credentials).
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PasswordRequest {
    /// The current password.
    pub current_password: String,
    /// The new one.
    pub new_password: String,
}

/// What the token endpoints answer.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// The client id.
    pub client_id: String,
    /// The secret; store it now, it cannot be shown again.
    pub client_secret: String,
}

/// `POST /v1/service-accounts` body.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateServiceAccount {
    /// Display name.
    pub name: String,
    /// Roles (at most the caller's).
    #[serde(default)]
    pub roles: Vec<String>,
}

/// `PATCH /v1/service-accounts/{id}` body.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Revoked {
    /// Live access tokens revoked.
    pub revoked: u64,
}

/// `POST /v1/sites` body.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
