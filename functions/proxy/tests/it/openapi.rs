//! `/openapi.json` against the router it describes: every documented
//! operation is routed (a request to it reaches a handler, not the
//! router's 404 or 405), and a documented path answers 405 to the methods
//! it does not document. The converse — nothing is routed without being
//! documented — holds by construction: routes are only registered through
//! `utoipa_axum::routes!` (the unit test in `src/routes/mod.rs` checks).

use crate::common;

use axum::body::Body;
use axum::http::StatusCode;
use common::{fixture, get, send};

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

/// A concrete path for a template: `{name}` → `name`.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|seg| {
            seg.strip_prefix('{')
                .and_then(|s| s.strip_suffix('}'))
                .unwrap_or(seg)
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn every_route_is_in_the_document_and_every_documented_operation_is_routed() {
    let f = fixture().await;
    let doc = get(&f.app, "/openapi.json", None).await;
    assert_eq!(doc.status, StatusCode::OK);
    assert_eq!(doc.header("content-type"), Some("application/json"));
    let doc = doc.json();
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let paths = doc["paths"].as_object().expect("paths");
    for want in [
        "/healthz",
        "/openapi.json",
        "/v1/ws",
        "/v1/sites/{site}/commands",
        "/v1/sites/{site}/commands/{id}",
        "/v1/sites/{site}/call/{topic}",
        "/v1/state/{scope}/{key}/history",
    ] {
        assert!(paths.contains_key(want), "{want} is not documented");
    }
    // Every schema reference resolves.
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    let text = doc.to_string();
    for reference in text.split("\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().expect("name");
        assert!(schemas.contains_key(name), "dangling $ref to {name}");
    }
    let mut operations = 0;
    // Operation ids are unique (OpenAPI requires it; the SDKs and the app's
    // client are generated from them).
    let mut ids = std::collections::HashMap::new();
    for (template, item) in paths {
        for method in METHODS {
            if let Some(id) = item.get(method).and_then(|o| o["operationId"].as_str()) {
                let here = format!("{method} {template}");
                if let Some(first) = ids.insert(id.to_owned(), here.clone()) {
                    panic!("operationId {id:?} is used by {first} and {here}");
                }
            }
        }
    }
    for (template, item) in paths {
        let uri = concrete(template);
        for method in METHODS {
            let a = send(
                &f.app,
                &method.to_uppercase(),
                &uri,
                None,
                &[],
                Body::empty(),
            )
            .await;
            let unrouted = a.status == StatusCode::METHOD_NOT_ALLOWED
                || (a.status == StatusCode::NOT_FOUND && a.body.is_empty());
            if item.get(method).is_some() {
                operations += 1;
                assert!(
                    !unrouted,
                    "{method} {template} is documented but not routed"
                );
                assert!(
                    item[method]["responses"]
                        .as_object()
                        .is_some_and(|r| !r.is_empty()),
                    "{method} {template} documents no responses"
                );
            } else {
                assert_eq!(
                    a.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {template} is routed but not documented"
                );
            }
        }
    }
    assert_eq!(operations, 44, "operations in the document");
    // The mounted form serves the same document.
    let mounted = plantd_proxy::mountable(f.state.clone());
    assert_eq!(
        get(&mounted, "/openapi.json", None).await.status,
        StatusCode::OK
    );
}
