//! The audit record and what callers report: [`Event`] (built by the
//! handler that did something), [`Record`] (what is stored), [`Action`],
//! [`ActorKind`], [`Outcome`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::AuditError;
use crate::claims::{Claims, PrincipalKind};

/// Who acted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// A person (password login).
    User,
    /// A service account (client credentials).
    Service,
    /// A device.
    Device,
    /// Nobody authenticated (a failed login, an unknown client id).
    Anonymous,
    /// plantd itself (bootstrap, housekeeping).
    System,
}

impl From<PrincipalKind> for ActorKind {
    fn from(k: PrincipalKind) -> Self {
        match k {
            PrincipalKind::User => Self::User,
            PrincipalKind::Service => Self::Service,
            PrincipalKind::Device => Self::Device,
        }
    }
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Done.
    Success,
    /// Tried and failed (wrong password, conflict, invalid input).
    Failure,
    /// Refused: the caller lacks the permission or the organisation.
    Denied,
}

macro_rules! actions {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, )*) => {
        /// What was done. Stored as its dotted name ([`Action::as_str`]);
        /// records keep the name as text, so a reader understands records
        /// written by a newer plantd with actions it does not know.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Action {
            $( $(#[$doc])* $variant, )*
        }

        impl Action {
            /// Every action, in a stable order.
            pub const ALL: &'static [Action] = &[ $( Action::$variant, )* ];

            /// The dotted name, e.g. `auth.login`.
            pub fn as_str(self) -> &'static str {
                match self { $( Action::$variant => $name, )* }
            }
        }

        impl FromStr for Action {
            type Err = AuditError;
            fn from_str(s: &str) -> Result<Self, AuditError> {
                match s {
                    $( $name => Ok(Action::$variant), )*
                    _ => Err(AuditError::UnknownAction(s.to_owned())),
                }
            }
        }
    };
}

actions! {
    /// A password login (success, or failure with the reason in `detail`).
    Login = "auth.login",
    /// An account or source was locked after repeated failed logins.
    Lockout = "auth.lockout",
    /// A lockout was cleared by an administrator.
    LockoutClear = "auth.lockout_clear",
    /// A refresh token was exchanged.
    Refresh = "auth.refresh",
    /// A logout (the access token and optionally a refresh family revoked).
    Logout = "auth.logout",
    /// A token was issued with client credentials (service account or
    /// device; which in `actor_kind`).
    TokenIssue = "auth.token",
    /// Tokens were revoked ("log out everywhere", deactivation, role
    /// removal, refresh reuse).
    Revoke = "auth.revoke",
    /// A user changed their password.
    PasswordChange = "auth.password",
    /// The signing key was rotated.
    KeyRotate = "auth.key_rotate",
    /// An organisation was created.
    OrgCreate = "org.create",
    /// An organisation was updated.
    OrgUpdate = "org.update",
    /// An organisation was deleted.
    OrgDelete = "org.delete",
    /// A site was registered.
    SiteCreate = "site.create",
    /// A site was updated.
    SiteUpdate = "site.update",
    /// A site was deleted.
    SiteDelete = "site.delete",
    /// The bootstrap superadmin reached another organisation's site: a
    /// token carrying its audience, or a read or act through the API (the
    /// door in `detail.via`). Recorded in the owner's chain, whatever the
    /// request then did.
    SiteCrossOrg = "site.cross_org",
    /// A user was created.
    UserCreate = "user.create",
    /// A user was updated (active flag, attributes, roles).
    UserUpdate = "user.update",
    /// A user was deleted.
    UserDelete = "user.delete",
    /// A role was created.
    RoleCreate = "role.create",
    /// A role was replaced.
    RoleUpdate = "role.update",
    /// A role was deleted.
    RoleDelete = "role.delete",
    /// A device was registered.
    DeviceCreate = "device.create",
    /// A device was updated.
    DeviceUpdate = "device.update",
    /// A device was deleted.
    DeviceDelete = "device.delete",
    /// A service account was created.
    ServiceAccountCreate = "service_account.create",
    /// A service account was updated.
    ServiceAccountUpdate = "service_account.update",
    /// A service account was deleted.
    ServiceAccountDelete = "service_account.delete",
    /// A state scope was created.
    ScopeCreate = "state.scope_create",
    /// A state scope was deleted.
    ScopeDelete = "state.scope_delete",
    /// A command was sent to a site.
    CommandSend = "command.send",
    /// A pending command was cancelled.
    CommandCancel = "command.cancel",
    /// A service call was made to a site.
    ServiceCall = "service.call",
    /// An alert rule was created.
    AlertRuleCreate = "alert.rule_create",
    /// An alert rule was replaced.
    AlertRuleUpdate = "alert.rule_update",
    /// An alert rule was deleted.
    AlertRuleDelete = "alert.rule_delete",
    /// A silence was created.
    SilenceCreate = "alert.silence_create",
    /// A silence was deleted.
    SilenceDelete = "alert.silence_delete",
    /// A firing alert was acknowledged.
    AlertAck = "alert.ack",
    /// A notification channel was created or replaced (`detail.created`).
    AlertChannelPut = "alert.channel_put",
    /// A notification channel was deleted.
    AlertChannelDelete = "alert.channel_delete",
    /// A test notification was sent on a channel (failure: the channel
    /// refused it, `detail.error`).
    AlertChannelTest = "alert.channel_test",
    /// An analytics rule was created.
    AnalyticsRuleCreate = "analytics.rule_create",
    /// An analytics rule was replaced.
    AnalyticsRuleUpdate = "analytics.rule_update",
    /// An analytics rule was deleted.
    AnalyticsRuleDelete = "analytics.rule_delete",
    /// A request was refused for lack of a permission or organisation
    /// (any route; the route in `target`).
    AccessDenied = "access.denied",
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a caller reports: an [`Auditor`](crate::audit::Auditor) turns it into a [`Record`] (adding
/// `id`, `n`, `time` and `prev`). Build with [`Event::new`] and the
/// builder methods.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The organisation whose chain the record joins: the one acted on.
    pub org: String,
    /// Who acted: a user, service account or device id; for anonymous
    /// actors what they claimed to be, or empty.
    pub actor: String,
    /// What kind of actor.
    pub actor_kind: ActorKind,
    /// The actor's own organisation, when it is not `org` (the superadmin
    /// acting for another organisation).
    pub actor_org: Option<String>,
    /// What was done.
    pub action: Action,
    /// What it was done to, `<kind>:<id>` (`user:<id>`, `site:local`,
    /// `command:local/valve/7/set`, ...).
    pub target: String,
    /// How it ended.
    pub outcome: Outcome,
    /// The client's address, when known.
    pub source: Option<String>,
    /// The request id (`x-request-id`).
    pub request_id: Option<String>,
    /// Anything else worth keeping (a reason, the roles granted, ...).
    /// Never secrets.
    pub detail: Option<serde_json::Value>,
}

impl Event {
    /// A successful `action` in `org` by nobody in particular, on nothing.
    pub fn new(action: Action, org: impl Into<String>) -> Self {
        Self {
            org: org.into(),
            actor: String::new(),
            actor_kind: ActorKind::Anonymous,
            actor_org: None,
            action,
            target: String::new(),
            outcome: Outcome::Success,
            source: None,
            request_id: None,
            detail: None,
        }
    }

    /// Acted by `actor` of `kind`.
    #[must_use]
    pub fn actor(mut self, kind: ActorKind, actor: impl Into<String>) -> Self {
        self.actor_kind = kind;
        self.actor = actor.into();
        self
    }

    /// Acted by the holder of `claims` (its subject, kind and, when it
    /// differs from the record's organisation, its organisation).
    #[must_use]
    pub fn by(mut self, claims: &Claims) -> Self {
        self.actor = claims.sub.clone();
        self.actor_kind = claims.kind.into();
        self.actor_org = (claims.org != self.org).then(|| claims.org.clone());
        self
    }

    /// On `target` (`<kind>:<id>`).
    #[must_use]
    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = target.into();
        self
    }

    /// Ended with `outcome`.
    #[must_use]
    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    /// From `source`, as request `request_id`.
    #[must_use]
    pub fn origin(mut self, source: Option<String>, request_id: Option<String>) -> Self {
        self.source = source;
        self.request_id = request_id;
        self
    }

    /// With `detail`.
    #[must_use]
    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }
}

/// One audit record as stored (see the module documentation for the
/// field order and the hash).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Format version ([`FORMAT_VERSION`](crate::audit::FORMAT_VERSION)).
    pub v: u32,
    /// Unique id (32 hex digits), also the message's `Nats-Msg-Id`.
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
    /// What was done ([`Action::as_str`]).
    pub action: String,
    /// What it was done to.
    pub target: String,
    /// How it ended.
    pub outcome: Outcome,
    /// The client's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The request id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Anything else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
    /// The hash of the previous record of the organisation, or [`GENESIS`](crate::audit::GENESIS).
    pub prev: String,
}

impl Record {
    /// Milliseconds since the epoch of [`Record::time`] (0 if unreadable).
    pub fn time_ms(&self) -> u64 {
        crate::headers::parse_time(&self.time).unwrap_or(0)
    }
}
