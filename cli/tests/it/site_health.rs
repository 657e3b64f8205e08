//! Site health end to end, with real parts: a nats-server with plantd's
//! streams, the edge broker (`plantd_edge::edge::run`, what `plantd-edge`
//! and `plantd up` run) reaching it through a TCP relay the test can cut
//! (the site's WAN link), the proxy's HTTP API over the same server, and
//! an MQTT device.
//!
//! * The edge's status makes `GET /v1/sites/{site}/health` say connected,
//!   with its clients and the time of the device's last message.
//! * While JetStream refuses the site's telemetry (the stream is gone) the
//!   uplink is shown down and the backlog and its lag grow; once the stream
//!   is back the backlog drains to nothing.
//! * The site's link cut: no status arrives any more, and after three
//!   intervals the site shows not connected. (A clean stop says
//!   `stopped` at once: the proxy's `health` tests.)

use std::net::SocketAddr;
use std::time::Duration;

use plantd_shared::claims::{API_AUDIENCE, Audience, Claims, PrincipalKind};
use plantd_shared::jwt::{SigningKey, jwks_of, now_secs};
use plantd_shared::streams::{self, TELEMETRY};
use plantd_shared::subject::Site;
use plantd_testkit::{Nats, eventually, http};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const SITE: &str = "plant-h";
const ORG: &str = "acme";
const WAIT: Duration = Duration::from_secs(30);
/// The edge's status interval here (5 s by default).
const INTERVAL_MS: u64 = 300;

/// A TCP relay to `to` that can be cut: every relayed connection is
/// dropped and new ones are refused, as when a site's link goes down.
struct Relay {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
}

impl Relay {
    async fn start(to: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay address");
        let (cut, stop) = watch::channel(false);
        let mut accepting = stop.clone();
        tokio::spawn(async move {
            loop {
                let (mut inbound, _) = tokio::select! {
                    _ = accepting.wait_for(|c| *c) => return,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => return },
                };
                let mut stop = stop.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(to).await else {
                        return;
                    };
                    tokio::select! {
                        _ = stop.wait_for(|c| *c) => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        Relay { addr, cut }
    }

    fn cut(&self) {
        self.cut.send_replace(true);
    }
}

/// A token of [`ORG`] with `perms`, signed by `key`.
fn token(key: &SigningKey, perms: &[&str]) -> String {
    let now = now_secs();
    key.sign(&Claims {
        iss: "plantd-identity".into(),
        sub: "operator".into(),
        aud: Audience::One(API_AUDIENCE.into()),
        exp: now + 600,
        iat: now,
        nbf: None,
        jti: format!("jti-{now}"),
        org: ORG.into(),
        kind: PrincipalKind::User,
        roles: Vec::new(),
        perms: perms.iter().map(|p| (*p).to_owned()).collect(),
        mqtt: Default::default(),
    })
    .expect("sign")
}

async fn health(port: u16, token: &str) -> Value {
    let auth = format!("Bearer {token}");
    let r = http::request(
        port,
        "GET",
        &format!("/v1/sites/{SITE}/health"),
        &[("Authorization", auth.as_str())],
        b"",
    )
    .await
    .expect("the proxy answers");
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_str(&r.text()).expect("JSON")
}

/// Publishes `n` QoS 1 messages and waits for their PUBACKs (each is
/// journaled before it is acknowledged).
async fn publish(mqtt: SocketAddr, id: &str, n: usize) {
    let mut opts = MqttOptions::new(id, mqtt.ip().to_string(), mqtt.port());
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(opts, 64);
    for i in 0..n {
        client
            .publish("line1/oven/temp", QoS::AtLeastOnce, false, format!("{i}"))
            .await
            .expect("queue a publish");
    }
    let mut acked = 0;
    tokio::time::timeout(WAIT, async {
        while acked < n {
            match events.poll().await {
                Ok(Event::Incoming(Incoming::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(e) => panic!("MQTT: {e}"),
            }
        }
    })
    .await
    .expect("every publish acknowledged");
    client.disconnect().await.expect("disconnect");
    // Let the DISCONNECT go out.
    let _ = tokio::time::timeout(Duration::from_secs(2), events.poll()).await;
}

#[tokio::test]
async fn health_follows_the_edge_through_an_uplink_outage_and_a_cut_link() {
    let nats = Nats::start_with_streams().await;
    let js = nats.jetstream().await;
    let sites = plantd_shared::sites::Sites::open(&js).await.expect("sites");
    sites
        .register(&Site::new(SITE).expect("site"), ORG, "Plant H")
        .await
        .expect("register");

    // The proxy over the same server.
    let key = SigningKey::generate_ed25519("test-key").expect("key");
    let state = plantd_proxy::AppState::new(
        nats.client().await,
        jwks_of([&key]).expect("jwks"),
        plantd_proxy::Settings::default(),
        std::sync::Arc::new(plantd_alerts::notify::ChannelKeys::generate()),
    )
    .await
    .expect("proxy state");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let app = plantd_proxy::app(state);
    tokio::spawn(async move { axum::serve(listener, app).await });
    let viewer = token(&key, &[&format!("telemetry:{SITE}:read")]);

    // The edge, through the relay.
    let nats_addr: SocketAddr = format!("127.0.0.1:{}", nats.port()).parse().expect("addr");
    let relay = Relay::start(nats_addr).await;
    let data = tempfile::tempdir().expect("data dir");
    let mut config = plantd_edge::Config {
        site: SITE.into(),
        org: Some(ORG.into()),
        mqtt_listen: "127.0.0.1:0".into(),
        http_listen: "127.0.0.1:0".into(),
        data_dir: Some(data.path().to_owned()),
        allow_anonymous: true,
        ..plantd_edge::Config::default()
    };
    config.uplink.nats_url = Some(format!("nats://{}", relay.addr));
    config.analytics.enabled = false;
    config.status.interval_ms = INTERVAL_MS;
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let edge = tokio::spawn(plantd_edge::edge::run(
        config,
        std::future::pending::<()>(),
        move |l: plantd_edge::server::Listening| {
            let _ = ready_tx.send(l.mqtt);
        },
    ));
    let mqtt = ready_rx.await.expect("the edge listens");

    // Connected; the uplink starting (up after its first acknowledgement).
    let h = eventually(WAIT, "the edge shows connected", || async {
        let h = health(port, &viewer).await;
        (h["connected"] == true).then_some(h)
    })
    .await;
    assert!(
        matches!(
            h["edge"]["uplink"]["state"].as_str(),
            Some("starting" | "up")
        ),
        "{h}"
    );
    assert_eq!(h["edge"]["interval_ms"], INTERVAL_MS, "{h}");
    assert_eq!(h["edge"]["version"], env!("CARGO_PKG_VERSION"), "{h}");
    assert!(h["edge"]["last_message"].is_null(), "{h}");

    // A device publishes: its message is the last one, it goes up.
    publish(mqtt, "device-1", 1).await;
    eventually(WAIT, "the last message and an empty backlog", || async {
        let h = health(port, &viewer).await;
        let e = &h["edge"];
        (e["last_message_age_ms"]
            .as_u64()
            .is_some_and(|a| a < 10_000)
            && e["backlog"]["messages"] == 0
            && e["uplink"]["last_ack"].is_string())
        .then_some(())
    })
    .await;

    // JetStream refuses the site's telemetry: the uplink is down, the
    // backlog holds what devices publish, and its lag grows.
    js.delete_stream(TELEMETRY)
        .await
        .expect("delete the stream");
    publish(mqtt, "device-2", 20).await;
    let first = eventually(WAIT, "the uplink down with a backlog", || async {
        let h = health(port, &viewer).await;
        let e = &h["edge"];
        let down = matches!(e["uplink"]["state"].as_str(), Some("down" | "stalled"));
        (h["connected"] == true && down && e["backlog"]["messages"].as_u64() >= Some(20))
            .then_some(h)
    })
    .await;
    let lag = first["edge"]["backlog"]["lag_ms"].as_u64().expect("lag");
    eventually(WAIT, "the uplink lag grows", || async {
        let h = health(port, &viewer).await;
        (h["edge"]["backlog"]["lag_ms"].as_u64() > Some(lag + 2 * INTERVAL_MS)).then_some(())
    })
    .await;
    assert!(
        first["edge"]["uplink"]["last_error"].is_string(),
        "the failure is shown: {first}"
    );

    // The stream back: the backlog drains.
    streams::ensure(&js, &streams::Settings::default())
        .await
        .expect("streams again");
    eventually(WAIT, "the backlog drains", || async {
        let h = health(port, &viewer).await;
        let e = &h["edge"];
        (e["uplink"]["state"] == "up"
            && e["backlog"]["messages"] == 0
            && e["backlog"]["lag_ms"] == 0)
            .then_some(())
    })
    .await;

    // The site's link cut (the edge itself runs on): nothing more is
    // heard, and after three intervals the site is not connected, its last
    // status still saying the uplink was up.
    relay.cut();
    let h = eventually(WAIT, "the edge shows not connected", || async {
        let h = health(port, &viewer).await;
        (h["connected"] == false).then_some(h)
    })
    .await;
    assert!(
        h["status_age_ms"].as_u64() >= Some(3 * INTERVAL_MS),
        "judged by the status's age: {h}"
    );
    assert_eq!(h["edge"]["uplink"]["state"], "up", "its last word: {h}");
    edge.abort();
    let _ = edge.await;
}
