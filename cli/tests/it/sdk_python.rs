//! The Python SDK (`sdk/python`, package `plantd`) against a real `plantd
//! up` with real MQTT devices: its pytest suite (`sdk/python/tests`) logs
//! in, meets a state conflict, gets a device's MQTT publish from `async
//! for`, sends a command an MQTT subscriber receives, calls a service a
//! paho MQTT 5 device answers, loses its socket while the device keeps
//! publishing numbered messages and still yields every number once and in
//! order, ends with a typed `Refused` once its token is revoked, and runs
//! the examples (a dashboard feed, a command sender, a state-backed job,
//! the paho device). A second run, `test_restart.py` alone, proves that
//! across a restart of `plantd up` itself the subscriber still yields
//! every number once and in order ([`across_a_restart`], which the
//! TypeScript driver runs too). A third, `test_expiry.py` alone against a
//! stack with 3-second access tokens, proves the same while the
//! subscriber's token expires under it again and again
//! ([`common::sdk::across_expiry`], also run for TypeScript).
//!
//! Needs what `scripts/setup` installs: the package and its pinned dev
//! requirements in `.venv` (pytest, paho-mqtt), and `mosquitto_pub`/`_sub`.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::sdk::SdkStack;
use common::{Up, port_of};

fn sdk() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli/ has a parent")
        .join("sdk/python")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_against_plantd_up() {
    let python = plantd_testkit::tool("python");
    let check = std::process::Command::new(&python)
        .args(["-c", "import plantd, pytest, paho.mqtt"])
        .output()
        .expect("python runs");
    assert!(
        check.status.success(),
        "{} cannot import the SDK or its test requirements ({}): run scripts/setup",
        python.display(),
        String::from_utf8_lossy(&check.stderr)
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = SdkStack::start(dir.path()).await;
    let run = tokio::process::Command::new(&python)
        .args(["-m", "pytest", "tests", "-p", "no:cacheprovider", "-rA"])
        .env("PLANTD_SDK_TEST", stack.config.to_string())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .current_dir(sdk())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the SDK suite finishes within 4 minutes")
        .expect("pytest runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "the SDK suite failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // Every case ran: nothing skipped for a missing part.
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(
        summary.contains(" passed") && !summary.contains("skipped"),
        "{summary}"
    );
    drop(stack);
}

/// The restart proof both language suites run (`test_restart.py`,
/// `restart.mjs`): `suite` — one test that subscribes, then prints
/// `restart: ready` and `restart: state <state>` lines on its standard
/// output — runs against `stack` (in `data_dir`) with
/// `$PLANTD_SDK_RESTART` set. This side is the device and the operator: on
/// `ready` the sensor device (rumqttc, QoS 1, every publish acknowledged)
/// publishes 1..=5 on `sdk/restart`; `plantd up` is stopped with SIGTERM
/// and started again on the same data directory and ports; the device
/// reconnects and publishes 6..=10 at once (the subscriber is typically
/// still reconnecting: it gets them from the stream's history), then
/// 11..=15 once the suite reports `connected` again.
/// The suite asserts that it got 1..=15 exactly once, in order; its
/// standard output is returned once it has passed.
///
/// # Panics
/// When a step does not happen within its time or the suite fails.
pub(crate) async fn across_a_restart(
    stack: &mut SdkStack,
    data_dir: &Path,
    mut suite: tokio::process::Command,
) -> String {
    use tokio::io::{AsyncBufReadExt as _, BufReader};

    const TOPIC: &str = "sdk/restart";
    /// How long the suite may take to report a step.
    const STEP: Duration = Duration::from_secs(90);

    let mut child = suite
        .env("PLANTD_SDK_TEST", stack.config.to_string())
        .env("PLANTD_SDK_RESTART", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the suite starts");
    // Its standard error as it comes (shown with a failure).
    let stderr = child.stderr.take().expect("stderr");
    let errors = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("{line}");
        }
    });
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut seen = String::new();
    // Reads the suite's lines until one contains `event`.
    let mut expect = async |event: &str| {
        let want = format!("restart: {event}");
        loop {
            let line = tokio::time::timeout(STEP, lines.next_line())
                .await
                .unwrap_or_else(|_| {
                    panic!("the suite did not report {want:?} within {STEP:?}:\n{seen}")
                })
                .expect("the suite's output");
            let Some(line) = line else {
                panic!("the suite ended before it reported {want:?}:\n{seen}");
            };
            seen.push_str(&line);
            seen.push('\n');
            if line.contains(&want) {
                return;
            }
        }
    };

    let sensor = &stack.config["sensor"];
    let (id, token) = (
        sensor["id"].as_str().expect("id").to_owned(),
        sensor["token"].as_str().expect("token").to_owned(),
    );
    let mqtt =
        u16::try_from(stack.config["mqtt"].as_u64().expect("the MQTT port")).expect("a port");
    let device = async || {
        plantd_testkit::mqtt::v4(mqtt, &id, |o| {
            o.set_credentials(id.as_str(), token.as_str());
        })
        .await
    };

    expect("ready").await;
    let mut sensor = device().await;
    for n in 1..=5 {
        sensor.publish1(TOPIC, false, n.to_string()).await;
    }
    drop(sensor);
    let http = port_of(&stack.up.functions_url());
    stack
        .up
        .process
        .terminate(Duration::from_secs(30))
        .await
        .expect("plantd up stops");
    stack.up = Up::start(
        data_dir,
        &[
            "--nats-port",
            "0",
            "--http-listen",
            &format!("127.0.0.1:{http}"),
            "--mqtt-listen",
            &format!("127.0.0.1:{mqtt}"),
            "--edge-http-listen",
            "127.0.0.1:0",
        ],
    )
    .await;
    let mut sensor = device().await;
    for n in 6..=10 {
        sensor.publish1(TOPIC, false, n.to_string()).await;
    }
    expect("state reconnecting").await;
    expect("state connected").await;
    for n in 11..=15 {
        sensor.publish1(TOPIC, false, n.to_string()).await;
    }
    expect("done").await;
    let status = tokio::time::timeout(STEP, child.wait())
        .await
        .expect("the suite ends")
        .expect("the suite's status");
    let mut rest = String::new();
    while let Ok(Some(line)) = lines.next_line().await {
        rest.push_str(&line);
        rest.push('\n');
    }
    let _ = errors.await;
    let out = format!("{seen}{rest}");
    println!("{out}");
    assert!(status.success(), "the suite failed ({status}):\n{out}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_across_a_server_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut stack = SdkStack::start(dir.path()).await;
    let mut suite = tokio::process::Command::new(plantd_testkit::tool("python"));
    suite
        .args([
            "-m",
            "pytest",
            "tests/test_restart.py",
            "-s",
            "-p",
            "no:cacheprovider",
            "-rA",
        ])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .current_dir(sdk());
    let out = across_a_restart(&mut stack, dir.path(), suite).await;
    let summary = out.lines().last().unwrap_or_default();
    assert!(
        summary.contains("1 passed") && !summary.contains("skipped"),
        "{summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_across_token_expiry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = SdkStack::start_with_env(
        dir.path(),
        &[(
            "PLANTD_HTTP__ACCESS_TOKEN_TTL_SECS",
            common::sdk::EXPIRY_TTL_SECS,
        )],
    )
    .await;
    let mut suite = tokio::process::Command::new(plantd_testkit::tool("python"));
    suite
        .args([
            "-m",
            "pytest",
            "tests/test_expiry.py",
            "-s",
            "-p",
            "no:cacheprovider",
            "-rA",
        ])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .current_dir(sdk());
    let out = common::sdk::across_expiry(&stack, suite).await;
    let summary = out.lines().last().unwrap_or_default();
    assert!(
        summary.contains("1 passed") && !summary.contains("skipped"),
        "{summary}"
    );
}
