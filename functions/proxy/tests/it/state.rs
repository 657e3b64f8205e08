//! The state API through the router over a real nats-server: values with
//! their content types, ETags and compare-and-set, history, scopes, and
//! who may do what.

use crate::common;

use axum::body::Body as HttpBody;
use axum::http::StatusCode;
use common::{fixture, get, send, send_json};
use serde_json::json;

const ADMIN: &[&str] = &["state:scope:*:admin"];

#[tokio::test]
async fn values_round_trip_with_content_type_etag_and_history() {
    let f = fixture().await;
    let admin = f.token("acme", ADMIN);
    let a = send_json(
        &f.app,
        "POST",
        "/v1/state/scopes",
        Some(&admin),
        &json!({"scope": "line1"}),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.json());
    let again = send_json(
        &f.app,
        "POST",
        "/v1/state/scopes",
        Some(&admin),
        &json!({"scope": "line1"}),
    )
    .await;
    assert_eq!(again.status, StatusCode::CONFLICT);

    // JSON value.
    let put = send(
        &f.app,
        "PUT",
        "/v1/state/line1/setpoint",
        Some(&admin),
        &[("content-type", "application/json")],
        r#"{"temp": 72.5}"#,
    )
    .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.json());
    let etag1 = put.header("etag").expect("etag").to_owned();
    let got = get(&f.app, "/v1/state/line1/setpoint", Some(&admin)).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert_eq!(got.header("etag"), Some(etag1.as_str()));
    assert_eq!(got.json(), json!({"temp": 72.5}));
    let not_modified = send(
        &f.app,
        "GET",
        "/v1/state/line1/setpoint",
        Some(&admin),
        &[("if-none-match", etag1.as_str())],
        HttpBody::empty(),
    )
    .await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);

    // Raw bytes keep their bytes and their content type.
    let raw: Vec<u8> = vec![0, 159, 146, 150, 255];
    let put = send(
        &f.app,
        "PUT",
        "/v1/state/line1/blob",
        Some(&admin),
        &[("content-type", "image/x-test")],
        raw.clone(),
    )
    .await;
    assert_eq!(put.status, StatusCode::OK);
    let got = get(&f.app, "/v1/state/line1/blob", Some(&admin)).await;
    assert_eq!(got.header("content-type"), Some("image/x-test"));
    assert_eq!(got.body.as_ref(), raw.as_slice());

    // A second revision, then the key's history and the scope's keys.
    let put2 = send(
        &f.app,
        "PUT",
        "/v1/state/line1/setpoint",
        Some(&admin),
        &[
            ("content-type", "application/json"),
            ("if-match", etag1.as_str()),
        ],
        r#"{"temp": 80}"#,
    )
    .await;
    assert_eq!(put2.status, StatusCode::OK, "{}", put2.json());
    let h = get(&f.app, "/v1/state/line1/setpoint/history", Some(&admin)).await;
    assert_eq!(h.status, StatusCode::OK, "{}", h.json());
    let hist = h.json()["history"].as_array().expect("history").clone();
    assert_eq!(hist.len(), 2);
    assert_eq!(hist[0]["value"], json!({"temp": 72.5}));
    assert_eq!(hist[1]["value"], json!({"temp": 80}));
    let keys = get(&f.app, "/v1/state/line1", Some(&admin)).await;
    assert_eq!(keys.status, StatusCode::OK);
    let names: Vec<String> = keys.json()["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["key"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(names, ["blob", "setpoint"]);

    // Delete, then it is gone; the history shows the delete.
    let del = send(
        &f.app,
        "DELETE",
        "/v1/state/line1/blob",
        Some(&admin),
        &[],
        HttpBody::empty(),
    )
    .await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
    assert_eq!(
        get(&f.app, "/v1/state/line1/blob", Some(&admin))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let h = get(&f.app, "/v1/state/line1/blob/history", Some(&admin)).await;
    assert_eq!(h.json()["history"][1]["operation"], "delete");

    // Scopes: listed, then deleted with their keys.
    let scopes = get(&f.app, "/v1/state/scopes", Some(&admin)).await;
    assert_eq!(scopes.json(), json!({"scopes": ["line1"]}));
    let del = send(
        &f.app,
        "DELETE",
        "/v1/state/scopes/line1",
        Some(&admin),
        &[],
        HttpBody::empty(),
    )
    .await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
    assert_eq!(
        get(&f.app, "/v1/state/line1/setpoint", Some(&admin))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&f.app, "/v1/state/scopes", Some(&admin)).await.json(),
        json!({"scopes": []})
    );
}

#[tokio::test]
async fn concurrent_writers_with_if_match_exactly_one_wins() {
    let f = fixture().await;
    let admin = f.token("acme", ADMIN);
    send_json(
        &f.app,
        "POST",
        "/v1/state/scopes",
        Some(&admin),
        &json!({"scope": "s"}),
    )
    .await;
    let put = send(
        &f.app,
        "PUT",
        "/v1/state/s/counter",
        Some(&admin),
        &[("content-type", "application/json")],
        "1",
    )
    .await;
    let etag = put.header("etag").expect("etag").to_owned();

    let writers = (0..8).map(|i| {
        let app = f.app.clone();
        let admin = admin.clone();
        let etag = etag.clone();
        tokio::spawn(async move {
            send(
                &app,
                "PUT",
                "/v1/state/s/counter",
                Some(&admin),
                &[
                    ("content-type", "application/json"),
                    ("if-match", etag.as_str()),
                ],
                format!("{}", 100 + i),
            )
            .await
            .status
        })
    });
    let mut statuses = Vec::new();
    for w in writers {
        statuses.push(w.await.expect("writer"));
    }
    let won = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let lost = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!((won, lost), (1, 7), "{statuses:?}");

    // A stale ETag loses too; create-only refuses an existing key.
    let stale = send(
        &f.app,
        "PUT",
        "/v1/state/s/counter",
        Some(&admin),
        &[("if-match", etag.as_str())],
        "x",
    )
    .await;
    assert_eq!(stale.status, StatusCode::CONFLICT);
    assert_eq!(stale.json()["error"], "conflict");
    let create = send(
        &f.app,
        "PUT",
        "/v1/state/s/fresh",
        Some(&admin),
        &[("if-none-match", "*")],
        "x",
    )
    .await;
    assert_eq!(create.status, StatusCode::CREATED);
    let create = send(
        &f.app,
        "PUT",
        "/v1/state/s/fresh",
        Some(&admin),
        &[("if-none-match", "*")],
        "y",
    )
    .await;
    assert_eq!(create.status, StatusCode::CONFLICT);
    // After a delete, create-only works again.
    send(
        &f.app,
        "DELETE",
        "/v1/state/s/fresh",
        Some(&admin),
        &[],
        HttpBody::empty(),
    )
    .await;
    let create = send(
        &f.app,
        "PUT",
        "/v1/state/s/fresh",
        Some(&admin),
        &[("if-none-match", "*")],
        "z",
    )
    .await;
    assert_eq!(create.status, StatusCode::CREATED, "{}", create.json());
}

#[tokio::test]
async fn viewers_cannot_write_and_other_organisations_cannot_read() {
    let f = fixture().await;
    let admin = f.token("acme", ADMIN);
    send_json(
        &f.app,
        "POST",
        "/v1/state/scopes",
        Some(&admin),
        &json!({"scope": "line1"}),
    )
    .await;
    let put = send(
        &f.app,
        "PUT",
        "/v1/state/line1/secret",
        Some(&admin),
        &[("content-type", "text/plain")],
        "acme only",
    )
    .await;
    assert_eq!(put.status, StatusCode::OK);

    let viewer = f.token("acme", &["state:scope:*:read"]);
    assert_eq!(
        get(&f.app, "/v1/state/line1/secret", Some(&viewer))
            .await
            .body
            .as_ref(),
        b"acme only"
    );
    let w = send(
        &f.app,
        "PUT",
        "/v1/state/line1/secret",
        Some(&viewer),
        &[],
        "changed",
    )
    .await;
    assert_eq!(w.status, StatusCode::FORBIDDEN);
    assert_eq!(w.json()["error"], "forbidden");
    let d = send(
        &f.app,
        "DELETE",
        "/v1/state/line1/secret",
        Some(&viewer),
        &[],
        HttpBody::empty(),
    )
    .await;
    assert_eq!(d.status, StatusCode::FORBIDDEN);
    let c = send_json(
        &f.app,
        "POST",
        "/v1/state/scopes",
        Some(&viewer),
        &json!({"scope": "x"}),
    )
    .await;
    assert_eq!(c.status, StatusCode::FORBIDDEN);

    // Only line2 readable: line1 is hidden from the scope list and refused.
    let line2 = f.token("acme", &["state:scope:line2:read"]);
    assert_eq!(
        get(&f.app, "/v1/state/line1/secret", Some(&line2))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(&f.app, "/v1/state/scopes", Some(&line2)).await.json(),
        json!({"scopes": []})
    );

    // Another organisation, even with every permission, sees its own
    // (empty) namespace only.
    let other = f.token("globex", &["*"]);
    assert_eq!(
        get(&f.app, "/v1/state/line1/secret", Some(&other))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&f.app, "/v1/state/line1", Some(&other)).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&f.app, "/v1/state/scopes", Some(&other)).await.json(),
        json!({"scopes": []})
    );
    let w = send(
        &f.app,
        "PUT",
        "/v1/state/line1/secret",
        Some(&other),
        &[],
        "overwrite",
    )
    .await;
    assert_eq!(w.status, StatusCode::NOT_FOUND, "no such scope in globex");
    assert_eq!(
        get(&f.app, "/v1/state/line1/secret", Some(&viewer))
            .await
            .body
            .as_ref(),
        b"acme only"
    );
}

#[tokio::test]
async fn bad_requests_are_refused_with_json_errors() {
    let f = fixture().await;
    let admin = f.token("acme", ADMIN);
    assert_eq!(
        get(&f.app, "/v1/state/scopes", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(&f.app, "/v1/state/scopes", Some("not-a-jwt"))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let unknown = send_json(
        &f.app,
        "POST",
        "/v1/state/scopes",
        Some(&admin),
        &json!({"scope": "a", "extra": 1}),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert_eq!(unknown.json()["error"], "bad_request");
    let bad = send_json(
        &f.app,
        "POST",
        "/v1/state/scopes",
        Some(&admin),
        &json!({"scope": "a.b"}),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    send_json(
        &f.app,
        "POST",
        "/v1/state/scopes",
        Some(&admin),
        &json!({"scope": "s"}),
    )
    .await;
    let reserved = send(&f.app, "PUT", "/v1/state/s/_scope", Some(&admin), &[], "x").await;
    assert_eq!(reserved.status, StatusCode::BAD_REQUEST);
    let big = send(
        &f.app,
        "PUT",
        "/v1/state/s/big",
        Some(&admin),
        &[],
        vec![b'x'; 600 * 1024],
    )
    .await;
    assert_eq!(big.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(big.json()["error"], "too_large");
    let not_json = send(
        &f.app,
        "PUT",
        "/v1/state/s/k",
        Some(&admin),
        &[("content-type", "application/json")],
        "{nope",
    )
    .await;
    assert_eq!(not_json.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn healthz_answers_and_the_mountable_router_merges_beside_another_healthz() {
    let f = fixture().await;
    let h = get(&f.app, "/healthz", None).await;
    assert_eq!(
        (h.status, h.body.as_ref()),
        (StatusCode::OK, b"ok".as_slice())
    );
    let merged = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "other" }))
        .merge(plantd_proxy::mountable(f.state.clone()));
    assert_eq!(get(&merged, "/healthz", None).await.body.as_ref(), b"other");
    assert_eq!(
        get(&merged, "/v1/state/scopes", None).await.status,
        StatusCode::UNAUTHORIZED
    );
}
