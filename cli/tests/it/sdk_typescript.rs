//! The TypeScript SDK (`sdk/typescript`) against a real `plantd up` with
//! real MQTT devices: its own suite (`node --test`, test/sdk.test.mjs) logs
//! in, meets a state conflict, gets a device's MQTT publish from a live
//! iterator, sends a command an MQTT subscriber receives, loses its socket
//! while the device keeps publishing numbered messages and still yields
//! every number once and in order, and ends with a typed refusal when its
//! token is revoked. A second run, `test/restart.mjs` alone, proves that
//! across a restart of `plantd up` itself the subscriber still yields
//! every number once and in order (`common::sdk::across_a_restart`); a
//! third, `test/expiry.mjs` alone, that it does so while its access token
//! expires again and again (`common::sdk::across_expiry`).
//!
//! Needs what `scripts/setup` installs: `sdk/typescript/node_modules` and
//! `dist` (`npm ci && npm run build`), `node` and `mosquitto_pub`/`_sub`.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::sdk::SdkStack;

fn sdk() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli/ has a parent")
        .join("sdk/typescript")
}

/// Asserts that the SDK is built: the suites import `dist/index.js`.
fn built_dist() {
    let dist = sdk().join("dist/index.js");
    assert!(
        dist.exists(),
        "{} is missing: run `npm ci && npm run build` in sdk/typescript (scripts/setup does this)",
        dist.display()
    );
}

/// `node` on the one file `file` of the SDK's tests, not under `--test`:
/// its reports reach the driver ([`common::sdk::Suite`]) as they are
/// printed.
fn node_alone(file: &str) -> tokio::process::Command {
    let mut suite = tokio::process::Command::new("node");
    suite
        .args(["--experimental-websocket", file])
        .current_dir(sdk());
    suite
}

/// Asserts that the file's TAP summary in `out` says that its one test
/// passed.
fn assert_one_passed(out: &str) {
    assert!(
        out.contains("# pass 1") && out.contains("# fail 0"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_sdk_against_plantd_up() {
    built_dist();
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = SdkStack::start(dir.path()).await;
    let mut suite = tokio::process::Command::new("node");
    suite
        .args([
            "--experimental-websocket",
            "--test",
            "--test-timeout=170000",
            "test/",
        ])
        .env("PLANTD_SDK_TEST", stack.config.to_string())
        .current_dir(sdk());
    let stdout = common::suite_stdout(suite, Duration::from_secs(240), "the SDK suite").await;
    assert!(stdout.contains("# fail 0"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_sdk_across_a_server_restart() {
    built_dist();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut stack = SdkStack::start(dir.path()).await;
    let suite = node_alone("test/restart.mjs");
    let out = common::sdk::across_a_restart(&mut stack, dir.path(), suite).await;
    assert_one_passed(&out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_sdk_across_token_expiry() {
    built_dist();
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = SdkStack::start_for_expiry(dir.path()).await;
    let out = common::sdk::across_expiry(&stack, node_alone("test/expiry.mjs")).await;
    assert_one_passed(&out);
}
