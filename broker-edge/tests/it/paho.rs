//! Python paho-mqtt (3.1.1 and 5.0) against the broker.

use crate::common;

use common::*;

const PRELUDE: &str = r#"
import os, sys, threading
import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes
PORT = int(os.environ["PORT"])
V2 = mqtt.CallbackAPIVersion.VERSION2

def client(cid, proto, **kw):
    c = mqtt.Client(V2, client_id=cid, protocol=proto, **kw)
    ready = threading.Event()
    c.on_connect = lambda cl, u, f, rc, p: (setattr(cl, "connack", (rc, p)), ready.set())
    return c, ready

def subscribed(c, topic, qos):
    done = threading.Event()
    c.on_subscribe = lambda cl, u, mid, rcs, p: (setattr(cl, "granted", rcs), done.set())
    c.subscribe(topic, qos=qos)
    assert done.wait(10), "SUBACK"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_v311_and_v5_exchange_qos2_messages() {
    let b = TestBroker::start().await;
    let script = format!(
        "{PRELUDE}{}",
        r#"
got = []
done = threading.Event()
sub, ready = client("paho-sub", mqtt.MQTTv311)
def on_message(c, u, m):
    got.append((m.topic, m.payload.decode(), m.qos))
    if len(got) == 2: done.set()
sub.on_message = on_message
sub.connect("127.0.0.1", PORT); sub.loop_start(); assert ready.wait(10)
subscribed(sub, "paho/#", 2)
for proto, topic in ((mqtt.MQTTv311, "paho/v311"), (mqtt.MQTTv5, "paho/v5")):
    pub, pready = client("paho-pub-" + topic[-2:], proto)
    pub.connect("127.0.0.1", PORT); pub.loop_start(); assert pready.wait(10)
    pub.publish(topic, "hi", qos=2).wait_for_publish(10)
    pub.disconnect(); pub.loop_stop()
assert done.wait(10), got
for t, p, q in sorted(got): print(t, p, q)
sub.disconnect(); sub.loop_stop()
"#
    );
    let out = paho(&b, &script).await;
    assert_eq!(out, "paho/v311 hi 2\npaho/v5 hi 2\n");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_v5_empty_client_id_gets_an_assigned_identifier() {
    let b = TestBroker::start().await;
    let script = format!(
        "{PRELUDE}{}",
        r#"
c, ready = client("", mqtt.MQTTv5)
c.connect("127.0.0.1", PORT); c.loop_start(); assert ready.wait(10)
rc, props = c.connack
print(rc.value, getattr(props, "AssignedClientIdentifier", "NONE"))
c.disconnect(); c.loop_stop()
"#
    );
    let out = paho(&b, &script).await;
    let mut parts = out.split_whitespace();
    assert_eq!(parts.next(), Some("0"), "accepted: {out}");
    let id = parts.next().expect("an id");
    assert!(id.starts_with("plantd-"), "assigned identifier: {id}");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_v5_request_response_round_trip() {
    let b = TestBroker::start().await;
    let script = format!(
        "{PRELUDE}{}",
        r#"
req, ready = client("requester", mqtt.MQTTv5)
cp = Properties(PacketTypes.CONNECT); cp.RequestResponseInformation = 1
req.connect("127.0.0.1", PORT, properties=cp); req.loop_start(); assert ready.wait(10)
base = getattr(req.connack[1], "ResponseInformation", None)
assert base, "Response Information returned"
reply_topic = base + "/answers"
answer = {}
replied = threading.Event()
def on_reply(c, u, m):
    answer["payload"] = m.payload.decode()
    answer["corr"] = m.properties.CorrelationData.decode()
    answer["ct"] = getattr(m.properties, "ContentType", None)
    replied.set()
req.on_message = on_reply
subscribed(req, reply_topic, 1)

svc, sready = client("service", mqtt.MQTTv5)
def on_request(c, u, m):
    p = Properties(PacketTypes.PUBLISH)
    p.CorrelationData = m.properties.CorrelationData
    p.ContentType = m.properties.ContentType
    c.publish(m.properties.ResponseTopic, "pong:" + m.payload.decode(), qos=1, properties=p)
svc.on_message = on_request
svc.connect("127.0.0.1", PORT); svc.loop_start(); assert sready.wait(10)
subscribed(svc, "svc/ping", 1)

p = Properties(PacketTypes.PUBLISH)
p.ResponseTopic = reply_topic
p.CorrelationData = b"req-7"
p.ContentType = "text/plain"
req.publish("svc/ping", "hello", qos=1, properties=p)
assert replied.wait(10), "reply"
print(answer["payload"], answer["corr"], answer["ct"])
for c in (req, svc): c.disconnect(); c.loop_stop()
"#
    );
    let out = paho(&b, &script).await;
    assert_eq!(out.trim(), "pong:hello req-7 text/plain");
    b.stop().await;
}
