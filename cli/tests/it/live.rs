//! `plantd sub` and `plantd pub` against `plantd up`: a subscriber in the
//! background (`--count 1`) prints what a device publishes through the
//! edge; a command sent with `plantd pub` reaches an MQTT subscriber; a
//! refused filter, a missing permission and a bad token exit with their
//! codes and say what to do. Synchronisation is on output: the subscriber
//! says `subscribed …` before the device publishes.

use crate::common;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use common::{Up, port_of};
use plantd_testkit::http;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

fn plantd(config_dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_plantd"));
    c.env("PLANTD_CONFIG_DIR", config_dir)
        .env_remove("PLANTD_PASSWORD")
        .env_remove("PLANTD_SITE")
        .kill_on_drop(true);
    c
}

async fn run(c: &mut Command) -> Output {
    tokio::time::timeout(Duration::from_secs(60), c.output())
        .await
        .expect("plantd finishes")
        .expect("run plantd")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Starts `plantd sub` and waits until it says it is subscribed; the child
/// (stdout still piped) and the rest of what it writes to stderr.
async fn subscribed(mut c: Command) -> (Child, tokio::task::JoinHandle<String>) {
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn plantd sub");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = String::new();
    let ready = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("read stderr") {
            seen.push_str(&line);
            seen.push('\n');
            if line.starts_with("subscribed to ") {
                return true;
            }
        }
        false
    })
    .await
    .expect("plantd sub answers within 30 s");
    assert!(ready, "plantd sub ended before subscribing: {seen}");
    // Keep draining stderr so the child never blocks on a full pipe.
    let rest = tokio::spawn(async move {
        let mut rest = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            rest.push_str(&line);
            rest.push('\n');
        }
        rest
    });
    (child, rest)
}

async fn finished(child: Child) -> Output {
    tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("plantd sub exits after --count messages")
        .expect("wait")
}

/// POSTs `body` to `path` of the functions on `port` with `headers`; the
/// answer must be 201 Created.
async fn create(port: u16, headers: &[(&str, &str)], path: &str, body: &serde_json::Value) {
    let r = http::request(port, "POST", path, headers, body.to_string().as_bytes())
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    assert_eq!(r.status, 201, "{}", r.text());
}

#[tokio::test]
async fn sub_prints_device_messages_and_pub_reaches_devices() {
    let data = tempfile::tempdir().expect("tmp");
    let up = Up::on_free_ports(data.path()).await;
    let url = up.functions_url();
    let http_port = port_of(&url);
    let mqtt = up.mqtt.clone().expect("edge MQTT address");
    let mqtt_port = port_of(&mqtt).to_string();
    let config = tempfile::tempdir().expect("config dir");
    let pw = data.path().join("admin-password");

    let out = run(plantd(config.path())
        .args(["login", "--url", &url, "--email", "admin@plantd.local"])
        .args(["--site", "local", "--password-file"])
        .arg(&pw))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&run(plantd(config.path()).arg("token")).await.stdout)
        .trim()
        .to_owned();

    // State through the command line, as a script would.
    assert!(
        run(plantd(config.path()).args(["state", "scopes", "--create", "line1"]))
            .await
            .status
            .success()
    );
    let out = run(plantd(config.path()).args(["state", "set", "line1", "speed", "42"])).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(plantd(config.path()).args(["state", "get", "line1", "speed"])).await;
    assert_eq!(text(&out.stdout).trim(), "42");

    // A device publishes through the edge; `plantd sub` prints it.
    let mosquitto_pub = |topic: &str, payload: &str| {
        let mut c = Command::new(plantd_testkit::tool("mosquitto_pub"));
        c.args(["-h", "127.0.0.1", "-p", &mqtt_port, "-q", "1"])
            .args(["-u", "admin", "-P", &token, "-t", topic, "-m", payload]);
        c
    };
    let mut sub = plantd(config.path());
    sub.args(["sub", "--site", "local", "--count", "1", "line1/+/temp"]);
    let (child, _) = subscribed(sub).await;
    let out = run(&mut mosquitto_pub("line1/oven/temp", "21.5")).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = finished(child).await;
    assert!(out.status.success(), "exit 0 after --count 1: {out:?}");
    assert_eq!(text(&out.stdout), "line1/oven/temp 21.5\n");

    // --json: one object per line, filtered.
    let mut sub = plantd(config.path());
    sub.args([
        "sub",
        "--json",
        "--count",
        "1",
        "--site",
        "local",
        "line1/+/temp",
    ]);
    let (child, _) = subscribed(sub).await;
    let out = run(&mut mosquitto_pub("line1/oven/hum", "40")).await;
    assert!(out.status.success());
    let out = run(&mut mosquitto_pub("line1/press/temp", "22")).await;
    assert!(out.status.success());
    let out = finished(child).await;
    assert!(out.status.success(), "{out:?}");
    let line: serde_json::Value =
        serde_json::from_str(text(&out.stdout).trim()).expect("one JSON line");
    assert_eq!(line["topic"], "line1/press/temp", "{line}");
    assert_eq!(line["payload"], "22");
    assert_eq!(line["site"], "local");

    // `plantd pub` sends a retained command: an MQTT subscriber gets it
    // whether it subscribed before or after the edge took it.
    let out = run(plantd(config.path()).args([
        "pub",
        "--site",
        "local",
        "line1/valve/set",
        "open",
        "--retain",
        "--ttl",
        "600",
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("sent to local line1/valve/set: PLANTD_COMMANDS #"),
        "{}",
        text(&out.stdout)
    );
    let out = run(Command::new(plantd_testkit::tool("mosquitto_sub"))
        .args(["-h", "127.0.0.1", "-p", &mqtt_port, "-q", "1", "-C", "1"])
        .args([
            "-W",
            "30",
            "-u",
            "admin",
            "-P",
            &token,
            "-t",
            "line1/valve/set",
        ]))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "open");

    // --file with bytes that are not UTF-8, and --json.
    let file = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(file.path(), [0u8, 255, 1]).expect("write");
    let out = run(plantd(config.path())
        .args(["pub", "--json", "--site", "local", "line1/blob", "--file"])
        .arg(file.path()))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["stream"], "PLANTD_COMMANDS");
    assert!(v["sequence"].as_u64().is_some(), "{v}");

    // A malformed filter: usage (2).
    let out = run(plantd(config.path()).args(["sub", "--site", "local", "a/#/b"])).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));

    // A user whose role grants only line2 on this site: its filter for
    // line1 is refused (4) and it may not send commands (4); both say what
    // to do.
    let role = serde_json::json!({"name": "line2-watcher", "perms": ["telemetry:*:read"],
        "mqtt": {"local": {"publish": [], "subscribe": ["line2/#"]}}});
    let auth = format!("Bearer {token}");
    let headers = [
        ("content-type", "application/json"),
        ("authorization", auth.as_str()),
    ];
    create(http_port, &headers, "/v1/roles", &role).await;
    let user = serde_json::json!({"email": "watcher@plantd.local",
        "password": "a long enough password for tests", "roles": ["line2-watcher"]});
    create(http_port, &headers, "/v1/users", &user).await;
    let watcher = tempfile::tempdir().expect("config dir");
    let out = run(plantd(watcher.path())
        .args(["login", "--url", &url, "--email", "watcher@plantd.local"])
        .args(["--site", "local"])
        .env("PLANTD_PASSWORD", "a long enough password for tests"))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(plantd(watcher.path()).args(["sub", "--site", "local", "line1/#"])).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("ask an administrator"),
        "{}",
        text(&out.stderr)
    );
    let out = run(plantd(watcher.path()).args(["pub", "--site", "local", "line1/x", "1"])).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));

    // A token the server does not accept: 3, and `plantd login` is the fix.
    let tokens = watcher.path().join("tokens").join("default.json");
    std::fs::write(
        &tokens,
        r#"{"access_token": "not.a.token", "refresh_token": null, "expires_at": 99999999999}"#,
    )
    .expect("write tokens");
    let out = run(plantd(watcher.path()).args(["sub", "--site", "local", "line2/#"])).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("plantd login"),
        "{}",
        text(&out.stderr)
    );

    // Logging out revokes the token: a running `plantd sub` with it is
    // closed by the server and exits 3, saying to log in.
    let mut sub = plantd(config.path());
    sub.args(["sub", "--site", "local", "line1/#"]);
    let (mut child, stderr) = subscribed(sub).await;
    let out = run(plantd(config.path()).arg("logout")).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("plantd sub ends when its token is revoked")
        .expect("wait");
    let said = stderr.await.expect("stderr");
    assert_eq!(status.code(), Some(3), "{said}");
    assert!(
        said.contains("revoked") && said.contains("plantd login"),
        "{said}"
    );
}
