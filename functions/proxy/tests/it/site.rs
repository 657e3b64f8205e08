//! Commands, service calls and telemetry through the router over a real
//! nats-server: commands land in `PLANTD_COMMANDS` with the headers the
//! edge reads; calls reach a responder on NATS (standing in for the edge)
//! and map its statuses; telemetry reads `PLANTD_TELEMETRY`.

use crate::common;

use axum::http::StatusCode;
use common::{fixture, get, send, send_json};
use futures::StreamExt as _;
use plantd_shared::headers;
use plantd_shared::streams::COMMANDS;
use serde_json::json;

#[tokio::test]
async fn a_command_is_stored_for_the_edge_with_its_headers() {
    let f = fixture().await;
    let token = f.token("acme", &["commands:plant-1:send"]);
    let a = send_json(
        &f.app,
        "POST",
        "/v1/sites/plant-1/commands",
        Some(&token),
        &json!({"topic": "line1/valve.3/set", "payload": "open", "qos": 2, "retain": true, "ttl_secs": 60}),
    )
    .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.json());
    assert_eq!(a.json()["stream"], COMMANDS);
    let seq = a.json()["sequence"].as_u64().expect("sequence");

    let js = f.nats.jetstream().await;
    let stream = js.get_stream(COMMANDS).await.expect("stream");
    let m = stream.direct_get(seq).await.expect("stored");
    assert_eq!(
        m.subject.as_str(),
        "plantd.plant-1.down.line1.valve%2E3.set"
    );
    assert_eq!(m.payload.as_ref(), b"open");
    let h = |n: &str| m.headers.get(n).map(|v| v.as_str().to_owned());
    assert_eq!(h(headers::QOS).as_deref(), Some("2"));
    assert_eq!(h(headers::RETAIN).as_deref(), Some("true"));
    assert_eq!(h(headers::TTL).as_deref(), Some("60"));
    assert!(
        h(headers::SENT)
            .and_then(|s| headers::parse_time(&s))
            .is_some()
    );

    // Bytes by base64; a wrong site permission, bad QoS or unknown field is refused.
    let b = send_json(
        &f.app,
        "POST",
        "/v1/sites/plant-1/commands",
        Some(&token),
        &json!({"topic": "t", "payload_base64": "AP8="}),
    )
    .await;
    assert_eq!(b.status, StatusCode::ACCEPTED);
    let m = stream
        .direct_get(b.json()["sequence"].as_u64().expect("seq"))
        .await
        .expect("stored");
    assert_eq!(m.payload.as_ref(), &[0u8, 255]);
    let other = send_json(
        &f.app,
        "POST",
        "/v1/sites/plant-2/commands",
        Some(&token),
        &json!({"topic": "t"}),
    )
    .await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);
    let qos = send_json(
        &f.app,
        "POST",
        "/v1/sites/plant-1/commands",
        Some(&token),
        &json!({"topic": "t", "qos": 3}),
    )
    .await;
    assert_eq!(qos.status, StatusCode::BAD_REQUEST);
    let unknown = send_json(
        &f.app,
        "POST",
        "/v1/sites/plant-1/commands",
        Some(&token),
        &json!({"topic": "t", "colour": "red"}),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    let wild = send_json(
        &f.app,
        "POST",
        "/v1/sites/plant-1/commands",
        Some(&token),
        &json!({"topic": "a/+"}),
    )
    .await;
    assert_eq!(wild.status, StatusCode::BAD_REQUEST);
}

/// Answers service requests the way the edge does (bridge/src/service.rs):
/// `echo` returns the payload with its content type, `busy` says 504,
/// `gone` says 503.
async fn fake_edge(client: async_nats::Client) -> tokio::task::JoinHandle<()> {
    let mut sub = client
        .subscribe("plantd.plant-1.svc.>")
        .await
        .expect("subscribe");
    client.flush().await.expect("flush");
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let Some(reply) = msg.reply.clone() else {
                continue;
            };
            let mut h = async_nats::HeaderMap::new();
            let payload = match msg.subject.as_str() {
                "plantd.plant-1.svc.pump.echo" => {
                    let ct = msg
                        .headers
                        .as_ref()
                        .and_then(|h| h.get(headers::CONTENT_TYPE))
                        .map(|v| v.as_str().to_owned());
                    if let Some(ct) = ct {
                        h.insert(headers::CONTENT_TYPE, ct.as_str());
                    }
                    let timeout = msg
                        .headers
                        .as_ref()
                        .and_then(|h| h.get(headers::TIMEOUT_MS))
                        .map(|v| v.as_str().to_owned());
                    h.insert("Test-Timeout-Seen", timeout.unwrap_or_default().as_str());
                    msg.payload.clone()
                }
                "plantd.plant-1.svc.pump.busy" => {
                    h.insert(headers::STATUS, "504 no answer from pump/busy");
                    bytes::Bytes::new()
                }
                _ => {
                    h.insert(headers::STATUS, "503 no device serves it");
                    bytes::Bytes::new()
                }
            };
            let _ = client.publish_with_headers(reply, h, payload).await;
        }
    })
}

#[tokio::test]
async fn service_calls_return_the_answer_or_503_504() {
    let f = fixture().await;
    let token = f.token("acme", &["services:plant-1:call"]);
    let edge = fake_edge(f.nats.client().await).await;

    let a = send(
        &f.app,
        "POST",
        "/v1/sites/plant-1/call/pump/echo?timeout_ms=2000",
        Some(&token),
        &[("content-type", "application/json")],
        r#"{"rpm": 1200}"#,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json());
    assert_eq!(a.header("content-type"), Some("application/json"));
    assert_eq!(a.json(), json!({"rpm": 1200}));

    let busy = send(
        &f.app,
        "POST",
        "/v1/sites/plant-1/call/pump/busy",
        Some(&token),
        &[],
        "",
    )
    .await;
    assert_eq!(busy.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(busy.json()["error"], "timeout");
    let gone = send(
        &f.app,
        "POST",
        "/v1/sites/plant-1/call/pump/gone",
        Some(&token),
        &[],
        "",
    )
    .await;
    assert_eq!(gone.status, StatusCode::SERVICE_UNAVAILABLE);

    // Nobody listens for plant-2 at all: NATS says no responders → 503.
    let all = f.token("acme", &["services:*:call"]);
    let none = send(
        &f.app,
        "POST",
        "/v1/sites/plant-2/call/pump/echo",
        Some(&all),
        &[],
        "x",
    )
    .await;
    assert_eq!(none.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(none.json()["error"], "no_responder");

    let forbidden = send(
        &f.app,
        "POST",
        "/v1/sites/plant-2/call/pump/echo",
        Some(&token),
        &[],
        "x",
    )
    .await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
    edge.abort();
}

#[tokio::test]
async fn a_silent_responder_times_out_with_504() {
    let f = fixture().await;
    let token = f.token("acme", &["services:plant-1:call"]);
    let client = f.nats.client().await;
    // Subscribed (so NATS has a responder) but never answers.
    let _sub = client
        .subscribe("plantd.plant-1.svc.slow")
        .await
        .expect("subscribe");
    client.flush().await.expect("flush");
    let a = send(
        &f.app,
        "POST",
        "/v1/sites/plant-1/call/slow?timeout_ms=100",
        Some(&token),
        &[],
        "",
    )
    .await;
    assert_eq!(a.status, StatusCode::GATEWAY_TIMEOUT, "{}", a.json());
}

async fn publish_telemetry(
    js: &async_nats::jetstream::Context,
    subject: &str,
    payload: &str,
) -> u64 {
    let mut h = async_nats::HeaderMap::new();
    h.insert(headers::QOS, "1");
    h.insert(headers::CONTENT_TYPE, "application/json");
    js.publish_with_headers(subject.to_owned(), h, payload.to_owned().into())
        .await
        .expect("publish")
        .await
        .expect("ack")
        .sequence
}

#[tokio::test]
async fn last_value_and_paged_history_in_both_orders() {
    let f = fixture().await;
    let token = f.token("acme", &["telemetry:plant-1:read"]);
    let js = f.nats.jetstream().await;
    for i in 0..5 {
        publish_telemetry(
            &js,
            "plantd.plant-1.up.line1.press.temp",
            &format!("{{\"t\": {i}}}"),
        )
        .await;
        publish_telemetry(
            &js,
            "plantd.plant-1.up.line2.press.temp",
            &format!("{{\"t\": {}}}", 100 + i),
        )
        .await;
        publish_telemetry(&js, "plantd.plant-2.up.line1.press.temp", "{}").await;
    }

    let last = get(
        &f.app,
        "/v1/sites/plant-1/last?topic=line1/press/temp",
        Some(&token),
    )
    .await;
    assert_eq!(last.status, StatusCode::OK, "{}", last.json());
    assert_eq!(last.json()["value"], json!({"t": 4}));
    assert_eq!(last.json()["topic"], "line1/press/temp");
    let missing = get(
        &f.app,
        "/v1/sites/plant-1/last?topic=nothing/here",
        Some(&token),
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let other_site = get(
        &f.app,
        "/v1/sites/plant-2/last?topic=line1/press/temp",
        Some(&token),
    )
    .await;
    assert_eq!(other_site.status, StatusCode::FORBIDDEN);

    // Oldest first, two per page, following cursors.
    let mut seen = Vec::new();
    let mut uri = "/v1/sites/plant-1/history?filter=line1/%23&limit=2&order=asc".to_owned();
    loop {
        let page = get(&f.app, &uri, Some(&token)).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.json());
        let v = page.json();
        for m in v["messages"].as_array().expect("messages") {
            seen.push(m["value"]["t"].as_i64().expect("t"));
        }
        match v["next_cursor"].as_str() {
            Some(c) => {
                uri = format!(
                    "/v1/sites/plant-1/history?filter=line1/%23&limit=2&order=asc&cursor={c}"
                )
            }
            None => break,
        }
        assert!(seen.len() <= 5, "pages never end: {seen:?}");
    }
    assert_eq!(seen, [0, 1, 2, 3, 4]);

    // Newest first across both lines.
    let mut seen = Vec::new();
    let mut uri = "/v1/sites/plant-1/history?filter=%2B/press/temp&limit=3".to_owned();
    loop {
        let v = get(&f.app, &uri, Some(&token)).await.json();
        for m in v["messages"].as_array().expect("messages") {
            seen.push(m["value"]["t"].as_i64().expect("t"));
        }
        match v["next_cursor"].as_str() {
            Some(c) => {
                uri = format!("/v1/sites/plant-1/history?filter=%2B/press/temp&limit=3&cursor={c}")
            }
            None => break,
        }
        assert!(seen.len() <= 10, "pages never end: {seen:?}");
    }
    assert_eq!(seen, [104, 4, 103, 3, 102, 2, 101, 1, 100, 0]);

    // A time range that ends before everything selects nothing.
    let v = get(
        &f.app,
        "/v1/sites/plant-1/history?filter=%23&to=1000",
        Some(&token),
    )
    .await
    .json();
    assert_eq!(v["messages"], json!([]));
    assert_eq!(v["next_cursor"], json!(null));
    let bad = get(
        &f.app,
        "/v1/sites/plant-1/history?filter=%23&to=yesterday",
        Some(&token),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.json()["error"], "bad_request");
}
