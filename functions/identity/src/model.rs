//! The identity records, as stored (JSON) in `plantd_identity`.
//!
//! | key | record |
//! |---|---|
//! | `org.<org>` | [`Org`] |
//! | `user.<org>.<id>` | [`User`] |
//! | `email.<sha256(email)>` | [`EmailIndex`] (emails are unique across organisations) |
//! | `role.<org>.<name>` | [`Role`] (custom; the built-in ones are in code) |
//! | `sa.<org>.<client id>` | [`ServiceAccount`] |
//! | `device.<org>.<id>` | [`Device`] |
//! | `client.<client id>` | [`ClientIndex`]: which organisation a client id belongs to |
//! | `refresh.<sha256(token)>` | [`RefreshToken`] |
//! | `family.<id>` | [`Family`]: a chain of rotated refresh tokens |
//! | `issued.<org>.<subject>` | [`crate::revocation::Issued`]: the live access token ids of a principal |
//! | `throttle.…` | [`crate::throttle::Throttle`]: failed logins by (email, source) and by source |
//! | `retired_site.<site>` | [`RetiredSite`]: which organisation last owned a deleted site id (only it may register the id again) |

use std::collections::BTreeMap;

use plantd_shared::claims::{ANY_SITE, MqttGrant};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The organisation the bootstrap administrator belongs to.
pub const SYSTEM_ORG: &str = plantd_shared::sites::BOOTSTRAP_ORG;

/// Lower-case hex SHA-256, for keys derived from secrets or free text.
pub fn sha256_hex(s: &str) -> String {
    let d = Sha256::digest(s.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// The canonical form of an email address (trimmed, lower case).
pub fn normalise_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Org {
    /// Identifier (`[a-z0-9-]`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Creation time, ms since the epoch.
    pub created_ms: u64,
}

/// A person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Identifier (UUID).
    pub id: String,
    /// Organisation.
    pub org: String,
    /// Email, normalised.
    pub email: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Inactive users cannot log in or refresh.
    pub active: bool,
    /// Role names.
    pub roles: Vec<String>,
    /// Creation time.
    pub created_ms: u64,
    /// Bumped on every change, so tests and audits can see updates land.
    #[serde(default)]
    pub version: u64,
    /// Free-form attributes set by administrators.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// When the user was last logged out everywhere (ms; 0: never), for
    /// people reading the record; which refresh tokens that ended is
    /// decided by [`User::sessions_epoch`] ([`crate::revocation`]).
    #[serde(default)]
    pub revoked_before_ms: u64,
    /// Bumped each time the user is logged out everywhere. A refresh token
    /// carries the value current when its login began; one older than
    /// this no longer works. (A counter, not a time: a login in the same
    /// millisecond as the revocation is ordered exactly.)
    #[serde(default)]
    pub sessions_epoch: u64,
}

/// What a user looks like to API callers (no hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserView {
    /// Identifier.
    pub id: String,
    /// Organisation.
    pub org: String,
    /// Email.
    pub email: String,
    /// Active flag.
    pub active: bool,
    /// Roles.
    pub roles: Vec<String>,
    /// Attributes.
    pub attributes: BTreeMap<String, String>,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self {
            id: u.id.clone(),
            org: u.org.clone(),
            email: u.email.clone(),
            active: u.active,
            roles: u.roles.clone(),
            attributes: u.attributes.clone(),
        }
    }
}

/// Email → user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailIndex {
    /// Organisation.
    pub org: String,
    /// User id.
    pub user: String,
}

/// A named permission set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    /// Name, unique in the organisation.
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// plantd permission strings.
    #[serde(default)]
    pub perms: Vec<String>,
    /// MQTT grants per site (or `*`).
    #[serde(default)]
    pub mqtt: BTreeMap<String, MqttGrant>,
    /// Built in (cannot be changed or deleted).
    #[serde(default)]
    pub builtin: bool,
}

fn grant(publish: &[&str], subscribe: &[&str]) -> BTreeMap<String, MqttGrant> {
    [(
        ANY_SITE.to_owned(),
        MqttGrant {
            publish: publish.iter().map(|s| (*s).to_owned()).collect(),
            subscribe: subscribe.iter().map(|s| (*s).to_owned()).collect(),
        },
    )]
    .into_iter()
    .collect()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// The built-in roles: `superadmin` (the bootstrap administrator: creates
/// organisations), `admin`, `operator`, `viewer`, `device`.
pub fn builtin_role(name: &str) -> Option<Role> {
    let (perms, mqtt, description) = match name {
        "superadmin" => (
            strings(&["*"]),
            // `#` never covers `$` topics (MQTT): log lines, the edge's
            // analytics results and its alert signals are granted on
            // their own.
            grant(
                &["#", "$plantd/log/#"],
                &["#", "$plantd/agg/#", "$plantd/alert/#"],
            ),
            "everything, including creating organisations",
        ),
        "admin" => (
            strings(&[
                "identity:user:*",
                "identity:role:*",
                "identity:service-account:*",
                "identity:device:*",
                "identity:site:*",
                "identity:org:read",
                "identity:audit:read",
                "state:scope:*:admin",
                "telemetry:*:read",
                "commands:*:send",
                "services:*:call",
                "alerts:admin",
                "analytics:admin",
            ]),
            grant(
                &["#", "$plantd/log/#"],
                &["#", "$plantd/agg/#", "$plantd/alert/#"],
            ),
            "manages an organisation's identities and everything on its sites",
        ),
        "operator" => (
            strings(&[
                "identity:org:read",
                "identity:site:read",
                "state:scope:*:read",
                "state:scope:*:write",
                "telemetry:*:read",
                "commands:*:send",
                "services:*:call",
                "alerts:read",
                "alerts:write",
                "analytics:read",
                "analytics:write",
            ]),
            grant(&[], &["#"]),
            "runs the plant: reads, writes state, sends commands",
        ),
        "viewer" => (
            strings(&[
                "identity:org:read",
                "identity:site:read",
                "state:scope:*:read",
                "telemetry:*:read",
                "alerts:read",
                "analytics:read",
            ]),
            grant(&[], &["#"]),
            "reads",
        ),
        "device" => (
            Vec::new(),
            BTreeMap::new(),
            "a device; its grants are its own",
        ),
        _ => return None,
    };
    Some(Role {
        name: name.to_owned(),
        description: description.to_owned(),
        perms,
        mqtt,
        builtin: true,
    })
}

/// The built-in role names.
pub const BUILTIN_ROLES: [&str; 5] = ["superadmin", "admin", "operator", "viewer", "device"];

/// A program's identity (client credentials).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceAccount {
    /// Client id (`sa-<uuid>`).
    pub client_id: String,
    /// Organisation.
    pub org: String,
    /// Display name.
    pub name: String,
    /// argon2id hash of the secret.
    pub secret_hash: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Inactive accounts get no tokens.
    pub active: bool,
}

/// A device on a site, with its own MQTT permissions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// Client id (`dev-<uuid>`), also its MQTT client id by convention.
    pub id: String,
    /// Organisation.
    pub org: String,
    /// The site it lives on.
    pub site: String,
    /// Display name.
    pub name: String,
    /// argon2id hash of the secret.
    pub secret_hash: String,
    /// Filters it may publish to.
    pub publish: Vec<String>,
    /// Filters it may subscribe to.
    pub subscribe: Vec<String>,
    /// Inactive devices get no tokens.
    pub active: bool,
    /// The SHA-256 fingerprint (64 lower-case hex digits) of the client
    /// certificate it may log in with instead of a token; mirrored in
    /// `plantd_device_certs` for its site's edge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_sha256: Option<String>,
}

impl Device {
    /// Its record in `plantd_device_certs` with the key, when it has a
    /// certificate (and both its site and fingerprint are valid).
    pub fn certificate_record(&self) -> Option<(String, plantd_shared::device_certs::DeviceCert)> {
        use plantd_shared::device_certs::{DeviceCert, Fingerprint, key};
        let fingerprint = Fingerprint::parse(self.certificate_sha256.as_deref()?).ok()?;
        let site = plantd_shared::subject::Site::new(self.site.as_str()).ok()?;
        Some((
            key(&site, &fingerprint),
            DeviceCert {
                device: self.id.clone(),
                org: self.org.clone(),
                site: self.site.clone(),
                publish: self.publish.clone(),
                subscribe: self.subscribe.clone(),
                active: self.active,
            },
        ))
    }
}

/// Client id → organisation and kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientIndex {
    /// Organisation.
    pub org: String,
    /// `service` or `device`.
    pub kind: String,
}

/// A refresh token (stored by the hash of its value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshToken {
    /// The rotation chain it belongs to.
    pub family: String,
    /// The user.
    pub user: String,
    /// Organisation.
    pub org: String,
    /// Expiry, ms since the epoch.
    pub expires_ms: u64,
    /// Set when it has been exchanged; a second use revokes the family.
    pub used: bool,
    /// Site audiences requested at login, kept across refreshes.
    #[serde(default)]
    pub sites: Vec<String>,
    /// When it was issued, ms (0 for tokens from before this field).
    #[serde(default)]
    pub issued_ms: u64,
    /// The user's [`User::sessions_epoch`] read when it was issued.
    #[serde(default)]
    pub epoch: u64,
}

/// A chain of refresh tokens from one login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Family {
    /// Revoked by logout or by reuse of a rotated token.
    pub revoked: bool,
    /// Why, for audits.
    #[serde(default)]
    pub reason: String,
}

/// A deleted site id and the organisation that owned it. The site's data
/// stays in the streams (telemetry, logs, commands, results, alerts — all
/// keyed by the site id), so the id is never registered to another
/// organisation: that one would read the old owner's history and receive
/// its queued commands (decision 0063).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredSite {
    /// The organisation that owned the site when it was deleted.
    pub org: String,
    /// When it was deleted, ms since the epoch.
    pub deleted_ms: u64,
}

/// The key of a deleted site id's [`RetiredSite`].
pub fn retired_site_key(site: &str) -> String {
    format!("retired_site.{site}")
}
