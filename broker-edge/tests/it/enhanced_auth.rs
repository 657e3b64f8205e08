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
        self.grants(sub, jti, publish, &[])
    }

    /// A token of device `sub` with these publish and subscribe grants.
    fn grants(&self, sub: &str, jti: &str, publish: &[&str], subscribe: &[&str]) -> Bytes {
        self.sign(plantd_shared::claims::Claims {
            jti: jti.into(),
            ..device_claims(sub, SITE, publish, subscribe)
        })
    }

    fn sign(&self, claims: plantd_shared::claims::Claims) -> Bytes {
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
        self.broker_in(None).await
    }

    /// A broker of the site, with its session store in `data` if given.
    async fn broker_in(&self, data: Option<&std::path::Path>) -> TestBroker {
        let trust = self.trust();
        TestBroker::custom(
            |c| {
                c.site = SITE.into();
                c.org = Some("acme".into());
                c.allow_anonymous = false;
                c.data_dir = data.map(std::path::Path::to_path_buf);
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

// ------------------------------------------ narrower rights (decision 0051)

/// Subscribes raw connection `r` to `filters` at QoS 1 and returns the
/// SUBACK's reasons.
async fn subscribe1(r: &mut Raw, pkid: u16, filters: &[&str]) -> Vec<u8> {
    let options = v5::SubscriptionOptions {
        qos: Q::AtLeastOnce,
        ..Default::default()
    };
    r.send5(v5::Packet::Subscribe(v5::Subscribe {
        pkid,
        properties: v5::Properties::default(),
        filters: filters.iter().map(|f| ((*f).to_owned(), options)).collect(),
    }))
    .await;
    match r.recv5().await {
        Some(v5::Packet::SubAck(a)) if a.pkid == pkid => a.reasons,
        other => panic!("expected SUBACK {pkid}, got {other:?}"),
    }
}

/// Waits for AUTH 0x00.
async fn reauthenticated(r: &mut Raw) {
    match r.recv5().await {
        Some(v5::Packet::Auth(a)) => assert_eq!(a.reason, ReasonCode::Success.code()),
        other => panic!("expected AUTH 0x00, got {other:?}"),
    }
}

/// The topic of the next PUBLISH on `r`.
async fn next_topic(r: &mut Raw) -> String {
    match r.recv5().await {
        Some(v5::Packet::Publish(p)) => p.topic,
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

/// A rumqttc 5.0 publisher allowed everywhere under `a/` and `b/`.
async fn publisher(b: &TestBroker, issuer: &Issuer) -> V5 {
    let token = issuer.token("pub-1", "j-pub", &["a/#", "b/#"]);
    let token = String::from_utf8(token.to_vec()).expect("token is text");
    v5(b, "pub-1", token_creds5(&token)).await.0
}

/// A device re-authenticating with a token that no longer grants `b/#`
/// loses its subscription to `b/#` before it reads AUTH 0x00: a message
/// published to `b/x` afterwards finds no subscriber, `a/#` still
/// delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reauthentication_with_fewer_rights_removes_the_subscriptions_no_longer_allowed() {
    let issuer = Issuer::new();
    let b = issuer.broker().await;
    let wide = issuer.grants("dev-1", "j-1", &[], &["a/#", "b/#"]);
    let (mut dev, ack) = Raw::connect5(&b, token_connect("dev-1", wide)).await;
    assert_eq!(ack.reason, ReasonCode::Success.code());
    assert_eq!(subscribe1(&mut dev, 1, &["a/#", "b/#"]).await, [1, 1]);
    let mut publ = publisher(&b, &issuer).await;
    assert_eq!(
        publ.publish1("b/x", false, "before").await.reason,
        m5::PubAckReason::Success
    );
    assert_eq!(
        next_topic(&mut dev).await,
        "b/x",
        "granted by the first token"
    );

    dev.send5(reauth(issuer.grants("dev-1", "j-2", &[], &["a/#"])))
        .await;
    reauthenticated(&mut dev).await;
    assert_eq!(
        publ.publish1("b/x", false, "after").await.reason,
        m5::PubAckReason::NoMatchingSubscribers,
        "the subscription to b/# went with the grant"
    );
    assert_eq!(
        publ.publish1("a/x", false, "after").await.reason,
        m5::PubAckReason::Success
    );
    assert_eq!(next_topic(&mut dev).await, "a/x", "a/# is still granted");
    b.stop().await;
}

/// A persistent CONNECT of `dev-1` with `token`.
fn persistent(token: Bytes) -> v5::Connect {
    let mut c = token_connect("dev-1", token);
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(600);
    c
}

/// `dev-1`'s persistent session, subscribed to `a/#` and `b/#` at QoS 1
/// under a token granting both, then left by a normal DISCONNECT.
async fn away_subscribed_to_a_and_b(b: &TestBroker, issuer: &Issuer) {
    let wide = issuer.grants("dev-1", "j-1", &[], &["a/#", "b/#"]);
    let (mut dev, _) = Raw::connect5(b, persistent(wide)).await;
    assert_eq!(subscribe1(&mut dev, 1, &["a/#", "b/#"]).await, [1, 1]);
    dev.send5(v5::Packet::Disconnect(v5::Disconnect::new(
        ReasonCode::Success.code(),
    )))
    .await;
    assert_eq!(dev.closed5().await, None);
}

/// A persistent session resumed with a token that no longer grants `b/#`
/// keeps only the subscriptions the new token allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_resumed_with_fewer_rights_keeps_only_the_allowed_subscriptions() {
    let issuer = Issuer::new();
    let b = issuer.broker().await;
    away_subscribed_to_a_and_b(&b, &issuer).await;

    let narrow = issuer.grants("dev-1", "j-2", &[], &["a/#"]);
    let (mut dev, ack) = Raw::connect5(&b, persistent(narrow)).await;
    assert_eq!(ack.reason, ReasonCode::Success.code());
    assert!(ack.session_present, "the session was resumed");
    let mut publ = publisher(&b, &issuer).await;
    assert_eq!(
        publ.publish1("b/x", false, "x").await.reason,
        m5::PubAckReason::NoMatchingSubscribers
    );
    assert_eq!(
        publ.publish1("a/x", false, "x").await.reason,
        m5::PubAckReason::Success
    );
    assert_eq!(next_topic(&mut dev).await, "a/x");
    b.stop().await;
}

/// The next PUBLISH on `r`.
async fn next_publish(r: &mut Raw) -> v5::Publish {
    match r.recv5().await {
        Some(v5::Packet::Publish(p)) => p,
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

/// A device's Receive Maximum is full (one message in flight), so
/// messages to `b/#` wait in its queue; it re-authenticates with a token
/// that no longer grants `b/#`: the waiting messages are dropped (and
/// counted), not delivered — the next it gets is one published to `a/`
/// after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_queued_before_a_reauthentication_with_fewer_rights_are_not_delivered() {
    let issuer = Issuer::new();
    let b = issuer.broker().await;
    let wide = issuer.grants("dev-1", "j-1", &[], &["a/#", "b/#"]);
    let mut c = token_connect("dev-1", wide);
    c.properties.receive_maximum = Some(1);
    let (mut dev, ack) = Raw::connect5(&b, c).await;
    assert_eq!(ack.reason, ReasonCode::Success.code());
    assert_eq!(subscribe1(&mut dev, 1, &["a/#", "b/#"]).await, [1, 1]);
    let mut publ = publisher(&b, &issuer).await;
    for topic in ["b/1", "b/2", "b/3"] {
        assert_eq!(
            publ.publish1(topic, false, "old").await.reason,
            m5::PubAckReason::Success
        );
    }
    let first = next_publish(&mut dev).await;
    assert_eq!(first.topic, "b/1", "in flight, not acknowledged");
    let dropped = b
        .metrics
        .dropped_count(plantd_edge::metrics::DropReason::NotAuthorized);

    dev.send5(reauth(issuer.grants("dev-1", "j-2", &[], &["a/#"])))
        .await;
    reauthenticated(&mut dev).await;
    assert_eq!(
        publ.publish1("a/1", false, "new").await.reason,
        m5::PubAckReason::Success
    );
    dev.send5(v5::Packet::PubAck(v5::Ack::new(first.pkid, 0)))
        .await;
    assert_eq!(
        next_publish(&mut dev).await.topic,
        "a/1",
        "b/2 and b/3 were queued under the old token"
    );
    assert_eq!(
        b.metrics
            .dropped_count(plantd_edge::metrics::DropReason::NotAuthorized),
        dropped + 2
    );
    b.stop().await;
}

/// Messages queued for a persistent session while it was away, on a
/// subscription its new token does not allow, are not delivered when it
/// resumes with that token; those it may still read are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_queued_offline_are_judged_by_the_resuming_token() {
    let issuer = Issuer::new();
    let b = issuer.broker().await;
    away_subscribed_to_a_and_b(&b, &issuer).await;
    let mut publ = publisher(&b, &issuer).await;
    for topic in ["b/1", "a/1", "b/2", "a/2"] {
        assert_eq!(
            publ.publish1(topic, false, "while away").await.reason,
            m5::PubAckReason::Success,
            "queued for the session"
        );
    }

    let narrow = issuer.grants("dev-1", "j-2", &[], &["a/#"]);
    let (mut dev, ack) = Raw::connect5(&b, persistent(narrow)).await;
    assert!(ack.session_present, "the session was resumed");
    let mut got = Vec::new();
    for _ in 0..2 {
        let p = next_publish(&mut dev).await;
        dev.send5(v5::Packet::PubAck(v5::Ack::new(p.pkid, 0))).await;
        got.push(p.topic);
    }
    assert_eq!(got, ["a/1", "a/2"], "b/1 and b/2 were for b/#");
    b.stop().await;
}

/// With a session store, a queued message dropped for the resuming token
/// is finished in the store as well: after a restart it does not come
/// back (the second resumption removes no subscription, so nothing would
/// stop it there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_dropped_for_the_resuming_token_does_not_come_back_after_a_restart() {
    let issuer = Issuer::new();
    let data = tempfile::tempdir().expect("tempdir");
    let b = issuer.broker_in(Some(data.path())).await;
    away_subscribed_to_a_and_b(&b, &issuer).await;
    let mut publ = publisher(&b, &issuer).await;
    for topic in ["b/1", "a/1"] {
        assert_eq!(
            publ.publish1(topic, false, "while away").await.reason,
            m5::PubAckReason::Success
        );
    }
    let narrow = issuer.grants("dev-1", "j-2", &[], &["a/#"]);
    let (mut dev, ack) = Raw::connect5(&b, persistent(narrow.clone())).await;
    assert!(ack.session_present);
    let p = next_publish(&mut dev).await;
    assert_eq!(p.topic, "a/1", "b/1 was for b/#");
    dev.send5(v5::Packet::PubAck(v5::Ack::new(p.pkid, 0))).await;
    dev.send5(v5::Packet::Disconnect(v5::Disconnect::new(
        ReasonCode::Success.code(),
    )))
    .await;
    assert_eq!(dev.closed5().await, None);
    drop(publ);
    b.stop().await;

    let b = issuer.broker_in(Some(data.path())).await;
    let (mut dev, ack) = Raw::connect5(&b, persistent(narrow)).await;
    assert!(ack.session_present, "the session came back from the store");
    let mut publ = publisher(&b, &issuer).await;
    assert_eq!(
        publ.publish1("a/2", false, "after the restart")
            .await
            .reason,
        m5::PubAckReason::Success
    );
    assert_eq!(
        next_publish(&mut dev).await.topic,
        "a/2",
        "nothing left from before the restart"
    );
    b.stop().await;
}

/// A will whose topic the re-authenticating token no longer grants is not
/// published when the connection drops; the next message an observer of
/// the will topic gets is one published after the session came back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_will_the_new_token_does_not_allow_is_not_published() {
    let issuer = Issuer::new();
    let b = issuer.broker().await;
    let observer_token = issuer.grants("obs", "j-obs", &[], &["status/#"]);
    let observer_token = String::from_utf8(observer_token.to_vec()).expect("token is text");
    let (mut observer, _) = v5(&b, "obs", token_creds5(&observer_token)).await;
    observer
        .sub("status/#", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await;

    let mut c = token_connect("dev-1", issuer.token("dev-1", "j-1", &["status/#"]));
    c.will = Some(v5::LastWill {
        topic: "status/dev-1".into(),
        payload: Bytes::from_static(b"gone"),
        qos: Q::AtLeastOnce,
        retain: false,
        properties: v5::Properties::default(),
    });
    let (mut dev, ack) = Raw::connect5(&b, c).await;
    assert_eq!(ack.reason, ReasonCode::Success.code());
    dev.send5(reauth(issuer.token("dev-1", "j-2", &["data/#"])))
        .await;
    reauthenticated(&mut dev).await;
    // Dropped without DISCONNECT: a will the token allowed would go out.
    drop(dev);

    // The same client id again: the router hands the session over only
    // after the old connection's goodbye (and its will) was processed.
    let back = issuer.token("dev-1", "j-3", &["status/#"]);
    let (mut dev, ack) = Raw::connect5(&b, token_connect("dev-1", back)).await;
    assert_eq!(ack.reason, ReasonCode::Success.code());
    assert_eq!(
        publish1(&mut dev, "status/marker", 1).await,
        ReasonCode::Success.code()
    );
    let first = observer.publish().await;
    assert_eq!(
        &first.topic[..],
        b"status/marker",
        "the will was published: {:?}",
        first.payload
    );
    b.stop().await;
}

/// A re-authentication token of the same subject but another kind of
/// principal (a user named like the device) or another organisation is
/// refused with DISCONNECT 0x87.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reauthentication_as_another_kind_or_organisation_is_refused() {
    use plantd_shared::claims::{Claims, PrincipalKind};
    let issuer = Issuer::new();
    let b = issuer.broker().await;
    let cases = [
        Claims {
            kind: PrincipalKind::User,
            jti: "j-user".into(),
            ..device_claims("dev-1", SITE, &["a/#"], &[])
        },
        Claims {
            org: "globex".into(),
            jti: "j-globex".into(),
            ..device_claims("dev-1", SITE, &["a/#"], &[])
        },
    ];
    for (i, claims) in cases.into_iter().enumerate() {
        let first = issuer.token("dev-1", &format!("j-first-{i}"), &["a/#"]);
        let (mut r, ack) = Raw::connect5(&b, token_connect("dev-1", first)).await;
        assert_eq!(ack.reason, ReasonCode::Success.code());
        r.send5(reauth(issuer.sign(claims))).await;
        assert_eq!(
            r.closed5().await,
            Some(ReasonCode::NotAuthorized.code()),
            "case {i}"
        );
    }
    b.stop().await;
}
