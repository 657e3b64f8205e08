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

use crate::aws_common;

use std::path::PathBuf;
use std::time::Duration;

use aws_common::{claims, event, registry, sdk};
use plantd_proxy::aws;
use plantd_shared::jwt::{SigningKey, jwks_of};
use plantd_shared::process::ManagedProcess;
use plantd_testkit::{LambdaWatch, Moto, Nats};
use serde_json::{Value, json};
use tokio::process::Command;

/// The function name in the emulator. Its invoke endpoint only accepts
/// the names of the workspace's binaries, so the two roles take turns
/// under the one name (in AWS they are two functions of one package).
const FUNCTION: &str = "plantd-proxy";
const TABLE: &str = "plantd-test-connections";

/// Invokes the WebSocket function with a raw event; its JSON result.
async fn invoke(emulator: &LambdaWatch, event: &Value) -> Value {
    let resp = emulator.invoke(FUNCTION, &event.to_string()).await;
    serde_json::from_slice(&resp.body).unwrap_or_else(|e| panic!("{e}: {}", resp.text()))
}

/// The environment Lambda gives a function, plus the test's AWS endpoint.
/// `package`: the variable naming a shipped bootstrap for this role.
fn lambda_command(emulator: &LambdaWatch, moto: &Moto, package: &str) -> Command {
    // The binary this test run built (every role) — or, to check the
    // packages by hand, the `bootstrap` unzipped from each
    // (`PLANTD_PROXY_BOOTSTRAP`, the REST function's;
    // `PLANTD_PROXY_WS_BOOTSTRAP`, the WebSocket function's: each is built
    // with its role only; docs/deploy.md).
    let bin =
        std::env::var_os(package).unwrap_or_else(|| env!("CARGO_BIN_EXE_plantd-proxy").into());
    emulator.function_command(bin, FUNCTION, &moto.endpoint())
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
    let nats = Nats::start_with_streams().await;
    // The site the token's claims act on, owned by their organisation.
    plantd_shared::sites::Sites::open(&nats.jetstream().await)
        .await
        .expect("plantd_sites")
        .register(
            &plantd_shared::subject::Site::new("plant-1").expect("site"),
            "acme",
            "plant-1",
        )
        .await
        .expect("register the site");
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
    // The alerts secret: the channel key the REST function seals alert
    // channels' webhook secrets with.
    aws_sdk_secretsmanager::Client::new(&sdk(&moto.endpoint()).await)
        .create_secret()
        .name("plantd/alerts")
        .secret_string(
            json!({"channel_key": plantd_alerts::notify::keys::generate_key()}).to_string(),
        )
        .send()
        .await
        .expect("moto creates the alerts secret");

    let key = SigningKey::generate_ed25519("test-key").expect("key");
    let jwks = TempFile(
        std::env::temp_dir().join(format!("plantd-proxy-jwks-{}.json", std::process::id())),
    );
    std::fs::write(
        &jwks.0,
        serde_json::to_vec(&jwks_of([&key]).expect("jwks")).expect("JSON"),
    )
    .expect("write the JWKS");

    let emulator = LambdaWatch::start(env!("CARGO_MANIFEST_DIR")).await;
    let mut http_cmd = lambda_command(&emulator, &moto, "PLANTD_PROXY_BOOTSTRAP");
    http_cmd
        .env(aws::MODE_ENV, "http")
        .env("PLANTD_NATS_URL", nats.url())
        .env(plantd_alerts::notify::keys::SECRET_ID_ENV, "plantd/alerts")
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
    let r = emulator
        .call(
            FUNCTION,
            "POST",
            "/v1/state/scopes",
            Some(&token),
            json_ct,
            br#"{"scope":"line1"}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = emulator
        .call(
            FUNCTION,
            "PUT",
            "/v1/state/line1/setpoint",
            Some(&token),
            "text/plain",
            b"21.5",
        )
        .await;
    assert!(
        r.status == 200 || r.status == 201,
        "{} {}",
        r.status,
        r.text()
    );
    let r = emulator
        .call(
            FUNCTION,
            "GET",
            "/v1/state/line1/setpoint",
            Some(&token),
            json_ct,
            b"",
        )
        .await;
    assert_eq!((r.status, r.body.as_slice()), (200, b"21.5".as_slice()));
    let r = emulator
        .call(
            FUNCTION,
            "GET",
            "/v1/state/line1/setpoint",
            None,
            json_ct,
            b"",
        )
        .await;
    assert_eq!(r.status, 401);

    // The HTTP role steps down; the WebSocket role takes the name.
    drop(http_fn);

    // --- WebSocket API events by route key ---------------------------------
    let mut ws_cmd = lambda_command(&emulator, &moto, "PLANTD_PROXY_WS_BOOTSTRAP");
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
    let r = invoke(&emulator, &event("connect-query.json", conn, &token)).await;
    assert_eq!(r, json!({"statusCode": 200}));
    assert!(
        reg.connection(conn).await.expect("get").is_some(),
        "recorded in DynamoDB"
    );
    let r = invoke(
        &emulator,
        &event("connect-header.json", "other", "forged.token.value"),
    )
    .await;
    assert_eq!(r, json!({"statusCode": 401}));

    let r = invoke(&emulator, &event("subscribe.json", conn, "")).await;
    assert_eq!(r["statusCode"], 200);
    let frame: Value = serde_json::from_str(r["body"].as_str().expect("a frame")).expect("JSON");
    assert_eq!(frame, json!({"op": "subscribed", "id": "temps"}));
    let site = plantd_shared::subject::Site::new("plant-1").expect("site");
    assert_eq!(reg.by_site(&site).await.expect("query").len(), 1);

    // A command, over the NATS connection the secret names.
    let r = invoke(&emulator, &event("command.json", conn, "")).await;
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
    // Both Lambda roles recorded what alice did in the audit trail of the
    // site's organisation: the scope (HTTP) and the command (WebSocket,
    // with API Gateway's source address and request id).
    let trail = plantd_shared::audit::read(
        &nats.jetstream().await,
        &plantd_shared::audit::Query {
            org: "acme".into(),
            actor: Some("alice".into()),
            limit: 100,
            ..Default::default()
        },
    )
    .await
    .expect("the audit trail");
    let actions: Vec<_> = trail
        .records
        .iter()
        .map(|s| s.record.action.as_str())
        .collect();
    assert_eq!(actions, ["state.scope_create", "command.send"], "{trail:?}");
    assert_eq!(
        trail.records[1].record.source.as_deref(),
        Some("203.0.113.7")
    );

    // A socket opened without a token authenticates with its first frame.
    let bare = "Uq1LbcpEIAMCK1B=";
    let r = invoke(&emulator, &event("connect-bare.json", bare, "")).await;
    assert_eq!(r, json!({"statusCode": 200}));
    assert!(reg.connection(bare).await.expect("get").is_none());
    let r = invoke(&emulator, &event("auth.json", bare, &token)).await;
    let frame: Value = serde_json::from_str(r["body"].as_str().expect("a frame")).expect("JSON");
    assert_eq!(
        (frame["op"].as_str(), frame["sub"].as_str()),
        (Some("authenticated"), Some("alice")),
        "{frame}"
    );
    assert!(reg.connection(bare).await.expect("get").is_some());

    // A sequenced subscription: the function hands it (over the NATS
    // connection the secret names) to a fan-out process, which posts the
    // answer and the stored messages with their sequences.
    let stub = aws_common::Stub::start(&[]).await;
    let fanout = std::sync::Arc::new(aws::fanout::Fanout::new(
        reg.clone(),
        aws::fanout::management_client(
            &sdk(&moto.endpoint()).await,
            &format!("{}/prod", stub.endpoint),
        ),
    ));
    let sequencer = std::sync::Arc::new(aws::sequenced::Sequencer::new(
        "lambda-test",
        fanout,
        nats.client().await,
    ));
    let stop = tokio_util::sync::CancellationToken::new();
    let serving = tokio::spawn(aws::sequenced::serve(sequencer, stop.clone()));
    let stored = nats
        .jetstream()
        .await
        .publish("plantd.plant-1.up.line1.temp", "21.5".into())
        .await
        .expect("publish")
        .await
        .expect("stored")
        .sequence;
    let subscribe = aws_common::with_body(
        event("subscribe.json", bare, ""),
        &json!({"op": "subscribe", "id": "seq", "site": "plant-1", "filter": "line1/#", "from_sequence": stored}),
    );
    let client = nats.client().await;
    plantd_testkit::eventually(Duration::from_secs(10), "the sequencer answers", || async {
        client
            .request(aws::sequenced::alive_subject("lambda-test"), "".into())
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    let r = invoke(&emulator, &subscribe).await;
    assert_eq!(
        r,
        json!({"statusCode": 200}),
        "no frame: the fan-out posts it"
    );
    let posts = plantd_testkit::eventually(
        Duration::from_secs(10),
        "the fan-out posts the answer and the stored message",
        || async {
            let seen = stub.seen();
            (seen.len() >= 2).then_some(seen)
        },
    )
    .await;
    let frames: Vec<Value> = posts
        .iter()
        .map(|p| serde_json::from_slice(&p.body).expect("JSON"))
        .collect();
    assert_eq!(
        frames[0],
        json!({"op": "subscribed", "id": "seq", "from_sequence": stored})
    );
    assert_eq!(
        (
            frames[1]["sequence"].as_u64(),
            frames[1]["payload"].as_str()
        ),
        (Some(stored), Some("21.5")),
        "{}",
        frames[1]
    );
    stop.cancel();
    serving.await.expect("task").expect("serve");

    let r = invoke(&emulator, &event("default.json", conn, "")).await;
    let frame: Value = serde_json::from_str(r["body"].as_str().expect("a frame")).expect("JSON");
    assert_eq!(frame["error"], "bad_request");

    let r = invoke(&emulator, &event("disconnect.json", conn, "")).await;
    assert_eq!(r, json!({"statusCode": 200}));
    assert!(reg.connection(conn).await.expect("get").is_none());
    assert!(reg.by_site(&site).await.expect("query").is_empty());
}
