//! The Lambda path, proven rather than assumed: the real `plantd-identity`
//! binary, as built by this test run, runs against the Lambda runtime API
//! emulator of `cargo lambda watch --only-lambda-apis` (no nested cargo
//! build), reads its signing key and NATS URL from Secrets Manager (the
//! `moto` emulator, through `AWS_ENDPOINT_URL`) at cold start, and serves
//! JWKS, login and whoami through the emulator's function URL
//! `/lambda-url/<function>/…` as API Gateway HTTP API v2 events — over a
//! real nats-server.

use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_secretsmanager::config::Credentials;
use plantd_identity::Keys;
use plantd_identity::secrets;
use plantd_shared::claims::API_AUDIENCE;
use plantd_shared::jwt::{self, JwkSet, SigningKey, VerifyOptions};
use plantd_shared::process::ManagedProcess;
use plantd_shared::streams::{self, Settings as StreamSettings};
use plantd_testkit::{Moto, Nats, http, tool};
use serde_json::{Value, json};
use tokio::process::Command;

/// The function name the binary registers under in the emulator.
const FUNCTION: &str = "plantd-identity";
const SECRET: &str = "plantd/identity";
const ADMIN: &str = "root@plantd.example";
const ADMIN_PW: &str = "a long bootstrap password";

/// `cargo lambda watch --only-lambda-apis` on a loopback port.
struct Emulator {
    /// The emulator; killed on drop.
    process: ManagedProcess,
    /// Where it serves both the runtime API (`/.rt`) and invocations.
    port: u16,
}

/// A port that was free a moment ago. `cargo lambda` cannot bind port 0
/// (it takes 0 as "unset" and uses 9000), so the test chooses; a port lost
/// to another process in between is detected by [`Emulator::answers`] and
/// another one tried.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Emulator {
    async fn start() -> Self {
        let bin = tool("cargo-lambda");
        let mut failures = Vec::new();
        for _ in 0..5 {
            let port = free_port();
            let mut cmd = Command::new(&bin);
            cmd.args([
                "lambda",
                "watch",
                "--only-lambda-apis",
                "--ignore-changes",
                "--invoke-address",
                "127.0.0.1",
                "--invoke-port",
                &port.to_string(),
            ])
            // It reads the workspace metadata; run it from this crate.
            .current_dir(env!("CARGO_MANIFEST_DIR"));
            let process =
                ManagedProcess::spawn("cargo lambda watch", cmd, Duration::from_secs(60), |line| {
                    line.contains("starting Runtime server")
                })
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let this = Self { process, port };
            match this.answers().await {
                Ok(()) => return this,
                Err(why) => failures.push(why),
            }
        }
        panic!("cargo lambda watch never served: {failures:#?}");
    }

    /// Waits until the port answers as a Lambda runtime API: the route
    /// `/2018-06-01/runtime/init/error` exists and only accepts POST. If
    /// the emulator gives up (it logs "terminating" and exits when the port
    /// is taken) or something else answers, this port is abandoned.
    async fn answers(&self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if self
                .process
                .tail()
                .iter()
                .any(|l| l.contains("terminating"))
            {
                return Err(format!(
                    "port {} lost: {:?}",
                    self.port,
                    self.process.tail()
                ));
            }
            match http::get(self.port, "/.rt/2018-06-01/runtime/init/error").await {
                Ok(r) if r.status == 405 && r.header("allow") == Some("POST") => return Ok(()),
                Ok(r) => return Err(format!("port {} is someone else's: {r:?}", self.port)),
                Err(e) if tokio::time::Instant::now() > deadline => {
                    return Err(format!("port {} never answered: {e}", self.port));
                }
                // Not listening yet: the bind follows the log line within
                // milliseconds; poll the port, briefly.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    /// `AWS_LAMBDA_RUNTIME_API` for a function named [`FUNCTION`].
    fn runtime_api(&self) -> String {
        format!("http://127.0.0.1:{}/.rt/{FUNCTION}", self.port)
    }

    /// Invokes the function through its function URL and returns status and
    /// JSON body.
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("authorization", a));
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let url = format!("/lambda-url/{FUNCTION}{path}");
        let resp = http::request(self.port, method, &url, &headers, body.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let value =
            serde_json::from_slice(&resp.body).unwrap_or_else(|_| Value::String(resp.text()));
        (resp.status, value)
    }
}

#[tokio::test]
async fn identity_serves_jwks_and_login_under_the_lambda_runtime() {
    plantd_testkit::init_tracing();
    // The backbone, with its buckets (as `plantd up` or the operator makes them).
    let nats = Nats::start().await;
    streams::ensure(&nats.jetstream().await, &StreamSettings::default())
        .await
        .expect("streams and buckets");

    // The function's secret, as the template's secret holds it.
    let moto = Moto::start().await;
    let sm = aws_sdk_secretsmanager::Client::new(
        &aws_config::defaults(BehaviorVersion::latest())
            .http_client(secrets::http_client())
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

    let emulator = Emulator::start().await;

    // The binary this test run built — or, to check a package by hand, the
    // `bootstrap` unzipped from it (`PLANTD_IDENTITY_BOOTSTRAP`, see
    // docs/deploy.md) — with the environment Lambda gives a function plus
    // the function's own configuration, nothing else.
    let bin = std::env::var_os("PLANTD_IDENTITY_BOOTSTRAP")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_plantd-identity").into());
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", emulator.runtime_api())
        .env("AWS_LAMBDA_FUNCTION_NAME", FUNCTION)
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL", moto.endpoint())
        .env(secrets::SECRET_ID_ENV, SECRET)
        .env("PLANTD_BOOTSTRAP_ADMIN_EMAIL", ADMIN)
        .env("PLANTD_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PW)
        .env("PLANTD_LOG", "info");
    let _function = ManagedProcess::spawn(
        "plantd-identity (Lambda)",
        cmd,
        Duration::from_secs(60),
        |line| line.contains("identity serving through the Lambda runtime API"),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // The JWKS publishes exactly the key from Secrets Manager.
    let (status, jwks) = emulator
        .call("GET", "/.well-known/jwks.json", None, None)
        .await;
    assert_eq!(status, 200, "{jwks}");
    let jwks: JwkSet = serde_json::from_value(jwks).expect("a JWKS document");
    let kids: Vec<_> = jwks
        .keys
        .iter()
        .filter_map(|k| k.common.key_id.clone())
        .collect();
    assert_eq!(kids, vec![kid]);

    // Login with the bootstrap admin: a token signed by that key.
    let (status, v) = emulator
        .call(
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
    let (status, who) = emulator
        .call("GET", "/v1/auth/whoami", Some(access), None)
        .await;
    assert_eq!(status, 200, "{who}");
    assert_eq!(who["sub"], claims.sub);

    // Errors keep their status and JSON body through the runtime.
    let (status, v) = emulator
        .call(
            "POST",
            "/v1/auth/login",
            None,
            Some(json!({"email": ADMIN, "password": "wrong password, long enough"})),
        )
        .await;
    assert_eq!(status, 401, "{v}");
    assert!(v["error"].is_string(), "{v}");
    let (status, _) = emulator.call("GET", "/v1/auth/whoami", None, None).await;
    assert_eq!(status, 401);
}
