//! The fixture every proxy test uses: a real nats-server with plantd's
//! streams and buckets, the proxy router over it, and tokens minted with a
//! test signing key.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;

use async_nats::jetstream::message::StreamMessage;

use axum::Router;
use axum::body::Body as HttpBody;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt as _;
use plantd_proxy::{AppState, Settings, app};
use plantd_shared::claims::{API_AUDIENCE, Audience, Claims, MqttGrant, PrincipalKind};
use plantd_shared::jwt::{SigningKey, jwks_of, now_secs};
use plantd_shared::streams::{self, COMMANDS, REVOKED_BUCKET, Settings as StreamSettings};
use plantd_testkit::Nats;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};
use tower::ServiceExt as _;

/// The organisation the fixture registers [`SITES`] to (most tests act
/// as it).
pub const ORG: &str = "acme";

/// The sites the fixture registers to [`ORG`] in `plantd_sites`.
pub const SITES: [&str; 2] = ["plant-1", "plant-2"];

/// A running proxy over its own nats-server.
pub struct Fixture {
    /// The server (dropped last).
    pub nats: Nats,
    /// The router.
    pub app: Router,
    /// Its state.
    pub state: AppState,
    /// Signs test tokens.
    pub key: SigningKey,
}

/// The channel keys of this test binary (a random key, made once): the
/// proxy seals webhook secrets with it, and a notifier built in a test
/// opens them with it.
pub fn channel_keys() -> std::sync::Arc<plantd_alerts::notify::ChannelKeys> {
    static KEYS: std::sync::OnceLock<std::sync::Arc<plantd_alerts::notify::ChannelKeys>> =
        std::sync::OnceLock::new();
    KEYS.get_or_init(|| std::sync::Arc::new(plantd_alerts::notify::ChannelKeys::generate()))
        .clone()
}

pub async fn fixture() -> Fixture {
    let nats = Nats::start().await;
    let js = nats.jetstream().await;
    streams::ensure(&js, &StreamSettings::default())
        .await
        .expect("streams and buckets");
    let key = SigningKey::generate_ed25519("test-key").expect("key");
    let jwks = jwks_of([&key]).expect("jwks");
    let state = AppState::new(
        nats.client().await,
        jwks,
        Settings::default(),
        channel_keys(),
    )
    .await
    .expect("state");
    let f = Fixture {
        app: app(state.clone()),
        state,
        nats,
        key,
    };
    for site in SITES {
        f.register_site(ORG, site).await;
    }
    f
}

impl Fixture {
    /// Registers `site` to `org` in `plantd_sites`, as identity's
    /// `POST /v1/sites` does.
    pub async fn register_site(&self, org: &str, site: &str) {
        let id = plantd_shared::subject::Site::new(site).expect("a site id");
        self.state
            .sites
            .register(&id, org, site)
            .await
            .expect("register the site");
    }

    /// A token for `sub` in `org` with `perms` and MQTT grants.
    pub fn token_with(
        &self,
        org: &str,
        perms: &[&str],
        mqtt: &[(&str, &[&str], &[&str])],
    ) -> String {
        let now = now_secs();
        let mqtt: BTreeMap<String, MqttGrant> = mqtt
            .iter()
            .map(|(site, p, s)| {
                (
                    (*site).to_owned(),
                    MqttGrant {
                        publish: p.iter().map(|x| (*x).to_owned()).collect(),
                        subscribe: s.iter().map(|x| (*x).to_owned()).collect(),
                    },
                )
            })
            .collect();
        let claims = Claims {
            iss: "plantd-identity".into(),
            sub: format!("user-{org}"),
            aud: Audience::One(API_AUDIENCE.into()),
            exp: now + 600,
            iat: now,
            nbf: None,
            jti: format!("jti-{}-{}", org, rand_suffix()),
            org: org.into(),
            kind: PrincipalKind::User,
            roles: Vec::new(),
            perms: perms.iter().map(|p| (*p).to_owned()).collect(),
            mqtt,
        };
        self.key.sign(&claims).expect("sign")
    }

    /// A token for `org` with `perms`.
    pub fn token(&self, org: &str, perms: &[&str]) -> String {
        self.token_with(org, perms, &[])
    }

    /// A token of the bootstrap superadmin (`sub` "root", every permission).
    pub fn superadmin_token(&self) -> String {
        let now = now_secs();
        let claims = Claims {
            iss: "plantd-identity".into(),
            sub: "root".into(),
            aud: Audience::One(API_AUDIENCE.into()),
            exp: now + 600,
            iat: now,
            nbf: None,
            jti: format!("jti-root-{}", rand_suffix()),
            org: plantd_shared::sites::BOOTSTRAP_ORG.into(),
            kind: PrincipalKind::User,
            roles: vec![plantd_shared::sites::SUPERADMIN_ROLE.into()],
            perms: vec!["*".into()],
            mqtt: BTreeMap::new(),
        };
        self.key.sign(&claims).expect("sign")
    }

    /// Revokes token id `jti` as identity's logout does: a put in
    /// `plantd_revoked` with `value` (there, the token's expiry).
    pub async fn revoke(&self, jti: &str, value: &str) {
        self.nats
            .jetstream()
            .await
            .get_key_value(REVOKED_BUCKET)
            .await
            .expect("bucket")
            .put(jti, value.to_owned().into())
            .await
            .expect("revoke");
    }

    /// The message stored at `seq` in the commands stream.
    pub async fn stored_command(&self, seq: u64) -> StreamMessage {
        self.nats
            .jetstream()
            .await
            .get_stream(COMMANDS)
            .await
            .expect("stream")
            .direct_get(seq)
            .await
            .expect("stored")
    }
}

/// A WebSocket client connection.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Serves the fixture's router on 127.0.0.1:0 under `axum::serve`: the
/// address and the server's task.
pub async fn serve(f: &Fixture) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = f.app.clone();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    (addr, task)
}

/// Opens the WebSocket at `/v1/ws` of the server at `addr` with `token`
/// in the `Authorization` header.
pub async fn connect_ws(addr: SocketAddr, token: &str) -> Ws {
    let mut req = format!("ws://{addr}/v1/ws")
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    connect_async(req).await.expect("connect").0
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// An answer: status, headers, raw body.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

impl Answer {
    /// The body as JSON (`Null` when empty).
    pub fn json(&self) -> Value {
        if self.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&self.body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&self.body).into_owned()))
        }
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends one request through the router.
pub async fn send(
    app: &Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: impl Into<HttpBody>,
) -> Answer {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(body.into()).expect("request");
    let resp = app.clone().oneshot(req).await.expect("response");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Answer {
        status,
        headers,
        body,
    }
}

/// Sends JSON.
pub async fn send_json(
    app: &Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: &Value,
) -> Answer {
    send(
        app,
        method,
        uri,
        token,
        &[("content-type", "application/json")],
        body.to_string(),
    )
    .await
}

/// Sends a request without a body.
pub async fn get(app: &Router, uri: &str, token: Option<&str>) -> Answer {
    send(app, "GET", uri, token, &[], HttpBody::empty()).await
}
