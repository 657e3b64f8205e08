//! Signing-key rotation: `POST /v1/keys/rotate` (superadmin only) makes
//! the pre-published next key sign, publishes a new next key and keeps the
//! old one in the JWKS until its tokens expire; the ring is saved where
//! the key lives — the ring file beside the key file, or the Secrets
//! Manager secret (moto) — so a restart keeps every key.

use crate::common;

use std::time::Duration;

use aws_config::Region;
use aws_sdk_secretsmanager::config::Credentials;
use axum::http::StatusCode;
use common::{ADMIN, ADMIN_PW, call, login, org_with_admin, token};
use plantd_identity::keys::{Ring, SavedKey, ring_path};
use plantd_identity::{AppState, Keys, Settings, app, bootstrap, secrets};
use plantd_shared::jwt::{self, JwkSet, SigningKey, VerifyOptions, now_secs};
use plantd_shared::streams::{self, Settings as StreamSettings};
use plantd_testkit::{Moto, Nats};
use serde_json::{Value, json};

async fn state_with(nats: &Nats, keys: Keys) -> AppState {
    let js = nats.jetstream().await;
    streams::ensure(&js, &StreamSettings::default())
        .await
        .expect("buckets");
    let state = AppState::new(&js, keys, Settings::default())
        .await
        .expect("state");
    bootstrap::ensure_admin(&state, ADMIN, ADMIN_PW)
        .await
        .expect("bootstrap");
    state
}

fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_owned())
        .collect()
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

#[tokio::test]
async fn rotation_publishes_ahead_keeps_the_old_key_and_survives_a_restart() {
    let nats = Nats::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let pem = dir.path().join("identity").join("signing-key.pem");
    let state = state_with(&nats, Keys::open_file(&pem).expect("keys")).await;
    let app = app(state.clone());

    let (_, jwks) = call(&app, "GET", "/.well-known/jwks.json", None, None).await;
    let before = kids(&jwks);
    assert_eq!(before.len(), 2, "signing and next are published: {jwks}");
    let (s, v) = login(&app, ADMIN, ADMIN_PW).await;
    assert_eq!(s, StatusCode::OK);
    let old = token(&v);
    assert_eq!(kid_of(&old), before[0]);

    let (s, keys) = call(&app, "GET", "/v1/keys", Some(&old), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(keys[0]["role"], "signing");
    assert_eq!(keys[1]["role"], "next");
    assert!(!keys.to_string().contains("PRIVATE"), "no key material");

    let (s, r) = call(&app, "POST", "/v1/keys/rotate", Some(&old), None).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(
        r["signing_kid"],
        before[1].as_str(),
        "the published next key signs"
    );
    assert_eq!(r["retired_kid"], before[0].as_str());
    let retire_at = r["retire_at"].as_u64().expect("retire_at");
    assert!(retire_at >= now_secs() + Settings::default().access_ttl.as_secs());

    let (_, jwks) = call(&app, "GET", "/.well-known/jwks.json", None, None).await;
    let after = kids(&jwks);
    assert_eq!(after.len(), 3, "signing, next, previous: {jwks}");
    assert!(after.contains(&before[0]) && after.contains(&before[1]));
    let jwks: JwkSet = serde_json::from_value(jwks).expect("JWKS");
    // The old token still works everywhere until it expires...
    jwt::verify(&old, &jwks, &VerifyOptions::for_audience("plantd:api")).expect("old verifies");
    assert_eq!(
        call(&app, "GET", "/v1/auth/whoami", Some(&old), None)
            .await
            .0,
        StatusCode::OK
    );
    // ...and new tokens are signed by the new key.
    let (_, v) = login(&app, ADMIN, ADMIN_PW).await;
    let new = token(&v);
    assert_eq!(kid_of(&new), before[1]);
    jwt::verify(&new, &jwks, &VerifyOptions::for_audience("plantd:api")).expect("new verifies");

    // A restart reads the ring: same keys, same roles.
    let described = state.keys.describe();
    let reopened = Keys::open_file(&pem).expect("reopen");
    assert_eq!(
        serde_json::to_value(reopened.describe()).expect("json"),
        serde_json::to_value(described).expect("json")
    );
    assert_eq!(
        Keys::from_pem(&std::fs::read_to_string(&pem).expect("key file"))
            .expect("pem")
            .kid(),
        before[1],
        "the key file holds the key that signs"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(ring_path(&pem))
            .expect("ring")
            .permissions(),
    );
    assert_eq!(mode & 0o077, 0, "the ring file is private");
}

#[tokio::test]
async fn only_the_superadmin_rotates_and_fixed_keys_are_refused() {
    let nats = Nats::start().await;
    let key = SigningKey::generate_ed25519("k1").expect("key");
    let state = state_with(&nats, Keys::new(key, Vec::new()).expect("keys")).await;
    let app = app(state);
    let (_, v) = login(&app, ADMIN, ADMIN_PW).await;
    let root = token(&v);
    let _running = nats;
    let (s, v) = call(&app, "POST", "/v1/keys/rotate", Some(&root), None).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["message"]
            .as_str()
            .expect("message")
            .contains("PLANTD_IDENTITY_SIGNING_KEY")
    );
}

#[tokio::test]
async fn org_admins_may_not_see_or_rotate_keys() {
    let f = common::fixture().await;
    let (_, v) = login(&f.app, ADMIN, ADMIN_PW).await;
    let acme = org_with_admin(&f, &token(&v), "acme").await;
    assert_eq!(
        call(&f.app, "POST", "/v1/keys/rotate", Some(&acme), None)
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&f.app, "GET", "/v1/keys", Some(&acme), None).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&f.app, "POST", "/v1/keys/rotate", None, None).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_retired_key_leaves_the_jwks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pem = dir.path().join("signing-key.pem");
    let new_pem = || {
        SigningKey::generate_ed25519("x")
            .expect("key")
            .private_pem()
            .to_owned()
    };
    let ring = Ring {
        signing_key_pem: new_pem(),
        next_key_pem: Some(new_pem()),
        previous_keys: vec![
            SavedKey {
                pem: new_pem(),
                retire_at: now_secs() - 1,
            },
            SavedKey {
                pem: new_pem(),
                retire_at: now_secs() + 600,
            },
        ],
    };
    std::fs::write(ring_path(&pem), serde_json::to_string(&ring).expect("json")).expect("ring");
    let keys = Keys::open_file(&pem).expect("keys");
    assert_eq!(
        keys.jwks().keys.len(),
        3,
        "the expired previous key is gone"
    );
    assert_eq!(keys.len(), 3);
}

#[tokio::test]
async fn rotation_is_saved_into_the_secret_and_other_instances_adopt_it() {
    let moto = Moto::start().await;
    let config = plantd_shared::aws::config_loader()
        .endpoint_url(moto.endpoint())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
        .load()
        .await;
    let sm = aws_sdk_secretsmanager::Client::new(&config);
    let pem = SigningKey::generate_ed25519("any")
        .expect("key")
        .private_pem()
        .to_owned();
    sm.create_secret()
        .name("plantd/identity")
        .secret_string(
            json!({"signing_key_pem": pem, "nats_url": "nats://nats.internal:4222"}).to_string(),
        )
        .send()
        .await
        .expect("secret");
    let loaded = secrets::fetch(&sm, "plantd/identity").await.expect("load");
    let a = Keys::from_secret(&loaded.ring(), sm.clone(), "plantd/identity".into()).expect("a");
    let b = Keys::from_secret(&loaded.ring(), sm.clone(), "plantd/identity".into()).expect("b");
    let first = a.signing().kid().to_owned();
    assert_eq!(a.len(), 1, "no next key until the first rotation");

    let r = a.rotate(Duration::from_secs(900)).await.expect("rotate");
    assert_eq!(r.retired_kid, first);
    let saved = secrets::fetch(&sm, "plantd/identity")
        .await
        .expect("reload");
    assert_eq!(
        saved.nats_url, "nats://nats.internal:4222",
        "other fields kept"
    );
    assert_eq!(
        Keys::from_pem(&saved.signing_key_pem).expect("pem").kid(),
        r.signing_kid
    );
    assert_eq!(saved.previous_keys.len(), 1);
    assert!(saved.next_key_pem.is_some());

    // Instance b rotates next: it first adopts a's ring, so a's retired
    // key is kept and a's next key is the one that signs.
    let r2 = b
        .rotate(Duration::from_secs(900))
        .await
        .expect("rotate on b");
    assert_eq!(r2.retired_kid, r.signing_kid);
    assert_eq!(r2.signing_kid, r.next_kid);
    let kids: Vec<String> = b.describe().into_iter().map(|k| k.kid).collect();
    assert!(
        kids.contains(&first),
        "the first key is still published: {kids:?}"
    );
}
