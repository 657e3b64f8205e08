//! The audit trail in identity: where a request came from ([`Origin`]),
//! and the middleware that records every refused request
//! ([`plantd_shared::http::denials::record_denials`], through [`AuditedApi`](plantd_shared::http::denials::AuditedApi)). Handlers record what they did themselves, with
//! `state.audit.record(origin.event(Action::…, org).by(&caller.claims)…)`;
//! the records go to `PLANTD_AUDIT` through [`plantd_shared::audit`].
//!
//! | what | recorded by | org chain |
//! |---|---|---|
//! | logins (success, failure, throttled), refresh, logout, client-credential tokens | `routes::auth` | the account's organisation; the bootstrap organisation for unknown accounts |
//! | creating, changing, deleting organisations, sites, users, roles, devices, service accounts; revocations; lockout clearing; key rotation | the route | the organisation acted on |
//! | any `403` | `plantd_shared::http::denials::record_denials` (`access.denied`, target `<METHOD> <path>`) | the caller's organisation |

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use plantd_shared::audit::{Action, Event};
use plantd_shared::http::request_id::{self, RequestId};
use plantd_shared::http::source::{self, Source};

use crate::auth::Caller;
use crate::{AppError, AppState};

/// Where a request came from: the client's address (under
/// [`plantd_shared::http::source`]'s rules) and the request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The client's address.
    pub source: Source,
    /// The request id (`x-request-id`).
    pub request_id: RequestId,
}

impl Origin {
    /// The origin of a request.
    pub fn of(parts: &Parts, state: &AppState) -> Self {
        Self {
            source: source::source(parts, &state.settings.trusted_proxies),
            request_id: request_id::of(parts),
        }
    }

    /// An audit event for `action` in `org`'s chain, from here.
    pub fn event(&self, action: Action, org: &str) -> Event {
        let source = match self.source {
            Source::Addr(ip) => Some(ip.to_string()),
            Source::Unknown => None,
        };
        Event::new(action, org).origin(source, Some(self.request_id.0.clone()))
    }
}

impl Origin {
    /// Records a successful `action` by `caller` on `target` in `org`'s
    /// chain (see [`Origin::event`] for anything more).
    pub async fn record(
        &self,
        state: &AppState,
        caller: &Caller,
        action: Action,
        org: &str,
        target: impl Into<String>,
    ) {
        state
            .audit
            .record(self.event(action, org).by(&caller.claims).target(target))
            .await;
    }
}

impl Origin {
    /// Records a successful `action` by `caller` on `target` in `org`'s
    /// chain, with `detail`.
    pub async fn record_detail(
        &self,
        state: &AppState,
        caller: &Caller,
        action: Action,
        org: &str,
        target: impl Into<String>,
        detail: serde_json::Value,
    ) {
        state
            .audit
            .record(
                self.event(action, org)
                    .by(&caller.claims)
                    .target(target)
                    .detail(detail),
            )
            .await;
    }

    /// Records `auth.revoke` by `caller` of `count` live tokens of `target`
    /// in `org`, for `reason`.
    pub async fn revoked(
        &self,
        state: &AppState,
        caller: &Caller,
        org: &str,
        target: impl Into<String>,
        reason: crate::revocation::Reason,
        count: usize,
    ) {
        let detail = serde_json::json!({ "reason": reason.as_str(), "tokens": count });
        self.record_detail(state, caller, Action::Revoke, org, target, detail)
            .await;
    }
}

impl FromRequestParts<AppState> for Origin {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        Ok(Self::of(parts, state))
    }
}

impl plantd_shared::http::denials::AuditedApi for AppState {
    fn auditor(&self) -> &plantd_shared::audit::Auditor {
        &self.audit
    }

    fn trusted_proxies(&self) -> &plantd_shared::http::source::TrustedProxies {
        &self.settings.trusted_proxies
    }
}
