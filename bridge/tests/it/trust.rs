//! The edge's trust store: keys from a URL or a file, kept on disk so an
//! offline site still authenticates; revocations mirrored from JetStream,
//! effective at once and remembered across a restart.

use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use plantd_bridge::trust::{Refusal, Trust, http_client};
use plantd_shared::claims::{Audience, Claims, PrincipalKind, site_audience};
use plantd_shared::jwt::{SigningKey, TokenError, jwks_of, now_secs};
use plantd_shared::streams::{self, Settings};
use plantd_shared::subject::Site;
use plantd_testkit::Nats;

fn site() -> Site {
    Site::new("plant-1").expect("site")
}

fn claims(aud: String, jti: &str) -> Claims {
    let now = now_secs();
    Claims {
        iss: "test".into(),
        sub: "dev-1".into(),
        aud: Audience::One(aud),
        exp: now + 600,
        iat: now,
        nbf: None,
        jti: jti.into(),
        org: "acme".into(),
        kind: PrincipalKind::Device,
        roles: vec![],
        perms: vec![],
        mqtt: Default::default(),
    }
}

/// Serves `body` at `/.well-known/jwks.json` on a free port.
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

#[tokio::test]
async fn keys_from_a_url_are_cached_for_when_the_uplink_is_down() {
    let dir = tempfile::tempdir().expect("tmp");
    let key = SigningKey::generate_ed25519("k1").expect("key");
    let jwks = serde_json::to_string(&jwks_of([&key]).expect("jwks")).expect("json");
    let (url, server) = serve_jwks(jwks).await;
    let token = key
        .sign(&claims(site_audience(&site()), "t1"))
        .expect("sign");

    let trust = Trust::new(site(), dir.path());
    assert_eq!(
        trust.verify(&token),
        Err(Refusal::NoKeys),
        "nothing known yet"
    );
    trust
        .fetch(&http_client().expect("client"), &url)
        .await
        .expect("fetch");
    assert!(trust.verify(&token).is_ok());

    // The identity service becomes unreachable and the edge restarts.
    server.abort();
    let _ = server.await;
    let offline = Trust::new(site(), dir.path());
    assert!(
        offline
            .fetch(&http_client().expect("client"), &url)
            .await
            .is_err()
    );
    assert!(
        offline.verify(&token).is_ok(),
        "cached keys keep devices authenticating"
    );
}

#[tokio::test]
async fn tokens_for_another_site_or_with_bad_signatures_are_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let key = SigningKey::generate_ed25519("k1").expect("key");
    let file = dir.path().join("jwks-file.json");
    std::fs::write(
        &file,
        serde_json::to_vec(&jwks_of([&key]).expect("jwks")).expect("json"),
    )
    .expect("write");
    let trust = Trust::new(site(), dir.path().join("cache"));
    trust.load_file(&file).expect("jwks file");
    let other_site = key
        .sign(&claims(
            site_audience(&Site::new("plant-2").expect("s")),
            "t",
        ))
        .expect("sign");
    assert!(matches!(
        trust.verify(&other_site),
        Err(Refusal::Token(TokenError::WrongAudience(_)))
    ));
    let forged = SigningKey::generate_ed25519("k1")
        .expect("key")
        .sign(&claims(site_audience(&site()), "t"))
        .expect("sign");
    assert_eq!(
        trust.verify(&forged),
        Err(Refusal::Token(TokenError::BadSignature))
    );
    assert!(trust.load_file(&dir.path().join("missing.json")).is_err());
}

#[tokio::test]
async fn revocations_take_effect_at_once_and_survive_a_restart() {
    let nats = Nats::start().await;
    let js = nats.jetstream().await;
    streams::ensure(&js, &Settings::default())
        .await
        .expect("buckets");
    let dir = tempfile::tempdir().expect("tmp");
    let key = SigningKey::generate_ed25519("k1").expect("key");
    let token = key
        .sign(&claims(site_audience(&site()), "jti-42"))
        .expect("sign");
    let trust = Trust::new(site(), dir.path());
    trust.set_jwks(jwks_of([&key]).expect("jwks"));
    assert!(trust.verify(&token).is_ok());

    let mut revocations = trust.revocations();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mirror = tokio::spawn(trust.clone().mirror_revocations(js.clone(), async move {
        let _ = stop_rx.await;
    }));
    let bucket: kv::Store = js
        .get_key_value(streams::REVOKED_BUCKET)
        .await
        .expect("bucket");
    bucket
        .put("jti-42", Bytes::from((now_secs() + 600).to_string()))
        .await
        .expect("revoke");
    let revoked = tokio::time::timeout(Duration::from_secs(5), revocations.recv())
        .await
        .expect("revocation arrives within seconds")
        .expect("broadcast");
    assert_eq!(revoked, "jti-42");
    assert_eq!(trust.verify(&token), Err(Refusal::Revoked));
    let _ = stop.send(());
    mirror.await.expect("mirror");

    // Restarted while NATS is down: the revocation is remembered.
    drop(nats);
    let again = Trust::new(site(), dir.path());
    assert_eq!(again.verify(&token), Err(Refusal::Revoked));
}
