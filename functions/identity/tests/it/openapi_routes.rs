//! Identity's OpenAPI document against its router: every route the router
//! registers is documented and every documented operation is routed
//! (read from `src/routes/mod.rs`, where every route is registered), the
//! served document is the committed one, and each documented operation,
//! called without a token, answers one of the statuses it documents with
//! the `{error, message}` body — not the router's bare 404/405.

use std::collections::BTreeSet;

use axum::http::StatusCode;
use plantd_identity::openapi::{DOCUMENT, PATH};
use serde_json::{Value, json};

use crate::common::{call, fixture};

/// HTTP methods a route may have, as the router and the document write
/// them.
const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// The router's source: every route is registered in it.
const ROUTER: &str = include_str!("../../src/routes/mod.rs");

/// The committed document, parsed.
fn document() -> Value {
    serde_json::from_str(DOCUMENT).expect("functions/identity/openapi.json is JSON")
}

/// Every (method, path) of the document.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(|m| ((*m).to_owned(), path.clone()))
        })
        .collect()
}

/// Every (method, path) `.route(path, method(handler).method(handler))`
/// registers in the router's source.
fn routed() -> BTreeSet<(String, String)> {
    assert!(
        !ROUTER.contains(".nest(") && !ROUTER.contains(".merge("),
        "routes/mod.rs nests or merges a router: teach this test to read its routes"
    );
    let mut out = BTreeSet::new();
    let mut rest = ROUTER;
    while let Some(at) = rest.find(".route(") {
        rest = &rest[at + ".route(".len()..];
        let mut depth = 1;
        let end = rest
            .char_indices()
            .find_map(|(i, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                (depth == 0).then_some(i)
            })
            .expect("a .route( call ends");
        let (path, handlers) = rest[..end].split_once(',').expect("two arguments");
        let path = match path.trim() {
            "crate::openapi::PATH" => PATH.to_owned(),
            p => p.trim_matches('"').to_owned(),
        };
        assert!(path.starts_with('/'), "cannot read the route {path:?}");
        for method in METHODS {
            let call = format!("{method}(");
            let found = handlers.match_indices(&call).any(|(i, _)| {
                handlers[..i]
                    .chars()
                    .next_back()
                    .is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
            });
            if found {
                out.insert((method.to_owned(), path.clone()));
            }
        }
    }
    out
}

#[test]
fn every_route_is_documented_and_every_operation_is_routed() {
    let routed = routed();
    let documented = documented(&document());
    assert!(
        routed.len() > 40,
        "the router's source was misread: {routed:?}"
    );
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routes identity serves that functions/identity/openapi.json does not document \
         (add them to src/openapi/ops*.rs and regenerate): {undocumented:?}"
    );
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        unrouted.is_empty(),
        "documented operations the router does not serve: {unrouted:?}"
    );
}

#[test]
fn every_error_answer_is_documented_with_the_error_body() {
    let doc = document();
    let error_body = json!({"$ref": "#/components/schemas/ErrorBody"});
    for (method, path) in documented(&doc) {
        let responses = doc["paths"][&path][&method]["responses"]
            .as_object()
            .expect("responses");
        for (status, response) in responses {
            if status.starts_with('4') || status.starts_with('5') {
                assert_eq!(
                    response["content"]["application/json"]["schema"], error_body,
                    "{method} {path} answers {status} without ErrorBody"
                );
            }
        }
        let secured = doc["paths"][&path][&method]["security"]
            .as_array()
            .is_some_and(|s| !s.is_empty());
        if secured {
            assert!(
                responses.contains_key("401"),
                "{method} {path} needs a token but documents no 401"
            );
        }
    }
}

#[tokio::test]
async fn each_operation_answers_a_status_it_documents() {
    let f = fixture().await;
    let doc = document();

    // The served document is the committed file, byte for byte.
    let (s, served) = call(&f.app, "GET", PATH, None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(served, doc);

    for (method, path) in documented(&doc) {
        let op = &doc["paths"][&path][&method];
        let uri = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "nosuch" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        let body = op.get("requestBody").map(|_| json!({}));
        let (status, answer) = call(&f.app, &method.to_uppercase(), &uri, None, body).await;
        assert!(
            status != StatusCode::METHOD_NOT_ALLOWED && !answer.is_null()
                || status == StatusCode::NO_CONTENT,
            "{method} {path}: the router did not route it ({status}, no body)"
        );
        let documented = op["responses"]
            .as_object()
            .expect("responses")
            .contains_key(status.as_str());
        assert!(
            documented,
            "{method} {path} answered {status} without a token, which it does not document: {answer}"
        );
        if !status.is_success() {
            assert!(
                answer["error"].is_string() && answer["message"].is_string(),
                "{method} {path}: {status} without the {{error, message}} body: {answer}"
            );
        }
    }
}
