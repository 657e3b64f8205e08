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
pub mod alert_answers;
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
pub mod table;
pub mod telemetry;

use axum::Router;
use axum::extract::DefaultBodyLimit;
#[cfg(feature = "openapi")]
use utoipa::OpenApi as _;
#[cfg(feature = "openapi")]
use utoipa_axum::router::OpenApiRouter;
#[cfg(feature = "openapi")]
use utoipa_axum::routes;

use crate::AppState;
use table::{PlainRouter, plain_routes};

/// The one list of routes: `$router.routes($group!(handlers…))` for every
/// path, where `$group` is `utoipa_axum::routes` (route and document) or
/// [`table::plain_routes`] (route only).
macro_rules! api_routes {
    ($router:expr, $group:ident) => {
        $router
            .routes($group!(state::list_scopes, state::create_scope))
            .routes($group!(state::delete_scope))
            .routes($group!(state::list_keys))
            .routes($group!(
                state::get_value,
                state::put_value,
                state::delete_value
            ))
            .routes($group!(state::history))
            .routes($group!(commands::send, pending::list))
            .routes($group!(pending::cancel))
            .routes($group!(calls::call))
            .routes($group!(telemetry::last))
            .routes($group!(telemetry::history))
            .routes($group!(series::series))
            .routes($group!(aggregates::aggregates))
            .routes($group!(health::health))
            .routes($group!(logs::logs))
            .routes($group!(logs::stats))
            .routes($group!(logs::aggregates))
            .routes($group!(alerts::list_rules, alerts::create_rule))
            .routes($group!(
                alerts::get_rule,
                alerts::put_rule,
                alerts::delete_rule
            ))
            .routes($group!(alerts::list_alerts))
            .routes($group!(alerts::history))
            .routes($group!(alerts::ack))
            .routes($group!(alerts::list_silences, alerts::create_silence))
            .routes($group!(alerts::get_silence, alerts::delete_silence))
            .routes($group!(channels::list_channels))
            .routes($group!(
                channels::get_channel,
                channels::put_channel,
                channels::delete_channel
            ))
            .routes($group!(channels::test_channel))
            .routes($group!(analytics::list_rules))
            .routes($group!(
                analytics::get_rule,
                analytics::put_rule,
                analytics::delete_rule
            ))
            .routes($group!(crate::openapi::serve))
    };
}

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
    api().merge(healthz_router())
}

/// `/healthz` alone.
#[cfg(feature = "openapi")]
fn healthz_router() -> Router<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .split_for_parts()
        .0
}

/// `/healthz` alone.
#[cfg(not(feature = "openapi"))]
fn healthz_router() -> Router<AppState> {
    PlainRouter::default()
        .routes(plain_routes!(healthz))
        .into_router()
}

/// Every route but `/healthz`, for mounting beside another function that
/// serves its own (axum panics on a route merged twice).
pub fn api() -> Router<AppState> {
    #[cfg(feature = "openapi")]
    let router = documented_api().split_for_parts().0;
    #[cfg(not(feature = "openapi"))]
    let router = plain_api().into_router();
    router.layer(DefaultBodyLimit::max(MAX_BODY))
}

/// Every route with its documentation: the one list both the router and
/// `/openapi.json` are made from.
#[cfg(feature = "openapi")]
pub fn documented() -> OpenApiRouter<AppState> {
    documented_api().routes(routes!(healthz))
}

/// [`documented`] without `/healthz`.
#[cfg(feature = "openapi")]
fn documented_api() -> OpenApiRouter<AppState> {
    api_routes!(
        OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi()),
        routes
    )
    .routes(routes!(live::socket))
}

/// Every route but `/healthz`, registered from the same list without the
/// documentation ([`table`]; what the Lambda bootstrap serves). `/v1/ws`
/// only with a local server: behind API Gateway the HTTP API cannot
/// upgrade a request — sockets go to the WebSocket API, its own function —
/// so the REST bootstrap leaves the socket's code out.
pub fn plain_api() -> PlainRouter {
    let router = api_routes!(PlainRouter::default(), plain_routes);
    #[cfg(feature = "local-server")]
    let router = router.routes(plain_routes!(live::socket));
    router
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

    /// The plain router (the Lambda bootstrap's) registers exactly the
    /// operations the document lists, under the same methods.
    #[cfg(feature = "openapi")]
    #[test]
    fn the_plain_router_routes_every_documented_operation() {
        use utoipa::openapi::HttpMethod;
        let name = |m: &HttpMethod| {
            serde_json::to_value(m)
                .ok()
                .and_then(|v| v.as_str().map(str::to_lowercase))
                .unwrap_or_default()
        };
        let mut plain: Vec<(String, String)> = super::plain_api()
            .operations()
            .iter()
            .map(|(m, path)| (name(m), path.replace("{*", "{")))
            .collect();
        plain.push(("get".into(), "/healthz".into()));
        plain.sort();
        let doc = serde_json::to_value(crate::openapi::document()).expect("document");
        let mut documented: Vec<(String, String)> = doc["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .expect("path item")
                    .keys()
                    .map(move |m| (m.clone(), path.clone()))
            })
            .collect();
        documented.sort();
        assert_eq!(plain, documented);
    }
}
