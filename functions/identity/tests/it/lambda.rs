//! The Lambda path, proven rather than assumed: the real `plantd-identity`
//! binary, as built by this test run, runs against the Lambda runtime API
//! emulator of `cargo lambda watch --only-lambda-apis` (no nested cargo
//! build), reads its signing key and NATS URL from Secrets Manager (the
//! `moto` emulator, through `AWS_ENDPOINT_URL`) at cold start, and serves
//! JWKS, login and whoami through the emulator's function URL
//! `/lambda-url/<function>/…` as API Gateway HTTP API v2 events — over a
//! real nats-server.

use std::time::Duration;

use aws_config::Region;
use aws_sdk_secretsmanager::config::Credentials;
use plantd_identity::Keys;
use plantd_identity::secrets;
use plantd_shared::claims::API_AUDIENCE;
use plantd_shared::jwt::{self, JwkSet, SigningKey, VerifyOptions};
use plantd_shared::process::ManagedProcess;
use plantd_testkit::{LambdaWatch, Moto, Nats};
use serde_json::{Value, json};

/// The function name the binary registers under in the emulator.
const FUNCTION: &str = "plantd-identity";
const SECRET: &str = "plantd/identity";
const ADMIN: &str = "root@plantd.example";
const ADMIN_PW: &str = "a long bootstrap password";

/// Invokes the function through its function URL and returns status and
/// JSON body (a body that is not JSON as a JSON string).
async fn call(
    emulator: &LambdaWatch,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let resp = emulator
        .call(
            FUNCTION,
            method,
            path,
            token,
            "application/json",
            body.as_bytes(),
        )
        .await;
    let value = serde_json::from_slice(&resp.body).unwrap_or_else(|_| Value::String(resp.text()));
    (resp.status, value)
}

#[tokio::test]
async fn identity_serves_jwks_and_login_under_the_lambda_runtime() {
    plantd_testkit::init_tracing();
    // The backbone, with its buckets.
    let nats = Nats::start_with_streams().await;

    // The function's secret, as the template's secret holds it.
    let moto = Moto::start().await;
    let sm = aws_sdk_secretsmanager::Client::new(
        &plantd_shared::aws::config_loader()
            .endpoint_url(moto.endpoint())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
            .load()
            .await,
    );
    let pem = SigningKey::generate_ed25519("any")
        .expect("a key")
        .private_pem()
        .to_owned();
    let kid = Keys::from_pem(&pem).expect("a key").kid().to_owned();
    sm.create_secret()
        .name(SECRET)
        .secret_string(json!({"signing_key_pem": pem, "nats_url": nats.url()}).to_string())
        .send()
        .await
        .expect("moto creates the secret");

    let emulator = LambdaWatch::start(env!("CARGO_MANIFEST_DIR")).await;

    // The binary this test run built — or, to check a package by hand, the
    // `bootstrap` unzipped from it (`PLANTD_IDENTITY_BOOTSTRAP`, see
    // docs/deploy.md) — with the environment Lambda gives a function plus
    // the function's own configuration, nothing else.
    let bin = std::env::var_os("PLANTD_IDENTITY_BOOTSTRAP")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_plantd-identity").into());
    let mut cmd = emulator.function_command(bin, FUNCTION, &moto.endpoint());
    cmd.env(secrets::SECRET_ID_ENV, SECRET)
        .env("PLANTD_BOOTSTRAP_ADMIN_EMAIL", ADMIN)
        .env("PLANTD_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PW);
    let _function = ManagedProcess::spawn(
        "plantd-identity (Lambda)",
        cmd,
        Duration::from_secs(60),
        |line| line.contains("identity serving through the Lambda runtime API"),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // The JWKS publishes exactly the key from Secrets Manager.
    let (status, jwks) = call(&emulator, "GET", "/.well-known/jwks.json", None, None).await;
    assert_eq!(status, 200, "{jwks}");
    let jwks: JwkSet = serde_json::from_value(jwks).expect("a JWKS document");
    let kids: Vec<_> = jwks
        .keys
        .iter()
        .filter_map(|k| k.common.key_id.clone())
        .collect();
    assert_eq!(kids, vec![kid]);

    // Login with the bootstrap admin: a token signed by that key.
    let (status, v) = call(
        &emulator,
        "POST",
        "/v1/auth/login",
        None,
        Some(json!({"email": ADMIN, "password": ADMIN_PW})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let access = v["access_token"].as_str().expect("access_token");
    let claims = jwt::verify(access, &jwks, &VerifyOptions::for_audience(API_AUDIENCE))
        .expect("the token verifies against the JWKS served by the function");
    assert!(
        claims.roles.contains(&"superadmin".to_owned()),
        "{claims:?}"
    );

    // Headers pass through the event: the bearer token is seen.
    let (status, who) = call(&emulator, "GET", "/v1/auth/whoami", Some(access), None).await;
    assert_eq!(status, 200, "{who}");
    assert_eq!(who["sub"], claims.sub);

    // Errors keep their status and JSON body through the runtime.
    let (status, v) = call(
        &emulator,
        "POST",
        "/v1/auth/login",
        None,
        Some(json!({"email": ADMIN, "password": "wrong password, long enough"})),
    )
    .await;
    assert_eq!(status, 401, "{v}");
    assert!(v["error"].is_string(), "{v}");
    let (status, _) = call(&emulator, "GET", "/v1/auth/whoami", None, None).await;
    assert_eq!(status, 401);

    // The function records both logins in the audit trail, on NATS, as the
    // local server does — with API Gateway's view of the client address.
    let (status, v) = call(
        &emulator,
        "GET",
        "/v1/audit?action=auth.login",
        Some(access),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let logins = v["records"].as_array().expect("records");
    let outcomes: Vec<_> = logins.iter().map(|r| r["outcome"].clone()).collect();
    assert_eq!(outcomes, [json!("success"), json!("failure")], "{v}");
    assert!(logins[0]["source"].is_string(), "{v}");
    let chain = plantd_shared::audit::verify(&nats.jetstream().await, "plantd")
        .await
        .expect("verify");
    assert!(chain.ok() && chain.records >= 2, "{chain:?}");
}
