//! Helpers shared by the identity API tests: a real nats-server with the
//! buckets, the router called with `oneshot`, requests from a chosen
//! source address.
#![allow(dead_code)]

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body as HttpBody;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt as _;
use plantd_identity::{AppState, Keys, Settings, app, bootstrap};
use plantd_shared::jwt::SigningKey;
use plantd_shared::streams::{self, Settings as StreamSettings};
use plantd_testkit::Nats;
use serde_json::{Value, json};
use tower::ServiceExt as _;

pub const ADMIN: &str = "root@plantd.example";
pub const ADMIN_PW: &str = "a long bootstrap password";

pub struct Fixture {
    pub nats: Nats,
    pub app: Router,
    pub state: AppState,
}

pub async fn fixture() -> Fixture {
    fixture_with(Settings::default()).await
}

pub async fn fixture_with(settings: Settings) -> Fixture {
    let nats = Nats::start().await;
    let js = nats.jetstream().await;
    streams::ensure(&js, &StreamSettings::default())
        .await
        .expect("buckets");
    let key = SigningKey::generate_ed25519("k1").expect("key");
    let state = AppState::new(&js, Keys::new(key, Vec::new()).expect("keys"), settings)
        .await
        .expect("state");
    bootstrap::ensure_admin(&state, ADMIN, ADMIN_PW)
        .await
        .expect("bootstrap");
    Fixture {
        app: app(state.clone()),
        state,
        nats,
    }
}

/// One request; `from` is the TCP peer the server sees, `headers` extra
/// request headers. Returns the status, the JSON body (or the text as a
/// JSON string) and the response headers.
pub async fn send(
    app: &Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
    from: Option<&str>,
    headers: &[(&str, &str)],
) -> (StatusCode, Value, HeaderMap) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(HttpBody::from(b.to_string())),
        None => req.body(HttpBody::empty()),
    }
    .expect("request");
    if let Some(ip) = from {
        let addr: SocketAddr = format!("{ip}:40000").parse().expect("peer address");
        req.extensions_mut().insert(ConnectInfo(addr));
    }
    let resp = app.clone().oneshot(req).await.expect("response");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    (status, value, headers)
}

pub async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let (s, v, _) = send(app, method, uri, token, body, None, &[]).await;
    (s, v)
}

pub async fn login(app: &Router, email: &str, password: &str) -> (StatusCode, Value) {
    call(
        app,
        "POST",
        "/v1/auth/login",
        None,
        Some(json!({"email": email, "password": password})),
    )
    .await
}

/// Logs in from peer address `ip`; returns the response headers too.
pub async fn login_from(
    app: &Router,
    ip: &str,
    email: &str,
    password: &str,
) -> (StatusCode, Value, HeaderMap) {
    send(
        app,
        "POST",
        "/v1/auth/login",
        None,
        Some(json!({"email": email, "password": password})),
        Some(ip),
        &[],
    )
    .await
}

pub fn token(v: &Value) -> String {
    v["access_token"].as_str().expect("access_token").to_owned()
}

/// The bootstrap admin's access token.
pub async fn root_token(f: &Fixture) -> String {
    let (s, v) = login(&f.app, ADMIN, ADMIN_PW).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    token(&v)
}

/// Creates org `id` with admin `admin@<id>.example` and returns the admin's
/// access token.
pub async fn org_with_admin(f: &Fixture, root: &str, id: &str) -> String {
    let email = format!("admin@{id}.example");
    let (s, v) = call(
        &f.app,
        "POST",
        "/v1/orgs",
        Some(root),
        Some(json!({"id": id, "name": id, "admin_email": email, "admin_password": "org admin password"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = login(&f.app, &email, "org admin password").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    token(&v)
}

/// Creates a user in the caller's organisation and returns its id.
pub async fn create_user(
    f: &Fixture,
    admin: &str,
    email: &str,
    password: &str,
    roles: &[&str],
) -> String {
    let (s, u) = call(
        &f.app,
        "POST",
        "/v1/users",
        Some(admin),
        Some(json!({"email": email, "password": password, "roles": roles})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{u}");
    u["id"].as_str().expect("id").to_owned()
}

/// Registers site `id` to organisation `org` (as `POST /v1/sites` would):
/// devices and site tokens need a site of their organisation.
pub async fn register_site(f: &Fixture, org: &str, id: &str) {
    let site = plantd_shared::subject::Site::new(id).expect("a site id");
    f.state
        .sites
        .register(&site, org, id)
        .await
        .expect("register the site");
}
