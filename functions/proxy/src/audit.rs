//! The audit trail in the proxy: where a request came from ([`Origin`]),
//! and the middleware that records every refused request
//! ([`plantd_shared::http::denials::record_denials`], through [`AuditedApi`](plantd_shared::http::denials::AuditedApi)). The records go to `PLANTD_AUDIT` through
//! [`plantd_shared::audit`], from local servers and Lambda alike.
//!
//! | what | recorded by | org chain |
//! |---|---|---|
//! | `command.send` (REST, `/v1/ws`, AWS WebSocket) | `routes::commands::publish` | the site's owner |
//! | `service.call` | `routes::calls` | the site's owner |
//! | `state.scope_create`, `state.scope_delete` | `routes::state` | the caller's organisation |
//! | `command.cancel` | `routes::pending` | the site's owner |
//! | any `403` | `plantd_shared::http::denials::record_denials` (`access.denied`, target `<METHOD> <path>`) | the caller's organisation |

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use plantd_shared::audit::{Action, Event, Outcome};
use plantd_shared::http::request_id;
use plantd_shared::http::source::{self, Source};

use crate::auth::Caller;
use crate::{AppError, AppState};

/// Where a request (or a WebSocket frame) came from: the client's address
/// and the request id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    /// The client's address, when known.
    pub source: Option<String>,
    /// The request id (`x-request-id`, or API Gateway's request id on the
    /// AWS WebSocket).
    pub request_id: Option<String>,
}

impl Origin {
    /// The origin of an HTTP request, under
    /// [`plantd_shared::http::source`]'s rules with the proxy's trusted
    /// proxies.
    pub fn of(parts: &Parts, state: &AppState) -> Self {
        let source = match source::source(parts, &state.settings.trusted_proxies) {
            Source::Addr(ip) => Some(ip.to_string()),
            Source::Unknown => None,
        };
        Self {
            source,
            request_id: Some(request_id::of(parts).0),
        }
    }

    /// An audit event for `action` in `org`'s chain by `caller`, from here.
    pub fn event(&self, action: Action, org: &str, caller: &Caller) -> Event {
        Event::new(action, org)
            .by(&caller.claims)
            .origin(self.source.clone(), self.request_id.clone())
    }

    /// Records what `caller` did ([`Act`]), from here.
    pub async fn record(&self, state: &AppState, caller: &Caller, act: Act<'_>) {
        let org = if act.org.is_empty() {
            caller.org()
        } else {
            act.org
        };
        let mut event = self
            .event(act.action, org, caller)
            .target(act.target)
            .outcome(act.outcome);
        event.detail = act.detail;
        state.audit.record(event).await;
    }
}

/// What a caller did, for [`Origin::record`].
#[derive(Debug, Clone)]
pub struct Act<'a> {
    /// What.
    pub action: Action,
    /// The organisation whose chain records it; empty: the caller's.
    pub org: &'a str,
    /// On what (`<kind>:<id>`).
    pub target: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Anything else.
    pub detail: Option<serde_json::Value>,
}

impl<'a> Act<'a> {
    /// A successful `action` on `target`, in `org`'s chain.
    pub fn new(action: Action, org: &'a str, target: String) -> Self {
        Self {
            action,
            org,
            target,
            outcome: Outcome::Success,
            detail: None,
        }
    }

    /// Ended with `outcome`.
    #[must_use]
    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    /// With `detail`.
    #[must_use]
    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
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
