//! `plantd audit` and `plantd audit verify` against `plantd up`: the
//! administrator's login is in the trail, filters and bad times behave,
//! the chain verifies — and after someone with NATS access slips a
//! doctored copy of a record into the stream, `verify` exits 1 naming the
//! first broken record.

use crate::common;

use common::{plantd, run, stderr, stdout, up_logged_in};
use plantd_shared::audit::{self, Outcome, Query};

#[tokio::test]
async fn audit_lists_verifies_and_catches_a_doctored_record() {
    let data = tempfile::tempdir().expect("tmp");
    let (up, config) = up_logged_in(data.path(), &[]).await;

    // The login is in the trail, as a table and as JSON.
    let out = run(plantd(config.path()).args(["audit", "--action", "auth.login"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(
        table
            .lines()
            .any(|l| l.contains("success") && l.contains("auth.login")),
        "{table}"
    );
    let out = run(plantd(config.path()).args(["audit", "--json", "--since", "1h"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(v["org"], "plantd");
    assert!(
        v["records"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["action"] == "auth.login")),
        "{v}"
    );
    // A time the CLI cannot read is a usage error (exit 2); an action the
    // server does not know is its 400 (exit 1) naming the parameter.
    let out = run(plantd(config.path()).args(["audit", "--since", "yesterday"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = run(plantd(config.path()).args(["audit", "--action", "auth.nope"]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("action"), "{}", stderr(&out));

    let out = run(plantd(config.path()).args(["audit", "verify"]));
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("chain intact"), "{}", stdout(&out));

    // Someone with NATS access "rewrites" the login: the stream refuses
    // deletes, so they append a doctored copy (a success turned into a
    // failure) hoping it reads as the real one.
    let js = up.jetstream().await;
    let page = audit::read(
        &js,
        &Query {
            org: "plantd".into(),
            action: Some("auth.login".into()),
            limit: 1,
            ..Query::default()
        },
    )
    .await
    .expect("read the trail");
    let mut doctored = page.records[0].record.clone();
    doctored.outcome = Outcome::Failure;
    js.publish(
        audit::subject("plantd").expect("subject"),
        serde_json::to_vec(&doctored).expect("json").into(),
    )
    .await
    .expect("publish")
    .await
    .expect("stored");

    let out = run(plantd(config.path()).args(["audit", "verify"]));
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(err.contains("BROKEN"), "{err}");
    assert!(
        err.contains(&doctored.id),
        "names the doctored record: {err}"
    );
    let out = run(plantd(config.path()).args(["audit", "verify", "--json"]));
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(v["ok"], false);
    assert_eq!(v["broken"]["record"]["id"], doctored.id.as_str());
}
