//! MQTT 5.0 behaviour, driven by rumqttc's v5 client (and mosquitto's v5
//! clients where they fit).

use crate::common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use rumqttc::v5::mqttbytes::QoS;

fn props() -> m5::PublishProperties {
    m5::PublishProperties::default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_sends_0x8e_to_the_old_connection() {
    let b = TestBroker::start().await;
    let (mut first, _) = v5(&b, "dup-id", |_| {}).await;
    let (_second, _) = v5(&b, "dup-id", |_| {}).await;
    let why = first.ended().await;
    assert!(
        why.contains("SessionTakenOver"),
        "first connection told why: {why}"
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connack_advertises_limits() {
    let b = TestBroker::with(|c| {
        c.limits.max_inflight = 7;
        c.limits.max_packet_size = 5000;
        c.limits.topic_alias_maximum = 9;
        c.limits.server_keep_alive = Some(20);
    })
    .await;
    let (_c, ack) = v5(&b, "limits", |o| {
        o.set_keep_alive(Duration::from_secs(100));
    })
    .await;
    let p = ack.properties.expect("CONNACK properties");
    assert_eq!(p.receive_max, Some(7));
    assert_eq!(p.max_packet_size, Some(5000));
    assert_eq!(p.topic_alias_max, Some(9));
    assert_eq!(p.server_keep_alive, Some(20), "v5 Server Keep Alive");
    b.stop().await;
}

/// Waits until the broker holds `n` sessions (the router counts them
/// after each change).
async fn sessions(b: &TestBroker, n: u64) {
    let m = b.metrics.clone();
    plantd_testkit::wait::eventually(WAIT, &format!("{n} sessions"), || {
        let m = m.clone();
        async move { (m.sessions.load(std::sync::atomic::Ordering::Relaxed) == n).then_some(()) }
    })
    .await;
}

/// [MQTT-3.1.2-23]: a session outlives its connection by its expiry
/// interval and no longer. On a manual clock (decision 0056): 1.999 s after
/// the connection closed the session is resumed, 2 s after the next close
/// it is gone. Fails on a broker that ignores the interval either way
/// (ends the session at once, or keeps it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_keeps_then_ends_the_session() {
    let (b, clock) = TestBroker::on_manual_clock().await;
    let (s, _) = v5(&b, "expiring", |o| {
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(2));
    })
    .await;
    drop(s);
    // The broker has armed the expiry: just short of it, the session is
    // still there.
    let closed = clock.now();
    TestBroker::armed(&clock, closed + Duration::from_secs(2)).await;
    clock.advance(Duration::from_millis(1999));
    let mut s = v5_unchecked(&b, "expiring", |o| {
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(2));
    });
    assert!(
        s.connack().await.expect("reconnect").session_present,
        "within the expiry interval"
    );
    // The first expiry passes while the session is connected (ignored);
    // then the second close arms a new one.
    clock.advance(Duration::from_millis(1));
    drop(s);
    TestBroker::armed(&clock, closed + Duration::from_secs(4)).await;
    clock.advance(Duration::from_secs(2));
    sessions(&b, 0).await;
    let mut s = v5_unchecked(&b, "expiring", |o| {
        o.set_clean_start(false);
    });
    assert!(
        !s.connack().await.expect("reconnect").session_present,
        "expired"
    );
    b.stop().await;
}

/// [MQTT-3.1.3-9]: a will waits out its delay, and a reconnect within the
/// delay cancels it. On a manual clock (decision 0056). Fails on a broker
/// that ignores the delay (the will is out before the clock moves), never
/// sends it, or sends it despite the reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_delay_postpones_the_will_and_reconnect_cancels_it() {
    let (b, clock) = TestBroker::on_manual_clock().await;
    let (mut watcher, _) = v5(&b, "watcher", |_| {}).await;
    watcher.sub("wills/#", QoS::AtLeastOnce).await;
    let will = |topic: &str, delay: u32| {
        m5::LastWill::new(
            topic,
            "bye",
            QoS::AtLeastOnce,
            false,
            Some(m5::LastWillProperties {
                delay_interval: Some(delay),
                payload_format_indicator: None,
                message_expiry_interval: None,
                content_type: None,
                response_topic: None,
                correlation_data: None,
                user_properties: vec![],
            }),
        )
    };

    // Delayed will: sent a second after the connection drops, not before.
    let (c, _) = v5(&b, "delayed", |o| {
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(60));
        o.set_last_will(will("wills/delayed", 1));
    })
    .await;
    drop(c);
    TestBroker::armed(&clock, clock.now() + Duration::from_secs(1)).await;
    clock.advance(Duration::from_millis(999));
    watcher.no_publish().await;
    clock.advance(Duration::from_millis(1));
    let w = watcher.publish().await;
    assert_eq!(&w.topic[..], b"wills/delayed");

    // Reconnecting within the delay cancels the will.
    let (c, _) = v5(&b, "back", |o| {
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(60));
        o.set_last_will(will("wills/back", 2));
    })
    .await;
    drop(c);
    TestBroker::armed(&clock, clock.now() + Duration::from_secs(2)).await;
    let (_c, ack) = v5(&b, "back", |o| {
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(60));
    })
    .await;
    assert!(ack.session_present);
    // Past the two-second delay: the will stays cancelled.
    clock.advance(Duration::from_secs(3));
    watcher.no_publish().await;
    b.stop().await;
}

/// [MQTT-3.3.2-5] and §3.3.2.3.3: a queued message past its expiry is not
/// delivered, and the rest go out with the interval less the time queued.
/// On a manual clock (decision 0056), 2.1 s pass while the reader is away.
/// Fails on a broker that delivers the expired message or forwards the
/// interval unchanged (100 instead of 98).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_expiry_drops_stale_and_decrements_the_rest() {
    let (b, clock) = TestBroker::on_manual_clock().await;
    let opts = |o: &mut rumqttc::v5::MqttOptions| {
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(60));
    };
    let (mut s, _) = v5(&b, "late-reader", opts).await;
    s.sub("exp/#", QoS::AtLeastOnce).await;
    drop(s);
    let (mut p, _) = v5(&b, "writer", |_| {}).await;
    for (topic, secs) in [("exp/short", 1), ("exp/long", 100)] {
        p.client
            .publish_with_properties(
                topic,
                QoS::AtLeastOnce,
                false,
                "x",
                m5::PublishProperties {
                    message_expiry_interval: Some(secs),
                    ..props()
                },
            )
            .await
            .expect("publish");
        // Acknowledged: the broker has the message, its expiry counting.
        p.puback().await;
    }
    clock.advance(Duration::from_millis(2100));
    let (mut s, ack) = v5(&b, "late-reader", opts).await;
    assert!(ack.session_present);
    let m = s.publish().await;
    assert_eq!(&m.topic[..], b"exp/long", "the expired message was dropped");
    let left = m
        .properties
        .and_then(|p| p.message_expiry_interval)
        .expect("expiry passed on");
    assert_eq!(left, 98, "expiry counts down while queued");
    s.no_publish().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_aliases_both_ways() {
    let b = TestBroker::start().await;
    let (mut s, _) = v5(&b, "alias-reader", |o| {
        o.set_topic_alias_max(Some(5));
    })
    .await;
    s.sub("alias/#", QoS::AtMostOnce).await;
    let (mut plain, _) = v5(&b, "no-alias-reader", |_| {}).await;
    plain.sub("alias/#", QoS::AtMostOnce).await;
    let (p, ack) = v5(&b, "alias-writer", |_| {}).await;
    assert!(ack.properties.and_then(|p| p.topic_alias_max).unwrap_or(0) > 0);
    let with_alias = m5::PublishProperties {
        topic_alias: Some(1),
        ..props()
    };
    p.client
        .publish_with_properties(
            "alias/long/topic/name",
            QoS::AtMostOnce,
            false,
            "1",
            with_alias.clone(),
        )
        .await
        .expect("publish");
    // Topic left empty: the broker resolves alias 1.
    p.client
        .publish_with_properties("", QoS::AtMostOnce, false, "2", with_alias)
        .await
        .expect("publish");
    // A client without alias support gets the full topic both times: the
    // broker resolved the inbound alias.
    for payload in [b"1", b"2"] {
        let m = plain.publish().await;
        assert_eq!(
            &m.topic[..],
            b"alias/long/topic/name",
            "inbound alias resolved"
        );
        assert_eq!(&m.payload[..], payload);
        assert_eq!(m.properties.and_then(|p| p.topic_alias), None);
    }
    // A client with Topic Alias Maximum 5 gets the topic once, then only
    // the alias (rumqttc reports the empty wire topic).
    let first = s.publish().await;
    let second = s.publish().await;
    assert_eq!(&first.topic[..], b"alias/long/topic/name");
    assert!(
        second.topic.is_empty(),
        "second delivery sent by alias only"
    );
    assert_eq!(&second.payload[..], b"2");
    let a1 = first.properties.and_then(|p| p.topic_alias);
    let a2 = second.properties.and_then(|p| p.topic_alias);
    assert!(a1.is_some(), "broker assigned an outbound alias");
    assert_eq!(a1, a2, "and reused it");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_maximum_limits_unacknowledged_deliveries() {
    let b = TestBroker::start().await;
    let (mut s, _) = v5(&b, "slow-acker", |o| {
        o.set_receive_maximum(Some(2));
        o.set_manual_acks(true);
    })
    .await;
    s.sub("flow/#", QoS::AtLeastOnce).await;
    let (mut p, _) = v5(&b, "fast-writer", |_| {}).await;
    for i in 0..5 {
        p.publish1("flow/x", false, format!("{i}")).await;
    }
    let m0 = s.publish().await;
    let m1 = s.publish().await;
    s.no_publish().await;
    s.client.ack(&m0).await.expect("ack");
    let m2 = s.publish().await;
    assert_eq!(&m2.payload[..], b"2", "the window opened by one");
    s.client.ack(&m1).await.expect("ack");
    s.client.ack(&m2).await.expect("ack");
    let m3 = s.publish().await;
    let m4 = s.publish().await;
    assert_eq!((&m3.payload[..], &m4.payload[..]), (&b"3"[..], &b"4"[..]));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message_dropped_for_that_client_only() {
    let b = TestBroker::start().await;
    let (mut small, _) = v5(&b, "small", |o| {
        o.set_max_packet_size(Some(200));
    })
    .await;
    small.sub("size/#", QoS::AtMostOnce).await;
    let (mut big, _) = v5(&b, "big", |_| {}).await;
    big.sub("size/#", QoS::AtMostOnce).await;
    let (p, _) = v5(&b, "sizer", |_| {}).await;
    p.client
        .publish("size/a", QoS::AtMostOnce, false, vec![b'x'; 1000])
        .await
        .expect("publish");
    p.client
        .publish("size/b", QoS::AtMostOnce, false, "tiny")
        .await
        .expect("publish");
    assert_eq!(big.publish().await.payload.len(), 1000);
    let m = small.publish().await;
    assert_eq!(
        &m.topic[..],
        b"size/b",
        "the large one was skipped, the connection kept"
    );
    assert_eq!(
        b.metrics
            .dropped_count(plantd_edge::metrics::DropReason::TooLarge),
        1,
        "counted"
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_subscriptions_carry_every_subscription_identifier() {
    let b = TestBroker::start().await;
    let (mut s, _) = v5(&b, "ids", |_| {}).await;
    s.sub_filter(m5::Filter::new("ids/+", QoS::AtMostOnce), Some(1))
        .await;
    s.sub_filter(m5::Filter::new("ids/#", QoS::AtLeastOnce), Some(2))
        .await;
    mosquitto_pub(&b, "mqttv5", &["-t", "ids/x", "-m", "v", "-q", "1"]).await;
    let m = s.publish().await;
    assert_eq!(m.qos, QoS::AtLeastOnce, "highest QoS");
    let mut ids = m.properties.expect("properties").subscription_identifiers;
    ids.sort_unstable();
    assert_eq!(ids, vec![1, 2]);
    s.no_publish().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_local_and_retain_options() {
    let b = TestBroker::start().await;
    let (mut c, _) = v5(&b, "self-talker", |_| {}).await;
    let mut f = m5::Filter::new("echo/#", QoS::AtMostOnce);
    f.nolocal = true;
    c.sub_filter(f, None).await;
    c.client
        .publish("echo/1", QoS::AtMostOnce, false, "me")
        .await
        .expect("publish");
    c.no_publish().await;
    mosquitto_pub(&b, "mqttv5", &["-t", "echo/1", "-m", "other"]).await;
    assert_eq!(
        &c.publish().await.payload[..],
        b"other",
        "others' messages still arrive"
    );

    // Retain handling 2: never send retained on subscribe.
    mosquitto_pub(&b, "mqttv5", &["-t", "ret/a", "-m", "kept", "-r"]).await;
    let (mut never, _) = v5(&b, "never", |_| {}).await;
    let mut f = m5::Filter::new("ret/#", QoS::AtMostOnce);
    f.retain_forward_rule = m5::RetainForwardRule::Never;
    never.sub_filter(f, None).await;
    never.no_publish().await;

    // Retain as published keeps RETAIN on live messages.
    let (mut rap, _) = v5(&b, "rap", |_| {}).await;
    let mut f = m5::Filter::new("ret/#", QoS::AtMostOnce);
    f.preserve_retain = true;
    rap.sub_filter(f, None).await;
    assert!(rap.publish().await.retain, "retained on subscribe");
    mosquitto_pub(&b, "mqttv5", &["-t", "ret/a", "-m", "live", "-r"]).await;
    let m = rap.publish().await;
    assert_eq!(&m.payload[..], b"live");
    assert!(m.retain, "retain-as-published");
    let m = never.publish().await;
    assert!(!m.retain, "without retain-as-published the flag is cleared");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_response_properties_pass_through_unchanged() {
    let b = TestBroker::start().await;
    let (mut s, _) = v5(&b, "responder", |_| {}).await;
    s.sub("svc/req", QoS::AtLeastOnce).await;
    let (p, _) = v5(&b, "requester", |_| {}).await;
    let sent = m5::PublishProperties {
        payload_format_indicator: Some(1),
        content_type: Some("application/json".into()),
        response_topic: Some("svc/reply/42".into()),
        correlation_data: Some(Bytes::from_static(b"\x00\x01corr")),
        user_properties: vec![("site".into(), "a".into()), ("site".into(), "b".into())],
        ..props()
    };
    p.client
        .publish_with_properties("svc/req", QoS::AtLeastOnce, false, "{}", sent.clone())
        .await
        .expect("publish");
    let got = s.publish().await.properties.expect("properties");
    assert_eq!(got.payload_format_indicator, sent.payload_format_indicator);
    assert_eq!(got.content_type, sent.content_type);
    assert_eq!(got.response_topic, sent.response_topic);
    assert_eq!(got.correlation_data, sent.correlation_data);
    assert_eq!(
        got.user_properties, sent.user_properties,
        "order and duplicates kept"
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_acknowledgements_carry_reason_codes() {
    let b = TestBroker::with(|c| c.limits.max_topic_levels = 3).await;
    let (mut p, _) = v5(&b, "reasons", |_| {}).await;
    p.client
        .publish("nobody/here", QoS::AtLeastOnce, false, "x")
        .await
        .expect("publish");
    assert_eq!(
        p.puback().await.reason,
        m5::PubAckReason::NoMatchingSubscribers
    );
    p.client
        .publish("a/b/c/d", QoS::AtLeastOnce, false, "x")
        .await
        .expect("publish");
    assert_eq!(
        p.puback().await.reason,
        m5::PubAckReason::TopicNameInvalid,
        "too many levels"
    );
    let bad_utf8 = m5::PublishProperties {
        payload_format_indicator: Some(1),
        ..props()
    };
    p.client
        .publish_with_properties("x", QoS::AtLeastOnce, false, vec![0xff, 0xfe], bad_utf8)
        .await
        .expect("publish");
    assert_eq!(
        p.puback().await.reason,
        m5::PubAckReason::PayloadFormatInvalid
    );
    let ack = p.sub("a/b/c/#", QoS::AtMostOnce).await;
    assert_eq!(
        ack.return_codes,
        vec![m5::SubscribeReasonCode::TopicFilterInvalid]
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscription_balances_across_the_group() {
    let b = TestBroker::start().await;
    let (mut m1, _) = v5(&b, "worker-1", |_| {}).await;
    let (mut m2, _) = v5(&b, "worker-2", |_| {}).await;
    let (mut plain, _) = v5(&b, "auditor", |_| {}).await;
    m1.sub("$share/workers/jobs/#", QoS::AtLeastOnce).await;
    m2.sub("$share/workers/jobs/#", QoS::AtLeastOnce).await;
    plain.sub("jobs/#", QoS::AtLeastOnce).await;
    let (mut p, _) = v5(&b, "dispatcher", |_| {}).await;
    for i in 0..10 {
        p.publish1("jobs/new", false, format!("{i}")).await;
    }
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(String::from_utf8_lossy(&m1.publish().await.payload).into_owned());
        seen.push(String::from_utf8_lossy(&m2.publish().await.payload).into_owned());
    }
    m1.no_publish().await;
    m2.no_publish().await;
    seen.sort_by_key(|s| s.parse::<u32>().unwrap_or(0));
    assert_eq!(
        seen,
        (0..10).map(|i| i.to_string()).collect::<Vec<_>>(),
        "each job once"
    );
    for i in 0..10 {
        assert_eq!(
            plain.publish().await.payload,
            format!("{i}").into_bytes(),
            "plain subscriber sees all"
        );
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_0x8b() {
    let b = TestBroker::start().await;
    let (mut c, _) = v5(&b, "stayer", |_| {}).await;
    b.stop().await;
    let why = c.ended().await;
    assert!(why.contains("ServerShuttingDown"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_reports_whether_a_subscription_existed() {
    let b = TestBroker::start().await;
    let mut r = {
        let (r, _) = Raw::connect5(&b, v5_connect("unsub")).await;
        r
    };
    use plantd_edge::protocol::v5 as p5;
    r.send5(p5::Packet::Subscribe(p5::Subscribe {
        pkid: 1,
        properties: p5::Properties::default(),
        filters: vec![("u/1".into(), p5::SubscriptionOptions::default())],
    }))
    .await;
    assert!(matches!(r.recv5().await, Some(p5::Packet::SubAck(_))));
    r.send5(p5::Packet::Unsubscribe(p5::Unsubscribe {
        pkid: 2,
        properties: p5::Properties::default(),
        filters: vec!["u/1".into(), "u/never".into()],
    }))
    .await;
    match r.recv5().await {
        Some(p5::Packet::UnsubAck(u)) => assert_eq!(u.reasons, vec![0x00, 0x11]),
        other => panic!("expected UNSUBACK, got {other:?}"),
    }
    mosquitto_pub(&b, "mqttv5", &["-t", "u/1", "-m", "gone"]).await;
    // Nothing arrives: a PING answered proves the connection is alive and idle.
    r.send5(p5::Packet::PingReq).await;
    assert_eq!(r.recv5().await, Some(p5::Packet::PingResp));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_with_will_message_sends_the_will() {
    let b = TestBroker::start().await;
    let (mut watcher, _) = v5(&b, "watcher", |_| {}).await;
    watcher.sub("wills/#", QoS::AtLeastOnce).await;
    let mut c = v5_connect("leaving");
    c.will = Some(plantd_edge::protocol::v5::LastWill {
        topic: "wills/leaving".into(),
        payload: Bytes::from_static(b"asked for"),
        qos: plantd_edge::protocol::QoS::AtLeastOnce,
        retain: false,
        properties: plantd_edge::protocol::v5::Properties::default(),
    });
    let (mut r, _) = Raw::connect5(&b, c).await;
    r.send5(plantd_edge::protocol::v5::Packet::Disconnect(
        plantd_edge::protocol::v5::Disconnect::new(0x04),
    ))
    .await;
    assert_eq!(&watcher.publish().await.payload[..], b"asked for");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_handling_1_sends_retained_only_for_new_subscriptions() {
    let b = TestBroker::start().await;
    mosquitto_pub(&b, "mqttv5", &["-t", "rh/a", "-m", "r", "-r"]).await;
    let (mut c, _) = v5(&b, "rh1", |_| {}).await;
    let mut f = m5::Filter::new("rh/#", QoS::AtMostOnce);
    f.retain_forward_rule = m5::RetainForwardRule::OnNewSubscribe;
    c.sub_filter(f.clone(), None).await;
    assert!(c.publish().await.retain, "new subscription: retained sent");
    c.sub_filter(f, None).await;
    c.no_publish().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_release_is_resent_after_reconnect() {
    use plantd_edge::protocol::{QoS as Q, v4};
    let b = TestBroker::start().await;
    let (mut r, _) = Raw::connect4(&b, "q2", false, 30).await;
    r.send4(v4::Packet::Subscribe(v4::Subscribe {
        pkid: 1,
        filters: vec![("q2/#".into(), Q::ExactlyOnce)],
    }))
    .await;
    assert!(matches!(r.recv4().await, Some(v4::Packet::SubAck(_))));
    mosquitto_pub(&b, "mqttv311", &["-t", "q2/x", "-m", "once", "-q", "2"]).await;
    let Some(v4::Packet::Publish(p)) = r.recv4().await else {
        panic!("expected PUBLISH");
    };
    assert_eq!(p.qos, Q::ExactlyOnce);
    r.send4(v4::Packet::PubRec(p.pkid)).await;
    assert_eq!(r.recv4().await, Some(v4::Packet::PubRel(p.pkid)));
    drop(r); // no PUBCOMP

    let (mut r, ack) = Raw::connect4(&b, "q2", false, 30).await;
    assert!(ack.session_present);
    assert_eq!(
        r.recv4().await,
        Some(v4::Packet::PubRel(p.pkid)),
        "PUBREL resent, not the PUBLISH"
    );
    r.send4(v4::Packet::PubComp(p.pkid)).await;
    r.send4(v4::Packet::PingReq).await;
    assert_eq!(r.recv4().await, Some(v4::Packet::PingResp));
    b.stop().await;
}
