//! The request id: one id per HTTP request, taken from the client's
//! `x-request-id` header when it is a sensible one (1-128 characters of
//! `A-Z a-z 0-9 - _ . : / + =`) or made up (32 hex digits) otherwise. It is
//! written into every audit record of the request and echoed in the
//! response's `x-request-id`, so an operator can find a client's request in
//! the audit trail and the logs.
//!
//! Install [`layer`] (`axum::middleware::from_fn(request_id::layer)`)
//! outermost; handlers then read the id with the [`RequestId`] extractor.
//! Without the layer the extractor still answers (the client's id or a new
//! one), but nothing is echoed.

use std::convert::Infallible;

use axum::extract::{FromRequestParts, Request};
use axum::http::HeaderValue;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;

/// The header carrying the id, in requests and responses.
pub const HEADER: &str = "x-request-id";

/// Longest client-chosen id accepted.
pub const MAX_LEN: usize = 128;

/// The request's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

impl RequestId {
    /// A fresh id: 32 random hex digits.
    pub fn generate() -> Self {
        Self(format!("{:032x}", rand::random::<u128>()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `id` is acceptable as a client-chosen request id.
pub fn is_valid(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(&b))
}

/// The id of a request: the one [`layer`] settled on, else a valid
/// `x-request-id` header, else a new one.
pub fn of(parts: &Parts) -> RequestId {
    if let Some(id) = parts.extensions.get::<RequestId>() {
        return id.clone();
    }
    parts
        .headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_valid(v))
        .map(|v| RequestId(v.to_owned()))
        .unwrap_or_else(RequestId::generate)
}

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        let id = of(parts);
        parts.extensions.insert(id.clone());
        Ok(id)
    }
}

/// Middleware: settles the request's id (see [`of`]), makes it visible to
/// every extractor and inner middleware, and echoes it in the response.
pub async fn layer(req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let id = of(&parts);
    parts.extensions.insert(id.clone());
    let mut response = next.run(Request::from_parts(parts, body)).await;
    if let Ok(v) = HeaderValue::from_str(id.as_str()) {
        response.headers_mut().insert(HEADER, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(header: Option<&str>) -> Parts {
        let mut b = axum::http::Request::builder();
        if let Some(h) = header {
            b = b.header(HEADER, h);
        }
        b.body(()).expect("request").into_parts().0
    }

    #[test]
    fn a_sensible_client_id_is_kept_anything_else_replaced() {
        assert_eq!(of(&parts(Some("abc-123:x/y"))).0, "abc-123:x/y");
        for bad in ["", "has space", "quote\"", &"x".repeat(MAX_LEN + 1)] {
            let id = of(&parts(Some(bad)));
            assert_ne!(id.0, bad);
            assert_eq!(id.0.len(), 32);
        }
        let a = of(&parts(None));
        assert!(is_valid(a.as_str()));
        assert_ne!(a, of(&parts(None)));
    }
}
