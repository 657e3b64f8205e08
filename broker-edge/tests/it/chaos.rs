//! Many clients sending random but well-formed packet sequences (wrong
//! packet ids, acks for nothing, QoS 2 without PUBREL, bad aliases, odd
//! subscriptions, abrupt closes) plus random garbage: the broker keeps
//! serving a well-behaved client and shuts down cleanly.

use crate::common;

use bytes::Bytes;
use common::*;
use plantd_edge::protocol::v5::{Ack, Properties, SubscriptionOptions};
use plantd_edge::protocol::{QoS, v4, v5};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn qos(r: &mut StdRng) -> QoS {
    match r.gen_range(0..3) {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

fn topic(r: &mut StdRng) -> String {
    if r.gen_bool(0.02) {
        return String::new(); // invalid without an alias
    }
    ["a", "a/b", "a/b/c", "$SYS/x", "x/y", "a//b", "/"][r.gen_range(0..7)].to_string()
}

fn filter(r: &mut StdRng) -> String {
    [
        "#",
        "a/#",
        "+/b",
        "a/+/c",
        "$share/g/a/#",
        "$share/g",
        "a/#/b",
        "x/y",
        "",
    ][r.gen_range(0..9)]
    .to_string()
}

fn random_v5(r: &mut StdRng) -> v5::Packet {
    let pkid = r.gen_range(1..6);
    match r.gen_range(0..9) {
        0 | 1 => {
            let q = qos(r);
            let mut properties = Properties::default();
            if r.gen_bool(0.3) {
                properties.topic_alias = Some(r.gen_range(1..42));
            }
            if r.gen_bool(0.2) {
                properties.message_expiry_interval = Some(r.gen_range(0..3));
            }
            if r.gen_bool(0.1) {
                properties.payload_format_indicator = Some(1);
            }
            v5::Packet::Publish(v5::Publish {
                dup: q != QoS::AtMostOnce && r.gen_bool(0.2),
                qos: q,
                retain: r.gen_bool(0.3),
                topic: topic(r),
                pkid: if q == QoS::AtMostOnce { 0 } else { pkid },
                properties,
                payload: Bytes::from(vec![0xffu8; r.gen_range(0..40)]),
            })
        }
        2 => v5::Packet::PubAck(Ack::new(pkid, 0)),
        3 => v5::Packet::PubRec(Ack::new(pkid, if r.gen_bool(0.2) { 0x80 } else { 0 })),
        4 => v5::Packet::PubRel(Ack::new(pkid, 0)),
        5 => v5::Packet::PubComp(Ack::new(pkid, 0)),
        6 => v5::Packet::Subscribe(v5::Subscribe {
            pkid,
            properties: Properties {
                subscription_identifiers: if r.gen_bool(0.5) {
                    vec![r.gen_range(1..9)]
                } else {
                    vec![]
                },
                ..Properties::default()
            },
            filters: vec![(
                filter(r),
                SubscriptionOptions {
                    qos: qos(r),
                    no_local: r.gen_bool(0.2),
                    retain_as_published: r.gen_bool(0.5),
                    ..SubscriptionOptions::default()
                },
            )],
        }),
        7 => v5::Packet::Unsubscribe(v5::Unsubscribe {
            pkid,
            properties: Properties::default(),
            filters: vec![filter(r)],
        }),
        _ => v5::Packet::PingReq,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_client_behaviour_never_takes_the_broker_down() {
    let b = TestBroker::with(|c| {
        c.limits.max_inflight = 4;
        c.limits.max_queued_messages = 20;
        c.limits.topic_alias_maximum = 40;
    })
    .await;
    let (mut watcher, _) = v5(&b, "watcher", |_| {}).await;
    watcher
        .sub("ok/#", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await;

    let mut tasks = Vec::new();
    for seed in 0..60u64 {
        let addr = b.mqtt;
        tasks.push(tokio::spawn(async move {
            let mut r = StdRng::seed_from_u64(seed);
            let tb = TestBroker::external(addr, addr);
            let id = format!("chaos-{}", seed % 20); // shared ids: takeovers
            if seed % 3 == 0 {
                let (raw, _) = Raw::connect4(&tb, &id, r.gen_bool(0.5), 5).await;
                for _ in 0..40 {
                    let p = match r.gen_range(0..5) {
                        0 => v4::Packet::Subscribe(v4::Subscribe {
                            pkid: r.gen_range(1..5),
                            filters: vec![(filter(&mut r), qos(&mut r))],
                        }),
                        1 => v4::Packet::PubRel(r.gen_range(1..5)),
                        2 => v4::Packet::PubAck(r.gen_range(1..5)),
                        _ => {
                            let q = qos(&mut r);
                            v4::Packet::Publish(v4::Publish {
                                dup: false,
                                qos: q,
                                retain: r.gen_bool(0.3),
                                topic: topic(&mut r),
                                pkid: if q == QoS::AtMostOnce {
                                    0
                                } else {
                                    r.gen_range(1..5)
                                },
                                payload: Bytes::from_static(b"v4"),
                            })
                        }
                    };
                    let mut out = bytes::BytesMut::new();
                    p.write(&mut out);
                    if raw.stream.try_write(&out).is_err() {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
            } else {
                let mut c = v5_connect(&id);
                c.clean_start = r.gen_bool(0.5);
                c.properties.session_expiry_interval = Some(r.gen_range(0..3));
                c.properties.topic_alias_maximum = Some(r.gen_range(0..4));
                c.properties.receive_maximum = Some(r.gen_range(1..4));
                let mut raw = Raw::open(&tb).await;
                raw.send5(v5::Packet::Connect(Box::new(c))).await;
                for _ in 0..40 {
                    let mut out = bytes::BytesMut::new();
                    if r.gen_bool(0.03) {
                        // Garbage.
                        out.extend_from_slice(
                            &(0..r.gen_range(1..20))
                                .map(|_| r.r#gen::<u8>())
                                .collect::<Vec<u8>>(),
                        );
                    } else {
                        random_v5(&mut r).write(&mut out);
                    }
                    if raw.stream.try_write(&out).is_err() {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("chaos client task");
    }
    let m = &b.metrics;
    let received: u64 = m
        .messages_in
        .iter()
        .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    assert!(received > 0, "the chaos clients got messages in");
    // The broker still serves.
    mosquitto_pub(&b, "mqttv5", &["-t", "ok/still", "-m", "alive", "-q", "1"]).await;
    assert_eq!(&watcher.publish().await.payload[..], b"alive");
    let (_again, ack) = v5(&b, "chaos-1", |_| {}).await;
    assert_eq!(
        ack.code,
        m5::ConnectReturnCode::Success,
        "a chaotic client id is usable again"
    );
    b.stop().await;
}
