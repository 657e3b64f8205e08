//! MQTT over WebSocket and secure WebSocket with real clients: paho-mqtt's
//! websocket transport, tokio-tungstenite carrying the broker's own
//! encoding (so a test cuts packets into messages as it likes), and
//! rumqttc over TCP on the other side. Covers the upgrade rules (path
//! `/mqtt`, subprotocol `mqtt`/`mqttv3.1`), the byte-stream contract
//! (packets across messages, several packets in one), text → 1003,
//! ping → pong, tokens and permissions, client certificates over WSS, the
//! connection limit and the connect timeout.

use crate::common;
use crate::pki;
use crate::ws_client;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use common::*;
use futures::SinkExt as _;
use pki::{Ca, Files, client_config};
use plantd_bridge::trust::Trust;
use plantd_edge::metrics::{Listener, Metrics};
use plantd_edge::protocol::{QoS, v4};
use plantd_edge::{Broker, Config};
use plantd_shared::jwt::{SigningKey, jwks_of};
use plantd_shared::subject::Site;
use tokio::io::AsyncReadExt as _;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use ws_client::{WsMqtt, encode, publish, subscribe};

const SITE: &str = "plant-1";

/// A broker with WebSocket (and optionally secure WebSocket) listeners.
struct WsBroker {
    mqtt: SocketAddr,
    http: SocketAddr,
    ws: SocketAddr,
    wss: Option<SocketAddr>,
    metrics: Arc<Metrics>,
    running: Running,
}

impl WsBroker {
    async fn start(f: impl FnOnce(&mut Config), g: impl FnOnce(Broker) -> Broker) -> WsBroker {
        init_tracing();
        let mut c = Config {
            site: SITE.into(),
            mqtt_listen: "127.0.0.1:0".into(),
            http_listen: "127.0.0.1:0".into(),
            ws_listen: Some("127.0.0.1:0".into()),
            allow_anonymous: true,
            ..Config::default()
        };
        f(&mut c);
        let broker = g(Broker::bind(c).await.expect("broker binds"));
        let listening = broker.listening();
        let metrics = broker.metrics();
        WsBroker {
            mqtt: listening.mqtt,
            http: listening.http,
            ws: listening.ws.expect("ws listener bound"),
            wss: listening.wss,
            metrics,
            running: Running::spawn(broker),
        }
    }

    /// A handle for the TCP helpers of `common`.
    fn tcp(&self) -> TestBroker {
        TestBroker::external(self.mqtt, self.http)
    }

    async fn stop(self) {
        self.running.stop().await;
    }
}

async fn ws_connected(addr: SocketAddr, id: &str) -> WsMqtt<tokio::net::TcpStream> {
    let mut c = WsMqtt::open(addr).await;
    let ack = c.connect4(id, None).await;
    assert_eq!(ack.code, 0, "{id} accepted");
    c
}

async fn expect_suback(
    c: &mut WsMqtt<impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>,
) -> Vec<u8> {
    match c.recv4().await {
        Some(v4::Packet::SubAck(a)) => a.codes,
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_and_tcp_clients_exchange_messages() {
    let b = WsBroker::start(|_| {}, |b| b).await;
    let tcp = b.tcp();
    let mut ws = ws_connected(b.ws, "ws-1").await;
    ws.send4(subscribe(1, "plant/#", QoS::AtLeastOnce)).await;
    assert_eq!(expect_suback(&mut ws).await, vec![1]);

    // TCP → WebSocket.
    let mut tcp_client = v4(&tcp, "tcp-1", |o| {
        o.set_max_packet_size(512 * 1024, 512 * 1024);
    })
    .await;
    tcp_client.sub("plant/#", rumqttc::QoS::AtLeastOnce).await;
    tcp_client
        .client
        .publish("plant/tcp", rumqttc::QoS::AtMostOnce, false, "from-tcp")
        .await
        .expect("queue publish");
    let p = ws.publish().await;
    assert_eq!(p.topic, "plant/tcp");
    assert_eq!(&p.payload[..], b"from-tcp");
    // The TCP client gets its own message back; skip it.
    assert_eq!(&tcp_client.publish().await.payload[..], b"from-tcp");

    // WebSocket → TCP, QoS 1 acknowledged over the WebSocket.
    ws.send4(publish(7, "plant/ws", QoS::AtLeastOnce, b"from-ws"))
        .await;
    let mut acked = false;
    let mut echoed = false;
    while !(acked && echoed) {
        match ws.recv4().await {
            Some(v4::Packet::PubAck(7)) => acked = true,
            Some(v4::Packet::Publish(p)) if p.topic == "plant/ws" => {
                echoed = true;
                if p.qos == QoS::AtLeastOnce {
                    ws.send4(v4::Packet::PubAck(p.pkid)).await;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let p = tcp_client.publish().await;
    assert_eq!(&p.topic[..], "plant/ws");
    assert_eq!(&p.payload[..], b"from-ws");

    // A large message crosses the bridge intact in both directions.
    let big = vec![b'x'; 300 * 1024];
    ws.send4(publish(8, "plant/big", QoS::AtLeastOnce, &big))
        .await;
    let p = tcp_client.publish().await;
    assert_eq!(p.payload.len(), big.len());

    assert!(b.metrics.accepted_count(Listener::Ws) >= 1);
    assert!(b.metrics.accepted_count(Listener::Tcp) >= 1);
    let text = plantd_testkit::http::get(b.http.port(), "/metrics")
        .await
        .expect("GET /metrics")
        .text();
    assert!(
        text.contains("plantd_edge_sockets_accepted_total{listener=\"ws\"} 1"),
        "{text}"
    );
    drop((ws, tcp_client));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_over_websocket_reaches_a_tcp_subscriber() {
    let b = WsBroker::start(|_| {}, |b| b).await;
    let tcp = b.tcp();
    let mut sub = v4(&tcp, "tcp-sub", |_| {}).await;
    sub.sub("plant/#", rumqttc::QoS::AtLeastOnce).await;
    let script = r#"
import os, threading
import paho.mqtt.client as mqtt
port = int(os.environ["PORT"])
subscribed, got = threading.Event(), threading.Event()
received = []
def on_subscribe(c, u, mid, codes, props):
    subscribed.set()
def on_message(c, u, m):
    received.append(m.payload.decode())
    got.set()
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-ws", transport="websockets")
c.ws_set_options(path="/mqtt")
c.on_subscribe = on_subscribe
c.on_message = on_message
c.connect("127.0.0.1", port, keepalive=30)
c.loop_start()
c.subscribe("plant/#", qos=1)
assert subscribed.wait(10), "no SUBACK"
info = c.publish("plant/paho", "hello-ws", qos=1)
info.wait_for_publish(10)
assert got.wait(10), "own message not received"
print("received", received[0])
c.disconnect()
c.loop_stop()
"#;
    let out = paho(&TestBroker::external(b.ws, b.http), script).await;
    assert!(out.contains("received hello-ws"), "{out}");
    let p = sub.publish().await;
    assert_eq!(&p.topic[..], "plant/paho");
    assert_eq!(&p.payload[..], b"hello-ws");
    drop(sub);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_may_span_messages_and_share_one() {
    let b = WsBroker::start(|_| {}, |b| b).await;
    let mut ws = WsMqtt::open(b.ws).await;
    // CONNECT cut into three messages, one of them a single byte.
    let connect = encode(&[ws_client::connect("split", None)]);
    ws.send(connect.slice(..1)).await;
    ws.send(connect.slice(1..5)).await;
    ws.send(connect.slice(5..)).await;
    match ws.recv4().await {
        Some(v4::Packet::ConnAck(a)) => assert_eq!(a.code, 0),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    // SUBSCRIBE and a PUBLISH to it in one message.
    ws.send(encode(&[
        subscribe(1, "loop/#", QoS::AtMostOnce),
        publish(0, "loop/a", QoS::AtMostOnce, b"one"),
    ]))
    .await;
    assert_eq!(expect_suback(&mut ws).await, vec![0]);
    assert_eq!(&ws.publish().await.payload[..], b"one");
    // Two publishes, the second one split across a message boundary.
    let two = encode(&[
        publish(0, "loop/b", QoS::AtMostOnce, b"two"),
        publish(0, "loop/c", QoS::AtMostOnce, b"three"),
    ]);
    let cut = two.len() - 4;
    ws.send(two.slice(..cut)).await;
    assert_eq!(&ws.publish().await.payload[..], b"two");
    ws.send(two.slice(cut..)).await;
    assert_eq!(&ws.publish().await.payload[..], b"three");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upgrade_checks_path_and_subprotocol() {
    let b = WsBroker::start(|_| {}, |b| b).await;
    let status = |r: Result<_, tungstenite::Error>| match r {
        Ok(_) => panic!("upgrade should have been refused"),
        Err(tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
    };
    // Wrong path: 404.
    assert_eq!(
        status(ws_client::ws(b.ws, "/", &["mqtt"]).await.map(|_| ())),
        404
    );
    assert_eq!(
        status(ws_client::ws(b.ws, "/ws", &["mqtt"]).await.map(|_| ())),
        404
    );
    // Only unknown subprotocols: 400.
    assert_eq!(
        status(
            ws_client::ws(b.ws, "/mqtt", &["chat", "soap"])
                .await
                .map(|_| ())
        ),
        400
    );
    // mqttv3.1 is accepted and echoed; with several, a known one is chosen.
    let (_, chosen) = ws_client::ws(b.ws, "/mqtt", &["mqttv3.1"])
        .await
        .expect("mqttv3.1 accepted");
    assert_eq!(chosen.as_deref(), Some("mqttv3.1"));
    let (_, chosen) = ws_client::ws(b.ws, "/mqtt", &["chat", "mqtt"])
        .await
        .expect("mqtt among others accepted");
    assert_eq!(chosen.as_deref(), Some("mqtt"));
    // No subprotocol at all: accepted (leniently), none echoed, and MQTT
    // works.
    let (ws, chosen) = ws_client::ws(b.ws, "/mqtt", &[])
        .await
        .expect("no subprotocol accepted");
    assert_eq!(chosen, None);
    let mut c = WsMqtt::new(ws);
    assert_eq!(c.connect4("no-proto", None).await.code, 0);
    // A plain HTTP request to the WebSocket port is no upgrade: closed.
    if let Ok(r) = plantd_testkit::http::get(b.ws.port(), "/mqtt").await {
        assert!(r.status >= 400, "status {}", r.status);
    }
    assert!(b.metrics.connections_refused.load(Relaxed) >= 4);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_messages_close_with_1003_and_pings_get_pongs() {
    let b = WsBroker::start(|_| {}, |b| b).await;
    let mut ws = ws_connected(b.ws, "pinger").await;
    ws.ws
        .send(Message::Ping(b"are you there".as_slice().into()))
        .await
        .expect("send ping");
    match ws.next_other().await {
        Some(Message::Pong(p)) => assert_eq!(&p[..], b"are you there"),
        other => panic!("expected a pong, got {other:?}"),
    }
    // MQTT still flows after the ping.
    ws.send4(v4::Packet::PingReq).await;
    assert_eq!(ws.recv4().await, Some(v4::Packet::PingResp));

    ws.ws
        .send(Message::Text("CONNECT".into()))
        .await
        .expect("send text");
    match ws.next_other().await {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Unsupported),
        other => panic!("expected close 1003, got {other:?}"),
    }
    b.stop().await;
}

// ------------------------------------------------------------ tokens

fn sign(key: &SigningKey, sub: &str, publish: &[&str], subscribe: &[&str]) -> String {
    key.sign(&device_claims(sub, SITE, publish, subscribe))
        .expect("sign token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_clients_need_a_token_and_get_its_permissions() {
    let key = SigningKey::generate_ed25519("k1").expect("key");
    let dir = tempfile::tempdir().expect("tempdir");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(
        &jwks,
        serde_json::to_string(&jwks_of([&key]).expect("jwks")).expect("JSON"),
    )
    .expect("write JWKS");
    let trust = Trust::new(Site::new(SITE).expect("site"), dir.path().join("cache"));
    trust.load_file(&jwks).expect("load JWKS");
    let b = WsBroker::start(
        |c| {
            c.allow_anonymous = false;
            c.org = Some("acme".into());
        },
        move |b| b.with_trust(trust),
    )
    .await;

    // No token: CONNACK 5 (not authorised), then closed.
    let mut anon = WsMqtt::open(b.ws).await;
    assert_eq!(anon.connect4("anon", None).await.code, 5);
    assert_eq!(anon.recv4().await, None, "closed after the refusal");
    // A token that is not one: CONNACK 4 (bad user name or password).
    let mut forged = WsMqtt::open(b.ws).await;
    let code = forged.connect4("forged", Some("not.a.jwt")).await.code;
    assert!(code == 4 || code == 5, "refused, code {code}");

    // A valid token: accepted, and its grants apply to this connection.
    let token = sign(&key, "dev-1", &["plant/dev-1/out/#"], &["plant/dev-1/#"]);
    let mut dev = WsMqtt::open(b.ws).await;
    assert_eq!(dev.connect4("dev-1", Some(&token)).await.code, 0);
    dev.send4(subscribe(1, "plant/dev-1/#", QoS::AtMostOnce))
        .await;
    assert_eq!(expect_suback(&mut dev).await, vec![0]);
    dev.send4(subscribe(2, "plant/#", QoS::AtMostOnce)).await;
    assert_eq!(expect_suback(&mut dev).await, vec![0x80], "not granted");
    // A publish outside the grant is dropped (3.1.1: acknowledged and
    // dropped); one inside is delivered.
    dev.send(encode(&[
        publish(5, "plant/dev-1/in/x", QoS::AtLeastOnce, b"not granted"),
        publish(6, "plant/dev-1/out/y", QoS::AtLeastOnce, b"granted"),
    ]))
    .await;
    let mut acks = Vec::new();
    let mut delivered = Vec::new();
    while acks.len() < 2 || delivered.is_empty() {
        match dev.recv4().await {
            Some(v4::Packet::PubAck(id)) => acks.push(id),
            Some(v4::Packet::Publish(p)) => delivered.push(p.payload),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(acks, vec![5, 6]);
    assert_eq!(delivered, vec![bytes::Bytes::from_static(b"granted")]);
    dev.send4(v4::Packet::PingReq).await;
    assert_eq!(
        dev.recv4().await,
        Some(v4::Packet::PingResp),
        "nothing else came"
    );
    b.stop().await;
}

// ------------------------------------------------------------ WSS

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_websocket_with_and_without_a_client_certificate() {
    let files = Files::new();
    let server_ca = Ca::new("plantd test server CA");
    let device_ca = Ca::new("plantd test device CA");
    let (cert, key) = server_ca.server();
    let cert_path = files.write("server.pem", &cert);
    let key_path = files.write("server.key", &key);
    let ca_path = files.write("device-ca.pem", &device_ca.pem);
    let seen = Arc::new(SeenCertificates::default());
    let auth = seen.clone();
    let b = WsBroker::start(
        |c| {
            c.wss_listen = Some("127.0.0.1:0".into());
            c.tls_cert = Some(cert_path);
            c.tls_key = Some(key_path);
            c.tls_client_ca = Some(ca_path);
        },
        move |b| b.with_authorizer(auth),
    )
    .await;
    let wss = b.wss.expect("wss listener bound");
    let tcp = b.tcp();
    let mut sub = v4(&tcp, "tcp-sub", |_| {}).await;
    sub.sub("plant/#", rumqttc::QoS::AtLeastOnce).await;

    // A device with a certificate from the device CA.
    let (dcert, dkey) = device_ca.leaf("press-9", &[]);
    let mut dev = ws_client::wss(wss, client_config(&server_ca.pem, Some((&dcert, &dkey))))
        .await
        .expect("WSS with a client certificate");
    assert_eq!(dev.connect4("press-9", None).await.code, 0);
    dev.send4(publish(3, "plant/press", QoS::AtLeastOnce, b"wss"))
        .await;
    assert_eq!(dev.recv4().await, Some(v4::Packet::PubAck(3)));
    let p = sub.publish().await;
    assert_eq!(&p.payload[..], b"wss");

    // Without a certificate: served, no certificate identity.
    let mut plain = ws_client::wss(wss, client_config(&server_ca.pem, None))
        .await
        .expect("WSS without a client certificate");
    assert_eq!(plain.connect4("plain", None).await.code, 0);
    plain
        .send4(publish(4, "plant/plain", QoS::AtLeastOnce, b"x"))
        .await;
    assert_eq!(plain.recv4().await, Some(v4::Packet::PubAck(4)));

    // A client that does not trust the server's CA fails.
    let stranger = Ca::new("someone else");
    let err = ws_client::wss(wss, client_config(&stranger.pem, None))
        .await
        .err()
        .expect("untrusted server certificate");
    assert!(err.contains("TLS"), "{err}");

    assert_eq!(
        seen.0.lock().expect("lock").clone(),
        vec![Some("press-9".to_owned()), None]
    );
    assert!(b.metrics.accepted_count(Listener::Wss) >= 3);
    drop((sub, dev, plain));
    b.stop().await;
}

#[tokio::test]
async fn a_wss_listener_without_certificate_does_not_start() {
    let c = Config {
        mqtt_listen: "127.0.0.1:0".into(),
        http_listen: "127.0.0.1:0".into(),
        wss_listen: Some("127.0.0.1:0".into()),
        ..Config::default()
    };
    let err = Broker::bind(c).await.err().expect("refused without a cert");
    assert!(err.to_string().contains("--wss-listen needs"), "{err}");
}

// ------------------------------------------------------------ limits

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_limit_and_connect_timeout_apply_to_websockets() {
    let b = WsBroker::start(
        |c| {
            c.limits.max_connections = 1;
            c.limits.connect_timeout_ms = 300;
        },
        |b| b,
    )
    .await;
    // A silent TCP socket on the WebSocket port is closed after the
    // connect timeout, and frees its slot.
    let mut silent = tokio::net::TcpStream::connect(b.ws).await.expect("connect");
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(WAIT, silent.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    drop(silent);

    // An upgraded socket that never sends CONNECT is closed too.
    let mut quiet = WsMqtt::open(b.ws).await;
    assert!(
        matches!(quiet.next_other().await, None | Some(Message::Close(_))),
        "closed after the connect timeout"
    );
    drop(quiet);

    // One connection in: the next WebSocket is refused at once.
    let mut first = None;
    for _ in 0..50 {
        if let Ok((ws, _)) = ws_client::ws(b.ws, "/mqtt", &["mqtt"]).await {
            let mut c = WsMqtt::new(ws);
            if c.connect4("first", None).await.code == 0 {
                first = Some(c);
                break;
            }
        }
        // The previous sockets' slots are freed as their tasks end.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let _first = first.expect("a first client gets in");
    let refused = ws_client::ws(b.ws, "/mqtt", &["mqtt"]).await;
    assert!(
        refused.is_err(),
        "over the limit: closed before the upgrade"
    );
    assert!(b.metrics.connections_refused.load(Relaxed) >= 3);
    b.stop().await;
}
