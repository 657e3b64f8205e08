//! The bodies of organisations, users, roles, signing keys, login
//! throttles, the audit trail, `whoami` and the JWKS, as the document
//! describes them (mirrors of the routes' own types; the unit tests in
//! `super::tests` keep the two in agreement).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An organisation (tenant).
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Org {
    /// Identifier: 1-63 of `a-z 0-9 -`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: u64,
}

/// `POST /v1/orgs` body.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateOrg {
    /// Identifier: 1-63 of `a-z 0-9 -`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The organisation's first administrator (with `admin_password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_email: Option<String>,
    /// Their password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_password: Option<String>,
}

/// What `POST /v1/orgs` answers.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct OrgCreated {
    /// The organisation.
    pub org: Org,
    /// Its first administrator's user id, if one was asked for.
    #[serde(default)]
    pub admin_id: Option<String>,
}

/// A user as listed (no password hash).
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UserView {
    /// Identifier (UUID).
    pub id: String,
    /// Organisation.
    pub org: String,
    /// Email, normalised.
    pub email: String,
    /// Inactive users cannot log in or refresh.
    pub active: bool,
    /// Role names.
    pub roles: Vec<String>,
    /// Free-form attributes set by administrators.
    pub attributes: BTreeMap<String, String>,
}

/// `POST /v1/users` body.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// Email (unique across organisations).
    pub email: String,
    /// Initial password (at least 12 characters).
    pub password: String,
    /// Roles (default `viewer`; at most the caller's permissions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    /// Attributes.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// `PATCH /v1/users/{id}` body: the fields to change.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// Activate or deactivate (deactivating revokes the user's tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// Attributes to set (a `null` value removes one).
    #[serde(default)]
    pub attributes: BTreeMap<String, Option<String>>,
    /// A new password (an administrator resetting one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// `PUT /v1/users/{id}/roles` body.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetRoles {
    /// The roles the user will have (removing one revokes their tokens).
    pub roles: Vec<String>,
}

/// MQTT topic filters a principal may publish to and subscribe to on a
/// site.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MqttGrant {
    /// Filters it may PUBLISH to (a topic must match one).
    #[serde(default)]
    pub publish: Vec<String>,
    /// Filters it may SUBSCRIBE within (a requested filter must be covered
    /// by one).
    #[serde(default)]
    pub subscribe: Vec<String>,
}

/// A named set of permissions and MQTT grants.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Role {
    /// Name, unique in the organisation.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// plantd permission strings (`identity:user:read`, `state:write`, `*`).
    pub perms: Vec<String>,
    /// MQTT grants per site (or `*` for every site).
    pub mqtt: BTreeMap<String, MqttGrant>,
    /// Built in (`superadmin`, `admin`, `operator`, `viewer`, `device`):
    /// cannot be changed or deleted.
    pub builtin: bool,
}

/// `POST /v1/roles` and `PUT /v1/roles/{name}` body.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    /// Name: 1-64 of `a-z 0-9 - _`, not a built-in one (ignored on PUT,
    /// where the path names the role).
    #[serde(default)]
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Permission strings (each one the caller holds).
    #[serde(default)]
    pub perms: Vec<String>,
    /// MQTT grants per site (or `*`).
    #[serde(default)]
    pub mqtt: BTreeMap<String, MqttGrant>,
}

/// What a published key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum KeyRole {
    /// Signs tokens now.
    Signing,
    /// Published ahead; signs after the next rotation.
    Next,
    /// Signed before the last rotation; verifies until `retire_at`.
    Previous,
}

/// One published signing key (no key material).
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct KeyView {
    /// Key id (the tokens' `kid`).
    pub kid: String,
    /// What it is for.
    pub role: KeyRole,
    /// For previous keys: when they leave the JWKS, seconds since the
    /// Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retire_at: Option<u64>,
}

/// What `POST /v1/keys/rotate` did.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Rotated {
    /// The key that signs from now on.
    pub signing_kid: String,
    /// The key published for the rotation after this one.
    pub next_kid: String,
    /// The key that signed until now.
    pub retired_kid: String,
    /// When the retired key leaves the JWKS, seconds since the Unix epoch.
    pub retire_at: u64,
}

/// What a login throttle counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ThrottleKind {
    /// One email from one source.
    Account,
    /// One source, across every email.
    Source,
}

/// A login throttle as `GET /v1/lockouts` lists it.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Lockout {
    /// Its id, for `DELETE /v1/lockouts/{id}`.
    pub id: String,
    /// What it counts.
    pub kind: ThrottleKind,
    /// The email tried (account throttles only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The organisation of that email, when it belongs to a user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// The source address (`unknown` when none is known).
    pub source: String,
    /// Failed attempts counted.
    pub failures: u32,
    /// When counting started, ms since the Unix epoch.
    pub since_ms: u64,
    /// The last failed attempt, ms since the Unix epoch.
    pub last_failure_ms: u64,
    /// Attempts are refused until then, ms since the Unix epoch (0: not
    /// refused).
    pub blocked_until_ms: u64,
    /// Seconds until attempts are accepted again (0: now; the failures
    /// still count toward the next delay).
    pub retry_after_secs: u64,
}

/// Who acted, in an audit record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// A person (password login).
    User,
    /// A service account.
    Service,
    /// A device.
    Device,
    /// Nobody authenticated (a failed login, an unknown client id).
    Anonymous,
    /// plantd itself.
    System,
}

/// How an audited action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Done.
    Success,
    /// Tried and failed.
    Failure,
    /// Refused: the caller lacks the permission or the organisation.
    Denied,
}

/// One audit record as stored (the fields hashed into the chain).
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// Format version.
    pub v: u32,
    /// Unique id (32 hex digits).
    pub id: String,
    /// Position in the organisation's chain, from 1.
    pub n: u64,
    /// When it was recorded, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// The organisation whose chain it is in.
    pub org: String,
    /// Who acted.
    pub actor: String,
    /// What kind of actor.
    pub actor_kind: ActorKind,
    /// The actor's organisation when not `org`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_org: Option<String>,
    /// What was done (`auth.login`, `user.create`, …).
    pub action: String,
    /// What it was done to (`user:<id>`, `role:<name>`, …).
    pub target: String,
    /// How it ended.
    pub outcome: Outcome,
    /// The client's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The request id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Anything else, per action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
    /// The hash of the organisation's previous record.
    pub prev: String,
}

/// An audit record as `GET /v1/audit` lists it: the record with its
/// sequence and hash.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// Its sequence in the audit stream.
    pub seq: u64,
    /// Its hash (the next record's `prev`).
    pub hash: String,
    /// Format version.
    pub v: u32,
    /// Unique id (32 hex digits).
    pub id: String,
    /// Position in the organisation's chain, from 1.
    pub n: u64,
    /// When it was recorded, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// The organisation whose chain it is in.
    pub org: String,
    /// Who acted.
    pub actor: String,
    /// What kind of actor.
    pub actor_kind: ActorKind,
    /// The actor's organisation when not `org`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_org: Option<String>,
    /// What was done (`auth.login`, `user.create`, …).
    pub action: String,
    /// What it was done to (`user:<id>`, `role:<name>`, …).
    pub target: String,
    /// How it ended.
    pub outcome: Outcome,
    /// The client's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The request id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Anything else, per action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
    /// The hash of the organisation's previous record.
    pub prev: String,
}

/// One page of `GET /v1/audit`.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AuditPage {
    /// The organisation.
    pub org: String,
    /// Matching records, oldest first.
    pub records: Vec<AuditRecord>,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// The first record that breaks an audit chain.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BrokenRecord {
    /// Its sequence in the audit stream.
    pub seq: u64,
    /// Its hash.
    pub hash: String,
    /// What is wrong: an object whose `kind` is `unreadable`, `wrong_org`,
    /// `numbering` or `link`, with that kind's fields.
    pub reason: serde_json::Value,
    /// The record, when readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<AuditEntry>,
}

/// What `GET /v1/audit/verify` answers.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AuditVerification {
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broken: Option<BrokenRecord>,
}

/// What kind of principal a token was issued to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    /// A person who logged in with a password.
    User,
    /// A program using client credentials.
    Service,
    /// A device on a site.
    Device,
}

/// A verified token's claims, as `GET /v1/auth/whoami` answers them.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Subject: the user, service account or device id.
    pub sub: String,
    /// Audience: `plantd:api` and/or `plantd:site:<site>` (a string or a
    /// list of them).
    pub aud: serde_json::Value,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Not before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Token id.
    pub jti: String,
    /// The principal's organisation.
    pub org: String,
    /// What kind of principal.
    pub kind: PrincipalKind,
    /// Role names.
    pub roles: Vec<String>,
    /// Granted permission strings.
    pub perms: Vec<String>,
    /// MQTT grants per site (or `*`).
    pub mqtt: BTreeMap<String, MqttGrant>,
}

/// The JSON Web Key Set (RFC 7517) every token verifier reads.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Jwks {
    /// The published public keys (`kty`, `crv`, `x`, `y`, `kid`, `alg`,
    /// `use`): the signing key, the next one and those retiring.
    pub keys: Vec<serde_json::Value>,
}
