//! The HTTP API. Every route but `/healthz` needs a bearer token; errors
//! are `{"error", "message"}` with 400/401/403/404/409/413/503/504 as fits.
//!
//! | route | module |
//! |---|---|
//! | `/v1/state/scopes`, `/v1/state/{scope}`, `/v1/state/{scope}/{key}`, `…/history` | [`state`] |
//! | `POST /v1/sites/{site}/commands` | [`commands`] |
//! | `POST /v1/sites/{site}/call/{*topic}` | [`calls`] |
//! | `GET /v1/sites/{site}/last`, `GET /v1/sites/{site}/history` | [`telemetry`] |
//! | `GET /healthz` | here |

pub mod calls;
pub mod commands;
pub mod site;
pub mod state;
pub mod telemetry;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};

use crate::AppState;

/// Largest request body accepted (413 above): a state value or a command
/// payload. NATS's default max payload is 1 MiB; stay under it with room
/// for headers.
pub const MAX_BODY: usize = 512 * 1024;

/// Every route, without state.
pub fn router() -> Router<AppState> {
    api().route("/healthz", get(|| async { "ok" }))
}

/// Every route but `/healthz`, for mounting beside another function that
/// serves its own (axum panics on a route merged twice).
pub fn api() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/state/scopes",
            get(state::list_scopes).post(state::create_scope),
        )
        .route("/v1/state/scopes/{scope}", delete(state::delete_scope))
        .route("/v1/state/{scope}", get(state::list_keys))
        .route(
            "/v1/state/{scope}/{key}",
            get(state::get_value)
                .put(state::put_value)
                .delete(state::delete_value),
        )
        .route("/v1/state/{scope}/{key}/history", get(state::history))
        .route("/v1/sites/{site}/commands", post(commands::send))
        .route("/v1/sites/{site}/call/{*topic}", post(calls::call))
        .route("/v1/sites/{site}/last", get(telemetry::last))
        .route("/v1/sites/{site}/history", get(telemetry::history))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}
