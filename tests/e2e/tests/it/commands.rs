//! Commands end to end through real parts — the proxy over HTTP, the edge
//! bridged to a real nats-server, MQTT 5 devices with identity tokens: a
//! command to a topic nobody subscribes to waits alone (listed as pending,
//! held by the edge) while commands to live topics keep flowing in order
//! per topic; cancelled through the API, it never reaches a device that
//! comes for its topic later.
//!
//! The edge writes its held-command record a moment after it took the
//! command, with no event the API offers: that wait is a bounded poll.

use std::time::Duration;

use plantd_e2e::{Options, SITE, Stack};
use reqwest::Method;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// How long any single wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(30);

/// A device subscribed to `filter`: its client and what it receives.
async fn device(
    stack: &Stack,
    id: &str,
    token: &str,
    filter: &str,
) -> (AsyncClient, mpsc::UnboundedReceiver<Publish>) {
    let mqtt = stack.mqtt();
    let mut o = MqttOptions::new(id, mqtt.ip().to_string(), mqtt.port());
    o.set_keep_alive(Duration::from_secs(30));
    o.set_credentials(id, token);
    let (client, mut el) = AsyncClient::new(o, 100);
    let (tx, rx) = mpsc::unbounded_channel();
    let (subscribed, ready) = tokio::sync::oneshot::channel::<()>();
    let mut subscribed = Some(subscribed);
    tokio::spawn(async move {
        while let Ok(ev) = el.poll().await {
            match ev {
                Event::Incoming(Packet::Publish(p)) => {
                    let delivered = tx.send(p);
                    if delivered.is_err() {
                        return;
                    }
                }
                Event::Incoming(Packet::SubAck(_)) => {
                    let _ = subscribed.take().map(|s| s.send(()));
                }
                _ => {}
            }
        }
    });
    client
        .subscribe(filter, QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    tokio::time::timeout(WAIT, ready)
        .await
        .expect("SUBACK in time")
        .expect("event loop alive");
    (client, rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Publish>) -> Publish {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a message in time")
        .expect("device connected")
}

async fn send(stack: &Stack, token: &str, topic: &str, payload: &str) -> u64 {
    let (status, v) = stack
        .call(
            Method::POST,
            &format!("/v1/sites/{SITE}/commands"),
            Some(token),
            Some(&json!({"topic": topic, "payload": payload})),
        )
        .await
        .expect("request");
    assert_eq!(status, 202, "{v}");
    v["sequence"].as_u64().expect("sequence")
}

async fn pending(stack: &Stack, token: &str) -> Value {
    let (status, v) = stack
        .call(
            Method::GET,
            &format!("/v1/sites/{SITE}/commands?state=pending"),
            Some(token),
            None,
        )
        .await
        .expect("request");
    assert_eq!(status, 200, "{v}");
    v
}

#[tokio::test]
async fn a_stuck_command_waits_alone_is_listed_and_cancelled_and_never_delivered() {
    let stack = Stack::start(Options { edge: true }).await.expect("stack");
    let admin = stack.login(&[SITE]).await.expect("login");
    let (valves_id, valves_token) = stack
        .device(&admin, "valves", &[], &["valve/#"])
        .await
        .expect("device");
    let (_valves, mut valves) = device(&stack, &valves_id, &valves_token, "valve/#").await;

    // A mistyped topic: nobody subscribes to it.
    let stuck = send(&stack, &admin, "nobody/listens", "stuck").await;
    let list = plantd_testkit::eventually(WAIT, "the stuck command listed as held", || async {
        let list = pending(&stack, &admin).await;
        (list["commands"][0]["state"] == "held").then_some(list)
    })
    .await;
    assert_eq!(list["commands"][0]["id"], stuck, "{list}");
    assert_eq!(list["commands"][0]["topic"], "nobody/listens");
    assert_eq!(list["commands"][0]["reason"], "no_subscriber");

    // Commands to live topics do not wait for it, and keep their order.
    const TOPICS: usize = 4;
    const COUNT: usize = 200;
    for i in 0..COUNT {
        send(
            &stack,
            &admin,
            &format!("valve/{}/set", i % TOPICS),
            &i.to_string(),
        )
        .await;
    }
    let mut last = [None::<usize>; TOPICS];
    for _ in 0..COUNT {
        let p = next(&mut valves).await;
        let i: usize = std::str::from_utf8(&p.payload)
            .expect("utf-8")
            .parse()
            .expect("number");
        let topic = i % TOPICS;
        assert_eq!(p.topic.as_ref(), format!("valve/{topic}/set").as_bytes());
        assert!(
            last[topic].is_none_or(|l| l < i),
            "topic {topic}: {i} after {last:?}"
        );
        last[topic] = Some(i);
    }
    let list = pending(&stack, &admin).await;
    assert_eq!(
        list["commands"].as_array().map(Vec::len),
        Some(1),
        "only the stuck one is pending: {list}"
    );
    assert_eq!(list["commands"][0]["id"], stuck);

    // Cancelled: the edge drops it and says so.
    let (status, v) = stack
        .call(
            Method::DELETE,
            &format!("/v1/sites/{SITE}/commands/{stuck}"),
            Some(&admin),
            None,
        )
        .await
        .expect("request");
    assert_eq!(
        (status, &v),
        (200, &json!({"id": stuck, "state": "cancelled"}))
    );
    let list = pending(&stack, &admin).await;
    assert_eq!(list["commands"], json!([]), "{list}");

    // A device comes for the topic: the next command arrives, never the
    // cancelled one (it would come first: order per topic).
    let (late_id, late_token) = stack
        .device(&admin, "late", &[], &["nobody/#"])
        .await
        .expect("device");
    let (_late, mut late) = device(&stack, &late_id, &late_token, "nobody/listens").await;
    send(&stack, &admin, "nobody/listens", "after").await;
    assert_eq!(next(&mut late).await.payload.as_ref(), b"after");
    stack.stop().await;
}
