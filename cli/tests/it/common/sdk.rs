//! What the SDK suites (`sdk_typescript.rs`, `sdk_python.rs`) run against:
//! `plantd up` on free ports with three registered MQTT devices, and the
//! JSON each suite reads from `$PLANTD_SDK_TEST`:
//!
//! ```json
//! {"url": "http://127.0.0.1:…", "site": "local", "mqtt": 1883,
//!  "admin": {"email", "password"},
//!  "sensor": {"id", "token"},   // publishes on sdk/#
//!  "valve": {"id", "token"},    // subscribes to sdk/valve/#
//!  "pump": {"id", "token"}}     // publishes sdk/pump/# and $plantd/log/sdk-pump, serves sdk/pump/svc/#
//! ```

use std::path::Path;

use super::{Up, port_of, post_json, register_device};

/// A running `plantd up` and the configuration the SDK suites read.
pub struct SdkStack {
    /// The stack (killed on drop).
    pub up: Up,
    /// `$PLANTD_SDK_TEST` for the suite.
    pub config: serde_json::Value,
}

/// A device on site `local` with these MQTT grants: `(client id, access token)`.
///
/// # Panics
/// When a step is refused.
pub async fn device(
    up: &Up,
    admin: &str,
    name: &str,
    publish: &[&str],
    subscribe: &[&str],
) -> (String, String) {
    let (status, creds) = post_json(
        up,
        "/v1/devices",
        Some(admin),
        &serde_json::json!({"name": name, "site": "local", "publish": publish, "subscribe": subscribe}),
    )
    .await;
    assert_eq!(status, 201, "{creds}");
    let id = creds["client_id"].as_str().expect("id").to_owned();
    let (status, token) = post_json(
        up,
        "/v1/auth/token",
        None,
        &serde_json::json!({"grant_type": "client_credentials", "client_id": id, "client_secret": creds["client_secret"]}),
    )
    .await;
    assert_eq!(status, 200, "{token}");
    let token = token["access_token"].as_str().expect("token").to_owned();
    (id, token)
}

impl SdkStack {
    /// Starts `plantd up` in `data_dir` on free ports and registers the devices.
    ///
    /// # Panics
    /// When the stack does not start or a registration is refused.
    pub async fn start(data_dir: &Path) -> SdkStack {
        Self::start_with_env(data_dir, &[]).await
    }

    /// [`SdkStack::start`], `plantd up` running with these `PLANTD_*`
    /// variables (e.g. short-lived tokens).
    pub async fn start_with_env(data_dir: &Path, env: &[(&str, &str)]) -> SdkStack {
        let up = Up::on_free_ports_with_env(data_dir, env).await;
        let sensor = register_device(&up, data_dir, "sdk-sensor", &["sdk/#"]).await;
        let password = std::fs::read_to_string(data_dir.join("admin-password")).expect("password");
        let password = password.trim();
        let (status, login) = post_json(
            &up,
            "/v1/auth/login",
            None,
            &serde_json::json!({"email": "admin@plantd.local", "password": password}),
        )
        .await;
        assert_eq!(status, 200, "{login}");
        let admin = login["access_token"].as_str().expect("token");
        let valve = device(&up, admin, "sdk-valve", &[], &["sdk/valve/#"]).await;
        let pump = device(
            &up,
            admin,
            "sdk-pump",
            &["sdk/pump/#", "$plantd/log/sdk-pump"],
            &["sdk/pump/svc/#"],
        )
        .await;
        let config = serde_json::json!({
            "url": up.functions_url(),
            "admin": {"email": "admin@plantd.local", "password": password},
            "mqtt": port_of(up.mqtt.as_deref().expect("the edge's address")),
            "site": "local",
            "sensor": {"id": sensor.0, "token": sensor.1},
            "valve": {"id": valve.0, "token": valve.1},
            "pump": {"id": pump.0, "token": pump.1},
        });
        SdkStack { up, config }
    }
}

/// Access token lifetime of [`across_expiry`]'s stack, in seconds.
pub const EXPIRY_TTL_SECS: &str = "3";

/// The expiry proof both language suites run (`test_expiry.py`,
/// `expiry.mjs`) against a stack started with [`EXPIRY_TTL_SECS`]-second
/// tokens: `suite` — one test that logs in, subscribes to `sdk/expiry`,
/// warms the subscription up and prints `expiry: ready` — runs with
/// `$PLANTD_SDK_EXPIRY` set; this side then stores 1..=90 on the topic at
/// 10 Hz (straight to JetStream, on the subject the edge publishes to),
/// across about three token lifetimes. The suite asserts it got 1..=90
/// exactly once, in order, and prints `expiry: done`; its standard output
/// is returned once it has passed.
///
/// # Panics
/// When a step does not happen within its time or the suite fails.
pub async fn across_expiry(stack: &SdkStack, mut suite: tokio::process::Command) -> String {
    use std::time::Duration;
    use tokio::io::{AsyncBufReadExt as _, BufReader};

    let mut child = suite
        .env("PLANTD_SDK_TEST", stack.config.to_string())
        .env("PLANTD_SDK_EXPIRY", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the suite starts");
    let stderr = child.stderr.take().expect("stderr");
    let errors = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        let mut all = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut seen = String::new();
    let ready = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("expiry: ready") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(ready, "the suite did not report ready:\n{seen}");
    let nats = async_nats::connect(stack.up.nats.clone().expect("nats address"))
        .await
        .expect("connect to NATS");
    let js = async_nats::jetstream::new(nats);
    for n in 1..=90 {
        js.publish("plantd.local.up.sdk.expiry", n.to_string().into())
            .await
            .expect("publish")
            .await
            .expect("stored");
        // The rate of a device, not a synchronisation.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = tokio::time::timeout(Duration::from_secs(90), child.wait())
        .await
        .expect("the suite ends")
        .expect("the suite's status");
    while let Ok(Some(line)) = lines.next_line().await {
        seen.push_str(&line);
        seen.push('\n');
    }
    let errors = errors.await.unwrap_or_default();
    println!("{seen}");
    assert!(
        status.success(),
        "the suite failed ({status}):\n{seen}\n{errors}"
    );
    assert!(seen.contains("expiry: done"), "{seen}\n{errors}");
    seen
}
