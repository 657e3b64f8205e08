//! The identity binary ships its own warnings to `PLANTD_LOGS`, under the
//! platform's pseudo-site: `plantd._plantd.log.plantd.identity`.

use std::net::SocketAddr;
use std::time::Duration;

use plantd_shared::process::ManagedProcess;
use plantd_shared::streams;
use plantd_testkit::{Nats, eventually, http};
use serde_json::{Value, json};

const ADMIN: &str = "root@plantd.example";
const ADMIN_PW: &str = "a long bootstrap password";

async fn call(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    let r = http::request(port, method, path, &headers, body.to_string().as_bytes())
        .await
        .expect("identity answers");
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn identity_warnings_reach_plantd_logs_under_the_platform_site() {
    let nats = Nats::start_with_streams().await;
    let dir = tempfile::tempdir().expect("tmp");
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_plantd-identity"));
    cmd.env("PLANTD_NATS_URL", nats.url())
        .env(
            "PLANTD_IDENTITY_SIGNING_KEY_FILE",
            dir.path().join("signing-key.pem"),
        )
        .env("PLANTD_IDENTITY_LISTEN", "127.0.0.1:0")
        .env("PLANTD_BOOTSTRAP_ADMIN_EMAIL", ADMIN)
        .env("PLANTD_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PW)
        .env("RUST_LOG", "info")
        .env_remove("PLANTD_LOG_SHIP");
    let mut addr = None;
    let _identity =
        ManagedProcess::spawn("plantd-identity", cmd, Duration::from_secs(60), |line| {
            if line.contains("identity listening") {
                addr = line
                    .split("addr=")
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|a| a.parse::<SocketAddr>().ok());
            }
            addr.is_some()
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let port = addr.expect("listening address").port();

    let (status, v) = call(
        port,
        "POST",
        "/v1/auth/login",
        None,
        json!({"email": ADMIN, "password": ADMIN_PW}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let token = v["access_token"].as_str().expect("access token").to_owned();
    // A rotation is logged as a warning (an administrator changed the keys).
    let (status, v) = call(port, "POST", "/v1/keys/rotate", Some(&token), json!({})).await;
    assert_eq!(status, 200, "{v}");

    let js = nats.jetstream().await;
    let (subject, line) = eventually(
        Duration::from_secs(20),
        "the rotation warning in PLANTD_LOGS",
        || {
            let js = js.clone();
            async move {
                let stream = js.get_stream(streams::LOGS).await.ok()?;
                let m = stream
                    .get_last_raw_message_by_subject("plantd._plantd.log.plantd.identity")
                    .await
                    .ok()?;
                let line: Value = serde_json::from_slice(&m.payload).ok()?;
                (line["message"] == "signing key rotated by an administrator")
                    .then(|| (m.subject.to_string(), line))
            }
        },
    )
    .await;
    assert_eq!(subject, "plantd._plantd.log.plantd.identity");
    assert_eq!(line["level"], "warn");
    assert_eq!(line["component"], "identity");
    assert!(
        line["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("plantd_identity"))
    );
    assert!(line["fields"]["actor"].as_str().is_some(), "{line}");
}
