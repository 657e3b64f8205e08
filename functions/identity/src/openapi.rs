//! Identity's OpenAPI document, served at `GET /v1/identity/openapi.json`
//! (`plantd-identity --print-openapi` prints the same bytes).
//!
//! It describes every route identity serves ([`crate::routes::router`]):
//! login and tokens, organisations, users, roles, service accounts,
//! devices, sites, login throttles, signing keys and the JWKS, the audit
//! trail, and the document itself. The SDKs generate their typed calls
//! from it (`sdk/rust`, `sdk/python`, `sdk/typescript`). The path is under
//! `/v1/` (not `/openapi.json`, which is the proxy's) because `plantd up`
//! serves both APIs from one router and the cloud template routes `/v1/*`
//! to identity.
//!
//! **Built at generation time, not in the Lambda** (decision 0046): the
//! document is the committed file `functions/identity/openapi.json`,
//! embedded with `include_str!`. Building it takes utoipa's code, which
//! would push the shipping bootstrap over its 8 MB budget (issue 16), so
//! that code is compiled only with the non-default cargo feature
//! `openapi` (`document`): `cargo run -p plantd-identity --features
//! openapi -- --print-openapi > functions/identity/openapi.json`
//! regenerates the file, and `scripts/test` fails when it differs.
//!
//! | module | what it holds |
//! |---|---|
//! | [`schemas`] | the request and response bodies of login, tokens, service accounts, devices and sites |
//! | [`admin`] | those of organisations, users, roles, keys, lockouts, the audit trail, whoami and the JWKS |
//! | `document` (feature `openapi`) | the operations and the document built from them |
//!
//! The routes are not registered through the document (identity's router
//! predates it), so the schemas are written beside the routes' own types
//! and unit tests keep them honest: every documented request body is
//! accepted by the route's own request type, and every response type's
//! JSON is read by the documented schema, which refuses unknown fields.
//! The test binary checks that every route of the router is documented
//! (`tests/it/openapi_routes.rs`).

pub mod admin;
#[cfg(feature = "openapi")]
pub mod document;
#[cfg(feature = "openapi")]
mod ops;
#[cfg(feature = "openapi")]
mod ops_admin;
pub mod schemas;
#[cfg(test)]
mod tests;

use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};

pub use schemas::*;

/// Where the document is served.
pub const PATH: &str = "/v1/identity/openapi.json";

/// The committed document (`functions/identity/openapi.json`), exactly
/// what [`PATH`] serves.
pub const DOCUMENT: &str = include_str!("../openapi.json");

/// The document as pretty-printed JSON, exactly what [`PATH`] serves.
pub fn pretty_json() -> &'static str {
    DOCUMENT
}

/// `GET /v1/identity/openapi.json` (no token needed).
pub async fn serve() -> Response {
    ([(CONTENT_TYPE, "application/json")], DOCUMENT).into_response()
}
