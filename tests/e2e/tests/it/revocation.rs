//! Revocation that bites at once, end to end: an administrator deactivates
//! a device in the identity service and the device's MQTT connection to
//! the edge closes within a second (v5 DISCONNECT 0x87); logging a user
//! out everywhere closes the user's WebSocket on the proxy and its refresh
//! token stops working. Real parts: nats-server, the edge (the code the
//! `plantd-edge` binary runs), identity and the proxy over HTTP, a
//! rumqttc device, a WebSocket client.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use plantd_e2e::{Options, Stack};
use reqwest::Method;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

/// How long any single wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(30);

/// Connects a v5 device; returns a receiver that resolves with how the
/// connection ended.
async fn connect(stack: &Stack, id: &str, token: &str) -> tokio::sync::oneshot::Receiver<String> {
    let mqtt = stack.mqtt();
    let mut o = MqttOptions::new(id, mqtt.ip().to_string(), mqtt.port());
    o.set_keep_alive(Duration::from_secs(30));
    o.set_credentials(id, token);
    let (_client, mut el) = AsyncClient::new(o, 10);
    let (up_tx, up_rx) = tokio::sync::oneshot::channel();
    let (end_tx, end_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _client = _client;
        let mut up = Some(up_tx);
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    if let Some(t) = up.take() {
                        let _ = t.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Disconnect(d))) => {
                    let _ = end_tx.send(format!("{:?}", d.reason_code));
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = end_tx.send(e.to_string());
                    return;
                }
            }
        }
    });
    tokio::time::timeout(WAIT, up_rx)
        .await
        .expect("CONNACK in time")
        .expect("connected");
    end_rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deactivating_a_device_closes_its_mqtt_connection_within_a_second() {
    let stack = Stack::start(Options { edge: true }).await.expect("stack");
    let root = stack.login(&[]).await.expect("admin");
    let (id, token) = stack
        .device(&root, "press 7", &["line1/#"], &["line1/#"])
        .await
        .expect("device");
    let ended = connect(&stack, &id, &token).await;

    let start = Instant::now();
    let (s, v) = stack
        .call(
            Method::PATCH,
            &format!("/v1/devices/{id}"),
            Some(&root),
            Some(&json!({"active": false})),
        )
        .await
        .expect("request");
    assert_eq!(s, 200, "{v}");
    let why = tokio::time::timeout(WAIT, ended)
        .await
        .expect("the connection ends")
        .expect("reason");
    let took = start.elapsed();
    assert!(why.contains("NotAuthorized"), "v5 DISCONNECT 0x87: {why}");
    assert!(took < Duration::from_secs(1), "closed after {took:?}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_a_user_out_everywhere_closes_its_websocket_and_ends_its_refresh() {
    let stack = Stack::start(Options::default()).await.expect("stack");
    let root = stack.login(&[]).await.expect("admin");
    let (s, u) = stack
        .call(
            Method::POST,
            "/v1/users",
            Some(&root),
            Some(&json!({"email": "op@plantd.test", "password": "operator password", "roles": ["operator"]})),
        )
        .await
        .expect("request");
    assert_eq!(s, 201, "{u}");
    let user = u["id"].as_str().expect("id").to_owned();
    let (s, login) = stack
        .call(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(&json!({"email": "op@plantd.test", "password": "operator password"})),
        )
        .await
        .expect("request");
    assert_eq!(s, 200, "{login}");
    let access = login["access_token"].as_str().expect("token");
    let mut req = stack.ws_url().into_client_request().expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {access}").parse().expect("header"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("WebSocket");

    let start = Instant::now();
    let (s, v) = stack
        .call(
            Method::POST,
            &format!("/v1/users/{user}/revoke"),
            Some(&root),
            None,
        )
        .await
        .expect("request");
    assert_eq!((s, &v["revoked"]), (200, &json!(1)), "{v}");
    let closed = loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("closed in time")
        {
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break None,
        }
    };
    let took = start.elapsed();
    assert_eq!(closed, Some(1008), "closed as a policy violation");
    assert!(took < Duration::from_secs(1), "closed after {took:?}");
    let (s, v): (u16, Value) = stack
        .call(
            Method::POST,
            "/v1/auth/refresh",
            None,
            Some(&json!({"refresh_token": login["refresh_token"]})),
        )
        .await
        .expect("request");
    assert_eq!(s, 401, "the refresh token ended with the sessions: {v}");
    stack.stop().await;
}
