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
        let up = Up::on_free_ports(data_dir).await;
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
