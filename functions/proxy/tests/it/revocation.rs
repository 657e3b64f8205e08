//! WebSockets close when their token is revoked: a `Put` of the token id in
//! `plantd_revoked` (what the identity service's logout writes) closes
//! every socket of that token with 1008 `token revoked`, and no other; a
//! revoked token cannot open a new one.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Fixture, Ws, connect_ws, fixture, serve};
use futures::{SinkExt as _, StreamExt as _};
use plantd_shared::claims::{API_AUDIENCE, Audience, Claims, MqttGrant, PrincipalKind};
use serde_json::{Value, json};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

/// A token with id `jti` that may subscribe to everything on plant-1.
fn token(f: &Fixture, jti: &str) -> String {
    let now = plantd_shared::jwt::now_secs();
    f.key
        .sign(&Claims {
            iss: "plantd-identity".into(),
            sub: format!("user-{jti}"),
            aud: Audience::One(API_AUDIENCE.into()),
            exp: now + 600,
            iat: now,
            nbf: None,
            jti: jti.into(),
            org: "acme".into(),
            kind: PrincipalKind::User,
            roles: Vec::new(),
            perms: Vec::new(),
            mqtt: [(
                "plant-1".to_owned(),
                MqttGrant {
                    publish: vec![],
                    subscribe: vec!["#".into()],
                },
            )]
            .into_iter()
            .collect(),
        })
        .expect("sign")
}

/// Connects and subscribes: once `subscribed` arrives, the connection is
/// in its loop and listening for revocations.
async fn connect(addr: SocketAddr, token: &str) -> Ws {
    let mut ws = connect_ws(addr, token).await;
    ws.send(Message::Text(
        json!({"op": "subscribe", "id": "all", "site": "plant-1", "filter": "#"})
            .to_string()
            .into(),
    ))
    .await
    .expect("send");
    let Message::Text(answer) = next(&mut ws).await else {
        panic!("a text frame");
    };
    let answer: Value = serde_json::from_str(answer.as_str()).expect("json");
    assert_eq!(answer, json!({"op": "subscribed", "id": "all"}));
    ws
}

/// The next frame (the timeout only turns a hang into a failure).
async fn next(ws: &mut Ws) -> Message {
    tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("a frame within 10 s")
        .expect("socket open")
        .expect("frame")
}

#[tokio::test]
async fn sockets_of_a_revoked_token_close_and_others_stay_open() {
    let f = fixture().await;
    let (addr, _server) = serve(&f).await;
    let doomed = token(&f, "jti-doomed");
    let mut first = connect(addr, &doomed).await;
    let mut second = connect(addr, &doomed).await;
    let mut other = connect(addr, &token(&f, "jti-other")).await;

    let exp = plantd_shared::jwt::now_secs() + 600;
    f.revoke("jti-doomed", &exp.to_string()).await;
    for ws in [&mut first, &mut second] {
        match next(ws).await {
            Message::Close(Some(frame)) => {
                assert_eq!(u16::from(frame.code), 1008);
                assert_eq!(frame.reason.as_str(), "token revoked");
            }
            other => panic!("expected a close frame, got {other:?}"),
        }
    }

    // The other token's socket still works.
    other
        .send(Message::Text(
            json!({"op": "unsubscribe", "id": "all"}).to_string().into(),
        ))
        .await
        .expect("send");
    let Message::Text(t) = next(&mut other).await else {
        panic!("a text frame");
    };
    let v: Value = serde_json::from_str(t.as_str()).expect("json");
    assert_eq!(v, json!({"op": "unsubscribed", "id": "all"}));

    // And the revoked token cannot open a new socket.
    let mut req = format!("ws://{addr}/v1/ws")
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {doomed}").parse().expect("header"),
    );
    match connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 401);
        }
        other => panic!("expected 401, got {other:?}"),
    }
}
