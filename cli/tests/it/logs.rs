//! `plantd logs` against `plantd up`: lines published to `PLANTD_LOGS`
//! are found through the log index with a filter, as text or JSON; a bad
//! filter exits 2 naming its position; `-f` tails new lines over the
//! WebSocket. Lines are published straight to JetStream (the edge's MQTT
//! path to the same subjects is tested in the edge's tests).

use crate::common;

use std::process::Stdio;
use std::time::Duration;

use common::{plantd, run, stderr, stdout, up_logged_in};
use plantd_testkit::eventually;
use tokio::io::{AsyncBufReadExt as _, BufReader};

async fn publish(js: &async_nats::jetstream::Context, source: &str, line: &str) {
    js.publish(format!("plantd.local.log.{source}"), line.to_owned().into())
        .await
        .expect("publish")
        .await
        .expect("stored");
}

#[tokio::test]
async fn logs_are_queried_filtered_and_followed() {
    let data = tempfile::tempdir().expect("tmp");
    let (up, config) = up_logged_in(data.path(), &[]).await;
    let js = up.jetstream().await;
    publish(
        &js,
        "line1.plc",
        r#"{"level":"error","msg":"overheat","temp":91,"unit":"C"}"#,
    )
    .await;
    publish(&js, "line1.plc", "INFO cycle done").await;
    publish(&js, "gw", "{\"level\":\"warn\",\"msg\":\"cut").await;

    let cfg = config.path().to_owned();
    let logs = move |args: &[&str]| {
        let mut c = plantd(&cfg);
        c.arg("logs").args(args);
        run(&mut c)
    };
    // The index follows the stream: wait until all three are there.
    let out = eventually(Duration::from_secs(30), "three lines in the index", || {
        let out = logs(&["--site", "local"]);
        let ready = out.status.success() && stdout(&out).lines().count() == 3;
        async move { ready.then_some(out) }
    })
    .await;
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].contains("ERROR local line1/plc overheat temp=91 unit=C"),
        "oldest first: {text}"
    );
    assert!(
        lines[1].contains("INFO  local line1/plc cycle done"),
        "{text}"
    );
    assert!(
        !lines[2].contains("WARN") && lines[2].contains("[unparsed: invalid JSON"),
        "a malformed line is kept as text, level unread: {text}"
    );

    let out = logs(&[
        "--site",
        "local",
        "--filter",
        r#"|= "overheat" | temp > 80 and unit = "C""#,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 1, "{}", stdout(&out));
    let out = logs(&["--site", "local", "--source", "gw", "--json"]);
    let record: serde_json::Value =
        serde_json::from_str(stdout(&out).trim()).expect("one JSON line");
    assert_eq!(record["source"], "gw");
    assert!(record["parse_error"].is_string());
    let out = logs(&["--site", "local", "--level", "error", "--since", "1h"]);
    assert_eq!(stdout(&out).lines().count(), 1, "{}", stdout(&out));

    // A bad filter: exit 2, naming the position.
    let out = logs(&["--site", "local", "--filter", "|= overheat"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("position 3"), "{}", stderr(&out));
    // A site nobody registered: refused, no lines.
    let out = logs(&["--site", "nowhere"]);
    assert!(!out.status.success());
    assert!(stdout(&out).is_empty());

    // -f: tail new lines over /v1/ws.
    let mut tail = tokio::process::Command::new(env!("CARGO_BIN_EXE_plantd"));
    tail.env("PLANTD_CONFIG_DIR", config.path())
        .args([
            "logs",
            "-f",
            "--site",
            "local",
            "--limit",
            "1",
            "--filter",
            r#"|= "valve""#,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = tail.spawn().expect("spawn plantd logs -f");
    let mut err = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let said = tokio::time::timeout(Duration::from_secs(30), err.next_line())
        .await
        .expect("plantd logs -f answers within 30 s")
        .expect("stderr")
        .unwrap_or_default();
    assert_eq!(said, "tailing the logs of local");
    publish(&js, "line2.valve", "INFO motor started").await;
    publish(&js, "line2.valve", "WARN valve 3 stuck").await;
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("plantd logs -f exits after --limit 1")
        .expect("wait");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.trim_end()
            .ends_with("WARN  local line2/valve valve 3 stuck"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1);
}
