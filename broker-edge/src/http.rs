//! The HTTP side: `/healthz` (alive), `/readyz` (able to do its job:
//! journal writable, uplink making progress) and Prometheus `/metrics`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;

/// Readiness: `Ok` or why not.
pub type ReadyFn = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;
/// More Prometheus text to append to `/metrics`.
pub type MetricsFn = Arc<dyn Fn() -> String + Send + Sync>;

/// What parts outside the broker add to its HTTP endpoint.
#[derive(Clone, Default)]
pub struct HttpExtras {
    /// Consulted by `/readyz` (absent: always ready).
    pub ready: Option<ReadyFn>,
    /// Appended to `/metrics`.
    pub metrics: Option<MetricsFn>,
}

impl std::fmt::Debug for HttpExtras {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpExtras")
            .field("ready", &self.ready.is_some())
            .field("metrics", &self.metrics.is_some())
            .finish()
    }
}

#[derive(Clone)]
struct HttpState {
    metrics: Arc<Metrics>,
    extras: HttpExtras,
}

/// The HTTP routes over the broker's metrics.
pub fn app(metrics: Arc<Metrics>) -> Router {
    app_with(metrics, HttpExtras::default())
}

/// The HTTP routes, with readiness and metrics from other parts.
pub fn app_with(metrics: Arc<Metrics>, extras: HttpExtras) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(HttpState { metrics, extras })
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<HttpState>) -> (axum::http::StatusCode, String) {
    match s.extras.ready.as_ref().map(|f| f()) {
        None | Some(Ok(())) => (axum::http::StatusCode::OK, "ready\n".into()),
        Some(Err(why)) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn metrics_text(State(s): State<HttpState>) -> impl IntoResponse {
    let mut text = s.metrics.render();
    if let Some(f) = &s.extras.metrics {
        text.push_str(&f());
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    #[tokio::test]
    async fn healthz_and_metrics_answer() {
        let m = Arc::new(Metrics::default());
        let r = app(m.clone())
            .oneshot(
                Request::get("/healthz")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        assert_eq!(r.status(), 200);
        let r = app(m)
            .oneshot(
                Request::get("/metrics")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        assert_eq!(r.status(), 200);
    }
}
