//! Live data and commands with real MQTT devices: a device's publish comes
//! out of a subscription's stream, a command (over the socket and over
//! REST) reaches an MQTT subscriber, and a service call is answered by an
//! MQTT 5 device (response topic and correlation data).

use std::time::Duration;

use plantd_client::proxy::types;
use plantd_client::{Error, LinkState, RawBody};
use plantd_testkit::mqtt;
use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::v5::mqttbytes::v5::{Packet as Packet5, PublishProperties};

use crate::common::{SITE, Stack, WAIT, next, until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_publish_comes_out_of_the_stream_and_commands_reach_devices() {
    let stack = Stack::start().await;
    let (sensor_id, sensor_token) = stack.device("sdk-sensor", &["sdk/#"], &[]).await;
    let (valve_id, valve_token) = stack.device("sdk-valve", &[], &["sdk/valve/#"]).await;
    let mut sensor = stack.mqtt(&sensor_id, &sensor_token).await;

    let live = stack.admin.live();
    let mut states = live.states();
    let mut sub = live.subscribe(SITE, "sdk/+/temp");
    until(&mut states, LinkState::Connected).await;
    // The subscription starts at the next message stored once the server
    // has it in place; a first publish may race that, so publish until
    // one arrives.
    let mut first = None;
    for _ in 0..15 {
        sensor.publish1("sdk/oven/temp", false, "21.5").await;
        if let Ok(Some(m)) =
            tokio::time::timeout(Duration::from_secs(1), futures::StreamExt::next(&mut sub)).await
        {
            first = Some(m.expect("a message, not an error"));
            break;
        }
    }
    let m = first.expect("the subscription yields the device's publish");
    assert_eq!(
        (m.site.as_str(), m.topic.as_str(), m.text()),
        (SITE, "sdk/oven/temp", Some("21.5"))
    );
    assert!(m.sequence > 0);
    assert_eq!(
        m.headers.get("Plantd-Qos").map(String::as_str),
        Some("1"),
        "{:?}",
        m.headers
    );
    // Another topic of the filter, in order after it.
    sensor.publish1("sdk/press/temp", false, "22").await;
    let mut more = next(&mut sub, "the second reading")
        .await
        .expect("a message");
    while more.topic == "sdk/oven/temp" {
        more = next(&mut sub, "the second reading")
            .await
            .expect("a message");
    }
    assert_eq!(
        (more.topic.as_str(), more.text()),
        ("sdk/press/temp", Some("22"))
    );
    assert!(more.sequence > m.sequence);

    // A command over the socket reaches the valve's MQTT subscription.
    let mut valve = stack.mqtt(&valve_id, &valve_token).await;
    valve.sub("sdk/valve/#", rumqttc::QoS::AtLeastOnce).await;
    let open = types::Command {
        topic: "sdk/valve/set".to_owned(),
        payload: Some("open".to_owned()),
        qos: Some(1),
        ttl_secs: Some(30),
        ..Default::default()
    };
    let sent = live
        .publish(SITE, &open)
        .await
        .expect("the command is stored");
    assert_eq!(sent.stream, "PLANTD_COMMANDS");
    let got = valve.publish().await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("sdk/valve/set", &b"open"[..])
    );
    // And one over REST.
    let close = types::Command {
        payload: Some("close".to_owned()),
        ..open.clone()
    };
    let sent2 = stack
        .admin
        .send_command(SITE, &close)
        .await
        .expect("stored");
    assert!(sent2.sequence > sent.sequence);
    let got = valve.publish().await;
    assert_eq!(&got.payload[..], b"close");

    // A refused command is a typed error, not a lost one.
    let refused = live
        .publish(
            SITE,
            &types::Command {
                topic: "sdk/#".to_owned(),
                ..Default::default()
            },
        )
        .await
        .expect_err("a wildcard is no topic");
    assert!(
        matches!(&refused, Error::Live { code, .. } if code == "bad_request"),
        "{refused:?}"
    );
    live.close();
    until(&mut states, LinkState::Closed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_call_is_answered_by_an_mqtt5_device() {
    let stack = Stack::start().await;
    let (id, token) = stack.device("sdk-pump", &[], &["sdk/pump/status"]).await;
    let (mut pump, _) = mqtt::v5(stack.up.mqtt_port, &id, |o| {
        o.set_credentials(id.clone(), token.clone());
    })
    .await;
    pump.sub("sdk/pump/status", QoS5::AtLeastOnce).await;
    let answering = pump.client.clone();
    let server = tokio::spawn(async move {
        while let Some(event) = pump.events.recv().await {
            let Ok(rumqttc::v5::Event::Incoming(Packet5::Publish(request))) = event else {
                continue;
            };
            let props = request.properties.unwrap_or_default();
            let Some(reply_to) = props.response_topic else {
                continue;
            };
            let answer = PublishProperties {
                correlation_data: props.correlation_data,
                content_type: Some("application/json".into()),
                ..PublishProperties::default()
            };
            let body = format!(
                r#"{{"running":true,"asked":{:?}}}"#,
                String::from_utf8_lossy(&request.payload)
            );
            let _ = answering
                .publish_with_properties(reply_to, QoS5::AtLeastOnce, false, body, answer)
                .await;
        }
    });
    // The edge's service subscription may still be on its way to NATS:
    // 503 (no responder) until it is there.
    let answer = plantd_testkit::eventually(WAIT, "the pump to answer", || async {
        match stack
            .admin
            .call(
                SITE,
                "sdk/pump/status",
                RawBody::text("status?"),
                Duration::from_secs(5),
            )
            .await
        {
            Ok(raw) => Some(raw),
            Err(e) if e.status() == Some(503) => None,
            Err(e) => panic!("{e:?}"),
        }
    })
    .await;
    assert_eq!(answer.content_type.as_deref(), Some("application/json"));
    let v: serde_json::Value = answer.json().expect("JSON");
    assert_eq!(v, serde_json::json!({"running": true, "asked": "status?"}));
    server.abort();
}
