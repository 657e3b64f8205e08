//! `plantd sub` and `plantd logs -f` outlive the access token: `plantd up`
//! issues tokens that last [`TTL_SECS`] seconds, the proxy closes each
//! socket when its token runs out, and the command refreshes the session
//! and resumes at the last sequence it printed. While numbered messages
//! and log lines are stored across several expiries — and another
//! `plantd` command of the same profile refreshes the session meanwhile,
//! rotating the refresh token under the running one's feet — each prints
//! every number exactly once and in order. Messages and lines are
//! published straight to JetStream, on the subjects the edge uses. A
//! follower whose session is revoked (a logout elsewhere) exits 3 once
//! its renewal is refused, rather than reconnecting forever.

use crate::common;

use std::process::Stdio;
use std::time::Duration;

use common::{plantd, run, stderr, up_logged_in};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// Access token lifetime of this stack, in seconds.
const TTL_SECS: u64 = 3;

/// How many numbers are published, one per [`PACE`]: about three token
/// lifetimes.
const COUNT: u32 = 90;

/// The publisher's pace (its rate, not a synchronisation).
const PACE: Duration = Duration::from_millis(100);

/// Starts a long-running `plantd` command and waits until its first line
/// on standard error is `ready`; the child, and a task collecting the
/// rest of its standard error.
async fn started(mut c: Command, ready: &str) -> (Child, tokio::task::JoinHandle<String>) {
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn plantd");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let said = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("plantd answers within 30 s")
        .expect("stderr")
        .unwrap_or_default();
    assert_eq!(said, ready);
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

/// Waits for a command started with `--count`/`--limit` to exit; its
/// standard output, after asserting it succeeded.
async fn output(child: Child, errors: tokio::task::JoinHandle<String>, what: &str) -> String {
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what} exits after its last number"))
        .expect("wait");
    let errors = errors.await.unwrap_or_default();
    assert!(out.status.success(), "{what}: {:?}\n{errors}", out.status);
    assert!(
        errors.contains("the access token expired"),
        "{what} never saw its token expire: {errors}"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_and_logs_follow_outlive_their_access_token() {
    let data = tempfile::tempdir().expect("tmp");
    let ttl = TTL_SECS.to_string();
    let (up, config) = up_logged_in(
        data.path(),
        &[("PLANTD_HTTP__ACCESS_TOKEN_TTL_SECS", ttl.as_str())],
    )
    .await;
    let js = up.jetstream().await;

    let count = COUNT.to_string();
    let mut sub = Command::new(env!("CARGO_BIN_EXE_plantd"));
    sub.env("PLANTD_CONFIG_DIR", config.path()).args([
        "sub",
        "--site",
        "local",
        "--count",
        &count,
        "cli/count",
    ]);
    let (sub, sub_errors) = started(sub, "subscribed to cli/count on local").await;
    let mut tail = Command::new(env!("CARGO_BIN_EXE_plantd"));
    tail.env("PLANTD_CONFIG_DIR", config.path()).args([
        "logs", "-f", "--site", "local", "--limit", &count, "--source", "counter",
    ]);
    let (tail, tail_errors) = started(tail, "tailing the logs of local").await;

    for n in 1..=COUNT {
        for subject in ["plantd.local.up.cli.count", "plantd.local.log.counter"] {
            js.publish(subject, format!("INFO {n}").into())
                .await
                .expect("publish")
                .await
                .expect("stored");
        }
        if n == COUNT / 2 {
            // Another command of the same profile, run once the stored
            // token has expired: it refreshes the session (rotating the
            // refresh token) while both followers still hold the old one.
            let out = run(plantd(config.path()).arg("token"));
            assert!(out.status.success(), "{}", stderr(&out));
        }
        tokio::time::sleep(PACE).await;
    }

    let printed = output(sub, sub_errors, "plantd sub").await;
    let want: Vec<String> = (1..=COUNT).map(|n| format!("cli/count INFO {n}")).collect();
    assert_eq!(printed.lines().collect::<Vec<_>>(), want);

    let printed = output(tail, tail_errors, "plantd logs -f").await;
    let numbers: Vec<u32> = printed
        .lines()
        .map(|l| {
            l.rsplit(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("a numbered line: {l:?}"))
        })
        .collect();
    assert_eq!(numbers, (1..=COUNT).collect::<Vec<_>>(), "{printed}");

    // The session survived: the profile still works.
    let out = run(plantd(config.path()).arg("token"));
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_whose_session_is_revoked_exits_3_instead_of_looping() {
    let data = tempfile::tempdir().expect("tmp");
    let ttl = TTL_SECS.to_string();
    let (_up, config) = up_logged_in(
        data.path(),
        &[("PLANTD_HTTP__ACCESS_TOKEN_TTL_SECS", ttl.as_str())],
    )
    .await;
    let mut sub = Command::new(env!("CARGO_BIN_EXE_plantd"));
    sub.env("PLANTD_CONFIG_DIR", config.path())
        .args(["sub", "--site", "local", "cli/count"]);
    let (sub, errors) = started(sub, "subscribed to cli/count on local").await;
    // Logging out revokes the access token (the socket closes) and the
    // refresh token's login: the follower's renewal is refused.
    let out = run(plantd(config.path()).arg("logout"));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = tokio::time::timeout(Duration::from_secs(30), sub.wait_with_output())
        .await
        .expect("plantd sub ends once its session is revoked")
        .expect("wait");
    let errors = errors.await.unwrap_or_default();
    assert_eq!(out.status.code(), Some(3), "{errors}");
    assert!(errors.contains("plantd login"), "{errors}");
    assert!(
        !errors.contains("subscribed again"),
        "no resubscription with a revoked session: {errors}"
    );
}
