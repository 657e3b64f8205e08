//! The real `plantd-edge` binary follows a key rotation without a restart:
//! it fetches `--jwks-url` at start, and when a token names a key id it
//! does not know it refuses that CONNECT (0x86) and fetches the JWKS at
//! once, so the client's retry gets in — long before the periodic refresh
//! (300 s). Tokens of the old key keep working.

use crate::common;
use crate::edge_proc;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::device_claims;
use plantd_shared::jwt::{SigningKey, jwks_of};
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};

const WAIT: Duration = Duration::from_secs(30);

/// A JWKS endpoint whose document can be changed.
async fn jwks_server(keys: Arc<Mutex<String>>) -> (String, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || {
            let body = keys.lock().map(|b| b.clone()).unwrap_or_default();
            async move { ([("content-type", "application/json")], body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().expect("addr")
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, task)
}

fn jwks(keys: &[&SigningKey]) -> String {
    serde_json::to_string(&jwks_of(keys.iter().copied()).expect("jwks")).expect("JSON")
}

/// One MQTT 5 CONNECT: Ok when accepted (the connection is left to
/// close), else the refusal.
async fn connect(edge: &edge_proc::Edge, id: &str, token: &str) -> Result<(), String> {
    let mut o = MqttOptions::new(id, "127.0.0.1", edge.mqtt.port());
    o.set_credentials(id, token);
    let (_client, mut el) = AsyncClient::new(o, 10);
    tokio::time::timeout(WAIT, async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .expect("an answer to CONNECT")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_key_id_makes_the_edge_fetch_the_rotated_keys_at_once() {
    let old = SigningKey::generate_ed25519("old").expect("key");
    let new = SigningKey::generate_ed25519("new").expect("key");
    let body = Arc::new(Mutex::new(jwks(&[&old])));
    let (url, _server) = jwks_server(body.clone()).await;
    let data = tempfile::tempdir().expect("tempdir");
    let edge = edge_proc::start_plain(data.path(), &["--jwks-url", &url, "--org", "acme"]).await;
    let claims = device_claims("dev-1", edge_proc::SITE, &["#"], &[]);
    let old_token = old.sign(&claims).expect("sign");
    let new_token = new.sign(&claims).expect("sign");

    // The first fetch lands a moment after start (0x88 until then).
    let deadline = Instant::now() + WAIT;
    loop {
        match connect(&edge, "dev-1", &old_token).await {
            Ok(()) => break,
            Err(e) if e.contains("ServerUnavailable") && Instant::now() < deadline => {}
            Err(e) => panic!("old token refused: {e}"),
        }
    }

    // Identity rotates: its JWKS now has both keys.
    *body.lock().expect("lock") = jwks(&[&new, &old]);
    let start = Instant::now();
    let first = connect(&edge, "dev-2", &new_token).await;
    assert!(
        first
            .as_ref()
            .is_err_and(|e| e.contains("BadUserNamePassword")),
        "an unknown key is refused, not waited for: {first:?}"
    );
    loop {
        match connect(&edge, "dev-2", &new_token).await {
            Ok(()) => break,
            Err(e) => {
                assert!(e.contains("BadUserNamePassword"), "{e}");
                assert!(start.elapsed() < WAIT, "the new key was never fetched");
                // Client-side retry pacing, as a device would.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // Accepted within WAIT (30 s), long before the periodic refresh
    // (300 s): the edge fetched the keys on the unknown key id.
    connect(&edge, "dev-3", &old_token)
        .await
        .expect("the old key is still accepted");
}
