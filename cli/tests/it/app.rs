//! The web app as people get it: `plantd up` serves the built app
//! (`app/dist`) beside the API, and a real browser (Debian's chromium,
//! driven by playwright-core in `app/tests/run.mjs`) logs in, watches a
//! device's value arrive, sends a command to a device, calls a device's
//! service (answered by an MQTT 5 device run here), acknowledges and
//! silences alerts, meets a state conflict, administers users, roles,
//! devices and sites, reads the audit trail, and checks that a viewer has
//! no command or admin controls.
//!
//! Needs what `scripts/setup` installs: `app/node_modules` and `app/dist`
//! (`npm ci && npm run build` in `app/`), `/usr/bin/chromium`
//! (`$PLANTD_CHROMIUM` to use another), `mosquitto_pub`/`mosquitto_sub`,
//! and `node`. A missing one fails the test with what to run — never a
//! silent skip.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Up, admin_token, device, port_of, post_json};
use plantd_testkit::http;

/// The repository's root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli/ has a parent")
        .to_owned()
}

/// Panics with what to run when something the browser test needs is
/// missing.
fn require(what: &Path, how: &str) {
    assert!(
        what.exists(),
        "{} is missing: {how} (scripts/setup does this)",
        what.display()
    );
}

/// A program on `PATH`, or a panic naming its package.
fn require_program(name: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()));
    assert!(
        found,
        "{name} is not on PATH: install {package} (scripts/setup does this)"
    );
}

/// `plantd up` with every listener on a free port, serving `app/dist`.
async fn up_with_app(data_dir: &Path) -> Up {
    let dist = repo().join("app/dist");
    let dist = dist.to_str().expect("a UTF-8 path");
    Up::on_free_ports_with(data_dir, &["--app-dir", dist], &[]).await
}

/// The service topic the MQTT 5 device answers, and one it subscribes to
/// but never answers (the page's timeout).
const SERVICE: &str = "pump/1/status";
const SILENT_SERVICE: &str = "pump/1/slow";

/// An MQTT 5 device serving [`SERVICE`]: every request is answered on its
/// response topic, with its correlation data, by
/// `{"running": true, "asked": <the request's body>}` as JSON; requests on
/// [`SILENT_SERVICE`] are never answered. Returns once both subscriptions
/// are granted; the task runs until dropped.
async fn serve(up: &Up, id: &str, token: &str) -> tokio::task::JoinHandle<()> {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let address = up
        .mqtt
        .clone()
        .expect("plantd up prints the edge's address");
    let mut opts = MqttOptions::new(id, "127.0.0.1", port_of(&address));
    opts.set_credentials(id, token);
    let (client, mut events) = AsyncClient::new(opts, 64);
    client
        .subscribe(SERVICE, QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    client
        .subscribe(SILENT_SERVICE, QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let mut granted = 0;
    while granted < 2 {
        match events.poll().await.expect("the service device connects") {
            Event::Incoming(Packet::SubAck(ack)) => {
                assert!(
                    ack.return_codes.iter().all(|c| matches!(
                        c,
                        rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(_)
                    )),
                    "{ack:?}"
                );
                granted += 1;
            }
            Event::Incoming(Packet::ConnAck(ack)) => {
                assert_eq!(
                    ack.code,
                    rumqttc::v5::mqttbytes::v5::ConnectReturnCode::Success
                );
            }
            _ => {}
        }
    }
    tokio::spawn(async move {
        while let Ok(event) = events.poll().await {
            let Event::Incoming(Packet::Publish(req)) = event else {
                continue;
            };
            if req.topic.as_ref() != SERVICE.as_bytes() {
                continue;
            }
            let props = req.properties.unwrap_or_default();
            let Some(reply_to) = props.response_topic else {
                continue;
            };
            let answer = PublishProperties {
                correlation_data: props.correlation_data,
                content_type: Some("application/json".into()),
                ..PublishProperties::default()
            };
            let body = serde_json::json!({"running": true, "asked": String::from_utf8_lossy(&req.payload)});
            let _ = client
                .publish_with_properties(
                    reply_to,
                    QoS::AtLeastOnce,
                    false,
                    body.to_string(),
                    answer,
                )
                .await;
        }
    })
}

#[tokio::test]
async fn plantd_up_serves_the_app_with_fallback_and_cache_headers_and_keeps_the_api() {
    require(
        &repo().join("app/dist/index.html"),
        "build the app: cd app && npm ci && npm run build",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let up = up_with_app(dir.path()).await;
    let port = port_of(&up.functions_url());

    let index = http::get(port, "/").await.expect("GET /");
    assert_eq!(index.status, 200);
    assert_eq!(
        index.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(index.header("cache-control"), Some("no-cache"));
    let html = index.text();
    assert!(html.contains("<div id=\"app\">"), "{html}");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external URL: {html}"
    );

    // An app route gets the same page (the app routes in the browser).
    let route = http::get(port, "/sites/local").await.expect("app route");
    assert_eq!(route.status, 200);
    assert_eq!(route.text(), html);

    // The hashed script: JavaScript, cached for a year.
    let script = html
        .split("src=\"/")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a script in index.html")
        .to_owned();
    assert!(script.starts_with("assets/"), "{script}");
    let js = http::get(port, &format!("/{script}"))
        .await
        .expect("script");
    assert_eq!(js.status, 200);
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(
        js.header("cache-control"),
        Some(plantd_proxy::static_files::IMMUTABLE)
    );
    let head = http::request(port, "HEAD", &format!("/{script}"), &[], b"")
        .await
        .expect("HEAD");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());

    // A missing asset is a 404, never the page; the API keeps its answers.
    assert_eq!(
        http::get(port, "/assets/gone-1234.js")
            .await
            .expect("gone")
            .status,
        404
    );
    assert_eq!(
        http::get(port, "/../Cargo.toml")
            .await
            .expect("traversal")
            .status,
        404
    );
    let unknown = http::get(port, "/v1/no-such-route")
        .await
        .expect("unknown API");
    assert_eq!(unknown.status, 404);
    assert!(
        unknown.body.is_empty(),
        "API 404s are not the app: {}",
        unknown.text()
    );
    assert_eq!(
        http::get(port, "/healthz").await.expect("healthz").text(),
        "ok"
    );
    let doc = http::get(port, "/openapi.json").await.expect("openapi");
    assert_eq!(doc.header("content-type"), Some("application/json"));
    let sites = http::get(port, "/v1/sites").await.expect("sites");
    assert_eq!(sites.status, 401, "API routes still need a token");
    let post = http::request(port, "POST", "/sites", &[], b"")
        .await
        .expect("POST");
    assert_eq!(post.status, 405);
}

/// What the browser scenarios need, each required ([`require`]): the
/// built app and its packages, a chromium (`$PLANTD_CHROMIUM`, or
/// Debian's), `node` and `mosquitto_pub`. The app's directory and the
/// chromium to use.
fn browser_scenarios() -> (PathBuf, String) {
    let app = repo().join("app");
    require(
        &app.join("dist/index.html"),
        "build the app: cd app && npm ci && npm run build",
    );
    require(
        &app.join("node_modules/playwright-core"),
        "install the app's packages: cd app && npm ci",
    );
    let chromium = std::env::var("PLANTD_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    require(
        Path::new(&chromium),
        "install Debian's chromium: apt-get install chromium",
    );
    require_program("node", "Node.js");
    require_program("mosquitto_pub", "mosquitto-clients");
    (app, chromium)
}

#[tokio::test]
async fn app_in_a_browser() {
    let (app, chromium) = browser_scenarios();
    require_program("mosquitto_sub", "mosquitto-clients");

    let dir = tempfile::tempdir().expect("tempdir");
    let up = up_with_app(dir.path()).await;
    let base = up.functions_url();
    let admin = admin_token(&up, dir.path()).await;
    let admin_password =
        std::fs::read_to_string(dir.path().join("admin-password")).expect("password");

    // A viewer, two devices (one publishes, one receives commands), and a
    // state key to edit.
    let viewer_password = "viewer-password-for-the-browser-test";
    let (status, v) = post_json(
        &up,
        "/v1/users",
        Some(&admin),
        &serde_json::json!({"email": "viewer@plantd.local", "password": viewer_password, "roles": ["viewer"]}),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let sensor = device(
        &up,
        &admin,
        "sensor",
        &["line1/#", "line2/#", "$plantd/log/#"],
        &[],
    )
    .await;
    let valve = device(&up, &admin, "valve", &[], &["line1/valve/#"]).await;
    let pump = device(&up, &admin, "pump", &[], &[SERVICE, SILENT_SERVICE]).await;
    let _service = serve(&up, &pump.0, &pump.1).await;
    let (status, s) = post_json(
        &up,
        "/v1/state/scopes",
        Some(&admin),
        &serde_json::json!({"scope": "plant"}),
    )
    .await;
    assert_eq!(status, 201, "{s}");
    let put = http::request(
        port_of(&base),
        "PUT",
        "/v1/state/plant/recipe",
        &[
            ("authorization", &format!("Bearer {admin}")),
            ("content-type", "application/json"),
        ],
        br#"{"speed": 1}"#,
    )
    .await
    .expect("state put");
    assert!(put.status < 300, "{}", put.text());

    let screenshots = repo().join("target/app-screenshots");
    let config = serde_json::json!({
        "base": base,
        "mqtt_port": port_of(up.mqtt.as_deref().expect("plantd up prints the edge's address")),
        "site": "local",
        "admin": {"email": "admin@plantd.local", "password": admin_password.trim()},
        "viewer": {"email": "viewer@plantd.local", "password": viewer_password},
        "device": {"id": sensor.0, "token": sensor.1},
        "receiver": {"id": valve.0, "token": valve.1},
        "state": {"scope": "plant", "key": "recipe"},
        "service": {"topic": SERVICE, "silent": SILENT_SERVICE},
        "screenshots": screenshots,
    });
    let mut scenarios = tokio::process::Command::new("node");
    scenarios
        .arg(app.join("tests/run.mjs"))
        .env("PLANTD_APP_TEST", config.to_string())
        .env("PLANTD_CHROMIUM", &chromium)
        .current_dir(&app);
    let what = format!(
        "the browser scenarios (screenshots in {})",
        screenshots.display()
    );
    let stdout = common::suite_stdout(scenarios, Duration::from_secs(240), &what).await;
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}

/// The Sites page's health in the browser (`app/tests/health.mjs`): the
/// edge of `plantd up`'s site shows connected with its uplink up and no
/// backlog, a registered site no edge serves shows not connected, and a
/// device's message and a firing alert appear on the page without a
/// reload.
#[tokio::test]
async fn sites_health_in_a_browser() {
    let (app, chromium) = browser_scenarios();

    let dir = tempfile::tempdir().expect("tempdir");
    let up = up_with_app(dir.path()).await;
    let admin = admin_token(&up, dir.path()).await;
    let admin_password =
        std::fs::read_to_string(dir.path().join("admin-password")).expect("password");
    let (status, s) = post_json(
        &up,
        "/v1/sites",
        Some(&admin),
        &serde_json::json!({"id": "plant-quiet", "name": "Plant without an edge"}),
    )
    .await;
    assert_eq!(status, 201, "{s}");
    let (status, r) = post_json(
        &up,
        "/v1/alert-rules",
        Some(&admin),
        &serde_json::json!({
            "id": "oven-hot",
            "name": "Oven too hot",
            "severity": "critical",
            "group_by": ["topic"],
            "condition": {"kind": "threshold", "topic": "line9/+/temp", "op": ">", "value": 80}
        }),
    )
    .await;
    assert_eq!(status, 201, "{r}");
    let sensor = device(&up, &admin, "oven-sensor", &["line9/#"], &[]).await;

    let screenshots = repo().join("target/app-screenshots");
    let config = serde_json::json!({
        "base": up.functions_url(),
        "mqtt_port": port_of(up.mqtt.as_deref().expect("plantd up prints the edge's address")),
        "site": "local",
        "offline": "plant-quiet",
        "admin": {"email": "admin@plantd.local", "password": admin_password.trim()},
        "device": {"id": sensor.0, "token": sensor.1},
        "alert": {"topic": "line9/oven/temp", "value": 95},
        "screenshots": screenshots,
    });
    let mut scenarios = tokio::process::Command::new("node");
    scenarios
        .arg(app.join("tests/health.mjs"))
        .env("PLANTD_APP_TEST", config.to_string())
        .env("PLANTD_CHROMIUM", &chromium)
        .current_dir(&app);
    let what = format!(
        "the health scenarios (screenshots in {})",
        screenshots.display()
    );
    let stdout = common::suite_stdout(scenarios, Duration::from_secs(120), &what).await;
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}
