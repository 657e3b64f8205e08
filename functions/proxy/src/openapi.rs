//! The OpenAPI document at `/openapi.json`, generated from the code.
//!
//! Every route is registered through `utoipa_axum`'s `routes!` in
//! [`crate::routes`], which takes each handler's method and path from its
//! `#[utoipa::path]` annotation and adds it to the router *and* the
//! document from that one source; `src/routes/mod.rs` registers nothing
//! with a plain `.route(...)` (a unit test there checks), and the
//! `openapi` integration test requests every documented operation through
//! the router.
//!
//! Without the `openapi` feature (the Lambda bootstrap, decision 0047)
//! nothing is generated: `/openapi.json` serves `functions/proxy/openapi.json`,
//! the committed output of `plantd-proxy --print-openapi`. The
//! `committed_document_is_current` test (and a step of scripts/test)
//! fails when it differs from what the code generates; regenerate it with
//!
//! ```text
//! cargo run -p plantd-proxy -- --print-openapi > functions/proxy/openapi.json
//! ```

#[cfg(feature = "openapi")]
use std::sync::LazyLock;

use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
#[cfg(feature = "openapi")]
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
#[cfg(feature = "openapi")]
use utoipa::{Modify, OpenApi};

/// The JSON body of every error.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code (`bad_request`, `forbidden`, …).
    pub error: String,
    /// What went wrong, for people.
    pub message: String,
}

/// Adds the bearer-token scheme the operations name.
#[cfg(feature = "openapi")]
struct Bearer;

#[cfg(feature = "openapi")]
impl Modify for Bearer {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The document's frame: title, schemes, shared schemas. Paths are added
/// by the router ([`crate::routes::documented`]).
#[cfg(feature = "openapi")]
#[derive(OpenApi)]
#[openapi(
    info(
        title = "plantd proxy API",
        description = "Scoped state, telemetry, commands, service calls and live data. See docs/api.md."
    ),
    components(schemas(ErrorBody, crate::routes::telemetry::Order, crate::routes::series::Agg)),
    modifiers(&Bearer),
    tags(
        (name = "state", description = "Scoped state on JetStream KV"),
        (name = "sites", description = "Telemetry, commands and service calls of a site"),
        (name = "live", description = "Live data over WebSocket"),
        (name = "logs", description = "Log records, counts over time and per-minute aggregates"),
        (name = "alerts", description = "Alert rules, alerts, acknowledgements, silences and notification channels"),
        (name = "analytics", description = "Analytics rules (SQL or JSON; in the cloud or at the edge) and their companion alerts"),
        (name = "meta", description = "Health and this document")
    )
)]
pub struct ApiDoc;

/// The document. axum's catch-all `{*topic}` is written `{topic}`, as
/// OpenAPI path templates have no catch-all form.
#[cfg(feature = "openapi")]
pub fn document() -> utoipa::openapi::OpenApi {
    let mut api = crate::routes::documented().split_for_parts().1;
    let paths = std::mem::take(&mut api.paths.paths);
    api.paths.paths = paths
        .into_iter()
        .map(|(path, item)| (path.replace("{*", "{"), item))
        .collect();
    api
}

/// The document as JSON, built once.
#[cfg(feature = "openapi")]
static JSON: LazyLock<String> = LazyLock::new(|| {
    document()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"internal\",\"message\":\"{e}\"}}"))
});

/// The document as pretty-printed JSON, exactly what `/openapi.json`
/// serves (`plantd-proxy --print-openapi` prints it).
pub fn pretty_json() -> &'static str {
    #[cfg(feature = "openapi")]
    return JSON.as_str();
    #[cfg(not(feature = "openapi"))]
    return COMMITTED.trim_end();
}

/// The committed document (`functions/proxy/openapi.json`, with the
/// newline `--print-openapi` ends it with).
pub const COMMITTED: &str = include_str!("../openapi.json");

/// `GET /openapi.json`.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "This document", content_type = "application/json")))]
pub async fn serve() -> Response {
    ([(CONTENT_TYPE, "application/json")], pretty_json()).into_response()
}

#[cfg(all(test, feature = "openapi"))]
mod tests {
    /// The committed document is what the code generates: the Lambda
    /// bootstrap serves it without generating it.
    #[test]
    fn committed_document_is_current() {
        assert!(
            super::COMMITTED.trim_end() == super::pretty_json(),
            "functions/proxy/openapi.json differs from the generated document; regenerate it: \
             cargo run -p plantd-proxy -- --print-openapi > functions/proxy/openapi.json"
        );
    }
}
