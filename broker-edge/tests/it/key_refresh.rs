//! The real `plantd-edge` binary follows a key rotation without a restart:
//! it fetches `--jwks-url` at start, and when a token names a key id it
//! does not know it refuses that CONNECT (0x86) and fetches the JWKS at
//! once, so the client's retry gets in — long before the periodic refresh
//! (300 s). Tokens of the old key keep working.

use crate::common;
use crate::edge_proc;

use std::time::{Duration, Instant};

use common::device_claims;
use plantd_shared::jwt::SigningKey;
use plantd_testkit::{eventually, jwks, mqtt};

const WAIT: Duration = Duration::from_secs(30);

/// One MQTT 5 CONNECT: Ok when accepted (the connection is left to
/// close), else the refusal.
async fn connect(edge: &edge_proc::Edge, id: &str, token: &str) -> Result<(), String> {
    let mut client = mqtt::v5_unchecked(edge.mqtt.port(), id, |o| {
        o.set_credentials(id, token);
    });
    client.connack().await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_key_id_makes_the_edge_fetch_the_rotated_keys_at_once() {
    let old = SigningKey::generate_ed25519("old").expect("key");
    let new = SigningKey::generate_ed25519("new").expect("key");
    let server = jwks::Server::start(&[&old]).await;
    let url = server.url().to_owned();
    let data = tempfile::tempdir().expect("tempdir");
    let edge = edge_proc::start_plain(data.path(), &["--jwks-url", &url, "--org", "acme"]).await;
    let claims = device_claims("dev-1", edge_proc::SITE, &["#"], &[]);
    let old_token = old.sign(&claims).expect("sign");
    let new_token = new.sign(&claims).expect("sign");

    // The first fetch lands a moment after start (0x88 until then).
    eventually(WAIT, "the first JWKS fetch", || async {
        match connect(&edge, "dev-1", &old_token).await {
            Ok(()) => Some(()),
            Err(e) if e.contains("ServerUnavailable") => None,
            Err(e) => panic!("old token refused: {e}"),
        }
    })
    .await;

    // Identity rotates: its JWKS now has both keys.
    server.set(&[&new, &old]);
    let start = Instant::now();
    let first = connect(&edge, "dev-2", &new_token).await;
    assert!(
        first
            .as_ref()
            .is_err_and(|e| e.contains("BadUserNamePassword")),
        "an unknown key is refused, not waited for: {first:?}"
    );
    // The device retries (at the helper's pace) until it gets in.
    eventually(WAIT, "the new key to be fetched and accepted", || async {
        match connect(&edge, "dev-2", &new_token).await {
            Ok(()) => Some(()),
            Err(e) => {
                assert!(e.contains("BadUserNamePassword"), "{e}");
                None
            }
        }
    })
    .await;
    assert!(start.elapsed() < WAIT);
    // Accepted within WAIT (30 s), long before the periodic refresh
    // (300 s): the edge fetched the keys on the unknown key id.
    connect(&edge, "dev-3", &old_token)
        .await
        .expect("the old key is still accepted");
}
