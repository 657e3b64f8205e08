//! `GET /v1/sites/{site}/health` over a real nats-server: the status an
//! edge puts in `plantd_site_status` (written here exactly as
//! `plantd_edge::status` writes it; the edge itself publishing it is
//! `plantd-cli`'s `site_health` test), judged by its age — connected while
//! fresh, not connected after three intervals or once it says stopped —
//! the uplink lag growing while nobody hears from the edge, alerts firing
//! from the alert manager's state, and the organisation and permission
//! checks.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use common::{ORG, fixture, get, send_json};
use plantd_shared::claims::{ALERTS_READ, ALERTS_WRITE};
use plantd_shared::site_status::{Backlog, EdgeInfo, LinkState, SiteStatus, Uplink};
use plantd_shared::streams::{SITE_STATUS_BUCKET, TELEMETRY};
use plantd_testkit::eventually;
use plantd_trigger::Handler as _;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

fn now_ms() -> u64 {
    u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .expect("after 1970")
}

fn status(state: LinkState, interval_ms: u64) -> SiteStatus {
    let now = now_ms();
    SiteStatus {
        site: "plant-1".into(),
        edge: EdgeInfo {
            id: "journal-1".into(),
            version: "9.9.9".into(),
            holder: "host edge-1, pid 7, data dir /var/lib/plantd".into(),
            started_ms: now - 60_000,
        },
        at_ms: now,
        interval_ms,
        clients: 3,
        last_message_ms: Some(now - 2_000),
        backlog: Backlog {
            messages: 42,
            journal_bytes: 4096,
            journal_max_bytes: 1 << 30,
            lag_ms: 5_000,
            blocked: false,
        },
        uplink: Uplink {
            state,
            since_ms: now - 10_000,
            last_ack_ms: Some(now - 11_000),
            last_error: Some("no responders".into()),
        },
    }
}

async fn put(f: &common::Fixture, s: &SiteStatus) {
    f.nats
        .jetstream()
        .await
        .get_key_value(SITE_STATUS_BUCKET)
        .await
        .expect("the bucket plantd streams creates")
        .put(s.site.as_str(), serde_json::to_vec(s).expect("json").into())
        .await
        .expect("put");
}

async fn health(f: &common::Fixture, token: &str) -> Value {
    let r = get(&f.app, "/v1/sites/plant-1/health", Some(token)).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    r.json()
}

#[tokio::test]
async fn an_edge_is_connected_while_its_status_is_fresh_and_not_once_it_is_stale_or_stopped() {
    let f = fixture().await;
    let viewer = f.token(ORG, &["telemetry:plant-1:read", ALERTS_READ]);

    // Never heard from: not connected, nothing else made up.
    let h = health(&f, &viewer).await;
    assert_eq!(h["connected"], false, "{h}");
    assert!(h["last_seen"].is_null() && h["edge"].is_null(), "{h}");
    assert_eq!(h["alerts"]["firing"], 0, "{h}");

    // A status as the edge puts it, every 400 ms: connected, its figures.
    put(&f, &status(LinkState::Down, 400)).await;
    let h = health(&f, &viewer).await;
    assert_eq!(h["connected"], true, "{h}");
    assert!(
        h["status_age_ms"].as_u64().is_some_and(|a| a < 1_200),
        "{h}"
    );
    let e = &h["edge"];
    assert_eq!(e["id"], "journal-1");
    assert_eq!(e["version"], "9.9.9");
    assert_eq!(e["clients"], 3);
    assert_eq!(e["uplink"]["state"], "down");
    assert_eq!(e["uplink"]["last_error"], "no responders");
    assert_eq!(e["backlog"]["messages"], 42);
    assert_eq!(e["backlog"]["journal_bytes"], 4096);
    assert_eq!(e["backlog"]["lag_ms"], 5_000);
    assert!(
        e["last_message_age_ms"]
            .as_u64()
            .is_some_and(|a| (2_000..3_000).contains(&a)),
        "{h}"
    );

    // No status for three intervals: not connected, and the oldest message
    // in the backlog keeps ageing.
    let stale = eventually(WAIT, "the site shows not connected", || async {
        let h = health(&f, &viewer).await;
        (h["connected"] == false).then_some(h)
    })
    .await;
    assert!(
        stale["status_age_ms"].as_u64().is_some_and(|a| a >= 1_200),
        "{stale}"
    );
    assert!(
        stale["edge"]["backlog"]["lag_ms"]
            .as_u64()
            .is_some_and(|l| l >= 6_200),
        "{stale}"
    );

    // Back: connected again. A clean stop says so at once.
    put(&f, &status(LinkState::Up, 60_000)).await;
    assert_eq!(health(&f, &viewer).await["connected"], true);
    put(&f, &status(LinkState::Stopped, 60_000)).await;
    let h = health(&f, &viewer).await;
    assert_eq!(h["connected"], false, "{h}");
    assert_eq!(h["edge"]["uplink"]["state"], "stopped");
    assert_eq!(h["edge"]["clients"], 0, "a stopped edge has no clients");
}

#[tokio::test]
async fn health_lists_the_sites_firing_alerts_and_checks_the_organisation() {
    let f = fixture().await;
    let admin = f.token(ORG, &["telemetry:*:read", ALERTS_READ, ALERTS_WRITE]);
    let rule = json!({
        "id": "hot",
        "name": "Oven too hot",
        "severity": "critical",
        "group_by": ["topic"],
        "condition": {"kind": "threshold", "topic": "line1/+/temp", "op": ">", "value": 80}
    });
    let created = send_json(&f.app, "POST", "/v1/alert-rules", Some(&admin), &rule).await;
    assert_eq!(created.status, StatusCode::CREATED);

    // Two ovens too hot on plant-1, one on plant-2, through the alert engine.
    let js = f.state.js.clone();
    let engine = plantd_alerts::Engine::new(&js, Arc::new(plantd_alerts::SystemClock))
        .await
        .expect("engine");
    let mut batch = Vec::new();
    for (site, oven) in [("plant-1", "a"), ("plant-1", "b"), ("plant-2", "a")] {
        let subject = format!("plantd.{site}.up.line1.{oven}.temp");
        let ack = js
            .publish(subject, "95".into())
            .await
            .expect("publish")
            .await
            .expect("stored");
        let msg = js
            .get_stream(TELEMETRY)
            .await
            .expect("stream")
            .get_raw_message(ack.sequence)
            .await
            .expect("message");
        batch.push(plantd_trigger::Item {
            stream: TELEMETRY.into(),
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

    let h = health(&f, &admin).await;
    let alerts = &h["alerts"];
    assert_eq!(alerts["firing"], 2, "{h}");
    assert_eq!(alerts["critical"], 2, "{h}");
    let list = alerts["list"].as_array().expect("list");
    assert!(
        list.iter()
            .all(|a| a["rule"] == "hot" && a["severity"] == "critical")
    );
    assert!(list.iter().all(|a| a["firing_since"].is_string()));

    // Without alerts:read the health comes without alerts, saying why.
    let viewer = f.token(ORG, &["telemetry:plant-1:read"]);
    let h = health(&f, &viewer).await;
    assert!(h["alerts"].is_null(), "{h}");
    assert!(
        h["alerts_note"]
            .as_str()
            .is_some_and(|n| n.contains(ALERTS_READ)),
        "{h}"
    );

    // Another organisation's site, an unregistered one, a missing
    // permission, a bad name.
    let other = f.token("globex", &["telemetry:*:read", ALERTS_READ]);
    let r = get(&f.app, "/v1/sites/plant-1/health", Some(&other)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.json());
    let r = get(&f.app, "/v1/sites/nowhere/health", Some(&admin)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = get(&f.app, "/v1/sites/plant-2/health", Some(&viewer)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = get(&f.app, "/v1/sites/a.b/health", Some(&admin)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = get(&f.app, "/v1/sites/plant-1/health", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}
