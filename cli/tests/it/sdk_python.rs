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
//! every number once and in order ([`common::sdk::across_a_restart`],
//! also run for TypeScript). A third, `test_expiry.py` alone against a
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
    let mut suite = tokio::process::Command::new(&python);
    suite
        .args(["-m", "pytest", "tests", "-p", "no:cacheprovider", "-rA"])
        .env("PLANTD_SDK_TEST", stack.config.to_string())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .current_dir(sdk());
    let stdout = common::suite_stdout(suite, Duration::from_secs(240), "the SDK suite").await;
    // Every case ran: nothing skipped for a missing part.
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(
        summary.contains(" passed") && !summary.contains("skipped"),
        "{summary}"
    );
    drop(stack);
}

/// `pytest` on the one file `file` of the SDK's tests, its output neither
/// buffered nor captured (`-s`): its reports reach the driver
/// ([`common::sdk::Suite`]) as they are printed.
fn pytest_alone(file: &str) -> tokio::process::Command {
    let mut suite = tokio::process::Command::new(plantd_testkit::tool("python"));
    suite
        .args(["-m", "pytest", file, "-s", "-p", "no:cacheprovider", "-rA"])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .current_dir(sdk());
    suite
}

/// Asserts that pytest's summary, the last line of `out`, says that its
/// one test passed and nothing was skipped.
fn assert_one_passed(out: &str) {
    let summary = out.lines().last().unwrap_or_default();
    assert!(
        summary.contains("1 passed") && !summary.contains("skipped"),
        "{summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_across_a_server_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut stack = SdkStack::start(dir.path()).await;
    let suite = pytest_alone("tests/test_restart.py");
    let out = common::sdk::across_a_restart(&mut stack, dir.path(), suite).await;
    assert_one_passed(&out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_across_token_expiry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = SdkStack::start_for_expiry(dir.path()).await;
    let out = common::sdk::across_expiry(&stack, pytest_alone("tests/test_expiry.py")).await;
    assert_one_passed(&out);
}
