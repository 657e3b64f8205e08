//! The AWS path, proven rather than assumed: the real `plantd-proxy`
//! binary, as built by this test run, runs twice under the Lambda runtime
//! API emulator of `cargo lambda watch --only-lambda-apis` — once as the
//! HTTP function (`PLANTD_PROXY_MODE=http`), answering a state REST call
//! through the emulator's function URL as an API Gateway HTTP API v2
//! event, and once as the WebSocket function (`PLANTD_PROXY_MODE=websocket`,
//! its NATS URL read from Secrets Manager), answering the API Gateway
//! WebSocket event fixtures of `tests/fixtures/` sent to the emulator's
//! invoke endpoint (what `cargo lambda invoke --data-file` does) — over a
//! real nats-server, with the connection registry in DynamoDB (`moto`).

mod aws_common;

use std::path::PathBuf;
use std::time::Duration;

use aws_common::{claims, event, registry, sdk};
use plantd_proxy::aws;
use plantd_shared::jwt::{SigningKey, jwks_of};
use plantd_shared::process::ManagedProcess;
use plantd_shared::streams::{self, Settings as StreamSettings};
use plantd_testkit::{Moto, Nats, http, tool};
use serde_json::{Value, json};
use tokio::process::Command;

/// The function name in the emulator. Its invoke endpoint only accepts
/// the names of the workspace's binaries, so the two roles take turns
/// under the one name (in AWS they are two functions of one package).
const FUNCTION: &str = "plantd-proxy";
const TABLE: &str = "plantd-test-connections";

/// `cargo lambda watch --only-lambda-apis` on a loopback port.
struct Emulator {
    /// The emulator; killed on drop.
    process: ManagedProcess,
    /// Where it serves the runtime API (`/.rt`), function URLs and invokes.
    port: u16,
}

/// A port that was free a moment ago (`cargo lambda` cannot bind port 0:
/// it takes 0 as "unset" and uses 9000); a lost race is detected by
/// [`Emulator::answers`] and another port tried.
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

    /// Waits until the port answers as a Lambda runtime API (only it has
    /// `/2018-06-01/runtime/init/error`, POST only); gives the port up when
    /// the emulator terminates or something else answers.
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
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    /// `AWS_LAMBDA_RUNTIME_API` for `function`.
    fn runtime_api(&self, function: &str) -> String {
        format!("http://127.0.0.1:{}/.rt/{function}", self.port)
    }

    /// An HTTP API call through the HTTP function's URL: status and body.
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: &[u8],
    ) -> (u16, Vec<u8>) {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", content_type)];
        if let Some(a) = &auth {
            headers.push(("authorization", a));
        }
        let url = format!("/lambda-url/{FUNCTION}{path}");
        let resp = http::request(self.port, method, &url, &headers, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        (resp.status, resp.body.to_vec())
    }

    /// Invokes the WebSocket function with a raw event; its JSON result.
    async fn invoke(&self, event: &Value) -> Value {
        let url = format!("/2015-03-31/functions/{FUNCTION}/invocations");
        let body = event.to_string();
        let call = http::request(
            self.port,
            "POST",
            &url,
            &[("content-type", "application/json")],
            body.as_bytes(),
        );
        let resp = tokio::time::timeout(Duration::from_secs(30), call)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "POST {url}: no answer in 30 s; emulator: {:?}",
                    self.process.tail()
                )
            })
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        assert_eq!(resp.status, 200, "{}", resp.text());
        serde_json::from_slice(&resp.body).unwrap_or_else(|e| panic!("{e}: {}", resp.text()))
    }
}

/// The environment Lambda gives a function, plus the test's AWS endpoint.
fn lambda_command(emulator: &Emulator, function: &str, moto: &Moto) -> Command {
    // The binary this test run built — or, to check a package by hand, the
    // `bootstrap` unzipped from it (`PLANTD_PROXY_BOOTSTRAP`, docs/deploy.md).
    let bin = std::env::var_os("PLANTD_PROXY_BOOTSTRAP")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_plantd-proxy").into());
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", emulator.runtime_api(function))
        .env("AWS_LAMBDA_FUNCTION_NAME", function)
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL", moto.endpoint())
        .env("PLANTD_LOG", "info");
    cmd
}

/// Removes a file on drop.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::test]
async fn proxy_serves_rest_and_websocket_events_under_the_lambda_runtime() {
    plantd_testkit::init_tracing();
    let nats = Nats::start().await;
    streams::ensure(&nats.jetstream().await, &StreamSettings::default())
        .await
        .expect("streams and buckets");
    let moto = Moto::start().await;
    let reg = registry(&moto, TABLE).await;
    // The WebSocket function's secret, as the template's secret holds it.
    aws_sdk_secretsmanager::Client::new(&sdk(&moto.endpoint()).await)
        .create_secret()
        .name("plantd/proxy")
        .secret_string(json!({"nats_url": nats.url()}).to_string())
        .send()
        .await
        .expect("moto creates the secret");

    let key = SigningKey::generate_ed25519("test-key").expect("key");
    let jwks = TempFile(
        std::env::temp_dir().join(format!("plantd-proxy-jwks-{}.json", std::process::id())),
    );
    std::fs::write(
        &jwks.0,
        serde_json::to_vec(&jwks_of([&key]).expect("jwks")).expect("JSON"),
    )
    .expect("write the JWKS");

    let emulator = Emulator::start().await;
    let mut http_cmd = lambda_command(&emulator, FUNCTION, &moto);
    http_cmd
        .env(aws::MODE_ENV, "http")
        .env("PLANTD_NATS_URL", nats.url())
        .env("PLANTD_JWKS_FILE", &jwks.0);
    let http_fn = ManagedProcess::spawn(
        "plantd-proxy (HTTP Lambda)",
        http_cmd,
        Duration::from_secs(60),
        |l| l.contains("proxy serving the HTTP API through the Lambda runtime API"),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // --- REST through the HTTP API event mapping ---------------------------
    let mut c = claims("alice", 600, &[("plant-1", &["line1/#"])]);
    c.perms = vec![
        "state:scope:line1:admin".into(),
        "commands:plant-1:send".into(),
    ];
    let token = key.sign(&c).expect("sign");
    let json_ct = "application/json";
    let (status, body) = emulator
        .call(
            "POST",
            "/v1/state/scopes",
            Some(&token),
            json_ct,
            br#"{"scope":"line1"}"#,
        )
        .await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let (status, body) = emulator
        .call(
            "PUT",
            "/v1/state/line1/setpoint",
            Some(&token),
            "text/plain",
            b"21.5",
        )
        .await;
    assert!(
        status == 200 || status == 201,
        "{status} {}",
        String::from_utf8_lossy(&body)
    );
    let (status, body) = emulator
        .call(
            "GET",
            "/v1/state/line1/setpoint",
            Some(&token),
            json_ct,
            b"",
        )
        .await;
    assert_eq!((status, body.as_slice()), (200, b"21.5".as_slice()));
    let (status, _) = emulator
        .call("GET", "/v1/state/line1/setpoint", None, json_ct, b"")
        .await;
    assert_eq!(status, 401);

    // The HTTP role steps down; the WebSocket role takes the name.
    drop(http_fn);

    // --- WebSocket API events by route key ---------------------------------
    let mut ws_cmd = lambda_command(&emulator, FUNCTION, &moto);
    ws_cmd
        .env(aws::MODE_ENV, "websocket")
        .env(aws::secrets::SECRET_ID_ENV, "plantd/proxy")
        .env("PLANTD_JWKS_FILE", &jwks.0)
        .env(aws::TABLE_ENV, TABLE);
    let _ws_fn = ManagedProcess::spawn(
        "plantd-proxy (WebSocket Lambda)",
        ws_cmd,
        Duration::from_secs(60),
        |l| l.contains("proxy serving WebSocket API events through the Lambda runtime API"),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    let conn = "Uq1LbcpEIAMCK0A=";
    let r = emulator
        .invoke(&event("connect-query.json", conn, &token))
        .await;
    assert_eq!(r, json!({"statusCode": 200}));
    assert!(
        reg.connection(conn).await.expect("get").is_some(),
        "recorded in DynamoDB"
    );
    let r = emulator
        .invoke(&event("connect-header.json", "other", "forged.token.value"))
        .await;
    assert_eq!(r, json!({"statusCode": 401}));

    let r = emulator.invoke(&event("subscribe.json", conn, "")).await;
    assert_eq!(r["statusCode"], 200);
    let frame: Value = serde_json::from_str(r["body"].as_str().expect("a frame")).expect("JSON");
    assert_eq!(frame, json!({"op": "subscribed", "id": "temps"}));
    let site = plantd_shared::subject::Site::new("plant-1").expect("site");
    assert_eq!(reg.by_site(&site).await.expect("query").len(), 1);

    // A command, over the NATS connection the secret names.
    let r = emulator.invoke(&event("command.json", conn, "")).await;
    let frame: Value = serde_json::from_str(r["body"].as_str().expect("a frame")).expect("JSON");
    assert_eq!(
        (frame["op"].as_str(), frame["stream"].as_str()),
        (Some("sent"), Some(plantd_shared::streams::COMMANDS)),
        "{frame}"
    );
    let stored = nats
        .jetstream()
        .await
        .get_stream(plantd_shared::streams::COMMANDS)
        .await
        .expect("stream")
        .direct_get(frame["sequence"].as_u64().expect("sequence"))
        .await
        .expect("stored");
    assert_eq!(
        stored.subject.as_str(),
        "plantd.plant-1.down.line1.valve.set"
    );

    let r = emulator.invoke(&event("default.json", conn, "")).await;
    let frame: Value = serde_json::from_str(r["body"].as_str().expect("a frame")).expect("JSON");
    assert_eq!(frame["error"], "bad_request");

    let r = emulator.invoke(&event("disconnect.json", conn, "")).await;
    assert_eq!(r, json!({"statusCode": 200}));
    assert!(reg.connection(conn).await.expect("get").is_none());
    assert!(reg.by_site(&site).await.expect("query").is_empty());
}
