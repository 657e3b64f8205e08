//! The alerting API: rules (400 naming the field, 404 for another
//! organisation's), alerts with history and acknowledgement, silences,
//! permissions, and the audit trail of changes — against a real
//! nats-server with the alert engine running beside the proxy.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use common::{ORG, fixture, get, send, send_json};
use plantd_shared::claims::{ALERTS_READ, ALERTS_WRITE};
use plantd_testkit::eventually;
use plantd_trigger::Handler as _;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

fn rule() -> Value {
    json!({
        "id": "hot",
        "name": "Oven too hot",
        "severity": "critical",
        "group_by": ["topic"],
        "condition": {"kind": "threshold", "topic": "line1/+/temp", "op": ">", "value": 80}
    })
}

#[tokio::test]
async fn rules_crud_validation_and_org_scoping() {
    let f = fixture().await;
    let admin = f.token(ORG, &[ALERTS_READ, ALERTS_WRITE]);
    let other = f.token("globex", &[ALERTS_READ, ALERTS_WRITE]);
    let viewer = f.token(ORG, &[ALERTS_READ]);

    let created = send_json(&f.app, "POST", "/v1/alert-rules", Some(&admin), &rule()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.json());
    let again = send_json(&f.app, "POST", "/v1/alert-rules", Some(&admin), &rule()).await;
    assert_eq!(again.status, StatusCode::CONFLICT);

    let mut bad = rule();
    bad["for"] = json!("-5s");
    let refused = send_json(&f.app, "PUT", "/v1/alert-rules/hot", Some(&admin), &bad).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(refused.json()["message"], "for: must be ≥ 0s");
    let mut bad = rule();
    bad["condition"]["topic"] = json!("line1/#/temp");
    let refused = send_json(&f.app, "POST", "/v1/alert-rules", Some(&admin), &bad).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    let message = refused.json()["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.starts_with("condition.topic: "), "{message}");

    let mut replaced = rule();
    replaced["for"] = json!("30s");
    let put = send_json(
        &f.app,
        "PUT",
        "/v1/alert-rules/hot",
        Some(&admin),
        &replaced,
    )
    .await;
    assert_eq!(put.status, StatusCode::OK);
    assert_eq!(
        get(&f.app, "/v1/alert-rules/hot", Some(&viewer))
            .await
            .json()["for"],
        "30s"
    );

    // Another organisation sees nothing and changes nothing.
    assert_eq!(
        get(&f.app, "/v1/alert-rules/hot", Some(&other))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let listed = get(&f.app, "/v1/alert-rules", Some(&other)).await.json();
    assert_eq!(listed["rules"], json!([]));
    let deleted = send(
        &f.app,
        "DELETE",
        "/v1/alert-rules/hot",
        Some(&other),
        &[],
        "",
    )
    .await;
    assert_eq!(deleted.status, StatusCode::NOT_FOUND);

    // A viewer reads but does not write.
    let denied = send_json(&f.app, "PUT", "/v1/alert-rules/hot", Some(&viewer), &rule()).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    let listed = get(&f.app, "/v1/alert-rules", Some(&viewer)).await.json();
    assert_eq!(listed["rules"][0]["id"], "hot");

    let deleted = send(
        &f.app,
        "DELETE",
        "/v1/alert-rules/hot",
        Some(&admin),
        &[],
        "",
    )
    .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(
        get(&f.app, "/v1/alert-rules/hot", Some(&admin))
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // Each change is in the organisation's audit chain.
    let query = plantd_shared::audit::query::Query {
        org: ORG.into(),
        limit: 1000,
        ..Default::default()
    };
    let trail = plantd_shared::audit::query::read(f.state.audit.jetstream(), &query).await;
    let actions: Vec<String> = match trail {
        Ok(page) => page
            .records
            .iter()
            .map(|r| r.record.action.to_string())
            .collect(),
        Err(e) => panic!("audit: {e}"),
    };
    for want in [
        "alert.rule_create",
        "alert.rule_update",
        "alert.rule_delete",
    ] {
        assert!(actions.iter().any(|a| a == want), "{want} in {actions:?}");
    }
}

#[tokio::test]
async fn alerts_list_history_ack_and_silences() {
    let f = fixture().await;
    let admin = f.token(ORG, &[ALERTS_READ, ALERTS_WRITE]);
    let other = f.token("globex", &[ALERTS_READ, ALERTS_WRITE]);
    let created = send_json(&f.app, "POST", "/v1/alert-rules", Some(&admin), &rule()).await;
    assert_eq!(created.status, StatusCode::CREATED);

    // A silence for plant-2 only.
    let ends = (time::OffsetDateTime::now_utc() + time::Duration::hours(2))
        .format(&time::format_description::well_known::Rfc3339)
        .expect("time");
    let silence = json!({"matchers": [{"label": "site", "op": "=", "value": "plant-2"}], "ends": ends, "comment": "maintenance"});
    let made = send_json(&f.app, "POST", "/v1/silences", Some(&admin), &silence).await;
    assert_eq!(made.status, StatusCode::CREATED, "{:?}", made.json());
    let silence_id = made.json()["id"].as_str().expect("id").to_owned();
    let bad = json!({"matchers": [{"label": "site", "op": "=~", "value": "("}], "ends": ends});
    let refused = send_json(&f.app, "POST", "/v1/silences", Some(&admin), &bad).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(
        refused.json()["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("matchers[0].value")
    );
    assert_eq!(
        get(&f.app, &format!("/v1/silences/{silence_id}"), Some(&other))
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    let js = f.state.js.clone();
    let engine = plantd_alerts::Engine::new(&js, Arc::new(plantd_alerts::SystemClock))
        .await
        .expect("engine");
    let mut batch = Vec::new();
    for site in ["plant-1", "plant-2"] {
        let subject = format!("plantd.{site}.up.line1.oven.temp");
        let ack = js
            .publish(subject, "95".into())
            .await
            .expect("publish")
            .await
            .expect("stored");
        let msg = js
            .get_stream(plantd_shared::streams::TELEMETRY)
            .await
            .expect("stream")
            .get_raw_message(ack.sequence)
            .await
            .expect("message");
        batch.push(plantd_trigger::Item {
            stream: plantd_shared::streams::TELEMETRY.into(),
            sequence: ack.sequence,
            subject: msg.subject.clone(),
            headers: Default::default(),
            payload: msg.payload.clone(),
            published: msg.time,
            delivered: 1,
            replay: None,
        });
    }
    assert!(engine.handle(&batch).await.is_success());

    let alerts = get(&f.app, "/v1/alerts?state=firing", Some(&admin))
        .await
        .json();
    let list = alerts["alerts"].as_array().expect("alerts").clone();
    assert_eq!(list.len(), 2, "{alerts}");
    assert_eq!(list[0]["severity"], "critical");
    let by_site = get(&f.app, "/v1/alerts?site=plant-1", Some(&admin))
        .await
        .json();
    let id = by_site["alerts"][0]["id"].as_str().expect("id").to_owned();
    assert_eq!(
        get(&f.app, "/v1/alerts?severity=info", Some(&admin))
            .await
            .json()["alerts"],
        json!([])
    );
    assert_eq!(
        get(&f.app, "/v1/alerts", Some(&other)).await.json()["alerts"],
        json!([])
    );
    assert_eq!(
        get(&f.app, "/v1/alerts?state=nonsense", Some(&admin))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );

    // Another organisation cannot read or acknowledge it.
    assert_eq!(
        get(&f.app, &format!("/v1/alerts/{id}/history"), Some(&other))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let ack = json!({"note": "on it"});
    let uri = format!("/v1/alerts/{id}/ack");
    assert_eq!(
        send_json(&f.app, "POST", &uri, Some(&other), &ack)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let acked = send_json(&f.app, "POST", &uri, Some(&admin), &ack).await;
    assert_eq!(acked.status, StatusCode::OK, "{:?}", acked.json());
    assert_eq!(acked.json()["kind"], "ack");
    assert_eq!(acked.json()["ack"]["note"], "on it");
    assert_eq!(
        send_json(&f.app, "POST", &uri, Some(&admin), &ack)
            .await
            .status,
        StatusCode::CONFLICT
    );

    let history = eventually(WAIT, "firing and ack in the history", || async {
        let h = get(&f.app, &format!("/v1/alerts/{id}/history"), Some(&admin))
            .await
            .json();
        (h["records"].as_array().map_or(0, Vec::len) == 2).then_some(h)
    })
    .await;
    assert_eq!(history["records"][0]["to"], "firing");
    assert_eq!(history["records"][0]["silenced"], false);
    assert_eq!(history["records"][1]["kind"], "ack");

    // plant-2's firing record was made under the silence.
    let silenced = get(&f.app, "/v1/alerts?site=plant-2", Some(&admin))
        .await
        .json();
    let id2 = silenced["alerts"][0]["id"].as_str().expect("id").to_owned();
    let h2 = get(&f.app, &format!("/v1/alerts/{id2}/history"), Some(&admin))
        .await
        .json();
    assert_eq!(h2["records"][0]["silenced"], true, "{h2}");

    let listed = get(&f.app, "/v1/silences", Some(&admin)).await.json();
    assert_eq!(listed["silences"][0]["active"], true);
    let gone = send(
        &f.app,
        "DELETE",
        &format!("/v1/silences/{silence_id}"),
        Some(&other),
        &[],
        "",
    )
    .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    let gone = send(
        &f.app,
        "DELETE",
        &format!("/v1/silences/{silence_id}"),
        Some(&admin),
        &[],
        "",
    )
    .await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);
}
