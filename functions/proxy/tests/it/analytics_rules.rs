//! `/v1/analytics/rules` against a real nats-server: create, read, replace
//! and delete in SQL and JSON form; 400s that point at the position (the
//! SQL's line and column, the JSON field); another organisation's rule is
//! 404 and its sites cannot be named; `at: edge` needs sites; `If-Match`
//! keeps concurrent writers from losing each other's update; the
//! companion alert rule `analytics-<name>` appears and disappears with
//! its rule; permissions and the audit trail.

use crate::common;

use axum::http::StatusCode;
use common::{ORG, fixture, get, send, send_json};
use plantd_analytics::{Placement, StoredRule};
use plantd_shared::claims::{ALERTS_READ, ALERTS_WRITE, ANALYTICS_READ, ANALYTICS_WRITE};
use plantd_shared::streams::ANALYTICS_RULES_BUCKET;
use serde_json::{Value, json};

const SQL: &str = r#"SELECT avg(value), max(value) FROM "line1/+/temp" GROUP BY topic, TUMBLE(1m)"#;
const ADMIN: &[&str] = &[ANALYTICS_READ, ANALYTICS_WRITE, ALERTS_READ, ALERTS_WRITE];

fn message(a: &common::Answer) -> String {
    a.json()["message"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn rules_crud_in_sql_and_json_with_positions_org_scoping_and_etags() {
    let f = fixture().await;
    let admin = f.token(ORG, ADMIN);
    let viewer = f.token(ORG, &[ANALYTICS_READ]);
    let other = f.token("globex", ADMIN);
    f.register_site("globex", "globex-1").await;

    // Created from SQL: 201 with an ETag, stored as the StoredRule contract.
    let body = json!({"sql": SQL, "sites": ["plant-1"]});
    let created = send_json(
        &f.app,
        "PUT",
        "/v1/analytics/rules/line1_temp",
        Some(&admin),
        &body,
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.json());
    let etag = created.header("etag").expect("an ETag").to_owned();
    assert_eq!(created.json()["sql"], SQL);
    assert_eq!(created.json()["compiled"]["from"], "line1/+/temp");
    let kv = f
        .nats
        .jetstream()
        .await
        .get_key_value(ANALYTICS_RULES_BUCKET)
        .await
        .expect("bucket");
    let entry = kv
        .get("acme.line1_temp")
        .await
        .expect("read")
        .expect("stored");
    let stored: StoredRule = serde_json::from_slice(&entry).expect("a StoredRule");
    assert_eq!(stored.org, ORG);
    assert_eq!(stored.at, Placement::Cloud);
    assert!(stored.runs_in_cloud_for("plant-1") && !stored.runs_in_cloud_for("plant-2"));
    assert_eq!(stored.updated_by, "user-acme");

    // Errors point at the position and name the field; nothing is stored.
    let bad =
        json!({"sql": "SELECT avg(value) FROM \"line1/+/temp\"\nGROUP BY topic, TUMBLE(1 minute)"});
    let refused = send_json(
        &f.app,
        "PUT",
        "/v1/analytics/rules/broken",
        Some(&admin),
        &bad,
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(
        message(&refused).starts_with("sql: line 2, column "),
        "{}",
        message(&refused)
    );
    let bad = json!({"rule": {"from": "line1/+/temp", "operator": {"aggregate": {
        "window": {"tumbling": {"size": "1m"}}, "select": [{"name": "m", "fn": "mean"}]}}}});
    let refused = send_json(
        &f.app,
        "PUT",
        "/v1/analytics/rules/broken",
        Some(&admin),
        &bad,
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(
        message(&refused).starts_with("rule.operator.aggregate.select[0].fn: "),
        "{}",
        message(&refused)
    );
    // At the edge without sites: 400 naming `sites`.
    let edge = json!({"sql": SQL, "at": "edge"});
    let refused = send_json(
        &f.app,
        "PUT",
        "/v1/analytics/rules/broken",
        Some(&admin),
        &edge,
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(
        message(&refused).starts_with("sites: "),
        "{}",
        message(&refused)
    );
    // Another organisation's site reads as none of ours.
    let theirs = json!({"sql": SQL, "sites": ["plant-1", "globex-1"]});
    let refused = send_json(
        &f.app,
        "PUT",
        "/v1/analytics/rules/broken",
        Some(&admin),
        &theirs,
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(
        message(&refused).starts_with("sites[1]: "),
        "{}",
        message(&refused)
    );
    assert_eq!(
        get(&f.app, "/v1/analytics/rules/broken", Some(&admin))
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // Replaced in JSON form at the edge, with the ETag read: 200, a new ETag.
    let json_rule = json!({"rule": {"from": "line1/+/temp", "operator": {"aggregate": {
        "window": {"tumbling": {"size": "30s"}}, "select": [{"name": "avg_value", "fn": "avg"}]}}},
        "at": "edge", "sites": ["plant-2"]});
    let replaced = send(
        &f.app,
        "PUT",
        "/v1/analytics/rules/line1_temp",
        Some(&admin),
        &[("content-type", "application/json"), ("if-match", &etag)],
        json_rule.to_string(),
    )
    .await;
    assert_eq!(replaced.status, StatusCode::OK, "{:?}", replaced.json());
    assert_ne!(replaced.header("etag"), Some(etag.as_str()));
    // A second writer holding the old ETag loses (409), nothing changes.
    let stale = send(
        &f.app,
        "PUT",
        "/v1/analytics/rules/line1_temp",
        Some(&admin),
        &[("content-type", "application/json"), ("if-match", &etag)],
        body.to_string(),
    )
    .await;
    assert_eq!(stale.status, StatusCode::CONFLICT, "{:?}", stale.json());
    let read = get(&f.app, "/v1/analytics/rules/line1_temp", Some(&viewer)).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.json()["at"], "edge");
    assert_eq!(read.json()["rule"]["name"], "line1_temp");
    assert!(read.json().get("sql").is_none());
    // What a read shows can be written back as it is.
    let back = send(
        &f.app,
        "PUT",
        "/v1/analytics/rules/line1_temp",
        Some(&admin),
        &[
            ("content-type", "application/json"),
            ("if-match", read.header("etag").unwrap_or_default()),
        ],
        read.json().to_string(),
    )
    .await;
    assert_eq!(back.status, StatusCode::OK, "{:?}", back.json());

    // Another organisation sees nothing and changes nothing.
    assert_eq!(
        get(&f.app, "/v1/analytics/rules/line1_temp", Some(&other))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&f.app, "/v1/analytics/rules", Some(&other))
            .await
            .json()["rules"],
        json!([])
    );
    let deleted = send(
        &f.app,
        "DELETE",
        "/v1/analytics/rules/line1_temp",
        Some(&other),
        &[],
        "",
    )
    .await;
    assert_eq!(deleted.status, StatusCode::NOT_FOUND);

    // A viewer reads, does not write.
    let listed = get(&f.app, "/v1/analytics/rules", Some(&viewer))
        .await
        .json();
    assert_eq!(listed["rules"][0]["name"], "line1_temp");
    let denied = send_json(
        &f.app,
        "PUT",
        "/v1/analytics/rules/line1_temp",
        Some(&viewer),
        &body,
    )
    .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);

    let deleted = send(
        &f.app,
        "DELETE",
        "/v1/analytics/rules/line1_temp",
        Some(&admin),
        &[],
        "",
    )
    .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(
        get(&f.app, "/v1/analytics/rules/line1_temp", Some(&admin))
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    let query = plantd_shared::audit::query::Query {
        org: ORG.into(),
        limit: 1000,
        ..Default::default()
    };
    let actions: Vec<String> =
        match plantd_shared::audit::query::read(f.state.audit.jetstream(), &query).await {
            Ok(page) => page
                .records
                .iter()
                .map(|r| r.record.action.to_string())
                .collect(),
            Err(e) => panic!("audit: {e}"),
        };
    for want in [
        "analytics.rule_create",
        "analytics.rule_update",
        "analytics.rule_delete",
    ] {
        assert!(actions.iter().any(|a| a == want), "{want} in {actions:?}");
    }
}

fn alert_rule_ids(v: &Value) -> Vec<String> {
    v["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["id"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn the_companion_alert_rule_comes_and_goes_with_its_rule() {
    let f = fixture().await;
    let admin = f.token(ORG, ADMIN);
    let analytics_only = f.token(ORG, &[ANALYTICS_READ, ANALYTICS_WRITE]);
    let body = json!({"sql": SQL, "sites": ["plant-1"],
        "alert": {"severity": "critical", "channels": ["ops"], "labels": {"area": "line1"}}});

    // Writing an alert needs alerts:write too.
    let denied = send_json(
        &f.app,
        "PUT",
        "/v1/analytics/rules/hot",
        Some(&analytics_only),
        &body,
    )
    .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    // A bad alert section: 400 naming it, and nothing is written.
    let mut bad = body.clone();
    bad["alert"]["channels"] = json!(["Ops Room"]);
    let refused = send_json(&f.app, "PUT", "/v1/analytics/rules/hot", Some(&admin), &bad).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(
        message(&refused).starts_with("alert.channels[0]: "),
        "{}",
        message(&refused)
    );
    assert_eq!(
        get(&f.app, "/v1/analytics/rules/hot", Some(&admin))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert!(alert_rule_ids(&get(&f.app, "/v1/alert-rules", Some(&admin)).await.json()).is_empty());

    let created = send_json(
        &f.app,
        "PUT",
        "/v1/analytics/rules/hot",
        Some(&admin),
        &body,
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.json());
    let companion = get(&f.app, "/v1/alert-rules/analytics-hot", Some(&admin)).await;
    assert_eq!(companion.status, StatusCode::OK);
    let c = companion.json();
    assert_eq!(c["condition"], json!({"kind": "analytics", "rule": "hot"}));
    assert_eq!(c["severity"], "critical");
    assert_eq!(c["notify"], json!(["ops"]));
    assert_eq!(c["labels"]["area"], "line1");
    assert_eq!(c["sites"], json!(["plant-1"]));
    let read = get(&f.app, "/v1/analytics/rules/hot", Some(&admin))
        .await
        .json();
    assert_eq!(read["alert"]["severity"], "critical");

    // Replaced with another severity: the companion follows.
    let mut warning = body.clone();
    warning["alert"]["severity"] = json!("warning");
    let put = send_json(
        &f.app,
        "PUT",
        "/v1/analytics/rules/hot",
        Some(&admin),
        &warning,
    )
    .await;
    assert_eq!(put.status, StatusCode::OK);
    assert_eq!(
        get(&f.app, "/v1/alert-rules/analytics-hot", Some(&admin))
            .await
            .json()["severity"],
        "warning"
    );
    // Replaced without an alert section: the companion goes (and that
    // needs alerts:write).
    let plain = json!({"sql": SQL, "sites": ["plant-1"]});
    let denied = send_json(
        &f.app,
        "PUT",
        "/v1/analytics/rules/hot",
        Some(&analytics_only),
        &plain,
    )
    .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    let put = send_json(
        &f.app,
        "PUT",
        "/v1/analytics/rules/hot",
        Some(&admin),
        &plain,
    )
    .await;
    assert_eq!(put.status, StatusCode::OK);
    assert_eq!(
        get(&f.app, "/v1/alert-rules/analytics-hot", Some(&admin))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert!(
        get(&f.app, "/v1/analytics/rules/hot", Some(&admin))
            .await
            .json()
            .get("alert")
            .is_none()
    );

    // Back with an alert, then the rule deleted: both gone.
    let put = send_json(
        &f.app,
        "PUT",
        "/v1/analytics/rules/hot",
        Some(&admin),
        &body,
    )
    .await;
    assert_eq!(put.status, StatusCode::OK);
    assert_eq!(
        get(&f.app, "/v1/alert-rules/analytics-hot", Some(&admin))
            .await
            .status,
        StatusCode::OK
    );
    let deleted = send(
        &f.app,
        "DELETE",
        "/v1/analytics/rules/hot",
        Some(&admin),
        &[],
        "",
    )
    .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(
        get(&f.app, "/v1/alert-rules/analytics-hot", Some(&admin))
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // A hand-written alert rule under the companion's id is not replaced:
    // 409, and the analytics rule is not written either.
    let hand = json!({"id": "analytics-cold", "condition": {"kind": "threshold", "topic": "t", "op": "<", "value": 0}});
    let made = send_json(
        &f.app,
        "PUT",
        "/v1/alert-rules/analytics-cold",
        Some(&admin),
        &hand,
    )
    .await;
    assert_eq!(made.status, StatusCode::CREATED);
    let clash = send_json(
        &f.app,
        "PUT",
        "/v1/analytics/rules/cold",
        Some(&admin),
        &body,
    )
    .await;
    assert_eq!(clash.status, StatusCode::CONFLICT, "{:?}", clash.json());
    assert_eq!(
        get(&f.app, "/v1/analytics/rules/cold", Some(&admin))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&f.app, "/v1/alert-rules/analytics-cold", Some(&admin))
            .await
            .json()["condition"]["kind"],
        "threshold"
    );
}

#[tokio::test]
async fn a_companion_that_cannot_be_written_leaves_nothing_behind() {
    let f = fixture().await;
    let admin = f.token(ORG, ADMIN);
    let js = f.nats.jetstream().await;
    let kv = js
        .get_key_value(ANALYTICS_RULES_BUCKET)
        .await
        .expect("bucket");
    // A rule without an alert; then the alert rules' bucket sealed: it
    // still reads, but takes no write.
    let plain = json!({"sql": SQL});
    let put = send_json(
        &f.app,
        "PUT",
        "/v1/analytics/rules/hot",
        Some(&admin),
        &plain,
    )
    .await;
    assert_eq!(put.status, StatusCode::CREATED, "{:?}", put.json());
    let before = kv.entry("acme.hot").await.expect("read").expect("stored");
    let bucket = format!("KV_{}", plantd_shared::streams::ALERT_RULES_BUCKET);
    let mut config = js
        .get_stream(&bucket)
        .await
        .expect("the alert rules' stream")
        .info()
        .await
        .expect("info")
        .config
        .clone();
    config.sealed = true;
    js.update_stream(config).await.expect("sealed");

    // A new rule with an alert: 503, and no rule stays behind.
    let with_alert = json!({"sql": SQL, "alert": {"severity": "critical"}});
    let put = send_json(
        &f.app,
        "PUT",
        "/v1/analytics/rules/cold",
        Some(&admin),
        &with_alert,
    )
    .await;
    assert_eq!(
        put.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        put.json()
    );
    assert!(kv.get("acme.cold").await.expect("read").is_none());
    // (It was written, then taken back: its last entry is a delete.)
    let undone = kv
        .entry("acme.cold")
        .await
        .expect("read")
        .expect("an entry");
    assert_ne!(undone.operation, async_nats::jetstream::kv::Operation::Put);
    // A replacement with an alert: 503, and the rule is as it was.
    let put = send_json(
        &f.app,
        "PUT",
        "/v1/analytics/rules/hot",
        Some(&admin),
        &with_alert,
    )
    .await;
    assert_eq!(
        put.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        put.json()
    );
    let after = kv
        .entry("acme.hot")
        .await
        .expect("read")
        .expect("still stored");
    assert_eq!(after.value, before.value);
    assert!(after.revision > before.revision, "written, then put back");
}
