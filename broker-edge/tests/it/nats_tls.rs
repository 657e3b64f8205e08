//! The edge's NATS link secured as operators run it: the real `plantd-edge`
//! binary with `--nats-ca`, `--nats-cert`/`--nats-key` and `--nats-creds`
//! against a real nats-server configured for TLS, mutual TLS and
//! decentralised JWT authentication (operator, account, user).
//!
//! * **TLS**: the server is verified against `--nats-ca`; telemetry reaches
//!   JetStream and commands come down over the same secured link. With the
//!   wrong CA the uplink stays down and `/readyz` says why.
//! * **Mutual TLS**: with `verify: true` the edge's client certificate is
//!   accepted; without one the server refuses the edge.
//! * **Credentials**: a `.creds` file (user JWT + nkey seed) signed by an
//!   account with JetStream enabled; the same JWT with a wrong seed is
//!   refused.
//!
//! Each positive case proves the uplink's own connections (opened by
//! `UplinkConnector`, not the edge's main client) use the same options: a
//! message only counts once JetStream acknowledged it to the uplink.

use crate::edge_proc;
use crate::pki;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use edge_proc::{Edge, metric, start_plain};
use pki::{Ca, Files};
use plantd_shared::headers;
use plantd_shared::streams;
use plantd_testkit::{Nats, http};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use serde_json::json;

/// The edge with `--nats-url url` and `extra`, creating plantd's streams.
async fn edge(url: &str, data: &Path, extra: &[&str]) -> Edge {
    let mut args = vec!["--nats-url", url, "--create-streams"];
    args.extend_from_slice(extra);
    start_plain(data, &args).await
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// A nats-server that requires TLS with a certificate from `ca`; with
/// `client_ca`, clients must present a certificate signed by it.
async fn tls_server(files: &Files, ca: &Ca, client_ca: Option<&Path>) -> Nats {
    let (cert, key) = ca.server();
    let cert = files.write("nats-server.pem", &cert);
    let key = files.write("nats-server-key.pem", &key);
    let verify = client_ca
        .map(|ca| format!("ca_file: {:?}\n  verify: true\n", path(ca)))
        .unwrap_or_default();
    Nats::start_with(&format!(
        "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  {verify}  timeout: 5\n}}\n",
        path(&cert),
        path(&key),
    ))
    .await
}

/// Connection options trusting the CA in file `ca`, with an optional client
/// certificate.
fn tls_options(ca: &Path, identity: Option<(&Path, &Path)>) -> async_nats::ConnectOptions {
    let mut o = async_nats::ConnectOptions::new()
        .add_root_certificates(ca.to_path_buf())
        .require_tls(true);
    if let Some((cert, key)) = identity {
        o = o.add_client_certificate(cert.to_path_buf(), key.to_path_buf());
    }
    o
}

/// Publishes one QoS 1 message and waits for its PUBACK (the edge
/// acknowledges once the message is journaled, whatever the uplink does).
async fn publish_acked(mqtt: SocketAddr, client_id: &str, topic: &str, payload: &str) {
    let mut o = MqttOptions::new(client_id, mqtt.ip().to_string(), mqtt.port());
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(o, 10);
    client
        .publish(topic, QoS::AtLeastOnce, false, payload.to_owned())
        .await
        .expect("queue the publish");
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Incoming::PubAck(_))) => return,
                Ok(_) => {}
                Err(e) => panic!("MQTT connection: {e}"),
            }
        }
    })
    .await
    .expect("PUBACK in time");
    let _ = client.disconnect().await;
}

/// Polls `/metrics` until `name` has at least `value` (metrics are only
/// observable over HTTP).
async fn await_metric(edge: &Edge, name: &str, value: f64) {
    let reached = plantd_testkit::wait::at_most(Duration::from_secs(30), || async {
        metric(edge, name)
            .await
            .is_some_and(|v| v >= value)
            .then_some(())
    })
    .await;
    if reached.is_some() {
        return;
    }
    panic!(
        "{name} did not reach {value} within 30 s; edge output:\n{}",
        edge.proc.tail().join("\n")
    );
}

/// The uplink is up and JetStream acknowledged at least `n` messages.
async fn uplinked(edge: &Edge, n: f64) {
    await_metric(edge, "plantd_uplink_acked_total", n).await;
    await_metric(edge, "plantd_uplink_state{state=\"up\"}", 1.0).await;
    let ready = http::get(edge.http.port(), "/readyz")
        .await
        .expect("readyz");
    assert_eq!(ready.status, 200, "{}", ready.text());
}

/// The uplink failed to connect, says so on `/readyz` and in its log, and
/// nothing was acknowledged. Returns the `/readyz` text.
async fn refused(edge: &Edge) -> String {
    await_metric(edge, "plantd_uplink_failures_total", 1.0).await;
    await_metric(edge, "plantd_uplink_state{state=\"down\"}", 1.0).await;
    let ready = http::get(edge.http.port(), "/readyz")
        .await
        .expect("readyz");
    let why = ready.text();
    assert_eq!(ready.status, 503, "{why}");
    assert!(why.contains("cannot connect to NATS"), "{why}");
    assert_eq!(metric(edge, "plantd_uplink_acked_total").await, Some(0.0));
    assert!(
        edge.proc
            .tail()
            .iter()
            .any(|l| l.contains("uplink failed") && l.contains("cannot connect to NATS")),
        "the log says why: {:#?}",
        edge.proc.tail()
    );
    why
}

/// The last telemetry message on `topic`, read back from JetStream.
async fn stored(js: &async_nats::jetstream::Context, topic: &str) -> Vec<u8> {
    let stream = js.get_stream(streams::TELEMETRY).await.expect("stream");
    let subject = format!("plantd.{}.up.{}", edge_proc::SITE, topic.replace('/', "."));
    let m = stream
        .get_last_raw_message_by_subject(&subject)
        .await
        .expect("the message is in JetStream");
    m.payload.to_vec()
}

/// A device subscribed to `filter`; the receiver gets its publications.
async fn device(
    mqtt: SocketAddr,
    id: &str,
    filter: &str,
) -> (
    AsyncClient,
    tokio::sync::mpsc::UnboundedReceiver<rumqttc::Publish>,
) {
    let mut o = MqttOptions::new(id, mqtt.ip().to_string(), mqtt.port());
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(o, 10);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
    let mut subscribed_tx = Some(subscribed_tx);
    tokio::spawn(async move {
        while let Ok(ev) = events.poll().await {
            match ev {
                Event::Incoming(Incoming::Publish(p)) => {
                    let delivered = tx.send(p);
                    if delivered.is_err() {
                        return;
                    }
                }
                Event::Incoming(Incoming::SubAck(_)) => {
                    if let Some(t) = subscribed_tx.take() {
                        let _ = t.send(());
                    }
                }
                _ => {}
            }
        }
    });
    client
        .subscribe(filter, QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    tokio::time::timeout(Duration::from_secs(10), subscribed)
        .await
        .expect("SUBACK in time")
        .expect("SUBACK");
    (client, rx)
}

/// A command for `topic` published to JetStream reaches a device
/// subscribed to it through the edge.
async fn command_reaches_device(js: &async_nats::jetstream::Context, edge: &Edge) {
    let (_device, mut rx) = device(edge.mqtt, "valve-7", "valve/7").await;
    let mut h = HeaderMap::new();
    h.insert(headers::QOS, "1");
    // The edge creates PLANTD_COMMANDS after the telemetry stream that the
    // uplink already used: retry while it does not exist yet (bounded).
    let subject = format!("plantd.{}.down.valve.7", edge_proc::SITE);
    plantd_testkit::eventually(
        Duration::from_secs(10),
        "PLANTD_COMMANDS to exist and store the command",
        || async {
            let ack = js
                .publish_with_headers(subject.clone(), h.clone(), "open".into())
                .await
                .expect("publish command")
                .await;
            match ack {
                Ok(_) => Some(()),
                Err(e) if e.kind() == PublishErrorKind::StreamNotFound => None,
                Err(e) => panic!("command not stored: {e}"),
            }
        },
    )
    .await;
    let p = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the command reaches the device; edge output:\n{}",
                edge.proc.tail().join("\n")
            )
        })
        .expect("device connected");
    assert_eq!(
        (p.topic.as_str(), p.payload.as_ref()),
        ("valve/7", &b"open"[..])
    );
}

/// A device's PUBLISH of `payload` on `topic` goes up through the edge and
/// is stored in JetStream (read with `js`, the test's own connection), and
/// a command comes down to a device.
async fn carries_uplink_and_downlink(
    edge: &Edge,
    js: &async_nats::jetstream::Context,
    topic: &str,
    payload: &str,
) {
    publish_acked(edge.mqtt, "sensor-1", topic, payload).await;
    uplinked(edge, 1.0).await;
    assert_eq!(stored(js, topic).await, payload.as_bytes());
    command_reaches_device(js, edge).await;
}

#[tokio::test]
async fn tls_verified_by_ca_carries_uplink_and_downlink() {
    let files = Files::new();
    let ca = Ca::new("plantd test NATS CA");
    let ca_pem = files.write("ca.pem", &ca.pem);
    let nats = tls_server(&files, &ca, None).await;
    let data = tempfile::tempdir().expect("tmp");
    let edge = edge(&nats.tls_url(), data.path(), &["--nats-ca", path(&ca_pem)]).await;

    let js = async_nats::jetstream::new(
        nats.client_with(&nats.tls_url(), tls_options(&ca_pem, None))
            .await,
    );
    carries_uplink_and_downlink(&edge, &js, "line/1/temp", "21.5").await;
}

#[tokio::test]
async fn tls_with_the_wrong_ca_keeps_the_uplink_down() {
    let files = Files::new();
    let ca = Ca::new("plantd test NATS CA");
    let ca_pem = files.write("ca.pem", &ca.pem);
    let other = files.write("other-ca.pem", &Ca::new("someone else's CA").pem);
    let nats = tls_server(&files, &ca, None).await;
    let data = tempfile::tempdir().expect("tmp");
    let edge = edge(&nats.tls_url(), data.path(), &["--nats-ca", path(&other)]).await;

    publish_acked(edge.mqtt, "sensor-1", "line/1/temp", "21.5").await;
    let why = refused(&edge).await;
    assert!(
        why.contains("invalid peer certificate") && why.contains("UnknownIssuer"),
        "a certificate problem is named: {why}"
    );
    assert!(
        metric(&edge, "plantd_journal_records_unacked")
            .await
            .is_some_and(|n| n >= 1.0),
        "the message waits in the journal"
    );
    // The edge never reached the server: not even its streams exist.
    let client = nats
        .client_with(&nats.tls_url(), tls_options(&ca_pem, None))
        .await;
    let js = async_nats::jetstream::new(client);
    assert!(js.get_stream(streams::TELEMETRY).await.is_err());
}

/// A CA, a server that requires client certificates signed by it, and
/// (CA path, client certificate path, client key path).
async fn mtls_server(
    files: &Files,
) -> (
    Nats,
    std::path::PathBuf,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let ca = Ca::new("plantd test NATS CA");
    let ca_pem = files.write("ca.pem", &ca.pem);
    let nats = tls_server(files, &ca, Some(&ca_pem)).await;
    let (cert, key) = ca.leaf("plantd-edge-plant-1", &[]);
    let cert = files.write("edge.pem", &cert);
    let key = files.write("edge-key.pem", &key);
    (nats, ca_pem, cert, key)
}

#[tokio::test]
async fn mutual_tls_with_a_client_certificate_uplinks() {
    let files = Files::new();
    let (nats, ca, cert, key) = mtls_server(&files).await;
    let data = tempfile::tempdir().expect("tmp");
    let edge = edge(
        &nats.tls_url(),
        data.path(),
        &[
            "--nats-ca",
            path(&ca),
            "--nats-cert",
            path(&cert),
            "--nats-key",
            path(&key),
        ],
    )
    .await;

    let js = async_nats::jetstream::new(
        nats.client_with(&nats.tls_url(), tls_options(&ca, Some((&cert, &key))))
            .await,
    );
    carries_uplink_and_downlink(&edge, &js, "line/2/temp", "19.0").await;
}

#[tokio::test]
async fn mutual_tls_without_a_client_certificate_is_refused() {
    let files = Files::new();
    let (nats, ca, cert, key) = mtls_server(&files).await;
    let data = tempfile::tempdir().expect("tmp");
    let edge = edge(&nats.tls_url(), data.path(), &["--nats-ca", path(&ca)]).await;

    publish_acked(edge.mqtt, "sensor-1", "line/2/temp", "19.0").await;
    let why = refused(&edge).await;
    assert!(why.contains("CertificateRequired"), "{why}");
    let client = nats
        .client_with(&nats.tls_url(), tls_options(&ca, Some((&cert, &key))))
        .await;
    let js = async_nats::jetstream::new(client);
    assert!(js.get_stream(streams::TELEMETRY).await.is_err());
}

/// Runs the edge with `extra` until it exits by itself: (whether it
/// succeeded, what it printed).
async fn run_to_exit(extra: &[&str]) -> (bool, String) {
    let data = tempfile::tempdir().expect("tmp");
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_plantd-edge"))
            .args(["--site", edge_proc::SITE, "--mqtt-listen", "127.0.0.1:0"])
            .args(["--http-listen", "127.0.0.1:0", "--allow-anonymous"])
            .arg("--data-dir")
            .arg(data.path())
            .args(["--nats-url", "tls://127.0.0.1:1"])
            .args(extra)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the edge exits by itself")
    .expect("run plantd-edge");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn missing_or_half_tls_settings_stop_the_edge_with_a_clear_error() {
    let files = Files::new();
    let ca = Ca::new("plantd test NATS CA");
    let ca_pem = files.write("ca.pem", &ca.pem);
    let (cert, key) = ca.leaf("plantd-edge-plant-1", &[]);
    let cert = files.write("edge.pem", &cert);
    let key = files.write("edge-key.pem", &key);
    let missing = files.path("no-such.pem");

    for (args, says) in [
        (
            vec!["--nats-ca", path(&ca_pem), "--nats-cert", path(&cert)],
            "--nats-cert and --nats-key".to_owned(),
        ),
        (
            vec!["--nats-ca", path(&ca_pem), "--nats-key", path(&key)],
            "--nats-cert and --nats-key".to_owned(),
        ),
        (
            vec!["--nats-ca", path(&missing)],
            format!("--nats-ca {}", path(&missing)),
        ),
        (
            vec!["--nats-cert", path(&missing), "--nats-key", path(&key)],
            format!("--nats-cert {}", path(&missing)),
        ),
        (
            vec!["--nats-creds", path(&missing)],
            format!("credentials {}", path(&missing)),
        ),
    ] {
        let (ok, out) = run_to_exit(&args).await;
        assert!(!ok, "{args:?} must not start: {out}");
        assert!(
            out.contains(&says),
            "{args:?}: expected {says:?} in:\n{out}"
        );
    }
}

/// A NATS JWT (v2) about `sub` with claims `nats`, signed by `signer`
/// (header `{"typ":"JWT","alg":"ed25519-nkey"}`, base64url without padding).
fn nats_jwt(signer: &nkeys::KeyPair, sub: &str, name: &str, nats: serde_json::Value) -> String {
    let iat = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let header = json!({"typ": "JWT", "alg": "ed25519-nkey"});
    let claims = json!({
        "jti": format!("{name}-{iat}-{}", rand::random::<u64>()),
        "iat": iat,
        "iss": signer.public_key(),
        "name": name,
        "sub": sub,
        "nats": nats,
    });
    let signing_input = format!(
        "{}.{}",
        B64.encode(serde_json::to_vec(&header).expect("header JSON")),
        B64.encode(serde_json::to_vec(&claims).expect("claims JSON")),
    );
    let sig = signer.sign(signing_input.as_bytes()).expect("sign JWT");
    format!("{signing_input}.{}", B64.encode(sig))
}

/// Account claims; `jetstream` enables JetStream without limits.
fn account_claims(jetstream: bool) -> serde_json::Value {
    let js = if jetstream { -1 } else { 0 };
    json!({
        "type": "account",
        "version": 2,
        "limits": {
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": -1, "leaf": -1,
            "mem_storage": js, "disk_storage": js, "streams": js, "consumer": js,
        },
        "default_permissions": {"pub": {}, "sub": {}},
    })
}

/// The standard `.creds` file: the user JWT and the user's nkey seed.
fn creds(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

/// A nats-server in operator mode (decentralised JWT authentication, a
/// memory resolver preloaded with a JetStream-enabled account and the
/// system account), and a user of that account: (server, user JWT, user
/// keys).
async fn operator_server() -> (Nats, String, nkeys::KeyPair) {
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let system = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let operator_jwt = nats_jwt(
        &operator,
        &operator.public_key(),
        "plantd-test-operator",
        json!({"type": "operator", "version": 2, "system_account": system.public_key()}),
    );
    let account_jwt = nats_jwt(
        &operator,
        &account.public_key(),
        "PLANTD",
        account_claims(true),
    );
    let system_jwt = nats_jwt(
        &operator,
        &system.public_key(),
        "SYS",
        account_claims(false),
    );
    let user_jwt = nats_jwt(
        &account,
        &user.public_key(),
        "plantd-edge-plant-1",
        json!({
            "type": "user", "version": 2,
            "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
        }),
    );
    let nats = Nats::start_with(&format!(
        "operator: {operator_jwt:?}\n\
         system_account: {sys:?}\n\
         resolver: MEMORY\n\
         resolver_preload: {{\n  {acct:?}: {account_jwt:?}\n  {sys:?}: {system_jwt:?}\n}}\n",
        sys = system.public_key(),
        acct = account.public_key(),
    ))
    .await;
    (nats, user_jwt, user)
}

#[tokio::test]
async fn a_creds_file_authenticates_the_uplink_in_operator_mode() {
    let (nats, user_jwt, user) = operator_server().await;
    let files = Files::new();
    let file = files.write(
        "edge.creds",
        &creds(&user_jwt, &user.seed().expect("user seed")),
    );
    let data = tempfile::tempdir().expect("tmp");
    let edge = edge(&nats.url(), data.path(), &["--nats-creds", path(&file)]).await;

    let js = async_nats::jetstream::new(
        nats.client_with(
            &nats.url(),
            async_nats::ConnectOptions::with_credentials_file(&file)
                .await
                .expect("read creds"),
        )
        .await,
    );
    carries_uplink_and_downlink(&edge, &js, "line/3/temp", "18.25").await;
}

#[tokio::test]
async fn a_creds_file_with_the_wrong_seed_is_refused() {
    let (nats, user_jwt, user) = operator_server().await;
    let files = Files::new();
    let impostor = nkeys::KeyPair::new_user();
    let file = files.write(
        "edge.creds",
        &creds(&user_jwt, &impostor.seed().expect("seed")),
    );
    let data = tempfile::tempdir().expect("tmp");
    let edge = edge(&nats.url(), data.path(), &["--nats-creds", path(&file)]).await;

    publish_acked(edge.mqtt, "sensor-1", "line/3/temp", "18.25").await;
    let why = refused(&edge).await;
    assert!(why.contains("authorization violation"), "{why}");
    // The right seed is let in, and the edge got nothing into JetStream.
    let good = files.write("good.creds", &creds(&user_jwt, &user.seed().expect("seed")));
    let client = nats
        .client_with(
            &nats.url(),
            async_nats::ConnectOptions::with_credentials_file(&good)
                .await
                .expect("read creds"),
        )
        .await;
    let js = async_nats::jetstream::new(client);
    assert!(js.get_stream(streams::TELEMETRY).await.is_err());
}
