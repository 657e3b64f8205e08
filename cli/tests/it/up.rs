//! `plantd up` as a user runs it: a child process that brings nats-server
//! up with plantd's streams and buckets, prints where it is, and stops
//! everything cleanly on SIGTERM.

use crate::common;

use std::time::Duration;

use common::{Up, port_of};
use std::os::unix::fs::PermissionsExt as _;

use plantd_shared::streams;
use plantd_testkit::http;
use tokio::process::Command;

fn plantd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_plantd"))
}

#[tokio::test]
async fn up_starts_nats_with_streams_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut up = Up::start(
        dir.path(),
        &["--nats-port", "0", "--http-listen", "127.0.0.1:0"],
    )
    .await;
    let url = up.nats.clone().expect("plantd up prints the NATS URL");
    let http_port = port_of(&up.functions_url());

    // The local administrator's generated password is private and works.
    let pw_file = dir.path().join("admin-password");
    let mode = std::fs::metadata(&pw_file)
        .expect("password file")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the admin password file is private");
    let password = std::fs::read_to_string(&pw_file).expect("read password");
    assert!(
        password.trim().len() >= 32,
        "a generated password, not a default"
    );
    let body =
        serde_json::json!({"email": "admin@plantd.local", "password": password.trim()}).to_string();
    let login = http::request(
        http_port,
        "POST",
        "/v1/auth/login",
        &[("content-type", "application/json")],
        body.as_bytes(),
    )
    .await
    .expect("login request");
    assert_eq!(login.status, 200, "{}", login.text());
    assert!(login.text().contains("access_token"));
    let jwks = http::get(http_port, "/.well-known/jwks.json")
        .await
        .expect("jwks");
    assert_eq!(jwks.status, 200);

    // A device with a token for site "local" publishes to the edge; the
    // message lands in JetStream. Without a token it is refused.
    let mqtt = up
        .mqtt
        .clone()
        .expect("plantd up prints the edge's MQTT address");
    let mqtt_port = mqtt.rsplit(':').next().expect("port").to_owned();
    let body = serde_json::json!({"email": "admin@plantd.local", "password": password.trim(), "sites": ["local"]}).to_string();
    let login = http::request(
        http_port,
        "POST",
        "/v1/auth/login",
        &[("content-type", "application/json")],
        body.as_bytes(),
    )
    .await
    .expect("login request");
    let token: serde_json::Value = serde_json::from_slice(&login.body).expect("json");
    let token = token["access_token"]
        .as_str()
        .expect("access token")
        .to_owned();
    let publish = |password: Option<&str>| {
        let mut c = std::process::Command::new(plantd_testkit::tool("mosquitto_pub"));
        c.args([
            "-h",
            "127.0.0.1",
            "-p",
            &mqtt_port,
            "-q",
            "1",
            "-t",
            "line1/temp",
            "-m",
            "21.5",
        ]);
        if let Some(p) = password {
            c.args(["-u", "admin", "-P", p]);
        }
        c.output().expect("run mosquitto_pub")
    };
    // The proxy is mounted beside identity: state works with the token.
    let scope = http::request(
        http_port,
        "POST",
        "/v1/state/scopes",
        &[
            ("content-type", "application/json"),
            ("authorization", &format!("Bearer {token}")),
        ],
        br#"{"scope": "line1"}"#,
    )
    .await
    .expect("create scope");
    assert_eq!(scope.status, 201, "{}", scope.text());
    assert!(!publish(None).status.success(), "no token, no access");
    let out = publish(Some(&token));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let client = async_nats::connect(&url)
        .await
        .expect("connect to printed URL");
    let js = async_nats::jetstream::new(client.clone());
    for name in streams::STREAMS {
        let mut s = js
            .get_stream(name)
            .await
            .unwrap_or_else(|e| panic!("stream {name}: {e}"));
        let info = s.info().await.expect("stream info");
        assert_eq!(
            info.config.subjects,
            vec![streams::stream_subjects(name).expect("known")]
        );
    }
    for bucket in streams::BUCKETS {
        js.get_key_value(bucket)
            .await
            .unwrap_or_else(|e| panic!("bucket {bucket}: {e}"));
    }
    assert!(
        dir.path().join("nats").join("jetstream").is_dir(),
        "store under --data-dir"
    );
    let mut telemetry = js.get_stream(streams::TELEMETRY).await.expect("telemetry");
    let consumer = telemetry
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .expect("consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let m = tokio::time::timeout(
        Duration::from_secs(30),
        futures::StreamExt::next(&mut messages),
    )
    .await
    .expect("the device's message reaches JetStream")
    .expect("stream")
    .expect("message");
    assert_eq!(m.subject.as_str(), "plantd.local.up.line1.temp");
    assert_eq!(&m.payload[..], b"21.5");
    let _ = telemetry.info().await;
    drop(client);

    let status = up
        .process
        .terminate(Duration::from_secs(30))
        .await
        .expect("plantd up exits");
    assert!(status.success(), "clean exit on SIGTERM, got {status}");
    let port: u16 = url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port in URL");
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "nats-server must be stopped with plantd up"
    );
    assert!(
        up.process.tail().iter().any(|l| l.contains("stopped")),
        "{:?}",
        up.process.tail()
    );
}

#[tokio::test]
async fn bad_config_is_one_clear_line_and_a_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("plantd.toml");
    std::fs::write(&file, "[nats]\nport = \"many\"\n").expect("write config");
    let out = plantd()
        .arg("up")
        .arg("--config")
        .arg(&file)
        .output()
        .await
        .expect("run plantd");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.contains("config error"))
        .expect("a config error line");
    assert!(line.contains("nats.port"), "{line}");
    assert!(line.contains(&file.display().to_string()), "{line}");

    std::fs::write(&file, "[nats]\nprot = 4222\n").expect("write config");
    let out = plantd()
        .arg("up")
        .arg("--config")
        .arg(&file)
        .output()
        .await
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("prot") && err.contains(&file.display().to_string()),
        "{err}"
    );

    let out = plantd()
        .args(["up", "--config", "/nonexistent/plantd.toml"])
        .output()
        .await
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/plantd.toml"));
}

#[tokio::test]
async fn streams_command_prepares_any_nats_server() {
    let nats = plantd_testkit::Nats::start().await;
    let out = plantd()
        .args(["streams", "--nats-url", &nats.url()])
        .output()
        .await
        .expect("run plantd streams");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("created  PLANTD_TELEMETRY"), "{text}");
    let js = nats.jetstream().await;
    js.get_stream(streams::COMMANDS)
        .await
        .expect("commands stream");
    let again = plantd()
        .args(["streams", "--nats-url", &nats.url()])
        .output()
        .await
        .expect("run again");
    assert!(String::from_utf8_lossy(&again.stdout).contains("updated  PLANTD_TELEMETRY"));
    let down = plantd()
        .args(["streams", "--nats-url", "nats://127.0.0.1:1"])
        .output()
        .await
        .expect("run against nothing");
    assert!(!down.status.success());
    assert!(String::from_utf8_lossy(&down.stderr).contains("cannot connect to nats://127.0.0.1:1"));
}
