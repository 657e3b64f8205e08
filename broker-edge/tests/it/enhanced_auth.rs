//! Enhanced authentication (MQTT 5 §4.12) with the `plantd-token` method:
//! the token as Authentication Data at CONNECT (rumqttc), and
//! re-authentication with AUTH 0x19 and a fresh token (raw packets: no
//! client library offers re-authentication).

use crate::common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use plantd_bridge::trust::Trust;
use plantd_edge::auth::AUTH_METHOD_TOKEN;
use plantd_edge::protocol::{QoS as Q, ReasonCode, v5};
use plantd_shared::jwt::{SigningKey, jwks_of};
use plantd_shared::subject::Site;

const SITE: &str = "plant-1";

/// A signing key, the edge's trust in it, and tokens for devices of
/// `acme` (the site's owner).
struct Issuer {
    key: SigningKey,
    dir: tempfile::TempDir,
}

impl Issuer {
    fn new() -> Self {
        Issuer {
            key: SigningKey::generate_ed25519("k1").expect("generate key"),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn token(&self, sub: &str, jti: &str, publish: &[&str]) -> Bytes {
        let claims = plantd_shared::claims::Claims {
            jti: jti.into(),
            ..device_claims(sub, SITE, publish, &[])
        };
        Bytes::from(self.key.sign(&claims).expect("sign token"))
    }

    fn trust(&self) -> Arc<Trust> {
        let jwks = self.dir.path().join("jwks.json");
        let body = serde_json::to_string(&jwks_of([&self.key]).expect("jwks")).expect("json");
        std::fs::write(&jwks, body).expect("write JWKS");
        let t = Trust::new(
            Site::new(SITE).expect("site"),
            self.dir.path().join("cache"),
        );
        t.load_file(&jwks).expect("load JWKS");
        t
    }

    async fn broker(&self) -> TestBroker {
        let trust = self.trust();
        TestBroker::custom(
            |c| {
                c.site = SITE.into();
                c.org = Some("acme".into());
                c.allow_anonymous = false;
            },
            move |b| b.with_trust(trust),
        )
        .await
    }
}

fn token_connect(id: &str, token: Bytes) -> v5::Connect {
    let mut c = v5_connect(id);
    c.properties.authentication_method = Some(AUTH_METHOD_TOKEN.into());
    c.properties.authentication_data = Some(token);
    c
}

fn reauth(token: Bytes) -> v5::Packet {
    let mut a = v5::Disconnect::new(ReasonCode::ReAuthenticate.code());
    a.properties.authentication_method = Some(AUTH_METHOD_TOKEN.into());
    a.properties.authentication_data = Some(token);
    v5::Packet::Auth(a)
}

async fn publish1(r: &mut Raw, topic: &str, pkid: u16) -> u8 {
    r.send5(v5::Packet::Publish(v5::Publish {
        dup: false,
        qos: Q::AtLeastOnce,
        retain: false,
        topic: topic.into(),
        pkid,
        properties: v5::Properties::default(),
        payload: Bytes::from_static(b"x"),
    }))
    .await;
    match r.recv5().await {
        Some(v5::Packet::PubAck(a)) if a.pkid == pkid => a.reason,
        other => panic!("expected PUBACK {pkid}, got {other:?}"),
    }
}

/// rumqttc connects with the token as Authentication Data; the CONNACK
/// names the method.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_logs_in_with_the_token_as_authentication_data() {
    let issuer = Issuer::new();
    let b = issuer.broker().await;
    let token = issuer.token("dev-1", "j-rumqttc", &["a/#"]);
    let mut c = v5_unchecked(&b, "dev-1", move |o| {
        o.set_authentication_method(Some(AUTH_METHOD_TOKEN.into()));
        o.set_authentication_data(Some(token));
    });
    let ack = c.connack().await.expect("accepted");
    assert_eq!(
        ack.properties
            .and_then(|p| p.authentication_method)
            .as_deref(),
        Some(AUTH_METHOD_TOKEN)
    );
    b.stop().await;
}

/// AUTH 0x19 with a fresh token of the same device: AUTH 0x00 back and the
/// connection runs on the new grants; a token of another device closes it
/// with DISCONNECT 0x87.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reauthentication_replaces_the_connections_grants() {
    let issuer = Issuer::new();
    let b = issuer.broker().await;
    let first = issuer.token("dev-1", "j-1", &["a/#"]);
    let (mut r, ack) = Raw::connect5(&b, token_connect("dev-1", first)).await;
    assert_eq!(ack.reason, ReasonCode::Success.code());
    assert_eq!(
        ack.properties.authentication_method.as_deref(),
        Some(AUTH_METHOD_TOKEN)
    );
    assert_eq!(
        publish1(&mut r, "b/x", 1).await,
        ReasonCode::NotAuthorized.code(),
        "not granted by the first token"
    );

    r.send5(reauth(issuer.token("dev-1", "j-2", &["a/#", "b/#"])))
        .await;
    match r.recv5().await {
        Some(v5::Packet::Auth(a)) => {
            assert_eq!(a.reason, ReasonCode::Success.code());
            assert_eq!(
                a.properties.authentication_method.as_deref(),
                Some(AUTH_METHOD_TOKEN)
            );
        }
        other => panic!("expected AUTH 0x00, got {other:?}"),
    }
    assert_eq!(
        publish1(&mut r, "b/x", 2).await,
        ReasonCode::NoMatchingSubscribers.code(),
        "granted by the second token"
    );

    r.send5(reauth(issuer.token("dev-2", "j-3", &["#"]))).await;
    assert_eq!(r.closed5().await, Some(ReasonCode::NotAuthorized.code()));
    b.stop().await;
}

/// A method the edge does not offer gets CONNACK 0x8C; AUTH on a
/// connection that authenticated with a password is a Protocol Error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_methods_and_auth_without_a_method_are_refused() {
    let issuer = Issuer::new();
    let b = issuer.broker().await;
    let mut c = token_connect("dev-1", issuer.token("dev-1", "j-x", &[]));
    c.properties.authentication_method = Some("SCRAM-SHA-256".into());
    let mut r = Raw::open(&b).await;
    r.send5(v5::Packet::Connect(Box::new(c))).await;
    match r.recv5().await {
        Some(v5::Packet::ConnAck(a)) => {
            assert_eq!(a.reason, ReasonCode::BadAuthenticationMethod.code())
        }
        other => panic!("expected CONNACK 0x8C, got {other:?}"),
    }

    let mut c = v5_connect("dev-1");
    c.password = Some(issuer.token("dev-1", "j-y", &[]));
    let (mut r, ack) = Raw::connect5(&b, c).await;
    assert_eq!(ack.reason, ReasonCode::Success.code());
    r.send5(reauth(issuer.token("dev-1", "j-z", &[]))).await;
    assert_eq!(r.closed5().await, Some(ReasonCode::ProtocolError.code()));
    b.stop().await;
}
