//! Signing-key rotation end to end: identity rotates its key
//! (`POST /v1/keys/rotate`), and a running edge and proxy accept tokens
//! signed by the new key without a restart, while tokens signed by the old
//! key keep working until they expire. The edge fetches its keys from
//! identity's JWKS URL but refreshes only hourly in this test: it knows
//! the new key because identity published it ahead, or — for a key it has
//! not seen (two rotations in a row) — because an unknown key id makes it
//! fetch at once.

use std::time::Duration;

use plantd_e2e::{SITE, Stack};
use reqwest::Method;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

/// How long any single wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(30);

/// One MQTT 5 CONNECT with `token`: `Ok` with the live client (its event
/// loop keeps running), or the refusal.
async fn connect(stack: &Stack, id: &str, token: &str) -> Result<AsyncClient, String> {
    let mqtt = stack.mqtt();
    let mut o = MqttOptions::new(id, mqtt.ip().to_string(), mqtt.port());
    o.set_keep_alive(Duration::from_secs(30));
    o.set_credentials(id, token);
    let (client, mut el) = AsyncClient::new(o, 10);
    let first = tokio::time::timeout(WAIT, async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .expect("an answer to CONNECT");
    first?;
    tokio::spawn(async move { while el.poll().await.is_ok() {} });
    Ok(client)
}

/// Connects, retrying while the edge answers "server unavailable" (no
/// keys fetched yet, right after start).
async fn connect_when_ready(stack: &Stack, id: &str, token: &str) -> AsyncClient {
    plantd_testkit::eventually(WAIT, &format!("{id} to be accepted"), || async {
        match connect(stack, id, token).await {
            Ok(c) => Some(c),
            Err(e) if e.contains("ServerUnavailable") => None,
            Err(e) => panic!("{id} refused: {e}"),
        }
    })
    .await
}

/// Whether the proxy accepts `token` (the `/v1/ws` handshake verifies it).
async fn proxy_accepts(stack: &Stack, token: &str) -> bool {
    let mut req = stack.ws_url().into_client_request().expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    tokio_tungstenite::connect_async(req).await.is_ok()
}

fn kid_of(token: &str) -> String {
    use base64::Engine as _;
    let header = token.split('.').next().expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .expect("base64url");
    let v: Value = serde_json::from_slice(&bytes).expect("header JSON");
    v["kid"].as_str().expect("kid").to_owned()
}

async fn device_token(stack: &Stack, creds: &Value) -> String {
    let (s, t) = stack
        .call(
            Method::POST,
            "/v1/auth/token",
            None,
            Some(&json!({"grant_type": "client_credentials", "client_id": creds["client_id"], "client_secret": creds["client_secret"]})),
        )
        .await
        .expect("request");
    assert_eq!(s, 200, "{t}");
    t["access_token"].as_str().expect("token").to_owned()
}

async fn rotate(stack: &Stack, root: &str) -> Value {
    let (s, r) = stack
        .call(Method::POST, "/v1/keys/rotate", Some(root), None)
        .await
        .expect("request");
    assert_eq!(s, 200, "{r}");
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_edge_and_proxy_follow_a_key_rotation() {
    let stack = Stack::start_following_keys().await.expect("stack");
    let root = stack.login(&[]).await.expect("admin");
    let (s, creds) = stack
        .call(
            Method::POST,
            "/v1/devices",
            Some(&root),
            Some(&json!({"name": "press", "site": SITE, "publish": ["line1/#"]})),
        )
        .await
        .expect("request");
    assert_eq!(s, 201, "{creds}");
    let old_device = device_token(&stack, &creds).await;
    let _live = connect_when_ready(&stack, "dev-old", &old_device).await;
    assert!(proxy_accepts(&stack, &root).await);

    // Rotation 1: the key published ahead signs.
    let r = rotate(&stack, &root).await;
    let new_device = device_token(&stack, &creds).await;
    assert_eq!(kid_of(&new_device), r["signing_kid"].as_str().expect("kid"));
    assert_ne!(kid_of(&new_device), kid_of(&old_device));
    connect(&stack, "dev-new", &new_device)
        .await
        .expect("the running edge accepts the new key at the first attempt");
    let new_user = stack.login(&[]).await.expect("login");
    assert!(
        proxy_accepts(&stack, &new_user).await,
        "the proxy accepts the new key"
    );
    // Tokens of the old key still work until they expire.
    connect(&stack, "dev-old-again", &old_device)
        .await
        .expect("the old key is still published");
    assert!(
        proxy_accepts(&stack, &root).await,
        "the old user token still works"
    );

    // Rotation 2 at once: the key that signs now was published only a
    // moment ago, after the edge's last fetch. The first CONNECT makes the
    // edge fetch; the client's retry gets in.
    let r2 = rotate(&stack, &root).await;
    let newest = device_token(&stack, &creds).await;
    assert_eq!(kid_of(&newest), r2["signing_kid"].as_str().expect("kid"));
    // The device retries (at the helper's pace) until it gets in.
    plantd_testkit::eventually(
        Duration::from_secs(10),
        "the newest key to be accepted",
        || async {
            match connect(&stack, "dev-newest", &newest).await {
                Ok(_) => Some(()),
                Err(e) => {
                    assert!(e.contains("BadUserNamePassword"), "{e}");
                    None
                }
            }
        },
    )
    .await;
    // Accepted within 10 s while the stack's periodic refresh is an hour:
    // the edge fetched the keys on the unknown key id.
    let newest_user = stack.login(&[]).await.expect("login");
    assert!(proxy_accepts(&stack, &newest_user).await);
    assert!(
        proxy_accepts(&stack, &root).await,
        "the first key is still published"
    );
    stack.stop().await;
}
