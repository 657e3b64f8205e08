//! The edge trusts tokens only: CONNECT carries a JWT as the password, every
//! PUBLISH and SUBSCRIBE is checked against its grants, and a connection
//! ends when its token expires or is revoked. Real clients (rumqttc 3.1.1
//! and 5.0, mosquitto_pub) and, for revocation and key caching, a real
//! nats-server.

use crate::common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use plantd_bridge::trust::Trust;
use plantd_edge::Config;
use plantd_edge::metrics::DropReason;
use plantd_shared::claims::{Audience, Claims, site_audience};
use plantd_shared::jwt::{SigningKey, jwks_of, now_secs};
use plantd_shared::streams::{self, Settings};
use plantd_shared::subject::Site;
use rumqttc::v5::mqttbytes::QoS as Q5;
use tokio::process::Command;
use tokio::sync::oneshot;

const SITE: &str = "plant-1";

fn site() -> Site {
    Site::new(SITE).expect("valid site")
}

/// What a test token says.
struct Grant<'a> {
    sub: &'a str,
    jti: &'a str,
    /// Site whose audience the token carries.
    aud_site: &'a str,
    /// Seconds from now (negative: in the past).
    exp_in: i64,
    publish: &'a [&'a str],
    subscribe: &'a [&'a str],
}

impl<'a> Grant<'a> {
    fn new(sub: &'a str, jti: &'a str) -> Self {
        Grant {
            sub,
            jti,
            aud_site: SITE,
            exp_in: 600,
            publish: &[],
            subscribe: &[],
        }
    }
    fn publish(mut self, f: &'a [&'a str]) -> Self {
        self.publish = f;
        self
    }
    fn subscribe(mut self, f: &'a [&'a str]) -> Self {
        self.subscribe = f;
        self
    }
}

/// The identity service, as far as the edge can tell: a signing key and
/// its JWKS in a file.
struct Issuer {
    key: SigningKey,
    dir: tempfile::TempDir,
    jwks_file: PathBuf,
}

impl Issuer {
    fn new() -> Self {
        let key = SigningKey::generate_ed25519("k1").expect("generate key");
        let dir = tempfile::tempdir().expect("tempdir");
        let jwks_file = dir.path().join("jwks.json");
        std::fs::write(&jwks_file, jwks_json(&key)).expect("write JWKS file");
        Issuer {
            key,
            dir,
            jwks_file,
        }
    }

    fn token(&self, g: &Grant<'_>) -> String {
        sign(&self.key, g)
    }

    /// A trust store for the site, keys from the JWKS file.
    fn trust(&self) -> Arc<Trust> {
        let t = Trust::new(site(), self.dir.path().join("cache"));
        t.load_file(&self.jwks_file).expect("load JWKS file");
        t
    }
}

fn jwks_json(key: &SigningKey) -> String {
    serde_json::to_string(&jwks_of([key]).expect("jwks")).expect("JWKS as JSON")
}

fn sign(key: &SigningKey, g: &Grant<'_>) -> String {
    let now = now_secs();
    let claims = Claims {
        aud: Audience::One(site_audience(
            &Site::new(g.aud_site).expect("audience site"),
        )),
        exp: now.saturating_add_signed(g.exp_in),
        iat: now.saturating_sub(3600),
        jti: g.jti.into(),
        ..device_claims(g.sub, SITE, g.publish, g.subscribe)
    };
    key.sign(&claims).expect("sign token")
}

/// An in-process broker for `SITE` that verifies tokens with `trust`.
async fn broker(trust: Arc<Trust>, f: impl FnOnce(&mut Config)) -> TestBroker {
    TestBroker::custom(
        |c| {
            c.site = SITE.into();
            // The organisation of `device_claims`: the site's owner.
            c.org = Some("acme".into());
            c.allow_anonymous = false;
            f(c);
        },
        move |b| b.with_trust(trust),
    )
    .await
}

fn creds5(user: &str, token: &str) -> impl FnOnce(&mut rumqttc::v5::MqttOptions) {
    let (user, token) = (user.to_owned(), token.to_owned());
    move |o| {
        o.set_credentials(user, token);
    }
}

fn creds4(user: &str, token: &str) -> impl FnOnce(&mut rumqttc::MqttOptions) {
    let (user, token) = (user.to_owned(), token.to_owned());
    move |o| {
        o.set_credentials(user, token);
    }
}

/// The error a v5 client's connection attempt ends with.
async fn refused5(
    b: &TestBroker,
    id: &str,
    f: impl FnOnce(&mut rumqttc::v5::MqttOptions),
) -> String {
    let mut c = v5_unchecked(b, id, f);
    match c.connack().await {
        Ok(a) => panic!("{id}: expected a refusal, got {a:?}"),
        Err(e) => e,
    }
}

async fn refused4(b: &TestBroker, id: &str, f: impl FnOnce(&mut rumqttc::MqttOptions)) -> String {
    let mut c = v4_unchecked(b, id, f);
    match c.connack().await {
        Ok(a) => panic!("{id}: expected a refusal, got {a:?}"),
        Err(e) => e,
    }
}

/// Runs mosquitto_pub; returns whether it succeeded and its stderr.
async fn mosquitto_pub_status(port: u16, version: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(mosquitto("mosquitto_pub"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", version])
        .args(args)
        .output()
        .await
        .expect("run mosquitto_pub");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ------------------------------------------------------------ CONNECT

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_nobody_connects() {
    let issuer = Issuer::new();
    let b = broker(issuer.trust(), |_| {}).await;

    let e = refused5(&b, "anon5", |_| {}).await;
    assert!(e.contains("ConnectionRefused(NotAuthorized)"), "v5: {e}");
    let e = refused4(&b, "anon4", |_| {}).await;
    assert!(e.contains("NotAuthorized"), "3.1.1 return code 5: {e}");
    let (ok, err) = mosquitto_pub_status(b.port(), "mqttv311", &["-t", "a", "-m", "x"]).await;
    assert!(!ok, "mosquitto_pub without a token is refused");
    assert!(err.to_lowercase().contains("not authori"), "{err}");
    assert!(
        b.metrics
            .connections_refused
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 3
    );
    b.stop().await;

    // Anonymous access is off by default even with no keys configured.
    assert!(!Config::default().allow_anonymous);
    let plain = TestBroker::with(|c| c.allow_anonymous = false).await;
    let e = refused5(&plain, "anon", |_| {}).await;
    assert!(e.contains("NotAuthorized"), "{e}");
    plain.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_tokens_are_refused_with_bad_user_name_or_password() {
    let issuer = Issuer::new();
    let trust = issuer.trust();
    let b = broker(trust.clone(), |_| {}).await;

    let impostor = SigningKey::generate_ed25519("k1").expect("key");
    let forged = sign(&impostor, &Grant::new("dev-1", "j-forged"));
    let other_site = issuer.token(&Grant {
        aud_site: "plant-2",
        ..Grant::new("dev-1", "j-site")
    });
    let expired = issuer.token(&Grant {
        exp_in: -3600,
        ..Grant::new("dev-1", "j-exp")
    });
    for (name, token) in [
        ("bad signature", forged.as_str()),
        ("wrong audience", other_site.as_str()),
        ("expired", expired.as_str()),
        ("not a JWT", "not-a-jwt"),
    ] {
        let e = refused5(&b, "bad5", creds5("dev-1", token)).await;
        assert!(
            e.contains("ConnectionRefused(BadUserNamePassword)"),
            "{name} (v5 0x86): {e}"
        );
        let e = refused4(&b, "bad4", creds4("dev-1", token)).await;
        assert!(
            e.contains("BadUserNamePassword"),
            "{name} (3.1.1 return code 4): {e}"
        );
    }
    let (ok, err) = mosquitto_pub_status(
        b.port(),
        "5",
        &["-u", "dev-1", "-P", &expired, "-t", "a", "-m", "x"],
    )
    .await;
    assert!(!ok, "mosquitto_pub with an expired token is refused: {err}");

    // Revoked before connecting: not authorised.
    let revoked = issuer.token(&Grant::new("dev-1", "j-revoked"));
    trust.revoke("j-revoked", now_secs() + 600);
    let e = refused5(&b, "rev5", creds5("", &revoked)).await;
    assert!(
        e.contains("ConnectionRefused(NotAuthorized)"),
        "v5 0x87: {e}"
    );
    let e = refused4(&b, "rev4", creds4("dev-1", &revoked)).await;
    assert!(e.contains("NotAuthorized"), "3.1.1 return code 5: {e}");

    // A will outside the token's grants is refused with the CONNECT.
    let limited = issuer.token(&Grant::new("dev-1", "j-will").publish(&["plant/line1/#"]));
    let e = refused5(&b, "will", |o| {
        o.set_credentials("dev-1", limited.clone());
        o.set_last_will(m5::LastWill::new(
            "elsewhere/dead",
            "x",
            Q5::AtMostOnce,
            false,
            None,
        ));
    })
    .await;
    assert!(e.contains("NotAuthorized"), "will topic: {e}");
    let (_ok, _) = v5(&b, "will-ok", |o| {
        o.set_credentials("dev-1", limited.clone());
        o.set_last_will(m5::LastWill::new(
            "plant/line1/dead",
            "x",
            Q5::AtMostOnce,
            false,
            None,
        ));
    })
    .await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_connects_with_any_user_name() {
    let issuer = Issuer::new();
    let b = broker(issuer.trust(), |_| {}).await;
    let token = issuer.token(&Grant::new("dev-1", "j1"));
    let _a = v5(&b, "empty-user", creds5("", &token)).await;
    let _b = v5(&b, "subject-user", creds5("dev-1", &token)).await;
    let _c = v4(&b, "v3-client", creds4("dev-1", &token)).await;
    let (ok, err) = mosquitto_pub_status(
        b.port(),
        "mqttv311",
        &["-u", "dev-1", "-P", &token, "-t", "nowhere", "-m", "x"],
    )
    .await;
    assert!(ok, "mosquitto_pub -P <jwt> connects: {err}");
    b.stop().await;
}

// ------------------------------------------------ PUBLISH and SUBSCRIBE

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_grants_decide_every_publish_and_subscribe() {
    let issuer = Issuer::new();
    let b = broker(issuer.trust(), |c| {
        c.deny_subscribe = vec!["plant/secret/#".into()];
    })
    .await;
    let reader_token = issuer.token(&Grant::new("dashboard", "j-reader").subscribe(&["plant/#"]));
    let device_token = issuer.token(
        &Grant::new("dev-1", "j-dev")
            .publish(&["plant/line1/+/temp"])
            .subscribe(&["cmd/dev-1/#"]),
    );

    let (mut reader, _) = v5(&b, "reader", creds5("dashboard", &reader_token)).await;
    let ack = reader.sub("plant/#", Q5::AtLeastOnce).await;
    assert_eq!(
        ack.return_codes,
        vec![m5::SubscribeReasonCode::Success(Q5::AtLeastOnce)]
    );
    let ack = reader.sub("cmd/#", Q5::AtLeastOnce).await;
    assert_eq!(
        ack.return_codes,
        vec![m5::SubscribeReasonCode::NotAuthorized],
        "outside the grant"
    );
    let ack = reader.sub("plant/secret/x", Q5::AtLeastOnce).await;
    assert_eq!(
        ack.return_codes,
        vec![m5::SubscribeReasonCode::NotAuthorized],
        "--deny-subscribe still applies on top"
    );

    // v5 device: allowed topic delivered, forbidden refused with 0x87.
    let (mut dev, _) = v5(&b, "dev-1", creds5("dev-1", &device_token)).await;
    dev.client
        .publish("plant/line1/m1/temp", Q5::AtLeastOnce, false, "21.5")
        .await
        .expect("publish queued");
    assert_eq!(dev.puback().await.reason, m5::PubAckReason::Success);
    let p = reader.publish().await;
    assert_eq!(&p.topic[..], b"plant/line1/m1/temp");
    assert_eq!(&p.payload[..], b"21.5");
    dev.client
        .publish("plant/line2/m1/temp", Q5::AtLeastOnce, false, "nope")
        .await
        .expect("publish queued");
    assert_eq!(dev.puback().await.reason, m5::PubAckReason::NotAuthorized);
    let ack = dev.sub("plant/#", Q5::AtMostOnce).await;
    assert_eq!(
        ack.return_codes,
        vec![m5::SubscribeReasonCode::NotAuthorized]
    );
    reader.no_publish().await;

    // 3.1.1 device: a refused publish is acknowledged, dropped and counted;
    // a refused subscription gets 0x80.
    let before = b.metrics.dropped_count(DropReason::NotAuthorized);
    let mut dev3 = v4(&b, "dev-1-v3", creds4("dev-1", &device_token)).await;
    dev3.client
        .publish(
            "plant/line9/m1/temp",
            rumqttc::QoS::AtLeastOnce,
            false,
            "nope",
        )
        .await
        .expect("publish queued");
    dev3.puback().await;
    let ack = dev3.sub("plant/#", rumqttc::QoS::AtMostOnce).await;
    assert_eq!(
        ack.return_codes,
        vec![rumqttc::SubscribeReasonCode::Failure]
    );
    reader.no_publish().await;
    assert!(
        b.metrics.dropped_count(DropReason::NotAuthorized) > before,
        "refused publishes are counted"
    );
    dev3.client
        .publish(
            "plant/line1/m3/temp",
            rumqttc::QoS::AtLeastOnce,
            false,
            "v3",
        )
        .await
        .expect("publish queued");
    assert_eq!(&reader.publish().await.payload[..], b"v3");

    // mosquitto_pub with the token as its password, both versions.
    for version in ["mqttv311", "5"] {
        let (ok, err) = mosquitto_pub_status(
            b.port(),
            version,
            &[
                "-u",
                "dev-1",
                "-P",
                &device_token,
                "-q",
                "1",
                "-t",
                "plant/line1/m2/temp",
                "-m",
                version,
            ],
        )
        .await;
        assert!(ok, "mosquitto_pub {version}: {err}");
        assert_eq!(reader.publish().await.payload, Bytes::from(version));
    }
    let (_ok, _err) = mosquitto_pub_status(
        b.port(),
        "mqttv311",
        &[
            "-u",
            "dev-1",
            "-P",
            &device_token,
            "-t",
            "plant/other",
            "-m",
            "forbidden",
        ],
    )
    .await;
    reader.no_publish().await;
    b.stop().await;
}

// ---------------------------------------------- expiry and revocation

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_loses_its_live_connections_at_once() {
    let issuer = Issuer::new();
    let trust = issuer.trust();
    let b = broker(trust.clone(), |_| {}).await;
    let doomed = issuer.token(&Grant::new("dev-1", "j-doomed").subscribe(&["#"]));
    let other = issuer.token(
        &Grant::new("dev-2", "j-other")
            .subscribe(&["#"])
            .publish(&["#"]),
    );
    let (mut c5, _) = v5(&b, "doomed-5", creds5("dev-1", &doomed)).await;
    let mut c4 = v4(&b, "doomed-4", creds4("dev-1", &doomed)).await;
    let (mut survivor, _) = v5(&b, "survivor", creds5("dev-2", &other)).await;
    survivor.sub("t", Q5::AtMostOnce).await;

    trust.revoke("j-doomed", now_secs() + 600);
    let why = c5.ended().await;
    assert!(why.contains("NotAuthorized"), "v5 DISCONNECT 0x87: {why}");
    let e = loop {
        if let Err(e) = c4.incoming().await {
            break e;
        }
    };
    assert!(!e.contains("timeout"), "3.1.1 connection closed: {e}");

    survivor
        .client
        .publish("t", Q5::AtMostOnce, false, "still here")
        .await
        .expect("publish queued");
    assert_eq!(&survivor.publish().await.payload[..], b"still here");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_token_ends_its_connection_with_0xa0() {
    let issuer = Issuer::new();
    let b = broker(issuer.trust(), |_| {}).await;
    // Accepted within the 30 s clock-skew leeway, which runs out in ~3 s.
    let token = issuer.token(&Grant {
        exp_in: -27,
        ..Grant::new("dev-1", "j-short")
    });
    let start = Instant::now();
    let (mut c, _) = v5(&b, "short-lived", creds5("dev-1", &token)).await;
    let why = c.ended().await;
    assert!(
        why.contains("MaximumConnectTime"),
        "v5 DISCONNECT 0xA0: {why}"
    );
    // Not before the leeway ran out (the token was accepted inside it).
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "closed after {:?}, inside the leeway",
        start.elapsed()
    );
    b.stop().await;
}

// ------------------------------------- the whole edge, with nats-server

struct Edge {
    mqtt: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Edge {
    async fn start(config: Config) -> Edge {
        init_tracing();
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            plantd_edge::edge::run(
                config,
                async move {
                    let _ = stop_rx.await;
                },
                move |listening| {
                    let _ = ready_tx.send(listening.mqtt);
                },
            )
            .await
            .expect("edge runs");
        });
        let mqtt = tokio::time::timeout(WAIT, ready_rx)
            .await
            .expect("edge ready in time")
            .expect("edge started");
        Edge {
            mqtt,
            stop: Some(stop),
            task,
        }
    }

    fn broker(&self) -> TestBroker {
        TestBroker::external(self.mqtt, self.mqtt)
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("edge stops in time")
            .expect("edge task");
    }
}

fn edge_config(data: &std::path::Path) -> Config {
    Config {
        site: SITE.into(),
        org: Some("acme".into()),
        mqtt_listen: "127.0.0.1:0".into(),
        http_listen: "127.0.0.1:0".into(),
        data_dir: Some(data.to_owned()),
        ..Config::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_in_plantd_revoked_disconnects_within_seconds() {
    let nats = plantd_testkit::Nats::start().await;
    let js = nats.jetstream().await;
    streams::ensure(&js, &Settings::default())
        .await
        .expect("streams and buckets");
    let issuer = Issuer::new();
    let data = tempfile::tempdir().expect("tempdir");
    let mut config = edge_config(data.path());
    config.jwks_file = Some(issuer.jwks_file.clone());
    config.uplink.nats_url = Some(nats.url());
    let edge = Edge::start(config).await;
    let b = edge.broker();

    let token = issuer.token(&Grant::new("dev-1", "j-kv").subscribe(&["#"]));
    let (mut c, _) = v5(&b, "dev-1", creds5("dev-1", &token)).await;
    let bucket = js
        .get_key_value(streams::REVOKED_BUCKET)
        .await
        .expect("revocation bucket");
    bucket
        .put("j-kv", Bytes::from((now_secs() + 600).to_string()))
        .await
        .expect("revoke");
    let why = c.ended().await;
    assert!(why.contains("NotAuthorized"), "v5 DISCONNECT 0x87: {why}");
    let e = refused5(&b, "dev-1", creds5("dev-1", &token)).await;
    assert!(e.contains("NotAuthorized"), "{e}");
    edge.stop().await;
}

/// Serves `body` as a JWKS on a free port.
async fn serve_jwks(body: String) -> (String, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || {
            let b = body.clone();
            async move { ([("content-type", "application/json")], b) }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_keys_keep_authenticating_when_identity_and_nats_are_down() {
    let mut nats = plantd_testkit::Nats::start().await;
    let issuer = Issuer::new();
    let (url, jwks_server) = serve_jwks(jwks_json(&issuer.key)).await;
    let data = tempfile::tempdir().expect("tempdir");
    let mut config = edge_config(data.path());
    config.jwks_url = Some(url);
    config.uplink.nats_url = Some(nats.url());
    let token = issuer.token(&Grant::new("dev-1", "j-cache").publish(&["#"]));

    let edge = Edge::start(config.clone()).await;
    let b = edge.broker();
    // Until the first fetch lands the edge answers 0x88 (server
    // unavailable, try again): that refusal is the readiness signal.
    let deadline = Instant::now() + WAIT;
    loop {
        let mut c = v5_unchecked(&b, "dev-1", creds5("dev-1", &token));
        match c.connack().await {
            Ok(a) if a.code == m5::ConnectReturnCode::Success => break,
            Err(e) if e.contains("ServerUnavailable") && Instant::now() < deadline => {}
            other => panic!("unexpected answer while keys are fetched: {other:?}"),
        }
    }
    edge.stop().await;

    // The identity service and NATS go away; the edge restarts offline.
    jwks_server.abort();
    let _ = jwks_server.await;
    nats.stop().await;
    let edge = Edge::start(config).await;
    let (_c, _) = v5(&edge.broker(), "dev-1", creds5("dev-1", &token)).await;
    let e = refused5(
        &edge.broker(),
        "forger",
        creds5(
            "x",
            &sign(
                &SigningKey::generate_ed25519("k1").expect("key"),
                &Grant::new("x", "y"),
            ),
        ),
    )
    .await;
    assert!(e.contains("BadUserNamePassword"), "{e}");
    // NATS comes back before the edge stops: shutting down while NATS is
    // unreachable is not what this test is about.
    nats.start_again().await;
    edge.stop().await;
}
