//! The audit trail in the proxy: where a request came from ([`Origin`]),
//! and the middleware that records every refused request
//! ([`record_denials`]). The records go to `PLANTD_AUDIT` through
//! [`plantd_shared::audit`], from local servers and Lambda alike.
//!
//! | what | recorded by | org chain |
//! |---|---|---|
//! | `command.send` (REST, `/v1/ws`, AWS WebSocket) | `routes::commands::publish` | the site's owner |
//! | `service.call` | `routes::calls` | the site's owner |
//! | `state.scope_create`, `state.scope_delete` | `routes::state` | the caller's organisation |
//! | `command.cancel` | `routes::pending` | the site's owner |
//! | any `403` | [`record_denials`] (`access.denied`, target `<METHOD> <path>`) | the caller's organisation |

use axum::extract::{FromRequestParts, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
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

    /// Records `action` by `caller` on `target` in `org`'s chain (the
    /// caller's own when `org` is empty), with `outcome` and `detail`.
    pub async fn record(
        &self,
        state: &AppState,
        caller: &Caller,
        action: Action,
        org: &str,
        target: impl Into<String>,
        outcome: Outcome,
        detail: Option<serde_json::Value>,
    ) {
        let org = if org.is_empty() { caller.org() } else { org };
        let mut event = self
            .event(action, org, caller)
            .target(target)
            .outcome(outcome);
        event.detail = detail;
        state.audit.record(event).await;
    }
}

impl FromRequestParts<AppState> for Origin {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        Ok(Self::of(parts, state))
    }
}

/// Middleware: after a `403`, records `access.denied` by the caller (when
/// its token is valid) with target `<METHOD> <path>`, outcome `denied`.
pub async fn record_denials(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let origin = Origin::of(&parts, &state);
    let target = format!("{} {}", parts.method, parts.uri.path());
    let auth = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .cloned();
    let response = next.run(Request::from_parts(parts, body)).await;
    if response.status() != StatusCode::FORBIDDEN {
        return response;
    }
    let Some(auth) = auth else { return response };
    // Who it was, by the same check the handler made.
    let mut probe = Request::new(());
    probe
        .headers_mut()
        .insert(axum::http::header::AUTHORIZATION, auth);
    let (mut parts, ()) = probe.into_parts();
    if let Ok(caller) = Caller::from_request_parts(&mut parts, &state).await {
        let action = Action::AccessDenied;
        origin
            .record(&state, &caller, action, "", target, Outcome::Denied, None)
            .await;
    }
    response
}
