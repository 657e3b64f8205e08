//! The proxy follows identity's key rotations without a restart: with a
//! JWKS URL as its key source, a token signed by a key it has not seen
//! makes it fetch the JWKS at once (one fetch, shared and rate-limited —
//! forged key ids cannot make it hammer identity), and the periodic
//! refresh picks up new keys too.

use crate::common;

use std::time::Duration;

use common::{ORG, fixture};
use plantd_proxy::auth::KeySource;
use plantd_shared::claims::{API_AUDIENCE, Audience, Claims, PrincipalKind};
use plantd_shared::jwt::{SigningKey, now_secs};
use plantd_testkit::jwks;

/// An HTTP client (rustls with ring, as the proxy binary installs it).
fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

fn token(key: &SigningKey, jti: &str) -> String {
    let now = now_secs();
    key.sign(&Claims {
        iss: "plantd-identity".into(),
        sub: "user-1".into(),
        aud: Audience::One(API_AUDIENCE.into()),
        exp: now + 600,
        iat: now,
        nbf: None,
        jti: jti.into(),
        org: ORG.into(),
        kind: PrincipalKind::User,
        roles: vec![],
        perms: vec![],
        mqtt: Default::default(),
    })
    .expect("sign")
}

#[tokio::test]
async fn a_token_of_a_new_key_is_accepted_after_one_fetch() {
    let f = fixture().await;
    let new = SigningKey::generate_ed25519("rotated-to").expect("key");
    let server = jwks::Server::start(&[&f.key, &new]).await;
    let t = token(&new, "j-new");
    assert!(
        f.state.trust.verify(&t).await.is_err(),
        "without a key source the new key is unknown"
    );
    f.state.trust.set_key_source(KeySource::Url {
        client: http(),
        url: server.url().to_owned(),
    });
    let claims = f
        .state
        .trust
        .verify(&t)
        .await
        .expect("fetched and accepted");
    assert_eq!(claims.jti, "j-new");
    assert_eq!(server.hits(), 1);
    // The old key still works, and known keys cause no fetch.
    f.state
        .trust
        .verify(&token(&f.key, "j-old"))
        .await
        .expect("old key");
    f.state.trust.verify(&t).await.expect("again");
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn forged_key_ids_cost_identity_at_most_one_fetch_per_interval() {
    let f = fixture().await;
    let server = jwks::Server::start(&[&f.key]).await;
    f.state.trust.set_key_source(KeySource::Url {
        client: http(),
        url: server.url().to_owned(),
    });
    let forged: Vec<String> = (0..20)
        .map(|i| {
            let k = SigningKey::generate_ed25519(format!("forged-{i}")).expect("key");
            token(&k, &format!("j-{i}"))
        })
        .collect();
    let checks = forged.iter().map(|t| f.state.trust.verify(t));
    for r in futures::future::join_all(checks).await {
        assert!(r.is_err(), "a forged key is refused");
    }
    assert_eq!(server.hits(), 1, "twenty unknown key ids, one fetch");
}

#[tokio::test]
async fn the_periodic_refresh_picks_up_new_keys() {
    let f = fixture().await;
    let server = jwks::Server::start(&[&f.key]).await;
    f.state.trust.set_key_source(KeySource::Url {
        client: http(),
        url: server.url().to_owned(),
    });
    let new = SigningKey::generate_ed25519("next").expect("key");
    server.set(&[&new, &f.key]);
    let refresher = tokio::spawn(f.state.trust.clone().refresh_every(Duration::from_secs(1)));
    // Wait for the refresh itself (the event: a request reaching the JWKS
    // endpoint), then for the new keys to be in place.
    plantd_testkit::eventually(Duration::from_secs(10), "the refreshed keys", || async {
        f.state
            .trust
            .jwks()
            .keys
            .iter()
            .any(|k| k.common.key_id.as_deref() == Some("next"))
            .then_some(())
    })
    .await;
    refresher.abort();
    assert!(server.hits() >= 1);
}
