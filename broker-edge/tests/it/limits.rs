//! Every configurable limit and every kind of bad input, each with the
//! outcome a client sees.

use crate::common;

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use common::*;
use plantd_edge::metrics::DropReason;
use plantd_edge::protocol::{QoS as Q, v4, v5, write_header};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_refused() {
    let b = TestBroker::with(|c| c.limits.max_connections = 2).await;
    let _a = v4(&b, "a", |_| {}).await;
    let _b = v4(&b, "b", |_| {}).await;
    let mut c = v4_unchecked(&b, "c", |_| {});
    let err = c.connack().await.expect_err("third connection refused");
    assert!(err.contains("ServiceUnavailable"), "{err}");
    let mut d = v5_unchecked(&b, "d", |_| {});
    let err = d.connack().await.expect_err("refused for v5 too");
    assert!(err.contains("QuotaExceeded"), "{err}");
    drop(_a);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_packets_close_with_0x95_from_the_header_alone() {
    let b = TestBroker::with(|c| c.limits.max_packet_size = 1024).await;
    let (mut bystander, _) = v5(&b, "bystander", |_| {}).await;
    bystander
        .sub("ok/#", rumqttc::v5::mqttbytes::QoS::AtMostOnce)
        .await;

    let (mut r, ack) = Raw::connect5(&b, v5_connect("big")).await;
    assert_eq!(ack.properties.maximum_packet_size, Some(1024));
    // Only a fixed header announcing 10 MB: refused before any body.
    let mut out = BytesMut::new();
    write_header(&mut out, 0x30, 10_000_000);
    r.write(&out).await;
    assert_eq!(r.closed5().await, Some(0x95));

    // A complete 2 KB PUBLISH from a 3.1.1 client: the socket is closed.
    let (mut r4, _) = Raw::connect4(&b, "big4", true, 30).await;
    r4.send4(v4::Packet::Publish(v4::Publish {
        dup: false,
        qos: Q::AtMostOnce,
        retain: false,
        topic: "ok/x".into(),
        pkid: 0,
        payload: Bytes::from(vec![0u8; 2048]),
    }))
    .await;
    assert!(r4.recv4().await.is_none());

    mosquitto_pub(&b, "mqttv5", &["-t", "ok/fine", "-m", "still here"]).await;
    assert_eq!(
        &bystander.publish().await.payload[..],
        b"still here",
        "others unaffected"
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_inflight_over_receive_maximum_closes_with_0x93() {
    let b = TestBroker::with(|c| c.limits.max_inflight = 2).await;
    let (mut r, ack) = Raw::connect5(&b, v5_connect("greedy")).await;
    assert_eq!(ack.properties.receive_maximum, Some(2));
    for pkid in 1..=3 {
        r.send5(v5::Packet::Publish(v5::Publish {
            dup: false,
            qos: Q::ExactlyOnce,
            retain: false,
            topic: "q2/x".into(),
            pkid,
            properties: v5::Properties::default(),
            payload: Bytes::from_static(b"x"),
        }))
        .await;
    }
    // PUBREC for the first two, then DISCONNECT 0x93.
    assert_eq!(r.closed5().await, Some(0x93));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_queue_drops_oldest_qos0_then_refuses_with_0x97() {
    let b = TestBroker::with(|c| {
        c.limits.max_queued_messages = 3;
        c.limits.queue_qos0_offline = true;
    })
    .await;
    use rumqttc::v5::mqttbytes::QoS;
    let opts = |o: &mut rumqttc::v5::MqttOptions| {
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(300));
    };
    let (mut away, _) = v5(&b, "away", opts).await;
    away.sub("q/#", QoS::AtLeastOnce).await;
    drop(away);

    let (mut p, _) = v5(&b, "producer", |_| {}).await;
    for m in ["a", "b"] {
        p.client
            .publish("q/0", QoS::AtMostOnce, false, m)
            .await
            .expect("publish");
    }
    for m in ["c", "d", "e"] {
        p.client
            .publish("q/1", QoS::AtLeastOnce, false, m)
            .await
            .expect("publish");
        assert_eq!(
            p.puback().await.reason,
            m5::PubAckReason::Success,
            "{m} queued"
        );
    }
    p.client
        .publish("q/1", QoS::AtLeastOnce, false, "f")
        .await
        .expect("publish");
    assert_eq!(
        p.puback().await.reason,
        m5::PubAckReason::QuotaExceeded,
        "queue full of QoS 1"
    );

    let (mut back, ack) = v5(&b, "away", opts).await;
    assert!(ack.session_present);
    for m in ["c", "d", "e"] {
        assert_eq!(&back.publish().await.payload[..], m.as_bytes());
    }
    back.no_publish().await;
    assert_eq!(
        b.metrics.dropped_count(DropReason::QueueFull),
        3,
        "a, b dropped; f refused"
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_length_and_level_limits() {
    let b = TestBroker::with(|c| {
        c.limits.max_topic_length = 16;
        c.limits.max_topic_levels = 4;
    })
    .await;
    use rumqttc::v5::mqttbytes::QoS;
    let (mut c, _) = v5(&b, "limits", |_| {}).await;
    c.client
        .publish("this/topic/is/far/too/long", QoS::AtLeastOnce, false, "x")
        .await
        .expect("publish");
    assert_eq!(c.puback().await.reason, m5::PubAckReason::TopicNameInvalid);
    let ack = c.sub("a/b/c/d/e", QoS::AtMostOnce).await;
    assert_eq!(
        ack.return_codes,
        vec![m5::SubscribeReasonCode::TopicFilterInvalid]
    );
    let ack = c.sub("a/b/c/#", QoS::AtMostOnce).await;
    assert_eq!(
        ack.return_codes,
        vec![m5::SubscribeReasonCode::Success(QoS::AtMostOnce)]
    );

    // 3.1.1 has no negative PUBACK: the connection is closed.
    let mut v3 = v4(&b, "v3", |_| {}).await;
    v3.client
        .publish(
            "this/topic/is/far/too/long",
            rumqttc::QoS::AtLeastOnce,
            false,
            "x",
        )
        .await
        .expect("publish");
    let ended = loop {
        match v3.incoming().await {
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    assert!(!ended.is_empty());
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_per_client_limit_answers_0x97() {
    let b = TestBroker::with(|c| c.limits.max_subscriptions_per_client = 2).await;
    use rumqttc::v5::mqttbytes::QoS;
    let (mut c, _) = v5(&b, "collector", |_| {}).await;
    c.sub("a", QoS::AtMostOnce).await;
    c.sub("b", QoS::AtMostOnce).await;
    let ack = c.sub("c", QoS::AtMostOnce).await;
    assert_eq!(
        ack.return_codes,
        vec![m5::SubscribeReasonCode::QuotaExceeded]
    );
    let ack = c.sub("a", QoS::AtLeastOnce).await;
    assert_eq!(
        ack.return_codes,
        vec![m5::SubscribeReasonCode::Success(QoS::AtLeastOnce)],
        "replacing an existing subscription is not a new one"
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_that_never_send_connect_are_closed() {
    let b = TestBroker::with(|c| c.limits.connect_timeout_ms = 300).await;
    let mut r = Raw::open(&b).await;
    let t = Instant::now();
    assert!(r.frame().await.is_none(), "closed without a word");
    assert!(t.elapsed() >= Duration::from_millis(250));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_protocol_errors_close_only_that_connection() {
    let b = TestBroker::start().await;
    let (mut bystander, _) = v5(&b, "bystander", |_| {}).await;
    bystander
        .sub("ok/#", rumqttc::v5::mqttbytes::QoS::AtMostOnce)
        .await;

    // PUBLISH with QoS 3: malformed (0x81).
    let (mut r, _) = Raw::connect5(&b, v5_connect("qos3")).await;
    r.write(&[0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01]).await;
    assert_eq!(r.closed5().await, Some(0x81));

    // A second CONNECT: protocol error (0x82).
    let (mut r, _) = Raw::connect5(&b, v5_connect("twice")).await;
    r.send5(v5::Packet::Connect(Box::new(v5_connect("twice"))))
        .await;
    assert_eq!(r.closed5().await, Some(0x82));

    // A property that PUBLISH may not carry (session expiry): 0x82.
    let (mut r, _) = Raw::connect5(&b, v5_connect("badprop")).await;
    let mut out = BytesMut::new();
    write_header(&mut out, 0x30, 2 + 1 + 1 + 6);
    out.put_slice(&[0x00, 0x01, b'a', 6, 0x11, 0, 0, 0, 9]);
    out.put_u8(b'p');
    r.write(&out).await;
    assert_eq!(r.closed5().await, Some(0x82));

    // Unknown protocol level above 5: 5.0 CONNACK 0x84 (spec5.rs has the
    // levels below 4).
    let mut r = Raw::open(&b).await;
    r.write(&[
        0x10, 0x0c, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x09, 0x02, 0x00, 0x3c, 0x00, 0x00,
    ])
    .await;
    match r.recv5().await {
        Some(v5::Packet::ConnAck(a)) => assert_eq!(a.reason, 0x84),
        other => panic!("expected CONNACK 0x84, got {other:?}"),
    }

    // Garbage instead of CONNECT.
    let mut r = Raw::open(&b).await;
    r.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(r.frame().await.is_none());

    mosquitto_pub(&b, "mqttv311", &["-t", "ok/after", "-m", "fine"]).await;
    assert_eq!(
        &bystander.publish().await.payload[..],
        b"fine",
        "other clients unaffected"
    );
    assert!(
        b.metrics
            .protocol_errors
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 3
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_subscriber_does_not_stall_publishers_or_others() {
    let b = TestBroker::with(|c| c.limits.max_queued_messages = 50).await;
    // A subscriber that never reads.
    let (mut sloth, _) = Raw::connect4(&b, "sloth", true, 0).await;
    sloth
        .send4(v4::Packet::Subscribe(v4::Subscribe {
            pkid: 1,
            filters: vec![("slow/#".into(), Q::AtMostOnce)],
        }))
        .await;
    assert!(matches!(sloth.recv4().await, Some(v4::Packet::SubAck(_))));

    let mut fast = v4(&b, "fast", |o| {
        o.set_max_packet_size(1 << 20, 1 << 20);
    })
    .await;
    fast.sub("slow/#", rumqttc::QoS::AtMostOnce).await;
    let p = v4(&b, "firehose", |o| {
        o.set_max_packet_size(1 << 20, 1 << 20);
    })
    .await;
    let payload = vec![7u8; 16 * 1024];
    let started = Instant::now();
    // 1,500 x 16 KB = 24 MB: more than the sloth's socket buffers can hold.
    for i in 0..1500u32 {
        let mut body = payload.clone();
        body[..4].copy_from_slice(&i.to_be_bytes());
        p.client
            .publish("slow/data", rumqttc::QoS::AtMostOnce, false, body)
            .await
            .expect("publish");
        let m = fast.publish().await;
        assert_eq!(
            &m.payload[..4],
            &i.to_be_bytes(),
            "fast subscriber gets every message in order"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(
        b.metrics.dropped_count(DropReason::QueueFull) > 0,
        "the sloth's queue overflowed and was counted"
    );
    drop(sloth);
    b.stop().await;
}
