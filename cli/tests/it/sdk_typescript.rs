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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_sdk_against_plantd_up() {
    let dist = sdk().join("dist/index.js");
    assert!(
        dist.exists(),
        "{} is missing: run `npm ci && npm run build` in sdk/typescript (scripts/setup does this)",
        dist.display()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = SdkStack::start(dir.path()).await;
    let config = &stack.config;
    let run = tokio::process::Command::new("node")
        .args([
            "--experimental-websocket",
            "--test",
            "--test-timeout=170000",
            "test/",
        ])
        .env("PLANTD_SDK_TEST", config.to_string())
        .current_dir(sdk())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the SDK suite finishes within 4 minutes")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "the SDK suite failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("# fail 0"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_sdk_across_a_server_restart() {
    let dist = sdk().join("dist/index.js");
    assert!(
        dist.exists(),
        "{} is missing: run `npm ci && npm run build` in sdk/typescript (scripts/setup does this)",
        dist.display()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let mut stack = SdkStack::start(dir.path()).await;
    let mut suite = tokio::process::Command::new("node");
    // The file alone, not under `--test`: its lines reach this side as
    // they are printed.
    suite
        .args(["--experimental-websocket", "test/restart.mjs"])
        .current_dir(sdk());
    let out = common::sdk::across_a_restart(&mut stack, dir.path(), suite).await;
    assert!(
        out.contains("# pass 1") && out.contains("# fail 0"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_sdk_across_token_expiry() {
    let dist = sdk().join("dist/index.js");
    assert!(
        dist.exists(),
        "{} is missing: run `npm ci && npm run build` in sdk/typescript (scripts/setup does this)",
        dist.display()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = SdkStack::start_for_expiry(dir.path()).await;
    let mut suite = tokio::process::Command::new("node");
    // The file alone, not under `--test`: its lines reach this side as
    // they are printed.
    suite
        .args(["--experimental-websocket", "test/expiry.mjs"])
        .current_dir(sdk());
    let out = common::sdk::across_expiry(&stack, suite).await;
    assert!(
        out.contains("# pass 1") && out.contains("# fail 0"),
        "{out}"
    );
}
