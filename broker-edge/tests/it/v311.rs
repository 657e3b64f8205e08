//! MQTT 3.1.1 (and 3.1) behaviour, driven by rumqttc's v4 client and
//! Debian's mosquitto_pub/mosquitto_sub.

use crate::common;

use std::time::Duration;

use common::*;
use plantd_edge::protocol::{QoS as Q, v4};
use rumqttc::QoS;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_0_1_2_delivered_at_min_of_published_and_granted() {
    let b = TestBroker::start().await;
    let mut sub = v4(&b, "sub", |_| {}).await;
    let ack = sub.sub("plant/line1/#", QoS::ExactlyOnce).await;
    assert_eq!(
        ack.return_codes,
        vec![rumqttc::SubscribeReasonCode::Success(QoS::ExactlyOnce)]
    );
    let mut low = v4(&b, "low", |_| {}).await;
    low.sub("plant/line1/#", QoS::AtLeastOnce).await;

    let publisher = v4(&b, "pub", |_| {}).await;
    for (i, q) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        publisher
            .client
            .publish(format!("plant/line1/t{i}"), q, false, format!("m{i}"))
            .await
            .expect("publish");
    }
    for (i, q) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        let p = sub.publish().await;
        assert_eq!(p.topic, format!("plant/line1/t{i}"), "order preserved");
        assert_eq!(p.qos, q);
        assert_eq!(&p.payload[..], format!("m{i}").as_bytes());
        let p = low.publish().await;
        let want = if q == QoS::AtMostOnce {
            q
        } else {
            QoS::AtLeastOnce
        };
        assert_eq!(p.qos, want, "downgraded to the granted QoS");
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_set_replace_delete_with_mosquitto_clients() {
    let b = TestBroker::start().await;
    mosquitto_pub(
        &b,
        "mqttv311",
        &["-t", "cfg/mode", "-m", "auto", "-r", "-q", "1"],
    )
    .await;
    let mut s = v4(&b, "r1", |_| {}).await;
    s.sub("cfg/#", QoS::AtLeastOnce).await;
    let p = s.publish().await;
    assert!(p.retain, "retained message carries RETAIN on subscribe");
    assert_eq!(&p.payload[..], b"auto");

    // A live retained publish reaches existing subscribers without RETAIN.
    mosquitto_pub(&b, "mqttv311", &["-t", "cfg/mode", "-m", "manual", "-r"]).await;
    let p = s.publish().await;
    assert!(!p.retain);
    assert_eq!(&p.payload[..], b"manual");
    drop(s);

    let mut sub = MosquittoSub::start(&b, "mqttv311", &["-t", "cfg/mode", "-C", "1"]).await;
    assert_eq!(sub.message().await, "cfg/mode manual", "replaced");
    sub.stop().await;

    // QoS 1: mosquitto_pub exits once the broker acknowledged the delete
    // (at QoS 0 it may exit before the broker read it, and the next
    // subscriber still finds the retained message).
    mosquitto_pub(&b, "mqttv311", &["-t", "cfg/mode", "-n", "-r", "-q", "1"]).await;
    let mut s = v4(&b, "r2", |_| {}).await;
    s.sub("cfg/#", QoS::AtLeastOnce).await;
    s.no_publish().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_session_queues_while_offline_and_resumes() {
    let b = TestBroker::start().await;
    offline_v4_session(&b, "keeper", "q/#").await;

    let mut p = v4(&b, "producer", |_| {}).await;
    for i in 0..3 {
        p.publish1("q/x", false, format!("{i}")).await;
    }

    let s = resumed_v4_session(&b, "keeper", 3).await;

    // clean session discards it.
    drop(s);
    let mut c = v4_unchecked(&b, "keeper", |o| {
        o.set_clean_session(true);
    });
    assert!(!c.connack().await.expect("connect").session_present);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_qos1_redelivered_with_dup_after_reconnect() {
    let b = TestBroker::start().await;
    let (mut raw, ack) = Raw::connect4(&b, "dupper", false, 30).await;
    assert_eq!(ack.code, 0);
    raw.send4(v4::Packet::Subscribe(v4::Subscribe {
        pkid: 1,
        filters: vec![("d/1".into(), Q::AtLeastOnce)],
    }))
    .await;
    assert!(matches!(raw.recv4().await, Some(v4::Packet::SubAck(_))));
    mosquitto_pub(&b, "mqttv311", &["-t", "d/1", "-m", "once", "-q", "1"]).await;
    let Some(v4::Packet::Publish(first)) = raw.recv4().await else {
        panic!("expected the PUBLISH");
    };
    assert!(!first.dup);
    drop(raw); // never acknowledged

    let (mut raw, ack) = Raw::connect4(&b, "dupper", false, 30).await;
    assert!(ack.session_present);
    let Some(v4::Packet::Publish(again)) = raw.recv4().await else {
        panic!("expected the redelivery");
    };
    assert!(again.dup, "redelivery carries DUP");
    assert_eq!(again.pkid, first.pkid, "same packet identifier");
    assert_eq!(again.payload, first.payload);
    raw.send4(v4::Packet::PubAck(again.pkid)).await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_sent_on_abrupt_close_not_on_disconnect() {
    let b = TestBroker::start().await;
    let mut watcher = v4(&b, "watcher", |_| {}).await;
    watcher.sub("wills/#", QoS::AtLeastOnce).await;

    let polite = v4(&b, "polite", |o| {
        o.set_last_will(rumqttc::LastWill::new(
            "wills/polite",
            "gone",
            QoS::AtLeastOnce,
            false,
        ));
    })
    .await;
    polite.client.disconnect().await.expect("disconnect");
    let rude = v4(&b, "rude", |o| {
        o.set_last_will(rumqttc::LastWill::new(
            "wills/rude",
            "lost",
            QoS::AtLeastOnce,
            false,
        ));
    })
    .await;
    drop(rude); // socket closes without DISCONNECT

    let w = watcher.publish().await;
    assert_eq!(w.topic, "wills/rude");
    assert_eq!(&w.payload[..], b"lost");
    watcher.no_publish().await;
    drop(polite);
    b.stop().await;
}

/// On a manual clock (decision 0056): silent for 1.499 s the client is
/// still served, a sweep later it is closed and its will published. Fails
/// on a broker without keep-alive (never closed, no will), on one that
/// closes early, and on one that closes without the will.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_expiry_closes_and_sends_will() {
    let (b, clock) = TestBroker::on_manual_clock().await;
    let mut watcher = v4(&b, "watcher", |_| {}).await;
    watcher.sub("wills/#", QoS::AtMostOnce).await;
    let mut raw = Raw::open(&b).await;
    raw.send4(v4::Packet::Connect(v4::Connect {
        level: 4,
        client_id: "silent".into(),
        clean_session: true,
        keep_alive: 1,
        will: Some(v4::LastWill {
            topic: "wills/silent".into(),
            payload: bytes::Bytes::from_static(b"timeout"),
            qos: Q::AtMostOnce,
            retain: false,
        }),
        username: None,
        password: None,
    }))
    .await;
    assert!(matches!(raw.recv4().await, Some(v4::Packet::ConnAck(_))));
    // Answered: the connection is watched from here on.
    raw.send4(v4::Packet::PingReq).await;
    assert!(matches!(raw.recv4().await, Some(v4::Packet::PingResp)));
    clock.advance(Duration::from_millis(1499));
    raw.stays_open().await;
    watcher.no_publish().await;
    clock.advance(plantd_edge::link::KEEP_ALIVE_TICK);
    assert!(
        raw.recv4().await.is_none(),
        "broker closes the silent client"
    );
    let w = watcher.publish().await;
    assert_eq!(&w.payload[..], b"timeout");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_connection_with_same_id_takes_the_session_over() {
    let b = TestBroker::start().await;
    let mut first = v4(&b, "twin", |o| {
        o.set_clean_session(false);
    })
    .await;
    first.sub("t/#", QoS::AtLeastOnce).await;
    let mut second = v4_unchecked(&b, "twin", |o| {
        o.set_clean_session(false);
    });
    let ack = second.connack().await.expect("second connects");
    assert!(ack.session_present, "takeover keeps the session");
    // The first connection is closed by the broker.
    loop {
        if first.incoming().await.is_err() {
            break;
        }
    }
    mosquitto_pub(&b, "mqttv311", &["-t", "t/1", "-m", "x", "-q", "1"]).await;
    assert_eq!(
        second.publish().await.topic,
        "t/1",
        "subscriptions moved to the new connection"
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_length_client_id_needs_clean_session() {
    let b = TestBroker::start().await;
    let (_r, ack) = Raw::connect4(&b, "", false, 30).await;
    assert_eq!(ack.code, 2, "identifier rejected");
    let (_r, ack) = Raw::connect4(&b, "", true, 30).await;
    assert_eq!(ack.code, 0, "accepted with a broker-assigned id");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dollar_topics_not_matched_by_leading_wildcards() {
    let b = TestBroker::with(|c| c.sys_interval_secs = 1).await;
    let mut all = v4(&b, "all", |_| {}).await;
    all.sub("#", QoS::AtMostOnce).await;
    let mut plus = v4(&b, "plus", |_| {}).await;
    plus.sub("+/broker/uptime", QoS::AtMostOnce).await;
    let mut sys = v4(&b, "sys", |_| {}).await;
    sys.sub("$SYS/broker/clients/connected", QoS::AtMostOnce)
        .await;
    let p = sys.publish().await;
    assert!(p.retain, "$SYS statistics are retained");
    let n: u64 = std::str::from_utf8(&p.payload)
        .expect("utf8")
        .parse()
        .expect("number");
    assert!(n <= 3);
    all.no_publish().await;
    plus.no_publish().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_subscriptions_deliver_once_at_highest_qos() {
    let b = TestBroker::start().await;
    let mut s = v4(&b, "overlap", |_| {}).await;
    s.sub("o/+", QoS::AtMostOnce).await;
    s.sub("o/#", QoS::ExactlyOnce).await;
    s.sub("o/x", QoS::AtLeastOnce).await;
    mosquitto_pub(&b, "mqttv311", &["-t", "o/x", "-m", "1", "-q", "2"]).await;
    let p = s.publish().await;
    assert_eq!(p.qos, QoS::ExactlyOnce);
    s.no_publish().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_subscribe_rule_refuses_with_0x80() {
    let b = TestBroker::with(|c| c.deny_subscribe = vec!["secret/#".into()]).await;
    let mut s = v4(&b, "nosy", |_| {}).await;
    let ack = s.sub("secret/plans", QoS::AtLeastOnce).await;
    assert_eq!(
        ack.return_codes,
        vec![rumqttc::SubscribeReasonCode::Failure]
    );
    let ack = s.sub("open/plans", QoS::AtLeastOnce).await;
    assert_eq!(
        ack.return_codes,
        vec![rumqttc::SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_31_311_and_5_clients_interoperate() {
    let b = TestBroker::start().await;
    let mut s5 = MosquittoSub::start(&b, "mqttv5", &["-t", "mix/#", "-q", "1"]).await;
    let mut s4 = MosquittoSub::start(&b, "mqttv311", &["-t", "mix/#", "-q", "1"]).await;
    mosquitto_pub(&b, "mqttv31", &["-t", "mix/a", "-m", "from31", "-q", "1"]).await;
    mosquitto_pub(&b, "mqttv311", &["-t", "mix/b", "-m", "from311", "-q", "2"]).await;
    mosquitto_pub(&b, "mqttv5", &["-t", "mix/c", "-m", "from5", "-q", "1"]).await;
    for s in [&mut s5, &mut s4] {
        assert_eq!(s.message().await, "mix/a from31");
        assert_eq!(s.message().await, "mix/b from311");
        assert_eq!(s.message().await, "mix/c from5");
    }
    s5.stop().await;
    s4.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumed_session_with_overlapping_filters_still_gets_one_copy() {
    let b = TestBroker::start().await;
    let persistent = |o: &mut rumqttc::MqttOptions| {
        o.set_clean_session(false);
    };
    let mut s = v4(&b, "resumer", persistent).await;
    s.sub("r/#", QoS::AtLeastOnce).await;
    drop(s);
    let mut s = v4_unchecked(&b, "resumer", persistent);
    assert!(s.connack().await.expect("reconnect").session_present);
    s.sub("r/+", QoS::AtMostOnce).await;
    mosquitto_pub(&b, "mqttv311", &["-t", "r/x", "-m", "1", "-q", "1"]).await;
    assert_eq!(s.publish().await.qos, QoS::AtLeastOnce);
    s.no_publish().await;
    b.stop().await;
}
