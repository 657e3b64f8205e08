//! `plantd analytics` against `plantd up`: rules put from SQL and from a
//! JSON file, listed, read and deleted; a mistake exits 2 with the field
//! and the SQL's line and column; a rule at the edge without sites is
//! refused; a rule with `--alert-severity` gets its companion alert rule,
//! which fires on the rule's signal (a result stored in
//! `PLANTD_AGGREGATES`) through the alert manager `plantd up` runs, and
//! goes with the rule; `plantd analytics results` shows a site's windows.

use crate::common;

use std::time::Duration;

use common::{plantd, run, stderr, stdout, up_logged_in};
use plantd_testkit::eventually;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);
const SQL: &str = r#"SELECT avg(value), max(value) FROM "line1/+/temp" GROUP BY topic, TUMBLE(1m)"#;

fn json_of(o: &std::process::Output) -> Value {
    serde_json::from_str(&stdout(o)).unwrap_or_else(|e| panic!("JSON ({e}): {}", stdout(o)))
}

/// Stores `result` (an analytics `Output`) as the analytics function
/// does: on `plantd.local.agg.<rule>.<key>` with its message id.
async fn store_result(js: &async_nats::jetstream::Context, result: &Value) {
    let rule = result["rule"].as_str().expect("rule");
    let key = result["key"].as_str().expect("key");
    let site = plantd_shared::subject::Site::new("local").expect("site");
    let subject = plantd_shared::subject::aggregate_subject(&site, rule, key);
    let mut headers = async_nats::HeaderMap::new();
    let id = format!(
        "local:{rule}:{key}:{}:{}",
        result["window_start"], result["revision"]
    );
    headers.insert("Nats-Msg-Id", id.as_str());
    js.publish_with_headers(subject, headers, result.to_string().into())
        .await
        .expect("publish")
        .await
        .expect("stored");
}

#[tokio::test]
async fn rules_results_and_companion_alerts_from_the_command_line() {
    let data = tempfile::tempdir().expect("tmp");
    let (up, root) = up_logged_in(data.path(), &[]).await;
    let cli = || plantd(root.path());

    // Mistakes exit 2 naming the field and where in the SQL.
    let out = run(cli().args([
        "analytics",
        "rules",
        "put",
        "broken",
        "--sql",
        "SELECT avg(value) FROM \"line1/+/temp\"\nGROUP BY topic, TUMBLE(1 minute)",
    ]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("sql: line 2, column "),
        "{}",
        stderr(&out)
    );
    let out = run(cli().args([
        "analytics",
        "rules",
        "put",
        "broken",
        "--sql",
        SQL,
        "--at",
        "edge",
    ]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("sites: "), "{}", stderr(&out));

    // From SQL, with an alert: the rule and its companion alert rule.
    let out = run(cli().args([
        "analytics",
        "rules",
        "put",
        "hot",
        "--sql",
        SQL,
        "--sites",
        "local",
        "--alert-severity",
        "critical",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out)
            .contains("analytics rule hot created with alert rule analytics-hot (critical)"),
        "{}",
        stdout(&out)
    );
    let out = run(cli().args(["rules", "get", "analytics-hot"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        json_of(&out)["condition"],
        json!({"kind": "analytics", "rule": "hot"})
    );

    // From a JSON file (what `get` prints), replaced at the edge.
    let out = run(cli().args(["analytics", "rules", "get", "hot"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let mut shown = json_of(&out);
    assert_eq!(shown["sql"], SQL);
    shown["at"] = json!("edge");
    let file = root.path().join("hot.json");
    std::fs::write(&file, shown.to_string()).expect("write");
    let out = run(cli()
        .args(["analytics", "rules", "put", "hot", "-f"])
        .arg(&file));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("analytics rule hot updated"),
        "{}",
        stdout(&out)
    );
    let out = run(cli().args(["analytics", "rules", "list"]));
    let line = stdout(&out);
    assert!(
        line.contains("hot")
            && line.contains("edge")
            && line.contains("local")
            && line.contains("critical"),
        "{line}"
    );

    // The companion alert fires on the rule's signal, stored as the
    // analytics function or the edge stores it.
    let js = up.jetstream().await;
    store_result(
        &js,
        &json!({"rule": "hot", "key": "line1/m3/temp", "window_start": 60_000, "window_end": 120_000,
            "revision": 0, "values": {"avg_value": 91.5, "max_value": 97.0}, "dropped_late": 0,
            "signal": "fire"}),
    )
    .await;
    let alert = eventually(WAIT, "the companion alert firing", || async {
        let out = run(cli().args(["alerts", "list", "--state", "firing", "--json"]));
        let v: Value = serde_json::from_str(&stdout(&out)).ok()?;
        v["alerts"].as_array()?.first().cloned()
    })
    .await;
    assert_eq!(alert["rule"], "analytics-hot");
    assert_eq!(alert["severity"], "critical");
    assert_eq!(alert["labels"]["key"], "line1/m3/temp");

    // Results: the window, newest revision, for people and as JSON.
    let out = run(cli().args(["analytics", "results", "--site", "local", "--rule", "hot"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("1970-01-01T00:01:00Z")
            && text.contains("line1/m3/temp")
            && text.contains("avg_value=91.5"),
        "{text}"
    );
    let out = run(cli().args([
        "analytics",
        "results",
        "--site",
        "local",
        "--key",
        "nope",
        "--json",
    ]));
    assert_eq!(json_of(&out), json!([]));

    // Deleted: the rule and its alert rule.
    let out = run(cli().args(["analytics", "rules", "delete", "hot"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(cli().args(["analytics", "rules", "get", "hot"]));
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let out = run(cli().args(["rules", "get", "analytics-hot"]));
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
}
