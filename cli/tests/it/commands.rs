//! `plantd commands` against `plantd up`: a command to a topic nobody
//! subscribes to is listed as pending, cancelled, then no longer listed;
//! cancelling is idempotent, an unknown command exits 5, an unknown site is
//! refused.

use crate::common;

use common::{plantd, run, stderr, stdout, up_logged_in};

#[tokio::test]
async fn pending_commands_are_listed_and_cancelled() {
    let data = tempfile::tempdir().expect("tmp");
    let (_up, root) = up_logged_in(data.path(), &[]).await;

    let out = run(plantd(root.path()).args(["command", "local", "nobody/listens", "x", "--json"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let sent: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    let id = sent["sequence"].as_u64().expect("sequence");

    let out = run(plantd(root.path()).args(["commands", "pending", "local", "--json"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let list: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(list["commands"][0]["id"], id, "{list}");
    assert_eq!(list["commands"][0]["topic"], "nobody/listens");
    let out = run(plantd(root.path()).args(["commands", "pending", "local"]));
    assert!(
        stdout(&out).contains(&format!("#{id}")) && stdout(&out).contains("nobody/listens"),
        "{}",
        stdout(&out)
    );

    let out = run(plantd(root.path()).args(["commands", "cancel", "local", &id.to_string()]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("cancelled"), "{}", stdout(&out));
    let out = run(plantd(root.path()).args(["commands", "pending", "local", "--json"]));
    let list: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(list["commands"], serde_json::json!([]), "{list}");

    // Cancelling again says so again; an unknown command exits 5.
    let out = run(plantd(root.path()).args(["commands", "cancel", "local", &id.to_string()]));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(plantd(root.path()).args(["commands", "cancel", "local", "999999"]));
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let out = run(plantd(root.path()).args(["commands", "pending", "nowhere"]));
    assert!(!out.status.success(), "an unknown site");
}
