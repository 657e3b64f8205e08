//! Recording refused requests in the audit trail, the same way in every
//! API: after a `403`, an `access.denied` record by the caller (when its
//! token is valid — the API's own check decides) with target
//! `<METHOD> <path>`, outcome `denied`, the client's address and the
//! request id, in the caller's organisation's chain. Handlers need not
//! record their own refusals.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;

use super::caller::Caller;
use super::request_id;
use super::source::{self, Source, TrustedProxies};
use crate::audit::{Action, Auditor, Event, Outcome};

/// An API whose refusals are audited: its state gives the auditor and the
/// proxies whose `X-Forwarded-For` it believes; its [`Caller`] extractor
/// verifies tokens its own way.
pub trait AuditedApi: Clone + Send + Sync + 'static {
    /// Where records go.
    fn auditor(&self) -> &Auditor;
    /// Proxies trusted to name the client ([`source::source`]).
    fn trusted_proxies(&self) -> &TrustedProxies;
}

/// Middleware (`axum::middleware::from_fn_with_state`): after a `403`,
/// records `access.denied` by the caller, when its token is valid.
pub async fn record_denials<S>(State(state): State<S>, req: Request, next: Next) -> Response
where
    S: AuditedApi,
    Caller: FromRequestParts<S>,
{
    let (parts, body) = req.into_parts();
    let source = match source::source(&parts, state.trusted_proxies()) {
        Source::Addr(ip) => Some(ip.to_string()),
        Source::Unknown => None,
    };
    let request_id = request_id::of(&parts).0;
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
        state
            .auditor()
            .record(
                Event::new(Action::AccessDenied, caller.org())
                    .by(&caller.claims)
                    .origin(source, Some(request_id))
                    .target(target)
                    .outcome(Outcome::Denied),
            )
            .await;
    }
    response
}
