//! The HTTP API. Every route but `/healthz` and `/openapi.json` needs a
//! bearer token; errors are `{"error", "message"}` with
//! 400/401/403/404/409/413/503/504 as fits.
//!
//! | route | module |
//! |---|---|
//! | `/v1/state/scopes`, `/v1/state/{scope}`, `/v1/state/{scope}/{key}`, `…/history` | [`state`] |
//! | `POST /v1/sites/{site}/commands` | [`commands`] |
//! | `GET /v1/sites/{site}/commands?state=pending`, `DELETE /v1/sites/{site}/commands/{id}` | [`pending`] |
//! | `POST /v1/sites/{site}/call/{*topic}` | [`calls`] |
//! | `GET /v1/sites/{site}/last`, `GET /v1/sites/{site}/history` | [`telemetry`] |
//! | `GET /v1/sites/{site}/series` (downsampled for charts) | [`series`] |
//! | `GET /v1/sites/{site}/aggregates` (analytics results) | [`aggregates`] |
//! | `GET /v1/sites/{site}/health` (edge connected, uplink lag, backlog, alerts firing) | [`health`] |
//! | `GET /v1/ws` (WebSocket: live subscriptions, commands, log tails) | [`live`] |
//! | `GET /v1/logs`, `GET /v1/logs/stats`, `GET /v1/logs/aggregates` | [`logs`] |
//! | `/v1/alert-rules`, `/v1/alerts`, `/v1/alerts/{id}/history`, `/v1/alerts/{id}/ack`, `/v1/silences` | [`alerts`] |
//! | `/v1/alert-channels`, `/v1/alert-channels/{name}`, `POST /v1/alert-channels/{name}/test` | [`channels`] |
//! | `/v1/analytics/rules`, `/v1/analytics/rules/{name}` | [`analytics`] |
//! | `GET /openapi.json` | [`crate::openapi`] |
//! | `GET /healthz` | here |

pub mod aggregates;
pub mod alerts;
pub mod analytics;
pub mod calls;
pub mod channels;
pub mod commands;
pub mod health;
pub mod live;
pub mod logs;
pub mod pending;
pub mod resume;
pub mod series;
pub mod site;
pub mod socket_auth;
pub mod state;
pub mod telemetry;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;

/// Largest request body accepted (413 above): a state value or a command
/// payload. NATS's default max payload is 1 MiB; stay under it with room
/// for headers.
pub const MAX_BODY: usize = 512 * 1024;

/// `GET /healthz`.
#[utoipa::path(get, path = "/healthz", tag = "meta",
    responses((status = 200, description = "`ok`", content_type = "text/plain")))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// Every route, without state.
pub fn router() -> Router<AppState> {
    api().merge(
        OpenApiRouter::new()
            .routes(routes!(healthz))
            .split_for_parts()
            .0,
    )
}

/// Every route but `/healthz`, for mounting beside another function that
/// serves its own (axum panics on a route merged twice).
pub fn api() -> Router<AppState> {
    let (router, _) = documented_api().split_for_parts();
    router.layer(DefaultBodyLimit::max(MAX_BODY))
}

/// Every route with its documentation: the one list both the router and
/// `/openapi.json` are made from.
pub fn documented() -> OpenApiRouter<AppState> {
    documented_api().routes(routes!(healthz))
}

/// [`documented`] without `/healthz`.
fn documented_api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi())
        .routes(routes!(state::list_scopes, state::create_scope))
        .routes(routes!(state::delete_scope))
        .routes(routes!(state::list_keys))
        .routes(routes!(
            state::get_value,
            state::put_value,
            state::delete_value
        ))
        .routes(routes!(state::history))
        .routes(routes!(commands::send, pending::list))
        .routes(routes!(pending::cancel))
        .routes(routes!(calls::call))
        .routes(routes!(telemetry::last))
        .routes(routes!(telemetry::history))
        .routes(routes!(series::series))
        .routes(routes!(aggregates::aggregates))
        .routes(routes!(health::health))
        .routes(routes!(live::socket))
        .routes(routes!(logs::logs))
        .routes(routes!(logs::stats))
        .routes(routes!(logs::aggregates))
        .routes(routes!(alerts::list_rules, alerts::create_rule))
        .routes(routes!(
            alerts::get_rule,
            alerts::put_rule,
            alerts::delete_rule
        ))
        .routes(routes!(alerts::list_alerts))
        .routes(routes!(alerts::history))
        .routes(routes!(alerts::ack))
        .routes(routes!(alerts::list_silences, alerts::create_silence))
        .routes(routes!(alerts::get_silence, alerts::delete_silence))
        .routes(routes!(channels::list_channels))
        .routes(routes!(
            channels::get_channel,
            channels::put_channel,
            channels::delete_channel
        ))
        .routes(routes!(channels::test_channel))
        .routes(routes!(analytics::list_rules))
        .routes(routes!(
            analytics::get_rule,
            analytics::put_rule,
            analytics::delete_rule
        ))
        .routes(routes!(crate::openapi::serve))
}

#[cfg(test)]
mod tests {
    /// No route bypasses the document: everything is registered with
    /// `routes!` (which documents it), never with axum's plain route
    /// method.
    #[test]
    fn every_route_is_registered_through_the_document() {
        let source = include_str!("mod.rs");
        let plain = [".", "route("].concat();
        assert!(
            !source.contains(&plain),
            "register routes with routes!(...) so /openapi.json lists them"
        );
    }
}
