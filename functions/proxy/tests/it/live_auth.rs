//! `/v1/ws` opened without a token authenticates with its first frame,
//! `{"op":"auth","token"}` (what the app does, so no token is ever in a
//! URL): a real WebSocket client against the router under `axum::serve`,
//! over a real nats-server.

use crate::common;

use std::time::Duration;

use common::{Ws, fixture, serve};
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into()))
        .await
        .expect("send");
}

/// The next frame (the timeout only turns a hang into a failure).
async fn frame(ws: &mut Ws) -> Option<Message> {
    tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("a frame within 10 s")
        .map(|f| f.expect("frame"))
}

/// The next JSON text frame.
async fn next(ws: &mut Ws) -> Value {
    loop {
        match frame(ws).await {
            Some(Message::Text(t)) => return serde_json::from_str(t.as_str()).expect("JSON"),
            Some(_) => {}
            None => panic!("socket closed"),
        }
    }
}

/// The close frame's code and reason, once the socket closes.
async fn closed(ws: &mut Ws) -> (CloseCode, String) {
    loop {
        match frame(ws).await {
            Some(Message::Close(Some(c))) => return (c.code, c.reason.to_string()),
            Some(Message::Close(None)) | None => panic!("closed without a code"),
            Some(_) => {}
        }
    }
}

async fn open(addr: std::net::SocketAddr) -> Ws {
    connect_async(format!("ws://{addr}/v1/ws"))
        .await
        .expect("a socket without a token upgrades")
        .0
}

#[tokio::test]
async fn a_socket_without_a_token_authenticates_with_its_first_frame_and_then_works() {
    let f = fixture().await;
    let (addr, _server) = serve(&f).await;
    let token = f.token_with("acme", &[], &[("plant-1", &[], &["line1/#"])]);
    let mut ws = open(addr).await;
    send(&mut ws, json!({"op": "auth", "token": token})).await;
    let answer = next(&mut ws).await;
    assert_eq!(
        (
            answer["op"].as_str(),
            answer["sub"].as_str(),
            answer["org"].as_str()
        ),
        (Some("authenticated"), Some("user-acme"), Some("acme")),
        "{answer}"
    );
    assert!(
        answer["expires"].as_u64().expect("expires") > plantd_shared::jwt::now_secs(),
        "{answer}"
    );
    // Now the same socket as one authenticated on the handshake: its
    // grants decide, a live message arrives.
    send(
        &mut ws,
        json!({"op": "subscribe", "id": "no", "site": "plant-1", "filter": "line2/#"}),
    )
    .await;
    assert_eq!(next(&mut ws).await["error"], "forbidden");
    send(
        &mut ws,
        json!({"op": "subscribe", "id": "t", "site": "plant-1", "filter": "line1/#"}),
    )
    .await;
    assert_eq!(next(&mut ws).await, json!({"op": "subscribed", "id": "t"}));
    f.state
        .client
        .publish("plantd.plant-1.up.line1.temp", "21.5".into())
        .await
        .expect("publish");
    let m = next(&mut ws).await;
    assert_eq!(
        (m["op"].as_str(), m["topic"].as_str(), m["payload"].as_str()),
        (Some("message"), Some("line1/temp"), Some("21.5")),
        "{m}"
    );
    // A second `auth` on an authenticated socket is not an operation.
    send(&mut ws, json!({"op": "auth", "token": token})).await;
    assert_eq!(next(&mut ws).await["error"], "bad_request");
}

#[tokio::test]
async fn a_bad_first_frame_or_token_is_answered_and_the_socket_closed_with_1008() {
    let f = fixture().await;
    let (addr, _server) = serve(&f).await;
    let good = f.token_with("acme", &[], &[("plant-1", &[], &["#"])]);
    let signed = |sub: &str, ttl: i64| {
        let mut c = crate::aws_common::claims(sub, ttl, &[("plant-1", &["#"])]);
        c.org = "acme".into();
        (f.key.sign(&c).expect("sign"), c.jti)
    };
    // Revoked: the same plantd_revoked check as the handshake.
    let (revoked, jti) = signed("mallory", 600);
    f.revoke(&jti, "").await;
    let (expired, _) = signed("old", -120);
    for (what, first, code) in [
        (
            "a subscribe before auth",
            json!({"op": "subscribe", "id": "t", "site": "plant-1", "filter": "#"}),
            "bad_request",
        ),
        ("auth without a token", json!({"op": "auth"}), "bad_request"),
        (
            "a token that is not one",
            json!({"op": "auth", "token": "not.a.token"}),
            "unauthorized",
        ),
        (
            "an expired token",
            json!({"op": "auth", "token": expired}),
            "unauthorized",
        ),
        (
            "a revoked token",
            json!({"op": "auth", "token": revoked}),
            "unauthorized",
        ),
    ] {
        let mut ws = open(addr).await;
        send(&mut ws, first).await;
        let e = next(&mut ws).await;
        assert_eq!(
            (e["op"].as_str(), e["error"].as_str()),
            (Some("error"), Some(code)),
            "{what}: {e}"
        );
        let (close, _) = closed(&mut ws).await;
        assert_eq!(close, CloseCode::Policy, "{what}");
    }
    // A binary first frame.
    let mut ws = open(addr).await;
    ws.send(Message::Binary(good.clone().into_bytes().into()))
        .await
        .expect("send");
    assert_eq!(next(&mut ws).await["error"], "bad_request");
    assert_eq!(closed(&mut ws).await.0, CloseCode::Policy);
    // A token offered on the handshake is still judged there: 401, no upgrade.
    match connect_async(format!("ws://{addr}/v1/ws?access_token=not.a.token")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 401);
        }
        other => panic!("expected 401, got {other:?}"),
    }
}
