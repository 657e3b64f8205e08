//! Normative statements of MQTT 5.0 that issue 12 found unmet, each proven
//! with a real client (paho-mqtt) or, where no client lets itself
//! misbehave, raw bytes over a socket. The statement ids are those of the
//! table in docs/broker.md.

use crate::common;

use bytes::{BufMut, Bytes, BytesMut};
use common::*;
use plantd_edge::protocol::{PacketType, QoS as Q, ReasonCode, v5, write_header};

const PRELUDE: &str = r#"
import os, threading
import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes
PORT = int(os.environ["PORT"])
V2 = mqtt.CallbackAPIVersion.VERSION2

def client(cid):
    c = mqtt.Client(V2, client_id=cid, protocol=mqtt.MQTTv5)
    c.ready = threading.Event()
    c.gone = threading.Event()
    c.on_connect = lambda cl, u, f, rc, p: (setattr(cl, "connack", (f, rc, p)), cl.ready.set())
    c.on_disconnect = lambda cl, u, f, rc, p: (setattr(cl, "disconnected", (rc, p)), cl.gone.set())
    return c

def connect_props(**kw):
    p = Properties(PacketTypes.CONNECT)
    for k, v in kw.items(): setattr(p, k, v)
    return p
"#;

/// A raw CONNECT with protocol name `name` and level `level` (no
/// properties, whatever the level).
fn connect_bytes(name: &[u8], level: u8) -> BytesMut {
    let mut body = BytesMut::new();
    body.put_u16(name.len() as u16);
    body.put_slice(name);
    body.put_u8(level);
    body.put_u8(0x02); // clean start
    body.put_u16(30);
    body.put_u8(0); // properties (as a 5.0 CONNECT would have them)
    body.put_u16(1);
    body.put_slice(b"x");
    let mut out = BytesMut::new();
    write_header(&mut out, 0x10, body.len());
    out.put_slice(&body);
    out
}

/// [MQTT-3.1.2-2]: a level this broker does not speak gets CONNACK 0x84
/// (Unsupported Protocol Version) in the 5.0 format when the level is 5 or
/// newer, the 3.1.1 return code 1 (its equivalent) for older levels, and
/// the connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_protocol_level_gets_connack_0x84_then_close() {
    let b = TestBroker::start().await;
    for level in [6u8, 7, 255] {
        let mut r = Raw::open(&b).await;
        r.write(&connect_bytes(b"MQTT", level)).await;
        let (h, body) = r.frame().await.expect("a CONNACK before the close");
        assert_eq!(h.kind, PacketType::ConnAck);
        assert_eq!(
            &body[..],
            &[0x00, ReasonCode::UnsupportedProtocolVersion.code(), 0x00],
            "level {level}: 5.0 CONNACK with reason 0x84 and no properties"
        );
        assert!(r.frame().await.is_none(), "closed after the CONNACK");
    }
    // 'MQTT' at level 3 (3.1 is 'MQIsdp'): a 3.1.1-format refusal.
    let mut r = Raw::open(&b).await;
    r.write(&connect_bytes(b"MQTT", 3)).await;
    let (h, body) = r.frame().await.expect("a CONNACK before the close");
    assert_eq!(h.kind, PacketType::ConnAck);
    assert_eq!(&body[..], &[0x00, 0x01], "3.1.1 return code 1");
    assert!(r.frame().await.is_none());
    b.stop().await;
}

/// [MQTT-3.2.2-19]: the Reason String of a refusing CONNACK is left out
/// when it would exceed the client's Maximum Packet Size; the reason code
/// still arrives. Paho, with and without a small maximum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connack_reason_string_is_left_out_beyond_the_clients_maximum_packet_size() {
    let b = TestBroker::with(|c| c.allow_anonymous = false).await;
    let script = format!(
        "{PRELUDE}{}",
        r#"
for size in (16, 1024):
    c = client("small-" + str(size))
    c.connect("127.0.0.1", PORT, properties=connect_props(MaximumPacketSize=size)); c.loop_start()
    assert c.ready.wait(10), "CONNACK"
    f, rc, p = c.connack
    print(size, rc.value, getattr(p, "ReasonString", "NONE") if p else "NONE")
    c.loop_stop()
"#
    );
    let out = paho(&b, &script).await;
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("16 135 NONE"), "{out}");
    let big = lines.next().expect("second line");
    assert!(
        big.starts_with("1024 135 ") && !big.ends_with("NONE"),
        "{out}"
    );
    b.stop().await;
}

/// [MQTT-3.14.2-3] (and the same rule for every packet with a Reason
/// String): a DISCONNECT the broker sends drops its Reason String when it
/// would not fit the client's maximum, keeping the reason code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_reason_string_is_left_out_beyond_the_clients_maximum_packet_size() {
    let b = TestBroker::start().await;
    for (max, want_string) in [(None, true), (Some(8u32), false)] {
        let mut c = v5_connect("small-max");
        c.properties.maximum_packet_size = max;
        let (mut r, _) = Raw::connect5(&b, c).await;
        let props = v5::Properties {
            topic_alias: Some(u16::MAX),
            ..v5::Properties::default()
        };
        r.send5(v5::Packet::Publish(v5::Publish {
            dup: false,
            qos: Q::AtMostOnce,
            retain: false,
            topic: "a".into(),
            pkid: 0,
            properties: props,
            payload: Bytes::from_static(b"x"),
        }))
        .await;
        let mut got = None;
        while let Some(p) = r.recv5().await {
            if let v5::Packet::Disconnect(d) = p {
                got = Some(d);
            }
        }
        let d = got.expect("a DISCONNECT before the close");
        assert_eq!(d.reason, ReasonCode::TopicAliasInvalid.code());
        assert_eq!(
            d.properties.reason_string.is_some(),
            want_string,
            "{max:?}: {d:?}"
        );
    }
    b.stop().await;
}

/// [MQTT-3.3.2-14]: a PUBLISH whose Response Topic holds a wildcard is a
/// Protocol Error: paho is disconnected with 0x82 and nothing is
/// delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_topic_with_a_wildcard_is_a_protocol_error() {
    let b = TestBroker::start().await;
    let (mut sub, _) = v5(&b, "listener", |_| {}).await;
    sub.sub("req/#", rumqttc::v5::mqttbytes::QoS::AtMostOnce)
        .await;
    let script = format!(
        "{PRELUDE}{}",
        r#"
c = client("requester")
c.connect("127.0.0.1", PORT); c.loop_start(); assert c.ready.wait(10)
p = Properties(PacketTypes.PUBLISH); p.ResponseTopic = "reply/+/x"
c.publish("req/1", "q", qos=0, properties=p)
assert c.gone.wait(10), "disconnected by the broker"
print(c.disconnected[0].value)
c.loop_stop()
"#
    );
    let out = paho(&b, &script).await;
    assert_eq!(out.trim(), "130", "DISCONNECT 0x82 Protocol Error");
    sub.no_publish().await;
    b.stop().await;
}

/// [MQTT-3.14.2-2] / §3.14.2.2.2: a Session Expiry Interval in DISCONNECT
/// replaces the one from CONNECT — 300 at CONNECT, 0 at DISCONNECT: the
/// session ends (paho reconnects to no session); without the property it
/// is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_in_disconnect_replaces_the_connects() {
    let b = TestBroker::start().await;
    let script = format!(
        "{PRELUDE}{}",
        r#"
for end_expiry in (None, 0):
    cid = "expiring-" + str(end_expiry)
    c = client(cid)
    c.connect("127.0.0.1", PORT, clean_start=True, properties=connect_props(SessionExpiryInterval=300))
    c.loop_start(); assert c.ready.wait(10)
    d = None
    if end_expiry is not None:
        d = Properties(PacketTypes.DISCONNECT); d.SessionExpiryInterval = end_expiry
    c.disconnect(properties=d); assert c.gone.wait(10); c.loop_stop()
    c = client(cid)
    c.connect("127.0.0.1", PORT, clean_start=False, properties=connect_props(SessionExpiryInterval=300))
    c.loop_start(); assert c.ready.wait(10)
    print(end_expiry, int(c.connack[0].session_present))
    c.disconnect(); c.loop_stop()
"#
    );
    let out = paho(&b, &script).await;
    assert_eq!(
        out, "None 1\n0 0\n",
        "kept without the property, ended by 0"
    );
    b.stop().await;
}

/// §3.14.2.2.2: a non-zero Session Expiry Interval in DISCONNECT after 0
/// at CONNECT is a Protocol Error: the broker answers DISCONNECT 0x82, and
/// as the DISCONNECT was not a valid one the will is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_raised_from_zero_at_disconnect_is_a_protocol_error() {
    let b = TestBroker::start().await;
    let (mut watcher, _) = v5(&b, "watcher", |_| {}).await;
    watcher
        .sub("wills/#", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await;
    let mut c = v5_connect("raiser");
    c.properties.session_expiry_interval = Some(0);
    c.will = Some(v5::LastWill {
        topic: "wills/raiser".into(),
        payload: Bytes::from_static(b"gone"),
        qos: Q::AtLeastOnce,
        retain: false,
        properties: v5::Properties::default(),
    });
    let (mut r, _) = Raw::connect5(&b, c).await;
    let mut d = v5::Disconnect::new(ReasonCode::NORMAL_DISCONNECTION.code());
    d.properties.session_expiry_interval = Some(30);
    r.send5(v5::Packet::Disconnect(d)).await;
    assert_eq!(r.closed5().await, Some(ReasonCode::ProtocolError.code()));
    let will = watcher.publish().await;
    assert_eq!(&will.payload[..], b"gone");
    b.stop().await;
}

/// §3.3.4 / §4.9: a client that sends more QoS 2 PUBLISHes than the
/// broker's Receive Maximum allows unacknowledged gets DISCONNECT 0x93,
/// and it arrives although the client flooded the socket (the broker
/// closes gracefully instead of resetting with unread input).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_maximum_exceeded_by_a_flood_gets_disconnect_0x93_before_the_close() {
    let b = TestBroker::with(|c| c.limits.max_inflight = 2).await;
    let (r, ack) = Raw::connect5(&b, v5_connect("flooder")).await;
    assert_eq!(ack.properties.receive_maximum, Some(2));
    let mut out = BytesMut::new();
    for pkid in 1..=200u16 {
        v5::Packet::Publish(v5::Publish {
            dup: false,
            qos: Q::ExactlyOnce,
            retain: false,
            topic: "flood/x".into(),
            pkid,
            properties: v5::Properties::default(),
            payload: Bytes::from(vec![b'x'; 1024]),
        })
        .write(&mut out);
    }
    // Written in the background: the broker stops reading at the third.
    let (rd, mut wr) = r.stream.into_split();
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let _ = wr.write_all(&out).await;
        wr
    });
    let mut rd = rd;
    let mut buf = BytesMut::new();
    let mut reasons = Vec::new();
    let read = async {
        use tokio::io::AsyncReadExt;
        loop {
            while let Some((h, body)) =
                plantd_edge::protocol::split_frame(&mut buf, usize::MAX).expect("valid frames")
            {
                if let Ok(v5::Packet::Disconnect(d)) = v5::Packet::read(&h, body) {
                    reasons.push(d.reason);
                }
            }
            match rd.read_buf(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    };
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), read)
        .await
        .expect("closed in time");
    assert_eq!(
        reasons,
        vec![ReasonCode::ReceiveMaximumExceeded.code()],
        "DISCONNECT 0x93 read before the close (ended with {ended:?})"
    );
    drop(writer.await);
    b.stop().await;
}
