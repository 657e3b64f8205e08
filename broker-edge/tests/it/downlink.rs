//! Cloud → devices through the real `plantd-edge` and nats-server:
//! commands sent while the edge was down arrive after it starts, in order,
//! and expired ones do not; NATS requests reach MQTT 5 devices and their
//! answers come back, with an immediate error when no device serves the
//! topic and a timeout when it does not answer.

use crate::edge_proc;

use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use bytes::Bytes;
use edge_proc::start_edge;
use plantd_shared::headers;
use plantd_shared::streams::{self, Settings};
use plantd_testkit::Nats;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::sync::mpsc;

async fn command(
    js: &async_nats::jetstream::Context,
    topic: &str,
    payload: &str,
    extra: &[(&str, &str)],
) {
    let mut h = HeaderMap::new();
    h.insert(headers::QOS, "1");
    for (k, v) in extra {
        h.insert(*k, *v);
    }
    js.publish_with_headers(
        format!("plantd.plant-1.down.{topic}"),
        h,
        payload.to_owned().into(),
    )
    .await
    .expect("publish command")
    .await
    .expect("command stored");
}

/// A v5 device: its client and a channel of the publications it receives.
async fn device(
    mqtt: std::net::SocketAddr,
    id: &str,
    subscribe: &str,
) -> (
    AsyncClient,
    mpsc::UnboundedReceiver<rumqttc::v5::mqttbytes::v5::Publish>,
) {
    device_with(mqtt, id, subscribe, None).await
}

/// [`device`] presenting `token` as its MQTT password.
async fn device_with(
    mqtt: std::net::SocketAddr,
    id: &str,
    subscribe: &str,
    token: Option<&str>,
) -> (
    AsyncClient,
    mpsc::UnboundedReceiver<rumqttc::v5::mqttbytes::v5::Publish>,
) {
    let mut o = MqttOptions::new(id, mqtt.ip().to_string(), mqtt.port());
    o.set_keep_alive(Duration::from_secs(30));
    if let Some(t) = token {
        o.set_credentials(id, t);
    }
    let (client, mut el) = AsyncClient::new(o, 100);
    let (tx, rx) = mpsc::unbounded_channel();
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    let mut subscribed_tx = Some(subscribed_tx);
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
                    if let Some(t) = subscribed_tx.take() {
                        let _ = t.send(());
                    }
                }
                _ => {}
            }
        }
    });
    client
        .subscribe(subscribe, QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    tokio::time::timeout(Duration::from_secs(10), subscribed_rx)
        .await
        .expect("SUBACK in time")
        .expect("SUBACK");
    (client, rx)
}

async fn next(
    rx: &mut mpsc::UnboundedReceiver<rumqttc::v5::mqttbytes::v5::Publish>,
) -> rumqttc::v5::mqttbytes::v5::Publish {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("a message in time")
        .expect("device connected")
}

#[tokio::test]
async fn commands_sent_while_the_edge_was_down_arrive_in_order() {
    let nats = Nats::start().await;
    let js = nats.jetstream().await;
    streams::ensure(&js, &Settings::default())
        .await
        .expect("streams");
    let past = headers::format_time(headers::now_ms() - 120_000);
    command(&js, "valve.7", "open", &[]).await;
    command(
        &js,
        "valve.7",
        "stale",
        &[(headers::TTL, "30"), (headers::SENT, &past)],
    )
    .await;
    command(&js, "valve.7", "close", &[(headers::TTL, "3600")]).await;

    let data = tempfile::tempdir().expect("tmp");
    let edge = start_edge(&nats, data.path(), &[]).await;
    let (_client, mut rx) = device(edge.mqtt, "valve-7", "valve/+").await;
    let first = next(&mut rx).await;
    assert_eq!(
        (first.topic.as_ref(), first.payload.as_ref()),
        (&b"valve/7"[..], &b"open"[..])
    );
    let second = next(&mut rx).await;
    assert_eq!(
        second.payload.as_ref(),
        b"close",
        "in order, and the expired one never arrives"
    );
}

#[tokio::test]
async fn nats_requests_reach_mqtt5_devices_and_come_back() {
    let nats = Nats::start().await;
    let js = nats.jetstream().await;
    streams::ensure(&js, &Settings::default())
        .await
        .expect("streams");
    let data = tempfile::tempdir().expect("tmp");
    let edge = start_edge(&nats, data.path(), &[]).await;

    // A pump that answers requests on pump/1/status.
    let (pump, mut requests) = device(edge.mqtt, "pump-1", "pump/1/status").await;
    tokio::spawn(async move {
        while let Some(req) = requests.recv().await {
            let props = req.properties.unwrap_or_default();
            let (Some(reply_to), corr) = (props.response_topic, props.correlation_data) else {
                continue;
            };
            let answer = PublishProperties {
                correlation_data: corr,
                content_type: Some("text/plain".into()),
                ..PublishProperties::default()
            };
            let body = format!("running; asked {}", String::from_utf8_lossy(&req.payload));
            let _ = pump
                .publish_with_properties(reply_to, QoS::AtLeastOnce, false, body, answer)
                .await;
        }
    });
    // A device that subscribes but never answers.
    let (_slow, _ignored) = device(edge.mqtt, "slow-1", "slow/device").await;

    let client = nats.client().await;
    // The edge's service subscription may still be on its way to the
    // server: retry on NATS "no responders" (bounded).
    let answer = plantd_testkit::eventually(
        Duration::from_secs(10),
        "the edge to answer the service request",
        || async {
            match client
                .request(
                    "plantd.plant-1.svc.pump.1.status",
                    Bytes::from_static(b"status?"),
                )
                .await
            {
                Ok(m) => Some(m),
                Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => None,
                Err(e) => panic!("request: {e}"),
            }
        },
    )
    .await;
    assert_eq!(answer.payload.as_ref(), b"running; asked status?");
    assert!(
        answer
            .headers
            .as_ref()
            .and_then(|h| h.get(headers::STATUS))
            .is_none()
    );

    let started = Instant::now();
    let none = client
        .request("plantd.plant-1.svc.nobody.home", Bytes::new())
        .await
        .expect("reply");
    let status = none
        .headers
        .and_then(|h| h.get(headers::STATUS).map(|v| v.as_str().to_owned()));
    assert!(
        status.as_deref().is_some_and(|s| s.starts_with("503")),
        "{status:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no device: answered at once"
    );

    let mut h = HeaderMap::new();
    h.insert(headers::TIMEOUT_MS, "300");
    let slow = client
        .request_with_headers("plantd.plant-1.svc.slow.device", h, Bytes::new())
        .await
        .expect("reply");
    let status = slow
        .headers
        .and_then(|h| h.get(headers::STATUS).map(|v| v.as_str().to_owned()));
    assert!(
        status.as_deref().is_some_and(|s| s.starts_with("504")),
        "{status:?}"
    );
}

#[tokio::test]
async fn an_authenticated_device_may_answer_without_a_publish_grant() {
    use plantd_shared::claims::{Audience, Claims, MqttGrant, PrincipalKind};
    use plantd_shared::jwt::{SigningKey, jwks_of, now_secs};

    let nats = Nats::start().await;
    let js = nats.jetstream().await;
    streams::ensure(&js, &Settings::default())
        .await
        .expect("streams");
    let data = tempfile::tempdir().expect("tmp");
    let key = SigningKey::generate_ed25519("k1").expect("key");
    let jwks = data.path().join("jwks.json");
    std::fs::write(
        &jwks,
        serde_json::to_vec(&jwks_of([&key]).expect("jwks")).expect("json"),
    )
    .expect("write jwks");
    let edge = start_edge(
        &nats,
        &data.path().join("edge"),
        &[
            "--jwks-file",
            jwks.to_str().expect("utf-8 path"),
            "--org",
            "acme",
        ],
    )
    .await;

    // A device allowed to subscribe to its request topic and nothing else.
    let now = now_secs();
    let claims = Claims {
        iss: "test".into(),
        sub: "pump-2".into(),
        aud: Audience::One("plantd:site:plant-1".into()),
        exp: now + 600,
        iat: now,
        nbf: None,
        jti: "pump-2-token".into(),
        org: "acme".into(),
        kind: PrincipalKind::Device,
        roles: vec!["device".into()],
        perms: vec![],
        mqtt: [(
            "plant-1".to_owned(),
            MqttGrant {
                publish: vec![],
                subscribe: vec!["pump/2/status".into()],
            },
        )]
        .into_iter()
        .collect(),
    };
    let token = key.sign(&claims).expect("sign");
    let (pump, mut requests) =
        device_with(edge.mqtt, "pump-2", "pump/2/status", Some(&token)).await;
    tokio::spawn(async move {
        while let Some(req) = requests.recv().await {
            let props = req.properties.unwrap_or_default();
            let Some(reply_to) = props.response_topic else {
                continue;
            };
            let answer = PublishProperties {
                correlation_data: props.correlation_data,
                ..PublishProperties::default()
            };
            let _ = pump
                .publish_with_properties(reply_to, QoS::AtLeastOnce, false, "ok", answer)
                .await;
        }
    });
    let client = nats.client().await;
    let answer = plantd_testkit::eventually(
        Duration::from_secs(10),
        "the edge to answer the service request",
        || async {
            match client
                .request("plantd.plant-1.svc.pump.2.status", Bytes::new())
                .await
            {
                Ok(m) => Some(m),
                Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => None,
                Err(e) => panic!("request: {e}"),
            }
        },
    )
    .await;
    assert!(
        answer
            .headers
            .as_ref()
            .and_then(|h| h.get(headers::STATUS))
            .is_none(),
        "{:?}",
        answer.headers
    );
    assert_eq!(answer.payload.as_ref(), b"ok");
}

/// The held-command record of command `id`, once its state is `want`.
async fn record_in_state(
    kv: &async_nats::jetstream::kv::Store,
    id: u64,
    want: plantd_shared::commands::CommandState,
) -> (plantd_shared::commands::HeldCommand, u64) {
    use futures::StreamExt as _;
    let key = format!("plant-1.{id}");
    let mut changes = kv.watch_with_history(&key).await.expect("watch");
    let wait = async {
        while let Some(e) = changes.next().await {
            let e = e.expect("entry");
            if let Ok(r) = plantd_shared::commands::HeldCommand::from_bytes(&e.value)
                && r.state == want
            {
                return (r, e.revision);
            }
        }
        panic!("watch ended");
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .unwrap_or_else(|_| panic!("record {key} never {want:?}"))
}

#[tokio::test]
async fn a_command_nobody_takes_waits_alone_while_a_thousand_others_arrive_in_order_per_topic() {
    use plantd_shared::commands::CommandState;

    let nats = Nats::start().await;
    let js = nats.jetstream().await;
    streams::ensure(&js, &Settings::default())
        .await
        .expect("streams");
    let kv = js
        .get_key_value(streams::COMMANDS_BUCKET)
        .await
        .expect("bucket");
    let data = tempfile::tempdir().expect("tmp");
    let edge = start_edge(&nats, data.path(), &[]).await;
    let (_valves, mut rx) = device(edge.mqtt, "valves", "valve/+/set").await;

    // A mistyped topic nobody subscribes to.
    let stuck = js
        .publish_with_headers(
            "plantd.plant-1.down.nobody.listens",
            HeaderMap::new(),
            "stuck".into(),
        )
        .await
        .expect("publish")
        .await
        .expect("stored")
        .sequence;
    let (held, _) = record_in_state(&kv, stuck, CommandState::Held).await;
    assert_eq!(held.topic, "nobody/listens");

    // 1,000 commands to five live topics, sent without waiting for each.
    const TOPICS: usize = 5;
    const COUNT: usize = 1000;
    let mut acks = Vec::with_capacity(COUNT);
    for i in 0..COUNT {
        let topic = i % TOPICS;
        acks.push(
            js.publish(
                format!("plantd.plant-1.down.valve.{topic}.set"),
                format!("{topic}:{i}").into(),
            )
            .await
            .expect("publish"),
        );
    }
    for a in acks {
        a.await.expect("stored");
    }
    let mut last = [None::<usize>; TOPICS];
    for _ in 0..COUNT {
        let p = next(&mut rx).await;
        let text = String::from_utf8(p.payload.to_vec()).expect("utf-8");
        let (topic, i) = text.split_once(':').expect("topic:i");
        let (topic, i): (usize, usize) = (topic.parse().expect("n"), i.parse().expect("n"));
        assert_eq!(
            p.topic.as_ref(),
            format!("valve/{topic}/set").as_bytes(),
            "{text}"
        );
        assert!(
            last[topic].is_none_or(|l| l < i),
            "topic {topic}: {i} after {:?}",
            last[topic]
        );
        last[topic] = Some(i);
    }
    assert!(
        last.iter().all(|l| l.is_some_and(|l| l + TOPICS >= COUNT)),
        "every topic's last command arrived: {last:?}"
    );
    // All arrived while the stuck one was still waiting.
    let still = kv
        .entry(format!("plant-1.{stuck}"))
        .await
        .expect("read")
        .expect("still there");
    let still = plantd_shared::commands::HeldCommand::from_bytes(&still.value).expect("record");
    assert_eq!(still.state, CommandState::Held);
    assert_eq!(
        edge_proc::metric(&edge, "plantd_downlink_pending").await,
        Some(1.0)
    );

    // A second command to the stuck topic waits behind the first.
    let behind = js
        .publish("plantd.plant-1.down.nobody.listens", "behind".into())
        .await
        .expect("publish")
        .await
        .expect("stored")
        .sequence;
    let (r, _) = record_in_state(&kv, behind, CommandState::Held).await;
    assert_eq!(r.reason, plantd_shared::commands::HoldReason::Behind);

    // Cancel the first (as the proxy does): the edge answers `cancelled`.
    let (record, revision) = record_in_state(&kv, stuck, CommandState::Held).await;
    let request = plantd_shared::commands::HeldCommand {
        state: CommandState::CancelRequested,
        ..record
    };
    kv.update(
        format!("plant-1.{stuck}"),
        request.to_bytes().into(),
        revision,
    )
    .await
    .expect("cancel request");
    record_in_state(&kv, stuck, CommandState::Cancelled).await;

    // A device comes for the topic: it gets the second command, never the
    // cancelled one (which would have come first: order per topic).
    let (_late, mut late) = device(edge.mqtt, "late", "nobody/listens").await;
    let p = next(&mut late).await;
    assert_eq!(p.payload.as_ref(), b"behind");
    assert_eq!(
        edge_proc::metric(&edge, "plantd_downlink_cancelled_total").await,
        Some(1.0)
    );
}

#[tokio::test]
async fn a_command_for_an_offline_persistent_session_is_queued_there_not_held() {
    let nats = Nats::start().await;
    let js = nats.jetstream().await;
    streams::ensure(&js, &Settings::default())
        .await
        .expect("streams");
    let data = tempfile::tempdir().expect("tmp");
    let edge = start_edge(&nats, data.path(), &[]).await;

    // A device with a persistent session subscribes, then goes away.
    let persistent = || {
        let mut o = MqttOptions::new("valve-9", edge.mqtt.ip().to_string(), edge.mqtt.port());
        o.set_keep_alive(Duration::from_secs(30));
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(3600));
        o
    };
    let (client, mut el) = AsyncClient::new(persistent(), 10);
    client
        .subscribe("valve/9/set", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    tokio::time::timeout(Duration::from_secs(10), async {
        while !matches!(el.poll().await, Ok(Event::Incoming(Packet::SubAck(_)))) {}
    })
    .await
    .expect("SUBACK");
    client.disconnect().await.expect("disconnect");
    tokio::time::timeout(Duration::from_secs(10), async {
        while el.poll().await.is_ok() {}
    })
    .await
    .expect("disconnected");

    command(&js, "valve.9.set", "close", &[]).await;
    // The broker took it for the session (a bounded poll: the edge offers
    // no event for it)...
    plantd_testkit::eventually(
        Duration::from_secs(30),
        "the command delivered to the offline session",
        || async {
            (edge_proc::metric(&edge, "plantd_downlink_delivered_total").await == Some(1.0))
                .then_some(())
        },
    )
    .await;
    // ... without holding it: nothing was ever written to the held-command
    // bucket.
    let mut records = js
        .get_stream(format!("KV_{}", streams::COMMANDS_BUCKET))
        .await
        .expect("bucket stream");
    let info = records.info().await.expect("info");
    assert_eq!(info.state.last_sequence, 0, "no command was held");

    // The device returns to its session and gets the command.
    let (_client, mut el) = AsyncClient::new(persistent(), 10);
    let p = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(Event::Incoming(Packet::Publish(p))) = el.poll().await {
                return p;
            }
        }
    })
    .await
    .expect("the queued command");
    assert_eq!(p.payload.as_ref(), b"close");
}
