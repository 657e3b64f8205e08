//! The HTTP API. Every route answers JSON; errors are
//! `{"error", "message"}` with 400/401/403/404/409/413/429/503 as fits.
//!
//! | route | module |
//! |---|---|
//! | `POST /v1/auth/login`, `/refresh`, `/logout`, `/token`, `/password`; `GET /v1/auth/whoami` | [`auth`] |
//! | `/v1/orgs` | [`orgs`] |
//! | `GET /v1/audit`, `GET /v1/audit/verify` | [`audit`] |
//! | `/v1/users`, `/v1/users/{id}/roles`, `/v1/users/{id}/revoke` | [`users`] |
//! | `/v1/roles` | [`roles`] |
//! | `GET /v1/lockouts`, `DELETE /v1/lockouts/{id}` | [`lockouts`] |
//! | `GET /v1/keys`, `POST /v1/keys/rotate` | [`keys`] |
//! | `/v1/service-accounts`, `/v1/devices` (and `/{id}/revoke`) | [`clients`] |
//! | `/v1/sites`, `/v1/sites/{id}` | [`sites`] |
//! | `GET /.well-known/jwks.json`, `GET /healthz` | here |
//! | `GET /v1/identity/openapi.json` | [`crate::openapi`] |

pub mod audit;
pub mod auth;
pub mod clients;
pub mod json;
pub mod keys;
pub mod lockouts;
pub mod orgs;
pub mod privilege;
pub mod roles;
pub mod sites;
pub mod users;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post, put};

use crate::AppState;

/// Largest request body accepted (413 above).
pub const MAX_BODY: usize = 64 * 1024;

/// Every route, without state.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/.well-known/jwks.json", get(jwks))
        .route(crate::openapi::PATH, get(crate::openapi::serve))
        .route("/v1/auth/login", post(auth::login))
        .route("/v1/auth/refresh", post(auth::refresh))
        .route("/v1/auth/logout", post(auth::logout))
        .route("/v1/auth/whoami", get(auth::whoami))
        .route("/v1/auth/token", post(auth::token))
        .route("/v1/auth/password", post(auth::password))
        .route("/v1/orgs", get(orgs::list).post(orgs::create))
        .route("/v1/audit", get(audit::list))
        .route("/v1/audit/verify", get(audit::verify))
        .route("/v1/orgs/{id}", get(orgs::get_one))
        .route("/v1/users", get(users::list).post(users::create))
        .route(
            "/v1/users/{id}",
            get(users::get_one)
                .patch(users::update)
                .delete(users::delete),
        )
        .route("/v1/users/{id}/roles", put(users::set_roles))
        .route("/v1/users/{id}/revoke", post(users::revoke))
        .route("/v1/roles", get(roles::list).post(roles::create))
        .route(
            "/v1/roles/{name}",
            get(roles::get_one)
                .put(roles::replace)
                .delete(roles::delete),
        )
        .route(
            "/v1/service-accounts",
            get(clients::list_service_accounts).post(clients::create_service_account),
        )
        .route(
            "/v1/service-accounts/{id}",
            axum::routing::delete(clients::delete_service_account)
                .patch(clients::update_service_account),
        )
        .route(
            "/v1/service-accounts/{id}/revoke",
            post(clients::revoke_service_account),
        )
        .route(
            "/v1/devices",
            get(clients::list_devices).post(clients::create_device),
        )
        .route(
            "/v1/devices/{id}",
            axum::routing::delete(clients::delete_device).patch(clients::update_device),
        )
        .route("/v1/devices/{id}/revoke", post(clients::revoke_device))
        .route("/v1/keys", get(keys::list))
        .route("/v1/keys/rotate", post(keys::rotate))
        .route("/v1/lockouts", get(lockouts::list))
        .route("/v1/lockouts/{id}", axum::routing::delete(lockouts::clear))
        .route("/v1/sites", get(sites::list).post(sites::create))
        .route(
            "/v1/sites/{id}",
            get(sites::get_one)
                .patch(sites::update)
                .delete(sites::delete),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

async fn jwks(State(state): State<AppState>) -> Json<plantd_shared::jwt::JwkSet> {
    state.keys.refresh().await;
    Json(state.keys.jwks().clone())
}
