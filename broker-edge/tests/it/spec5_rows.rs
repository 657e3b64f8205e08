//! Rows of the MQTT 5.0 statement table in docs/broker.md that had no
//! test: the will's retain flag and User Properties, Response Information
//! only on request, no Reason String when Request Problem Information is
//! 0, unique assigned client ids, a client's PUBLISH with a Subscription
//! Identifier, PUBREL for an unknown packet id. Real clients (rumqttc
//! 5.0) where a library lets itself do it, raw packets through the
//! broker's codec otherwise.

use crate::common;

use std::collections::HashSet;

use bytes::Bytes;
use common::*;
use plantd_edge::protocol::{QoS as Q, ReasonCode, v5};
use rumqttc::v5::mqttbytes::QoS;

/// A rumqttc 5.0 client with a will on `topic`, connected.
async fn with_will(b: &TestBroker, id: &str, will: m5::LastWill) -> V5 {
    v5(b, id, move |o| {
        o.set_last_will(will);
    })
    .await
    .0
}

/// Ends `c` without DISCONNECT (its socket closes), so its will goes out.
fn vanish(c: V5) {
    drop(c);
}

/// [MQTT-3.1.2-14] / [MQTT-3.1.2-15]: a will with Retain 1 is published
/// as a retained message, one with Retain 0 is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_will_is_retained_only_with_its_retain_flag() {
    let b = TestBroker::start().await;
    let (mut watcher, _) = v5(&b, "watcher", |_| {}).await;
    watcher.sub("will/#", QoS::AtLeastOnce).await;
    let kept = m5::LastWill::new("will/kept", "k", QoS::AtLeastOnce, true, None);
    let lost = m5::LastWill::new("will/not-kept", "n", QoS::AtLeastOnce, false, None);
    vanish(with_will(&b, "w-kept", kept).await);
    vanish(with_will(&b, "w-lost", lost).await);
    let mut seen = HashSet::new();
    for _ in 0..2 {
        seen.insert(watcher.publish().await.topic);
    }
    assert_eq!(seen.len(), 2, "both wills were published");

    // A new subscriber gets the retained messages right after its SUBACK,
    // before anything published later.
    let (mut late, _) = v5(&b, "late", |_| {}).await;
    late.sub("will/#", QoS::AtLeastOnce).await;
    watcher.publish1("will/marker", false, "m").await;
    let first = late.publish().await;
    assert_eq!(&first.topic[..], b"will/kept");
    assert!(first.retain, "delivered as a retained message");
    let next = late.publish().await;
    assert_eq!(
        &next.topic[..],
        b"will/marker",
        "the will with Retain 0 was not retained"
    );
    b.stop().await;
}

/// [MQTT-3.1.3-10]: the will's User Properties reach subscribers in the
/// order the client gave them, duplicates included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_user_properties_arrive_in_order() {
    let b = TestBroker::start().await;
    let (mut watcher, _) = v5(&b, "watcher", |_| {}).await;
    watcher.sub("will/#", QoS::AtLeastOnce).await;
    let props: Vec<(String, String)> = [("k", "1"), ("a", "2"), ("k", "3"), ("k", "1")]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let will_props = m5::LastWillProperties {
        delay_interval: None,
        payload_format_indicator: None,
        message_expiry_interval: None,
        content_type: None,
        response_topic: None,
        correlation_data: None,
        user_properties: props.clone(),
    };
    let will = m5::LastWill::new("will/p", "x", QoS::AtLeastOnce, false, Some(will_props));
    vanish(with_will(&b, "w-props", will).await);
    let got = watcher.publish().await;
    assert_eq!(&got.topic[..], b"will/p");
    assert_eq!(
        got.properties
            .map(|p| p.user_properties)
            .unwrap_or_default(),
        props
    );
    b.stop().await;
}

/// [MQTT-3.1.2-28]: no Response Information in the CONNACK of a client
/// that did not ask for it (and one when it did).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_information_only_when_requested() {
    let b = TestBroker::start().await;
    let (_quiet, ack) = v5(&b, "quiet", |_| {}).await;
    let info = ack.properties.and_then(|p| p.response_information);
    assert_eq!(info, None, "not requested");
    let (_zero, ack) = v5(&b, "zero", |o| {
        o.set_request_response_info(Some(0));
    })
    .await;
    assert_eq!(
        ack.properties.and_then(|p| p.response_information),
        None,
        "0"
    );
    let (_asks, ack) = v5(&b, "asks", |o| {
        o.set_request_response_info(Some(1));
    })
    .await;
    assert_eq!(
        ack.properties
            .and_then(|p| p.response_information)
            .as_deref(),
        Some("response/asks")
    );
    b.stop().await;
}

/// A raw 5.0 connection with Request Problem Information `problem`.
async fn raw_with_problem_info(b: &TestBroker, id: &str, problem: u8) -> Raw {
    let mut c = v5_connect(id);
    c.properties.request_problem_information = Some(problem);
    let (r, ack) = Raw::connect5(b, c).await;
    assert_eq!(ack.reason, ReasonCode::Success.code());
    r
}

/// The next packet's Reason String, asserting the packet's kind with
/// `what`.
async fn reason_string(r: &mut Raw, what: &str) -> Option<String> {
    match r.recv5().await {
        Some(v5::Packet::PubAck(a) | v5::Packet::PubComp(a)) => a.properties.reason_string,
        Some(v5::Packet::SubAck(a)) => a.properties.reason_string,
        Some(v5::Packet::UnsubAck(a)) => a.properties.reason_string,
        other => panic!("expected {what}, got {other:?}"),
    }
}

/// [MQTT-3.1.2-29]: with Request Problem Information 0 the broker sends no
/// Reason String on the negative acknowledgements, nor on the DISCONNECT
/// closing a bad connection (with 1, that DISCONNECT carries one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_reason_strings_when_problem_information_is_off() {
    let b = TestBroker::start().await;
    let mut r = raw_with_problem_info(&b, "silent", 0).await;
    r.send5(v5::Packet::Publish(v5::Publish {
        dup: false,
        qos: Q::AtLeastOnce,
        retain: false,
        topic: "nobody/listens".into(),
        pkid: 1,
        properties: v5::Properties::default(),
        payload: Bytes::from_static(b"x"),
    }))
    .await;
    assert_eq!(reason_string(&mut r, "PUBACK 0x10").await, None);
    r.send5(v5::Packet::Subscribe(v5::Subscribe {
        pkid: 2,
        properties: v5::Properties::default(),
        filters: vec![("bad/#/filter".into(), v5::SubscriptionOptions::default())],
    }))
    .await;
    assert_eq!(reason_string(&mut r, "SUBACK 0x8F").await, None);
    r.send5(v5::Packet::Unsubscribe(v5::Unsubscribe {
        pkid: 3,
        properties: v5::Properties::default(),
        filters: vec!["never/subscribed".into()],
    }))
    .await;
    assert_eq!(reason_string(&mut r, "UNSUBACK 0x11").await, None);
    r.send5(v5::Packet::PubRel(v5::Ack::new(4, 0))).await;
    assert_eq!(reason_string(&mut r, "PUBCOMP 0x92").await, None);

    for (problem, expect_reason) in [(0u8, false), (1, true)] {
        let mut r = raw_with_problem_info(&b, &format!("bad-{problem}"), problem).await;
        // PINGRESP from a client is a Protocol Error.
        r.send5(v5::Packet::PingResp).await;
        match r.recv5().await {
            Some(v5::Packet::Disconnect(d)) => {
                assert_eq!(d.reason, ReasonCode::ProtocolError.code());
                assert_eq!(
                    d.properties.reason_string.is_some(),
                    expect_reason,
                    "Request Problem Information {problem}"
                );
            }
            other => panic!("expected DISCONNECT 0x82, got {other:?}"),
        }
    }
    b.stop().await;
}

/// [MQTT-3.2.2-16]: client ids the broker assigns are all different, also
/// for clients connecting at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assigned_client_ids_are_unique() {
    let b = TestBroker::start().await;
    let clients = futures::future::join_all((0..24).map(|_| v5(&b, "", |_| {}))).await;
    let ids: HashSet<String> = clients
        .iter()
        .map(|(_, ack)| {
            ack.properties
                .as_ref()
                .and_then(|p| p.assigned_client_identifier.clone())
                .expect("an assigned client identifier")
        })
        .collect();
    assert_eq!(ids.len(), clients.len(), "{ids:?}");
    b.stop().await;
}

/// [MQTT-3.3.4-6]: a PUBLISH from a client carrying a Subscription
/// Identifier is a Protocol Error: DISCONNECT 0x82, and the message is
/// not delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_with_a_subscription_identifier_is_a_protocol_error() {
    let b = TestBroker::start().await;
    let (mut watcher, _) = v5(&b, "watcher", |_| {}).await;
    watcher.sub("t/#", QoS::AtLeastOnce).await;
    let (mut r, _) = Raw::connect5(&b, v5_connect("sender")).await;
    let properties = v5::Properties {
        subscription_identifiers: vec![7],
        ..Default::default()
    };
    r.send5(v5::Packet::Publish(v5::Publish {
        dup: false,
        qos: Q::AtLeastOnce,
        retain: false,
        topic: "t/bad".into(),
        pkid: 1,
        properties,
        payload: Bytes::from_static(b"x"),
    }))
    .await;
    assert_eq!(r.closed5().await, Some(ReasonCode::ProtocolError.code()));
    watcher.publish1("t/marker", false, "m").await;
    assert_eq!(&watcher.publish().await.topic[..], b"t/marker");
    b.stop().await;
}

/// [MQTT-4.3.3] / 3.7.2: PUBREL for a packet id the broker is not waiting
/// for is answered with PUBCOMP 0x92 (Packet Identifier not found), and
/// the connection goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubrel_for_an_unknown_id_gets_pubcomp_0x92() {
    let b = TestBroker::start().await;
    let (mut r, _) = Raw::connect5(&b, v5_connect("releaser")).await;
    r.send5(v5::Packet::PubRel(v5::Ack::new(42, 0))).await;
    match r.recv5().await {
        Some(v5::Packet::PubComp(a)) => {
            assert_eq!(a.pkid, 42);
            assert_eq!(a.reason, ReasonCode::PacketIdentifierNotFound.code());
        }
        other => panic!("expected PUBCOMP 0x92, got {other:?}"),
    }
    r.send5(v5::Packet::PingReq).await;
    assert!(matches!(r.recv5().await, Some(v5::Packet::PingResp)));
    b.stop().await;
}
