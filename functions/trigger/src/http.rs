//! The routes a host process mounts to expose a trigger: `GET /metrics`
//! (Prometheus text) and `GET /healthz/trigger` (JSON [`crate::Health`];
//! 200 when every consumer is idle or working, 503 when one is stuck or
//! its lag cannot be read).

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::metrics::Status;

/// The Prometheus text format's content type.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `/metrics` and `/healthz/trigger` over `status`.
pub fn routes(status: Status) -> Router {
    let for_health = status.clone();
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let status = status.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)],
                        status.prometheus(),
                    )
                }
            }),
        )
        .route(
            "/healthz/trigger",
            get(move || {
                let status = for_health.clone();
                async move { health(&status) }
            }),
        )
}

fn health(status: &Status) -> Response {
    let h = status.health();
    let code = if h.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(h)).into_response()
}
