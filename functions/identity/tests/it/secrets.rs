//! The function's secrets read from Secrets Manager — the real AWS SDK
//! against the `moto` AWS API emulator: the signing key stored there signs
//! tokens that verify against the JWKS built from it, and a missing or
//! malformed secret is a clear error that never shows the secret.

use aws_config::Region;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::Credentials;
use plantd_identity::Keys;
use plantd_identity::secrets::{self, SecretsError};
use plantd_shared::claims::{API_AUDIENCE, Audience, Claims, PrincipalKind};
use plantd_shared::jwt::{self, SigningKey, VerifyOptions};
use plantd_testkit::Moto;
use serde_json::json;

/// A Secrets Manager client for the emulator (moto accepts any keys).
async fn client(moto: &Moto) -> Client {
    let config = plantd_shared::aws::config_loader()
        .endpoint_url(moto.endpoint())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
        .load()
        .await;
    Client::new(&config)
}

fn claims(sub: &str) -> Claims {
    let now = jwt::now_secs();
    Claims {
        iss: "plantd-identity".into(),
        sub: sub.into(),
        aud: Audience::One(API_AUDIENCE.into()),
        exp: now + 300,
        iat: now,
        nbf: None,
        jti: "t-1".into(),
        org: "plantd".into(),
        kind: PrincipalKind::User,
        roles: vec!["viewer".into()],
        perms: Vec::new(),
        mqtt: Default::default(),
    }
}

#[tokio::test]
async fn signing_key_from_secrets_manager_signs_tokens_that_verify_against_its_jwks() {
    let moto = Moto::start().await;
    let sm = client(&moto).await;
    let pem = SigningKey::generate_ed25519("any")
        .expect("a fresh key")
        .private_pem()
        .to_owned();
    let document = json!({
        "signing_key_pem": pem,
        "nats_url": "nats://nats.internal:4222",
    });
    let created = sm
        .create_secret()
        .name("plantd/identity")
        .secret_string(document.to_string())
        .send()
        .await
        .expect("moto creates the secret");
    let arn = created.arn().expect("an ARN");

    // By name and by ARN, as the template passes it.
    for id in ["plantd/identity", arn] {
        let loaded = secrets::fetch(&sm, id).await.expect("the secret loads");
        assert_eq!(loaded.nats_url, "nats://nats.internal:4222");
        assert!(loaded.nats_creds.is_none());
        assert!(
            !format!("{loaded:?}").contains("PRIVATE KEY"),
            "Debug must not print the key"
        );
        loaded.nats_options(id).expect("no credentials is fine");

        let key = loaded.signing_key(id).expect("the PEM is a signing key");
        assert_eq!(
            key.kid(),
            Keys::from_pem(&pem).expect("same key").kid(),
            "the kid is derived from the key, so every instance agrees"
        );
        let keys = Keys::new(key, Vec::new()).expect("a JWKS");
        let token = keys.signing().sign(&claims("u-1")).expect("signs");
        let verified = jwt::verify(
            &token,
            keys.jwks(),
            &VerifyOptions::for_audience(API_AUDIENCE),
        )
        .expect("verifies against the published JWKS");
        assert_eq!(verified.sub, "u-1");

        // A key that is not in the JWKS does not verify.
        let other = SigningKey::generate_ed25519(keys.signing().kid()).expect("another key");
        let forged = other.sign(&claims("u-1")).expect("signs");
        assert!(
            jwt::verify(
                &forged,
                keys.jwks(),
                &VerifyOptions::for_audience(API_AUDIENCE)
            )
            .is_err()
        );
    }
}

#[tokio::test]
async fn missing_or_malformed_secret_is_a_clear_error() {
    let moto = Moto::start().await;
    let sm = client(&moto).await;

    let err = secrets::fetch(&sm, "plantd/nope")
        .await
        .expect_err("no such secret");
    assert!(matches!(err, SecretsError::NotFound { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("plantd/nope"), "names the secret: {msg}");
    assert!(
        msg.contains(secrets::SECRET_ID_ENV),
        "names the variable: {msg}"
    );

    // A document without the NATS URL.
    sm.create_secret()
        .name("plantd/partial")
        .secret_string(
            json!({"signing_key_pem": "-----BEGIN PRIVATE KEY-----\nsecret"}).to_string(),
        )
        .send()
        .await
        .expect("created");
    let err = secrets::fetch(&sm, "plantd/partial")
        .await
        .expect_err("nats_url is missing");
    let msg = err.to_string();
    assert!(matches!(err, SecretsError::Malformed { .. }), "{err:?}");
    assert!(msg.contains("nats_url"), "names the field: {msg}");
    assert!(
        !msg.contains("PRIVATE KEY"),
        "never echoes the secret: {msg}"
    );

    // A key that is not a key.
    sm.create_secret()
        .name("plantd/badkey")
        .secret_string(
            json!({"signing_key_pem": "not a key", "nats_url": "nats://x:4222"}).to_string(),
        )
        .send()
        .await
        .expect("created");
    let loaded = secrets::fetch(&sm, "plantd/badkey").await.expect("parses");
    let err = loaded.signing_key("plantd/badkey").expect_err("not a key");
    assert!(
        matches!(
            err,
            SecretsError::BadField {
                field: "signing_key_pem",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        !err.to_string().contains("not a key"),
        "never echoes the secret"
    );

    // Secrets Manager unreachable (the emulator killed): a different,
    // explicit error.
    drop(moto);
    let err = secrets::fetch(&sm, "plantd/identity")
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, SecretsError::Unavailable { .. }), "{err:?}");
    assert!(err.to_string().contains("plantd/identity"), "{err}");
}
