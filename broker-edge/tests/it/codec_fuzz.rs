//! Decoder fuzzing on stable Rust: random bytes, and valid packets (the
//! committed seed corpus in `fuzz/corpus/decode` plus generated ones) mutated
//! by flips, truncation and insertion, must never panic the decoder. Valid
//! packets must round-trip. Run longer with `PROPTEST_CASES=1000000`.

use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use plantd_edge::protocol::v5::{Properties, SubscriptionOptions};
use plantd_edge::protocol::{QoS, decode_all, split_frame, v4, v5};
use proptest::prelude::*;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/decode")
}

fn seeds() -> Vec<Vec<u8>> {
    let dir = corpus_dir();
    let mut v: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "seed corpus {} missing ({e}); it is committed with the repo",
                dir.display()
            )
        })
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read(e.path()).ok())
        .collect();
    v.sort();
    assert!(v.len() >= 10, "seed corpus has {} files", v.len());
    v
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn text() -> impl Strategy<Value = String> {
    "[a-z0-9/$ é]{0,12}"
}

fn props() -> impl Strategy<Value = Properties> {
    (
        proptest::option::of(0u8..=1),
        proptest::option::of(any::<u32>()),
        proptest::option::of(text()),
        proptest::option::of(text()),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
        proptest::collection::vec((text(), text()), 0..3),
    )
        .prop_map(|(pfi, exp, ct, rt, cd, up)| Properties {
            payload_format_indicator: pfi,
            message_expiry_interval: exp,
            content_type: ct,
            response_topic: rt,
            correlation_data: cd.map(Bytes::from),
            user_properties: up,
            ..Properties::default()
        })
}

fn v5_packet() -> impl Strategy<Value = v5::Packet> {
    prop_oneof![
        (
            qos(),
            any::<bool>(),
            "[a-z/]{1,10}",
            1u16..,
            props(),
            proptest::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(
                |(q, retain, topic, pkid, properties, payload)| v5::Packet::Publish(v5::Publish {
                    dup: q != QoS::AtMostOnce && pkid % 2 == 0,
                    qos: q,
                    retain,
                    topic,
                    pkid: if q == QoS::AtMostOnce { 0 } else { pkid },
                    properties,
                    payload: Bytes::from(payload),
                })
            ),
        (1u16.., any::<u8>()).prop_map(|(id, r)| v5::Packet::PubAck(v5::Ack::new(id, r))),
        (1u16.., "[a-z/+#]{1,10}", qos(), any::<bool>()).prop_map(|(pkid, f, q, nl)| {
            v5::Packet::Subscribe(v5::Subscribe {
                pkid,
                properties: Properties {
                    subscription_identifiers: vec![u32::from(pkid) % 1000 + 1],
                    ..Properties::default()
                },
                filters: vec![(
                    f,
                    SubscriptionOptions {
                        qos: q,
                        no_local: nl,
                        ..SubscriptionOptions::default()
                    },
                )],
            })
        }),
        (text(), any::<bool>(), 0u16..600).prop_map(|(id, clean, ka)| v5::Packet::Connect(
            Box::new(v5::Connect {
                client_id: id,
                clean_start: clean,
                keep_alive: ka,
                properties: Properties {
                    session_expiry_interval: Some(u32::from(ka)),
                    ..Properties::default()
                },
                will: None,
                username: Some("u".into()),
                password: None,
            })
        )),
        (0u8..=0xa2).prop_map(|r| v5::Packet::Disconnect(v5::Disconnect::new(r))),
        Just(v5::Packet::PingReq),
    ]
}

fn v4_packet() -> impl Strategy<Value = v4::Packet> {
    prop_oneof![
        (
            qos(),
            any::<bool>(),
            "[a-z/]{1,10}",
            1u16..,
            proptest::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(q, retain, topic, pkid, payload)| v4::Packet::Publish(
                v4::Publish {
                    dup: false,
                    qos: q,
                    retain,
                    topic,
                    pkid: if q == QoS::AtMostOnce { 0 } else { pkid },
                    payload: Bytes::from(payload),
                }
            )),
        (1u16..).prop_map(v4::Packet::PubRel),
        (1u16.., "[a-z/+#]{1,10}", qos()).prop_map(|(pkid, f, q)| v4::Packet::Subscribe(
            v4::Subscribe {
                pkid,
                filters: vec![(f, q)]
            }
        )),
        (1u16.., "[a-z/]{1,10}").prop_map(|(pkid, f)| v4::Packet::Unsubscribe(v4::Unsubscribe {
            pkid,
            filters: vec![f]
        })),
        Just(v4::Packet::Disconnect),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, u8),
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    proptest::collection::vec(
        prop_oneof![
            (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
            any::<usize>().prop_map(Mutation::Truncate),
            (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        ],
        1..4,
    )
}

fn mutate(mut bytes: Vec<u8>, ms: &[Mutation]) -> Vec<u8> {
    for m in ms {
        if bytes.is_empty() {
            break;
        }
        match *m {
            Mutation::Flip(i, b) => {
                let n = bytes.len();
                bytes[i % n] ^= b;
            }
            Mutation::Truncate(i) => bytes.truncate(i % bytes.len()),
            Mutation::Insert(i, b) => {
                let n = bytes.len();
                bytes.insert(i % (n + 1), b);
            }
        }
    }
    bytes
}

proptest! {
    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_all(&data, 1 << 20);
    }

    #[test]
    fn mutated_seeds_never_panic(pick in any::<usize>(), ms in mutations()) {
        let seeds = seeds();
        let seed = seeds[pick % seeds.len()].clone();
        decode_all(&mutate(seed, &ms), 1 << 20);
    }

    #[test]
    fn mutated_v5_packets_never_panic(p in v5_packet(), ms in mutations()) {
        let mut out = BytesMut::new();
        p.write(&mut out);
        decode_all(&mutate(out.to_vec(), &ms), 1 << 20);
    }

    #[test]
    fn v5_packets_round_trip(p in v5_packet()) {
        let mut out = BytesMut::new();
        p.write(&mut out);
        let (h, body) = split_frame(&mut out, 1 << 20).expect("frame").expect("complete");
        let back = v5::Packet::read(&h, body).expect("decodes");
        prop_assert_eq!(back, p);
    }

    #[test]
    fn v4_packets_round_trip(p in v4_packet(), ms in mutations()) {
        let mut out = BytesMut::new();
        p.write(&mut out);
        let bytes = out.to_vec();
        let (h, body) = split_frame(&mut out, 1 << 20).expect("frame").expect("complete");
        prop_assert_eq!(v4::Packet::read(&h, body).expect("decodes"), p);
        decode_all(&mutate(bytes, &ms), 1 << 20);
    }
}

/// Regenerates the seed corpus: `cargo nextest run -p plantd-edge --test
/// codec_fuzz --run-ignored only write_seed_corpus`.
#[test]
#[ignore = "writes fuzz/corpus/decode; run by hand when the codec grows"]
fn write_seed_corpus() {
    let dir = corpus_dir();
    std::fs::create_dir_all(&dir).expect("create corpus dir");
    let mut packets: Vec<(String, BytesMut)> = Vec::new();
    let mut add5 = |name: &str, p: v5::Packet| {
        let mut o = BytesMut::new();
        p.write(&mut o);
        packets.push((format!("v5-{name}"), o));
    };
    let full = Properties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(60),
        content_type: Some("text/plain".into()),
        response_topic: Some("r/t".into()),
        correlation_data: Some(Bytes::from_static(b"c")),
        user_properties: vec![("k".into(), "v".into())],
        topic_alias: Some(3),
        ..Properties::default()
    };
    add5(
        "connect",
        v5::Packet::Connect(Box::new(v5::Connect {
            client_id: "dev-1".into(),
            clean_start: false,
            keep_alive: 30,
            properties: Properties {
                session_expiry_interval: Some(300),
                receive_maximum: Some(10),
                maximum_packet_size: Some(4096),
                topic_alias_maximum: Some(5),
                request_response_information: Some(1),
                ..Properties::default()
            },
            will: Some(v5::LastWill {
                topic: "wills/dev-1".into(),
                payload: Bytes::from_static(b"offline"),
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: Properties {
                    will_delay_interval: Some(5),
                    ..Properties::default()
                },
            }),
            username: Some("user".into()),
            password: Some(Bytes::from_static(b"pw")),
        })),
    );
    add5(
        "publish-qos2-props",
        v5::Packet::Publish(v5::Publish {
            dup: true,
            qos: QoS::ExactlyOnce,
            retain: true,
            topic: "plant/a/temp".into(),
            pkid: 7,
            properties: full,
            payload: Bytes::from_static(b"21.5"),
        }),
    );
    add5(
        "subscribe",
        v5::Packet::Subscribe(v5::Subscribe {
            pkid: 2,
            properties: Properties {
                subscription_identifiers: vec![42],
                ..Properties::default()
            },
            filters: vec![
                ("plant/+/temp".into(), SubscriptionOptions::default()),
                ("$share/g/jobs/#".into(), SubscriptionOptions::default()),
            ],
        }),
    );
    add5(
        "unsubscribe",
        v5::Packet::Unsubscribe(v5::Unsubscribe {
            pkid: 3,
            properties: Properties::default(),
            filters: vec!["plant/#".into()],
        }),
    );
    add5("puback", v5::Packet::PubAck(v5::Ack::new(7, 0x10)));
    add5("pubrel", v5::Packet::PubRel(v5::Ack::new(7, 0)));
    add5(
        "disconnect",
        v5::Packet::Disconnect(v5::Disconnect {
            reason: 0x04,
            properties: Properties {
                session_expiry_interval: Some(0),
                reason_string: Some("bye".into()),
                ..Properties::default()
            },
        }),
    );
    add5("auth", v5::Packet::Auth(v5::Disconnect::new(0x18)));
    add5("pingreq", v5::Packet::PingReq);
    let mut add4 = |name: &str, p: v4::Packet| {
        let mut o = BytesMut::new();
        p.write(&mut o);
        packets.push((format!("v4-{name}"), o));
    };
    add4(
        "connect",
        v4::Packet::Connect(v4::Connect {
            level: 4,
            client_id: "dev-2".into(),
            clean_session: true,
            keep_alive: 60,
            will: Some(v4::LastWill {
                topic: "w".into(),
                payload: Bytes::from_static(b"x"),
                qos: QoS::AtMostOnce,
                retain: false,
            }),
            username: Some("u".into()),
            password: Some(Bytes::from_static(b"p")),
        }),
    );
    add4(
        "connect-mqisdp",
        v4::Packet::Connect(v4::Connect {
            level: 3,
            client_id: "old".into(),
            clean_session: true,
            keep_alive: 10,
            will: None,
            username: None,
            password: None,
        }),
    );
    add4(
        "publish-qos1",
        v4::Packet::Publish(v4::Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "a/b".into(),
            pkid: 1,
            payload: Bytes::from_static(b"hello"),
        }),
    );
    add4(
        "subscribe",
        v4::Packet::Subscribe(v4::Subscribe {
            pkid: 1,
            filters: vec![("a/#".into(), QoS::ExactlyOnce)],
        }),
    );
    add4("pubrec", v4::Packet::PubRec(9));
    add4("disconnect", v4::Packet::Disconnect);
    // A stream of several packets back to back.
    let stream: Vec<u8> = packets.iter().flat_map(|(_, b)| b.to_vec()).collect();
    for (name, bytes) in &packets {
        std::fs::write(dir.join(format!("{name}.bin")), bytes).expect("write seed");
    }
    std::fs::write(dir.join("stream-all.bin"), stream).expect("write seed");
}
