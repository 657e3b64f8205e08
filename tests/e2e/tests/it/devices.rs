//! End to end through real parts: MQTT 5 devices (rumqttc) with tokens from
//! the identity service, the edge broker bridged to a real nats-server, and
//! the proxy over HTTP and WebSocket.
//!
//! * A device's reading reaches live WebSocket subscribers (for their
//!   filter only), the last value and the history.
//! * An HTTP command reaches a device; one sent while the device is offline
//!   arrives when it reconnects to its persistent session.
//! * An HTTP service call is answered by a device (MQTT 5 response topic and
//!   correlation data).
//!
//! Waits are on events (SUBACK, a frame, a message), or bounded polls of a
//! condition where the stack offers no event (a message becoming readable in
//! JetStream; the edge's service subscription reaching nats-server).

use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use plantd_e2e::{Options, SITE, Stack};
use plantd_testkit::eventually;
use reqwest::Method;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

/// How long any single wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(30);

/// A connected MQTT 5 device and what it receives.
struct Device {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Publish>,
    task: tokio::task::JoinHandle<()>,
}

impl Device {
    /// Connects as `id` with `token`; subscribes to `subscribe` (QoS 1) if
    /// given. `persistent` keeps the session for an hour after it goes.
    async fn connect(
        stack: &Stack,
        id: &str,
        token: &str,
        subscribe: Option<&str>,
        persistent: bool,
    ) -> Self {
        let mqtt = stack.mqtt();
        let mut o = MqttOptions::new(id, mqtt.ip().to_string(), mqtt.port());
        o.set_keep_alive(Duration::from_secs(30));
        o.set_credentials(id, token);
        if persistent {
            o.set_clean_start(false);
            o.set_session_expiry_interval(Some(3600));
        }
        let (client, mut el) = AsyncClient::new(o, 100);
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
        let mut ready_tx = Some(ready_tx);
        let want_suback = subscribe.is_some();
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx.send(p).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Incoming(Packet::ConnAck(_))) if !want_suback => {
                        if let Some(t) = ready_tx.take() {
                            let _ = t.send(Ok(()));
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(t) = ready_tx.take() {
                            let _ = t.send(Ok(()));
                        }
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
                    Ok(_) => {}
                    Err(e) => {
                        if let Some(t) = ready_tx.take() {
                            let _ = t.send(Err(e.to_string()));
                        }
                        return;
                    }
                }
            }
        });
        if let Some(f) = subscribe {
            client
                .subscribe(f, QoS::AtLeastOnce)
                .await
                .expect("subscribe");
        }
        tokio::time::timeout(WAIT, ready_rx)
            .await
            .expect("connected in time")
            .expect("event loop alive")
            .unwrap_or_else(|e| panic!("device {id} refused: {e}"));
        Self { client, rx, task }
    }

    async fn next(&mut self) -> Publish {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .expect("a message in time")
            .expect("device connected")
    }

    /// Sends DISCONNECT and waits until the connection is gone.
    async fn disconnect(self) {
        self.client.disconnect().await.expect("disconnect");
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("disconnected in time")
            .expect("event loop");
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn socket(stack: &Stack, token: &str) -> Ws {
    let mut req = stack.ws_url().into_client_request().expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    tokio_tungstenite::connect_async(req)
        .await
        .expect("connect")
        .0
}

async fn frame(ws: &mut Ws) -> Value {
    loop {
        let f = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("socket open")
            .expect("frame");
        if let Message::Text(t) = f {
            return serde_json::from_str(t.as_str()).expect("JSON");
        }
    }
}

/// Polls `GET path` until it answers 200 (a message becomes readable in
/// JetStream a moment after the edge's PUBACK); the answer.
async fn until_ok(stack: &Stack, path: &str, token: &str) -> Value {
    eventually(WAIT, &format!("GET {path} to answer 200"), || async {
        let (status, v) = stack
            .call(Method::GET, path, Some(token), None)
            .await
            .expect("request");
        match status {
            200 => Some(v),
            404 => None,
            _ => panic!("GET {path}: {status} {v}"),
        }
    })
    .await
}

#[tokio::test]
async fn a_device_reading_reaches_live_subscribers_last_value_and_history() {
    let stack = Stack::start(Options { edge: true }).await.expect("stack");
    let admin = stack.login(&[SITE]).await.expect("login");
    let (id, token) = stack
        .device(&admin, "press-1", &["line1/#"], &[])
        .await
        .expect("device");

    // A live subscriber for temperatures only.
    let mut ws = socket(&stack, &admin).await;
    ws.send(Message::Text(
        json!({"op": "subscribe", "id": "t", "site": SITE, "filter": "line1/+/temp"})
            .to_string()
            .into(),
    ))
    .await
    .expect("send");
    assert_eq!(frame(&mut ws).await, json!({"op": "subscribed", "id": "t"}));

    let device = Device::connect(&stack, &id, &token, None, false).await;
    for (topic, payload) in [
        ("line1/press/hum", "40"),
        ("line1/press/temp", "21.5"),
        ("line1/press/temp", "21.7"),
    ] {
        // Awaits the PUBACK: the edge has journalled it.
        device
            .client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .expect("publish");
    }
    for want in ["21.5", "21.7"] {
        let m = frame(&mut ws).await;
        assert_eq!(m["op"], "message", "{m}");
        assert_eq!(m["site"], SITE);
        assert_eq!(m["topic"], "line1/press/temp", "only the filter's topics");
        assert_eq!(m["payload"], want);
        assert_eq!(m["headers"]["Plantd-Qos"], "1");
    }

    // The last value and the history, through the proxy over HTTP.
    let path = format!("/v1/sites/{SITE}/last?topic=line1/press/temp");
    let last = eventually(WAIT, "the last value to be 21.7", || async {
        let last = until_ok(&stack, &path, &admin).await;
        (last["value"] == "21.7").then_some(last)
    })
    .await;
    assert_eq!(last["topic"], "line1/press/temp");
    assert_eq!(last["qos"], 1);
    let (status, history) = stack
        .call(
            Method::GET,
            &format!("/v1/sites/{SITE}/history?filter=line1/%23&order=asc"),
            Some(&admin),
            None,
        )
        .await
        .expect("history");
    assert_eq!(status, 200, "{history}");
    let seen: Vec<(String, String)> = history["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            (
                m["topic"].as_str().unwrap_or_default().to_owned(),
                m["value"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let temps: Vec<&str> = seen
        .iter()
        .filter(|(t, _)| t == "line1/press/temp")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(temps, ["21.5", "21.7"], "in order: {seen:?}");
    assert!(
        seen.iter()
            .any(|(t, v)| t == "line1/press/hum" && v == "40")
    );

    // A device token is not an API token; no token is no access.
    let (status, _) = stack
        .call(Method::GET, &path, Some(&token), None)
        .await
        .expect("request");
    assert_eq!(status, 401);
    let (status, _) = stack
        .call(Method::GET, &path, None, None)
        .await
        .expect("request");
    assert_eq!(status, 401);
    device.disconnect().await;
    stack.stop().await;
}

#[tokio::test]
async fn an_http_command_reaches_a_device_and_waits_for_one_that_is_offline() {
    let stack = Stack::start(Options { edge: true }).await.expect("stack");
    let admin = stack.login(&[SITE]).await.expect("login");
    let (id, token) = stack
        .device(&admin, "valve-7", &[], &["line1/valve/7/#"])
        .await
        .expect("device");
    let mut valve = Device::connect(&stack, &id, &token, Some("line1/valve/7/#"), true).await;

    let send = |payload: &'static str| {
        let stack = &stack;
        let admin = admin.clone();
        async move {
            let (status, v) = stack
                .call(
                    Method::POST,
                    &format!("/v1/sites/{SITE}/commands"),
                    Some(&admin),
                    Some(&json!({"topic": "line1/valve/7/set", "payload": payload, "qos": 1, "ttl_secs": 600})),
                )
                .await
                .expect("command");
            assert_eq!(status, 202, "{v}");
            assert!(v["sequence"].as_u64().is_some(), "{v}");
        }
    };
    send("open").await;
    let m = valve.next().await;
    assert_eq!(
        (m.topic.as_ref(), m.payload.as_ref()),
        (&b"line1/valve/7/set"[..], &b"open"[..])
    );

    // Offline: the command waits in the session the edge keeps for the
    // device, and arrives when it comes back (no new SUBSCRIBE).
    valve.disconnect().await;
    send("close").await;
    let mut valve = Device::connect(&stack, &id, &token, None, true).await;
    let m = valve.next().await;
    assert_eq!(
        (m.topic.as_ref(), m.payload.as_ref()),
        (&b"line1/valve/7/set"[..], &b"close"[..])
    );
    valve.disconnect().await;
    stack.stop().await;
}

#[tokio::test]
async fn an_http_call_is_answered_by_an_mqtt5_device() {
    let stack = Stack::start(Options { edge: true }).await.expect("stack");
    let admin = stack.login(&[SITE]).await.expect("login");
    let (id, token) = stack
        .device(&admin, "pump-1", &[], &["pump/1/status"])
        .await
        .expect("device");
    let mut pump = Device::connect(&stack, &id, &token, Some("pump/1/status"), false).await;
    let answering = pump.client.clone();
    let server = tokio::spawn(async move {
        while let Some(req) = pump.rx.recv().await {
            let props = req.properties.unwrap_or_default();
            let Some(reply_to) = props.response_topic else {
                continue;
            };
            let answer = PublishProperties {
                correlation_data: props.correlation_data,
                content_type: Some("application/json".into()),
                ..PublishProperties::default()
            };
            let body = json!({"running": true, "asked": String::from_utf8_lossy(&req.payload)});
            let _ = answering
                .publish_with_properties(
                    reply_to,
                    QoS::AtLeastOnce,
                    false,
                    body.to_string(),
                    answer,
                )
                .await;
        }
    });

    // The edge's service subscription may still be on its way to
    // nats-server: 503 (no responder) until it is there.
    let url = format!(
        "{}/v1/sites/{SITE}/call/pump/1/status?timeout_ms=5000",
        stack.url()
    );
    let resp = eventually(WAIT, "the service call to find a responder", || async {
        let resp = stack
            .client
            .post(&url)
            .bearer_auth(&admin)
            .header("content-type", "text/plain")
            .body("status?")
            .send()
            .await
            .expect("call");
        (resp.status() != 503).then_some(resp)
    })
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v, json!({"running": true, "asked": "status?"}));

    // Nobody serves this topic: 503 at once.
    let resp = stack
        .client
        .post(format!("{}/v1/sites/{SITE}/call/nobody/home", stack.url()))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("call");
    assert_eq!(resp.status(), 503);
    server.abort();
    stack.stop().await;
}
