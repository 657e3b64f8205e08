//! A link gives its read and write buffers back once a turn leaves them
//! empty (`broker-edge/src/link/event_loop.rs`), and a TLS link keeps its
//! session state inside the link (`link/tls_socket.rs`). What a user would
//! notice if that went wrong: a client that has been quiet — its buffers
//! released — later receiving or sending a large message truncated,
//! corrupted or not at all. Over TCP and TLS: an idle subscriber gets a
//! large publish byte for byte, a late subscriber gets a large retained
//! message, and the idle client's own large publish reaches the others.

use crate::common;
use crate::pki;

use std::sync::Arc;

use common::*;
use pki::{Ca, Files};
use plantd_edge::{Broker, Config};
use rumqttc::{QoS, TlsConfiguration, Transport};

/// A payload no shorter copy or shifted slice can pass for.
fn payload(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// How a client reaches the broker.
#[derive(Clone)]
enum Via {
    Tcp,
    Tls(Arc<rustls::ClientConfig>),
}

async fn client(b: &TestBroker, tls: std::net::SocketAddr, via: &Via, id: &str) -> V4 {
    let mut c = match via {
        Via::Tcp => v4_unchecked(b, id, |o| {
            o.set_max_packet_size(2 * 1024 * 1024, 2 * 1024 * 1024);
        }),
        Via::Tls(config) => {
            let at = TestBroker::external(tls, tls);
            let config = config.clone();
            v4_unchecked(&at, id, move |o| {
                o.set_transport(Transport::Tls(TlsConfiguration::Rustls(config)));
                o.set_max_packet_size(2 * 1024 * 1024, 2 * 1024 * 1024);
            })
        }
    };
    let ack = c.connack().await.expect("client connects");
    assert_eq!(ack.code, rumqttc::ConnectReturnCode::Success);
    c
}

async fn large_messages_after_idling(b: &TestBroker, tls: std::net::SocketAddr, via: Via) {
    let tag = if matches!(via, Via::Tcp) {
        "tcp"
    } else {
        "tls"
    };
    let mut idle = client(b, tls, &via, &format!("idle-{tag}")).await;
    idle.sub(&format!("{tag}/big/#"), QoS::AtLeastOnce).await;
    let mut publisher = client(b, tls, &via, &format!("pub-{tag}")).await;
    publisher
        .sub(&format!("{tag}/back"), QoS::AtLeastOnce)
        .await;

    // One small exchange, then quiet: whatever the link allocated for it
    // has been given back.
    publisher
        .publish1(&format!("{tag}/big/warm-up"), false, "x")
        .await;
    assert_eq!(&idle.publish().await.payload[..], b"x");
    idle.no_publish().await;

    // A large live message and a large retained one, to the idle client.
    let live = payload(700 * 1024, 1);
    let retained = payload(300 * 1024, 2);
    publisher
        .client
        .publish(
            format!("{tag}/big/live"),
            QoS::AtLeastOnce,
            false,
            live.clone(),
        )
        .await
        .expect("queue live");
    publisher
        .client
        .publish(
            format!("{tag}/big/kept"),
            QoS::AtLeastOnce,
            true,
            retained.clone(),
        )
        .await
        .expect("queue retained");
    let p = idle.publish().await;
    assert_eq!(&p.topic[..], format!("{tag}/big/live"));
    assert!(
        p.payload[..] == live[..],
        "live message intact ({} B)",
        p.payload.len()
    );
    let p = idle.publish().await;
    assert!(p.payload[..] == retained[..], "retained message intact");

    // Quiet again; a late subscriber gets the retained message.
    idle.no_publish().await;
    let mut late = client(b, tls, &via, &format!("late-{tag}")).await;
    late.sub(&format!("{tag}/big/kept"), QoS::AtLeastOnce).await;
    let p = late.publish().await;
    assert!(p.retain, "retained flag set for a late subscriber");
    assert!(
        p.payload[..] == retained[..],
        "late subscriber's retained message intact"
    );

    // The idle client's own large publish (its read side grows again).
    let back = payload(900 * 1024, 3);
    idle.client
        .publish(format!("{tag}/back"), QoS::AtLeastOnce, false, back.clone())
        .await
        .expect("queue back");
    let p = publisher.publish().await;
    assert!(
        p.payload[..] == back[..],
        "idle client's large publish intact"
    );

    // And small messages still flow both ways afterwards.
    publisher
        .publish1(&format!("{tag}/big/after"), false, "after")
        .await;
    assert_eq!(&idle.publish().await.payload[..], b"after");
    // Clears the retained message for the next run on this broker.
    publisher
        .client
        .publish(
            format!("{tag}/big/kept"),
            QoS::AtLeastOnce,
            true,
            Vec::new(),
        )
        .await
        .expect("clear retained");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_idle_past_the_buffer_release_get_large_messages_intact_over_tcp_and_tls() {
    let ca = Ca::new("plantd test server CA");
    let files = Files::new();
    let (cert, key) = ca.server();
    let cert = files.write("server.pem", &cert);
    let key = files.write("server.key", &key);
    init_tracing();
    let broker = Broker::bind(Config {
        mqtt_listen: "127.0.0.1:0".into(),
        http_listen: "127.0.0.1:0".into(),
        tls_listen: Some("127.0.0.1:0".into()),
        tls_cert: Some(cert),
        tls_key: Some(key),
        allow_anonymous: true,
        ..Config::default()
    })
    .await
    .expect("broker binds with TLS");
    let tls = broker.tls_addr().expect("TLS listener bound");
    let b = TestBroker::external(broker.mqtt_addr(), broker.http_addr());
    let running = Running::spawn(broker);
    let config = Arc::new(pki::client_config(&ca.pem, None));
    large_messages_after_idling(&b, tls, Via::Tcp).await;
    large_messages_after_idling(&b, tls, Via::Tls(config)).await;
    running.stop().await;
}
