//! `GET /v1/sites/{site}/aggregates` over a real nats-server: analytics
//! results stored in `PLANTD_AGGREGATES` as the engine stores them (one
//! message per rule, key, window and revision, with its message id); the
//! route shows the latest revision of each window, in window order, paged,
//! and only for the caller's organisation's sites.

use crate::common;

use std::collections::BTreeSet;

use async_nats::jetstream::Context;
use axum::http::StatusCode;
use common::{fixture, get};
use plantd_shared::streams::AGGREGATES;
use serde_json::{Value, json};

/// Stores one result as the engine does.
async fn store(
    js: &Context,
    site: &str,
    rule: &str,
    key: &str,
    start: u64,
    revision: u64,
    avg: f64,
) {
    let doc = json!({
        "rule": rule, "key": key,
        "window_start": start, "window_end": start + 60_000,
        "revision": revision,
        "values": {"avg_value": avg, "count": revision + 1},
        "dropped_late": revision,
    });
    let mut h = async_nats::HeaderMap::new();
    h.insert(
        "Nats-Msg-Id",
        format!("{rule}:{key}:{start}:{revision}").as_str(),
    );
    let key_token = key.replace('/', "_");
    js.publish_with_headers(
        format!("plantd.{site}.agg.{rule}.{key_token}"),
        h,
        doc.to_string().into(),
    )
    .await
    .expect("publish")
    .await
    .expect("stored");
}

fn windows(page: &Value) -> Vec<(u64, String, String, u64)> {
    page["aggregates"]
        .as_array()
        .expect("aggregates")
        .iter()
        .map(|a| {
            (
                a["window_start"].as_u64().expect("start"),
                a["rule"].as_str().expect("rule").to_owned(),
                a["key"].as_str().expect("key").to_owned(),
                a["revision"].as_u64().expect("revision"),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_latest_revision_of_each_window_paged() {
    let f = fixture().await;
    let token = f.token("acme", &["telemetry:plant-1:read"]);
    let js = f.nats.jetstream().await;
    assert!(js.get_stream(AGGREGATES).await.is_ok(), "ensure creates it");
    for start in [0, 60_000, 120_000] {
        store(&js, "plant-1", "temp_avg", "line1/temp", start, 0, 20.0).await;
        store(&js, "plant-1", "temp_avg", "line2/temp", start, 0, 30.0).await;
    }
    store(&js, "plant-1", "press_max", "line1/press", 60_000, 0, 7.0).await;
    // Late readings: window 60 000 of line1 revised twice, the second
    // revision arriving after the third.
    store(&js, "plant-1", "temp_avg", "line1/temp", 60_000, 2, 22.0).await;
    store(&js, "plant-1", "temp_avg", "line1/temp", 60_000, 1, 21.0).await;
    // A resend of a stored revision is dropped by its message id.
    store(&js, "plant-1", "temp_avg", "line1/temp", 0, 0, 99.0).await;
    // Not a result; another site.
    js.publish("plantd.plant-1.agg.temp_avg.junk", "nope".into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    store(&js, "plant-2", "temp_avg", "line1/temp", 0, 0, 1.0).await;

    let a = get(
        &f.app,
        "/v1/sites/plant-1/aggregates?rule=temp_avg&key=line1/temp",
        Some(&token),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json());
    let page = a.json();
    assert_eq!(
        windows(&page),
        vec![
            (0, "temp_avg".into(), "line1/temp".into(), 0),
            (60_000, "temp_avg".into(), "line1/temp".into(), 2),
            (120_000, "temp_avg".into(), "line1/temp".into(), 0),
        ]
    );
    let revised = &page["aggregates"][1];
    assert_eq!(revised["values"]["avg_value"], 22.0);
    assert_eq!(revised["superseded"], 2);
    assert_eq!(revised["dropped_late"], 2);
    assert_eq!(revised["window_end"], 120_000);
    assert_eq!(
        page["aggregates"][0]["values"]["avg_value"], 20.0,
        "the resend was dropped"
    );
    assert_eq!(page["skipped"], 1);
    assert_eq!(page["next_cursor"], Value::Null);

    // Window times select by window start.
    let mid = get(
        &f.app,
        "/v1/sites/plant-1/aggregates?from=60000&to=60000",
        Some(&token),
    )
    .await
    .json();
    assert_eq!(
        windows(&mid),
        vec![
            (60_000, "press_max".into(), "line1/press".into(), 0),
            (60_000, "temp_avg".into(), "line1/temp".into(), 2),
            (60_000, "temp_avg".into(), "line2/temp".into(), 0),
        ]
    );

    // Pages of 2 over the whole site: every window once, in order.
    let mut seen = Vec::new();
    let mut uri = "/v1/sites/plant-1/aggregates?limit=2".to_owned();
    loop {
        let page = get(&f.app, &uri, Some(&token)).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.json());
        let page = page.json();
        let got = windows(&page);
        assert!(got.len() <= 2);
        seen.extend(got);
        match page["next_cursor"].as_str() {
            Some(c) => {
                uri = format!(
                    "/v1/sites/plant-1/aggregates?limit=2&cursor={}",
                    urlencode(c)
                );
            }
            None => break,
        }
    }
    assert_eq!(seen.len(), 7, "{seen:?}");
    let unique: BTreeSet<_> = seen
        .iter()
        .map(|w| (w.0, w.1.clone(), w.2.clone()))
        .collect();
    assert_eq!(unique.len(), 7);
    assert!(
        seen.windows(2)
            .all(|w| (w[0].0, &w[0].1, &w[0].2) < (w[1].0, &w[1].1, &w[1].2))
    );
    assert!(seen.contains(&(60_000, "temp_avg".into(), "line1/temp".into(), 2)));
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn another_organisations_site_and_bad_parameters_are_refused() {
    let f = fixture().await;
    f.register_site("globex", "globex-1").await;
    let js = f.nats.jetstream().await;
    store(&js, "globex-1", "r", "k", 0, 0, 1.0).await;
    let acme = f.token("acme", &["telemetry:*:read"]);
    let a = get(&f.app, "/v1/sites/globex-1/aggregates", Some(&acme)).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.json());
    let globex = f.token("globex", &["telemetry:*:read"]);
    let own = get(&f.app, "/v1/sites/globex-1/aggregates", Some(&globex)).await;
    assert_eq!(own.status, StatusCode::OK);
    assert_eq!(windows(&own.json()).len(), 1);
    for (query, named) in [
        ("cursor=garbage", "cursor"),
        ("from=yesterday", "from"),
        ("to=soon", "to"),
        ("limit=-1", "limit"),
        ("rule=", "rule"),
        ("window=1", "window"),
    ] {
        let a = get(
            &f.app,
            &format!("/v1/sites/plant-1/aggregates?{query}"),
            Some(&acme),
        )
        .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{query}: {}", a.json());
        let message = a.json()["message"].as_str().unwrap_or_default().to_owned();
        assert!(
            message.contains(named),
            "{query}: {message:?} does not name {named}"
        );
    }
}
