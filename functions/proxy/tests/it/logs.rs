//! `/v1/logs`, `/v1/logs/stats`, `/v1/logs/aggregates` and the `tail`
//! operation of `/v1/ws` against a real nats-server, with a log index
//! following `PLANTD_LOGS`: answers filtered by the query language, a bad
//! filter is a 400 naming the position, another organisation's site and
//! the `_plantd` pseudo-site outside the bootstrap organisation are
//! refused, no index here is a 503.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use common::{Fixture, ORG, Ws, connect_ws, fixture, get, serve};
use futures::{SinkExt as _, StreamExt as _};
use plantd_logger::{IndexSettings, LogIndex, Logger, follow};
use plantd_shared::streams;
use plantd_testkit::eventually;
use plantd_trigger::{ConsumerSettings, Trigger};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const READ: &[&str] = &["telemetry:*:read"];

async fn publish(f: &Fixture, subject: &str, line: &str) {
    f.state
        .js
        .publish(subject.to_owned(), line.to_owned().into())
        .await
        .expect("publish")
        .await
        .expect("stored");
}

/// The fixture with a log index following the stream, holding `lines`.
async fn with_index(lines: usize) -> (Fixture, Arc<LogIndex>, tokio::task::JoinHandle<()>) {
    let mut f = fixture().await;
    f.register_site("globex", "other-1").await;
    let index = Arc::new(LogIndex::new(IndexSettings::default()));
    let task = follow(index.clone(), f.state.js.clone());
    f.state.logs = Some(index.clone());
    f.app = plantd_proxy::app(f.state.clone());
    eventually(
        Duration::from_secs(20),
        "the index holds the lines",
        || async { (index.len() == lines).then_some(()) },
    )
    .await;
    (f, index, task)
}

async fn seed(f: &Fixture) {
    publish(
        f,
        "plantd.plant-1.log.line1.plc",
        r#"{"level":"error","msg":"overheat","temp":91}"#,
    )
    .await;
    publish(
        f,
        "plantd.plant-1.log.line1.plc",
        r#"{"level":"info","msg":"cycle done","temp":60}"#,
    )
    .await;
    publish(
        f,
        "plantd.plant-1.log.gw",
        "{\"level\":\"error\",\"msg\":\"cut",
    )
    .await;
    publish(f, "plantd.plant-2.log.gw", "ERROR overheat elsewhere").await;
    publish(f, "plantd.other-1.log.gw", "ERROR overheat at globex").await;
    publish(
        f,
        "plantd._plantd.log.plantd.proxy",
        "WARN audit append slow",
    )
    .await;
}

fn messages(v: &Value) -> Vec<String> {
    v["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| r["message"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn logs_are_read_filtered_and_paged() {
    let (f, index, task) = with_index(0).await;
    seed(&f).await;
    let token = f.token(ORG, READ);
    // Without an index in this process: 503 saying so.
    let mut without = f.state.clone();
    without.logs = None;
    let a = get(
        &plantd_proxy::app(without),
        "/v1/logs?site=plant-1",
        Some(&token),
    )
    .await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        a.json()["message"]
            .as_str()
            .unwrap_or("")
            .contains("log index not running here")
    );
    eventually(Duration::from_secs(20), "the seed indexed", || async {
        (index.len() == 6).then_some(())
    })
    .await;
    let a = get(
        &f.app,
        "/v1/logs?site=plant-1&filter=%7C%3D%20%22overheat%22",
        Some(&token),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json());
    assert_eq!(messages(&a.json()), vec!["overheat"], "plant-1 only");
    let a = get(
        &f.app,
        "/v1/logs?site=plant-1&filter=%7C%20temp%20%3E%2050&limit=1",
        Some(&token),
    )
    .await;
    let page = a.json();
    assert_eq!(page["records"][0]["fields"]["temp"], 60, "newest first");
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let a = get(
        &f.app,
        &format!("/v1/logs?site=plant-1&filter=%7C%20temp%20%3E%2050&limit=1&cursor={cursor}"),
        Some(&token),
    )
    .await;
    assert_eq!(a.json()["records"].as_array().map(Vec::len), Some(1));
    assert_eq!(a.json()["next_cursor"], Value::Null);
    // Level and source parameters; the malformed line is found as text.
    let a = get(
        &f.app,
        "/v1/logs?site=plant-1&source=gw&direction=forward",
        Some(&token),
    )
    .await;
    let page = a.json();
    assert_eq!(messages(&page).len(), 1);
    assert!(
        page["records"][0]["parse_error"]
            .as_str()
            .unwrap_or("")
            .starts_with("invalid JSON")
    );
    let a = get(
        &f.app,
        "/v1/logs?site=plant-1&level=error&source=line1/*",
        Some(&token),
    )
    .await;
    assert_eq!(messages(&a.json()), vec!["overheat"]);

    // A filter error names its position.
    let a = get(
        &f.app,
        "/v1/logs?site=plant-1&filter=%7C%3D%20overheat",
        Some(&token),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let msg = a.json()["message"].as_str().unwrap_or("").to_owned();
    assert!(
        msg.contains("filter") && msg.contains("position 3"),
        "{msg}"
    );
    for (uri, field) in [
        ("/v1/logs?site=plant-1&level=loud", "level"),
        ("/v1/logs?site=plant-1&from=yesterday", "from"),
        ("/v1/logs?site=plant-1&limit=0", "limit"),
        ("/v1/logs?site=plant-1&cursor=zz", "cursor"),
        ("/v1/logs", "site"),
    ] {
        let a = get(&f.app, uri, Some(&token)).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(
            a.json()["message"].as_str().unwrap_or("").contains(field),
            "{uri}: {:?}",
            a.json()
        );
    }

    // Counts over time for a chart.
    let a = get(
        &f.app,
        "/v1/logs/stats?site=plant-1&by=level&step=1h&fn=count_over_time",
        Some(&token),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json());
    let series = a.json()["series"].as_array().cloned().unwrap_or_default();
    let sum = |level: &str| -> f64 {
        series
            .iter()
            .filter(|s| s["labels"]["level"] == level)
            .flat_map(|s| s["points"].as_array().cloned().unwrap_or_default())
            .map(|p| p["value"].as_f64().unwrap_or(0.0))
            .sum()
    };
    // The malformed line has no level it could read: info.
    assert_eq!((sum("error"), sum("info")), (1.0, 2.0));
    task.abort();
}

#[tokio::test]
async fn other_organisations_and_the_platform_site_are_refused() {
    let (f, _index, task) = with_index(0).await;
    seed(&f).await;
    let acme = f.token(ORG, READ);
    let a = get(&f.app, "/v1/logs?site=other-1", Some(&acme)).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = get(&f.app, "/v1/logs/stats?site=other-1", Some(&acme)).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = get(&f.app, "/v1/logs/aggregates?site=other-1", Some(&acme)).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = get(&f.app, "/v1/logs?site=nowhere", Some(&acme)).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = get(&f.app, "/v1/logs?site=plant-1", Some(&f.token(ORG, &[]))).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "no read permission");
    // The pseudo-site of plantd's own components: the bootstrap org only.
    let a = get(&f.app, "/v1/logs?site=_plantd", Some(&acme)).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let bootstrap = f.token(plantd_shared::sites::BOOTSTRAP_ORG, READ);
    let got = eventually(Duration::from_secs(20), "the platform line", || async {
        let a = get(&f.app, "/v1/logs?site=_plantd", Some(&bootstrap)).await;
        (a.status == StatusCode::OK && !messages(&a.json()).is_empty()).then(|| a.json())
    })
    .await;
    assert_eq!(messages(&got), vec!["audit append slow"]);
    // And the filter's own selector cannot reach another site.
    let a = get(
        &f.app,
        "/v1/logs?site=plant-1&filter=%7Bsite%3D%22other-1%22%7D",
        Some(&acme),
    )
    .await;
    assert_eq!(messages(&a.json()), Vec::<String>::new());
    task.abort();
}

#[tokio::test]
async fn only_the_superadmin_reads_every_site_and_that_read_is_audited() {
    let (f, _index, task) = with_index(0).await;
    seed(&f).await;
    let a = get(&f.app, "/v1/logs", Some(&f.token(ORG, READ))).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{:?}", a.json());
    let root = f.superadmin_token();
    let got = eventually(
        Duration::from_secs(20),
        "lines of both organisations",
        || async {
            let a = get(&f.app, "/v1/logs", Some(&root)).await;
            let sites: std::collections::BTreeSet<String> = a.json()["records"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["site"].as_str().map(str::to_owned))
                .collect();
            (sites.contains("plant-1") && sites.contains("other-1")).then_some(sites)
        },
    )
    .await;
    assert!(got.contains("other-1"), "{got:?}");
    let trail = plantd_shared::audit::read(
        &f.nats.jetstream().await,
        &plantd_shared::audit::Query {
            org: plantd_shared::sites::BOOTSTRAP_ORG.into(),
            action: Some("site.cross_org".into()),
            limit: 100,
            ..plantd_shared::audit::Query::default()
        },
    )
    .await
    .expect("read the trail")
    .records;
    assert!(
        !trail.is_empty(),
        "the every-site read is in the superadmin's chain"
    );
    assert!(
        trail
            .iter()
            .all(|c| c.record.actor == "root" && c.record.target == "site:*"),
        "{trail:#?}"
    );
    task.abort();
}

#[tokio::test]
async fn aggregates_are_read_per_minute() {
    let (f, _index, task) = with_index(0).await;
    let mut trigger = Trigger::new(f.state.js.clone());
    let logger = plantd_logger::Aggregates::open(&f.state.js, Default::default())
        .await
        .expect("bucket");
    trigger
        .bind(
            plantd_logger::FUNCTION,
            streams::LOGS,
            Arc::new(Logger::new(0).with_aggregates(logger)),
            ConsumerSettings::default(),
        )
        .await
        .expect("bind");
    for i in 0..5 {
        publish(
            &f,
            "plantd.plant-1.log.pump",
            &format!("ERROR pump {i} tripped"),
        )
        .await;
    }
    let token = f.token(ORG, READ);
    let got = eventually(Duration::from_secs(20), "5 lines aggregated", || async {
        let a = get(&f.app, "/v1/logs/aggregates?site=plant-1", Some(&token)).await;
        let v = a.json();
        let total: u64 = v["minutes"]
            .as_array()?
            .iter()
            .map(|m| m["total"].as_u64().unwrap_or(0))
            .sum();
        (total == 5).then_some(v)
    })
    .await;
    let minute = &got["minutes"][0];
    assert_eq!(minute["patterns"][0]["pattern"], "pump <num> tripped");
    assert_eq!(
        minute["counts"][0],
        json!({"source": "pump", "level": "error", "count": 5})
    );
    let a = get(
        &f.app,
        "/v1/logs/aggregates?site=plant-1&from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z",
        Some(&token),
    )
    .await;
    assert_eq!(
        a.status,
        StatusCode::BAD_REQUEST,
        "a month is over the limit"
    );
    trigger.shutdown().await;
    task.abort();
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into()))
        .await
        .expect("send");
}

/// The next JSON text frame (the timeout only turns a hang into a failure).
async fn next(ws: &mut Ws) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s")
            .expect("socket open")
            .expect("frame");
        if let Message::Text(t) = frame {
            return serde_json::from_str(t.as_str()).expect("JSON");
        }
    }
}

#[tokio::test]
async fn a_socket_tails_a_sites_logs_with_a_filter() {
    let (f, _index, task) = with_index(0).await;
    let (addr, server) = serve(&f).await;
    let mut ws = connect_ws(addr, &f.token(ORG, READ)).await;
    send(
        &mut ws,
        json!({"op": "tail", "id": "t1", "site": "other-1"}),
    )
    .await;
    let refused = next(&mut ws).await;
    assert_eq!(
        (refused["op"].as_str(), refused["error"].as_str()),
        (Some("error"), Some("forbidden"))
    );
    send(&mut ws, json!({"op": "tail", "id": "t1", "site": "plant-1", "filter": "|= \"overheat\"", "level": "warn"})).await;
    send(
        &mut ws,
        json!({"op": "tail", "id": "t2", "site": "plant-1", "filter": "|= \"oops"}),
    )
    .await;
    assert_eq!(next(&mut ws).await, json!({"op": "tailing", "id": "t1"}));
    let bad = next(&mut ws).await;
    assert!(
        bad["message"].as_str().unwrap_or("").contains("position 3"),
        "{bad}"
    );
    publish(&f, "plantd.plant-1.log.line1.plc", "WARN all fine").await;
    publish(
        &f,
        "plantd.plant-1.log.line1.plc",
        "INFO overheat (info only)",
    )
    .await;
    publish(
        &f,
        "plantd.plant-2.log.line1.plc",
        "ERROR overheat elsewhere",
    )
    .await;
    publish(
        &f,
        "plantd.plant-1.log.line1.plc",
        r#"{"level":"error","msg":"overheat","temp":95}"#,
    )
    .await;
    let got = next(&mut ws).await;
    assert_eq!(
        (got["op"].as_str(), got["id"].as_str()),
        (Some("log"), Some("t1"))
    );
    let r = &got["record"];
    assert_eq!(
        (
            r["site"].as_str(),
            r["source"].as_str(),
            r["level"].as_str()
        ),
        (Some("plant-1"), Some("line1/plc"), Some("error"))
    );
    assert_eq!(r["fields"]["temp"], 95);
    send(&mut ws, json!({"op": "unsubscribe", "id": "t1"})).await;
    assert_eq!(
        next(&mut ws).await,
        json!({"op": "unsubscribed", "id": "t1"})
    );
    server.abort();
    task.abort();
}

/// [`publish`], returning the line's sequence in `PLANTD_LOGS`.
async fn store(f: &Fixture, subject: &str, line: &str) -> u64 {
    f.state
        .js
        .publish(subject.to_owned(), line.to_owned().into())
        .await
        .expect("publish")
        .await
        .expect("stored")
        .sequence
}

/// The next `log` frame's record: (sequence, message).
async fn logged(ws: &mut Ws) -> (u64, String) {
    let got = next(ws).await;
    assert_eq!(got["op"], "log", "{got}");
    let r = &got["record"];
    assert_eq!(r["stream"], "PLANTD_LOGS", "{got}");
    (
        r["sequence"].as_u64().expect("a sequence"),
        r["message"].as_str().expect("a message").to_owned(),
    )
}

#[tokio::test]
async fn a_sequenced_tail_resumes_after_a_reconnect_without_a_gap_or_a_repeat() {
    let (f, _index, task) = with_index(0).await;
    let (addr, server) = serve(&f).await;
    let subject = "plantd.plant-1.log.line1.plc";
    let s1 = store(&f, subject, "ERROR first").await;
    store(&f, subject, "INFO not an error").await;
    store(&f, "plantd.plant-2.log.line1.plc", "ERROR another site").await;
    let s3 = store(&f, subject, "ERROR second").await;

    let mut ws = connect_ws(addr, &f.token(ORG, READ)).await;
    send(
        &mut ws,
        json!({"op": "tail", "id": "t", "site": "plant-1", "level": "error", "from_sequence": 0}),
    )
    .await;
    assert_eq!(next(&mut ws).await["error"], "bad_request");
    send(
        &mut ws,
        json!({"op": "tail", "id": "t", "site": "plant-1", "level": "error", "from_sequence": s1}),
    )
    .await;
    assert_eq!(
        next(&mut ws).await,
        json!({"op": "tailing", "id": "t", "from_sequence": s1})
    );
    assert_eq!(logged(&mut ws).await, (s1, "first".to_owned()));
    assert_eq!(logged(&mut ws).await, (s3, "second".to_owned()));
    drop(ws);

    // Logged while the client is away.
    let s4 = store(&f, subject, "ERROR third").await;
    let s5 = store(&f, subject, "ERROR fourth").await;
    let mut ws = connect_ws(addr, &f.token(ORG, READ)).await;
    send(&mut ws, json!({"op": "tail", "id": "t", "site": "plant-1", "level": "error", "from_sequence": s3 + 1})).await;
    assert_eq!(next(&mut ws).await["op"], "tailing");
    assert_eq!(logged(&mut ws).await, (s4, "third".to_owned()));
    assert_eq!(logged(&mut ws).await, (s5, "fourth".to_owned()));
    // And on, as lines come.
    let s6 = store(&f, subject, "ERROR fifth").await;
    assert_eq!(logged(&mut ws).await, (s6, "fifth".to_owned()));
    server.abort();
    task.abort();
}
