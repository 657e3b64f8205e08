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
//!
//! Also the proofs both language suites run alone against it
//! ([`across_a_restart`], [`across_expiry`]), each driving one test file
//! through [`Suite`].

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, BufReader, Lines};
use tokio::process::ChildStdout;
use tokio::task::JoinHandle;

use super::{Up, admin_token, device, port_of};

/// A running `plantd up` and the configuration the SDK suites read.
pub struct SdkStack {
    /// The stack (killed on drop).
    pub up: Up,
    /// `$PLANTD_SDK_TEST` for the suite.
    pub config: serde_json::Value,
}

impl SdkStack {
    /// Starts `plantd up` in `data_dir` on free ports and registers the devices.
    ///
    /// # Panics
    /// When the stack does not start or a registration is refused.
    pub async fn start(data_dir: &Path) -> SdkStack {
        Self::start_with_env(data_dir, &[]).await
    }

    /// [`SdkStack::start`] with access tokens that last
    /// [`EXPIRY_TTL_SECS`] seconds: the stack [`across_expiry`] runs on.
    pub async fn start_for_expiry(data_dir: &Path) -> SdkStack {
        Self::start_with_env(
            data_dir,
            &[("PLANTD_HTTP__ACCESS_TOKEN_TTL_SECS", EXPIRY_TTL_SECS)],
        )
        .await
    }

    /// [`SdkStack::start`], `plantd up` running with these `PLANTD_*`
    /// variables (e.g. short-lived tokens).
    pub async fn start_with_env(data_dir: &Path, env: &[(&str, &str)]) -> SdkStack {
        let up = Up::on_free_ports_with_env(data_dir, env).await;
        let password = std::fs::read_to_string(data_dir.join("admin-password")).expect("password");
        let password = password.trim();
        let admin = admin_token(&up, data_dir).await;
        let sensor = device(&up, &admin, "sdk-sensor", &["sdk/#"], &[]).await;
        let valve = device(&up, &admin, "sdk-valve", &[], &["sdk/valve/#"]).await;
        let pump = device(
            &up,
            &admin,
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

/// One of an SDK's proof files running as a child against an
/// [`SdkStack`]: what it prints on standard output is read line by line
/// (its reports to this side, e.g. `expiry: ready`); its standard error is
/// passed on as it comes and kept for a failure's message.
pub struct Suite {
    child: tokio::process::Child,
    lines: Lines<BufReader<ChildStdout>>,
    /// Every line of standard output read so far.
    seen: String,
    /// Its standard error, once it has ended.
    errors: JoinHandle<String>,
}

impl Suite {
    /// Spawns `suite` with `$PLANTD_SDK_TEST` (the stack's configuration)
    /// and `$<proof>` set: the variable that makes the file hold its proof
    /// (e.g. `PLANTD_SDK_EXPIRY`).
    ///
    /// # Panics
    /// When the suite cannot be started.
    pub fn spawn(stack: &SdkStack, mut suite: tokio::process::Command, proof: &str) -> Suite {
        let mut child = suite
            .env("PLANTD_SDK_TEST", stack.config.to_string())
            .env(proof, "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the suite starts");
        let stderr = child.stderr.take().expect("stderr");
        let errors = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut all = String::new();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("{line}");
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Suite {
            child,
            lines,
            seen: String::new(),
            errors,
        }
    }

    /// Reads the suite's standard output until a line contains `want`.
    ///
    /// # Panics
    /// When no such line comes within `within`, or the suite ends first.
    pub async fn expect(&mut self, want: &str, within: Duration) {
        let Suite { lines, seen, .. } = self;
        let found = tokio::time::timeout(within, async {
            while let Some(line) = lines.next_line().await.expect("the suite's output") {
                seen.push_str(&line);
                seen.push('\n');
                if line.contains(want) {
                    return true;
                }
            }
            false
        })
        .await;
        match found {
            Ok(true) => {}
            Ok(false) => panic!("the suite ended before it reported {want:?}:\n{seen}"),
            Err(_) => panic!("the suite did not report {want:?} within {within:?}:\n{seen}"),
        }
    }

    /// Waits up to `within` for the suite to end and asserts that it
    /// succeeded; all its standard output (also printed).
    ///
    /// # Panics
    /// When it does not end in time or fails.
    pub async fn finish(mut self, within: Duration) -> String {
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .expect("the suite ends")
            .expect("the suite's status");
        while let Ok(Some(line)) = self.lines.next_line().await {
            self.seen.push_str(&line);
            self.seen.push('\n');
        }
        let errors = self.errors.await.unwrap_or_default();
        let out = self.seen;
        println!("{out}");
        assert!(
            status.success(),
            "the suite failed ({status}):\n{out}\n{errors}"
        );
        out
    }
}

/// Access token lifetime of [`across_expiry`]'s stack
/// ([`SdkStack::start_for_expiry`]), in seconds.
pub const EXPIRY_TTL_SECS: &str = "3";

/// The expiry proof both language suites run (`test_expiry.py`,
/// `expiry.mjs`) against a stack started with [`EXPIRY_TTL_SECS`]-second
/// tokens ([`SdkStack::start_for_expiry`]): `suite` — one test that logs in, subscribes to `sdk/expiry`,
/// warms the subscription up and prints `expiry: ready` — runs with
/// `$PLANTD_SDK_EXPIRY` set; this side then stores 1..=90 on the topic at
/// 10 Hz (straight to JetStream, on the subject the edge publishes to),
/// across about three token lifetimes. The suite asserts it got 1..=90
/// exactly once, in order, and prints `expiry: done`; its standard output
/// is returned once it has passed.
///
/// # Panics
/// When a step does not happen within its time or the suite fails.
pub async fn across_expiry(stack: &SdkStack, suite: tokio::process::Command) -> String {
    let mut suite = Suite::spawn(stack, suite, "PLANTD_SDK_EXPIRY");
    suite.expect("expiry: ready", Duration::from_secs(60)).await;
    let js = stack.up.jetstream().await;
    for n in 1..=90 {
        js.publish("plantd.local.up.sdk.expiry", n.to_string().into())
            .await
            .expect("publish")
            .await
            .expect("stored");
        // The rate of a device, not a synchronisation.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = suite.finish(Duration::from_secs(90)).await;
    assert!(out.contains("expiry: done"), "{out}");
    out
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
pub async fn across_a_restart(
    stack: &mut SdkStack,
    data_dir: &Path,
    suite: tokio::process::Command,
) -> String {
    const TOPIC: &str = "sdk/restart";
    /// How long the suite may take to report a step.
    const STEP: Duration = Duration::from_secs(90);

    let mut suite = Suite::spawn(stack, suite, "PLANTD_SDK_RESTART");
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

    suite.expect("restart: ready", STEP).await;
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
    suite.expect("restart: state reconnecting", STEP).await;
    suite.expect("restart: state connected", STEP).await;
    for n in 11..=15 {
        sensor.publish1(TOPIC, false, n.to_string()).await;
    }
    suite.expect("restart: done", STEP).await;
    suite.finish(STEP).await
}
