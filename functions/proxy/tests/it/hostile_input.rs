//! Query strings an outside tester sends to make the proxy allocate
//! without bound or panic: extreme, negative and overflowing numbers,
//! huge limits, times at the ends of the range. Each must be a 4xx (or an
//! answer), never a 5xx nor a panic of the request (which `oneshot`
//! would surface as a failed test). And command fields that cannot be a
//! NATS header value (a CR or LF), which async-nats refuses by panicking:
//! a panic that ended the request, the socket with all its subscriptions,
//! or — on Lambda, where the proxy aborts on a panic — the instance.

use crate::common;

use std::time::Duration;

use axum::http::StatusCode;
use common::{connect_ws, fixture, get, send_json, serve};
use futures::{SinkExt as _, StreamExt as _};
use plantd_shared::headers;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const MAX: &str = "18446744073709551615";
/// 9999-12-31T23:59:59.999Z, the latest time a query may name.
const YEAR_9999: u64 = plantd_shared::headers::MAX_QUERY_TIME_MS;

#[tokio::test]
async fn extreme_query_parameters_are_refused_or_answered_never_a_failure() {
    let f = fixture().await;
    let js = f.nats.jetstream().await;
    for v in ["1", "2.5", "3"] {
        js.publish("plantd.plant-1.up.line1.temp", v.into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }
    let token = f.token(common::ORG, &["*"]);
    let probes = [
        format!("/v1/sites/plant-1/history?filter=%23&limit={MAX}"),
        "/v1/sites/plant-1/history?filter=%23&limit=-1".to_owned(),
        "/v1/sites/plant-1/history?filter=%23&limit=0".to_owned(),
        format!("/v1/sites/plant-1/history?filter=%23&from={MAX}&to={MAX}"),
        format!("/v1/sites/plant-1/history?filter=%23&from=0&to={MAX}&order=asc"),
        "/v1/sites/plant-1/history?filter=%23&from=-5".to_owned(),
        "/v1/sites/plant-1/history?filter=%23&from=9999-12-31T23:59:59Z".to_owned(),
        format!("/v1/sites/plant-1/history?filter=%23&cursor={MAX}"),
        "/v1/sites/plant-1/history?filter=%23&cursor=%FF%FE".to_owned(),
        format!("/v1/sites/plant-1/series?topic=line1/temp&buckets={MAX}"),
        format!("/v1/sites/plant-1/series?topic=line1/temp&from=0&to={MAX}"),
        format!("/v1/sites/plant-1/series?topic=line1/temp&from={MAX}&to={MAX}"),
        format!("/v1/sites/plant-1/series?topic=line1/temp&from=0&to={MAX}&agg=lttb&buckets=10000"),
        format!(
            "/v1/sites/plant-1/series?topic=line1/temp&from=0&to={YEAR_9999}&agg=lttb&buckets=10000"
        ),
        format!("/v1/sites/plant-1/series?topic=line1/temp&from=0&to={YEAR_9999}&buckets=10000"),
        format!("/v1/sites/plant-1/history?filter=%23&from=0&to={YEAR_9999}&order=asc"),
        format!("/v1/sites/plant-1/aggregates?from=0&to={YEAR_9999}"),
        format!("/v1/logs/stats?site=plant-1&from=0&to={YEAR_9999}&step=1ms"),
        format!("/v1/logs/aggregates?site=plant-1&from=0&to={YEAR_9999}"),
        format!(
            "/v1/sites/plant-1/series?topic=line1/temp&field={}",
            "a.".repeat(5000)
        ),
        format!("/v1/sites/plant-1/aggregates?limit={MAX}"),
        format!("/v1/sites/plant-1/aggregates?from=0&to={MAX}"),
        format!("/v1/sites/plant-1/aggregates?cursor={MAX}"),
        format!("/v1/sites/plant-1/commands?limit={MAX}"),
        "/v1/sites/plant-1/commands?limit=-1".to_owned(),
        format!("/v1/sites/plant-1/commands/{MAX}"),
        "/v1/sites/plant-1/last?topic=line1/temp".to_owned(),
        format!("/v1/logs?site=plant-1&limit={MAX}"),
        format!("/v1/logs?site=plant-1&from=-{MAX}&to={MAX}"),
        "/v1/logs?site=plant-1&from=-9223372036854775808".to_owned(),
        format!("/v1/logs/stats?site=plant-1&from=0&to={MAX}&step=1ms"),
        "/v1/logs/stats?site=plant-1&from=-9223372036854775808&to=9223372036854775807&step=1ms"
            .to_owned(),
        format!("/v1/logs/aggregates?site=plant-1&from=0&to={MAX}&top={MAX}"),
        "/v1/logs/aggregates?site=plant-1&from=-9223372036854775808&to=9223372036854775807"
            .to_owned(),
        format!("/v1/state/scope/key/history?x={}", "y".repeat(10_000)),
        // As deep as 4 KiB of filter nests: parsed before anything else.
        format!("/v1/logs?site=plant-1&filter=%7C{}", "%28".repeat(4090)),
        format!(
            "/v1/logs/stats?site=plant-1&filter=%7C{}a%3D1{}",
            "%28".repeat(2040),
            "%29".repeat(2040)
        ),
    ];
    for uri in &probes {
        eprintln!("probing {uri}");
        let a = get(&f.app, uri, Some(&token)).await;
        eprintln!(
            "  -> {} {}",
            a.status,
            a.json().to_string().chars().take(150).collect::<String>()
        );
        assert!(
            a.status.is_client_error()
                || a.status.is_success()
                || a.status == StatusCode::SERVICE_UNAVAILABLE && uri.starts_with("/v1/logs?")
                || a.status == StatusCode::SERVICE_UNAVAILABLE && uri.starts_with("/v1/logs/stats"),
            "{uri}: {} {}",
            a.status,
            a.json()
        );
    }
    let a = get(
        &f.app,
        &format!("/v1/sites/plant-1/commands/{MAX}"),
        Some(&token),
    )
    .await;
    assert!(a.status.is_client_error() || a.status == StatusCode::METHOD_NOT_ALLOWED);
}

/// The next JSON text frame of a socket (the timeout turns a hang into a
/// failure).
async fn next(ws: &mut common::Ws) -> Value {
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
async fn commands_with_line_breaks_in_their_strings_never_break_the_proxy() {
    let f = fixture().await;
    let token = f.token(common::ORG, &["commands:*:send"]);
    let uri = "/v1/sites/plant-1/commands";
    let a = send_json(
        &f.app,
        "POST",
        uri,
        Some(&token),
        &json!({"topic": "line1/valve", "content_type": "text/plain\r\nPlantd-Qos: 0"}),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.json());
    assert!(
        a.json()["message"]
            .as_str()
            .is_some_and(|m| m.contains("content_type")),
        "{}",
        a.json()
    );
    // MQTT allows a line break in a topic: it is stored, the subject
    // carrying it (escaped) for the edge.
    let a = send_json(
        &f.app,
        "POST",
        uri,
        Some(&token),
        &json!({"topic": "line1/val\nve", "payload": "open"}),
    )
    .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.json());
    let seq = a.json()["sequence"].as_u64().expect("sequence");
    let m = f.stored_command(seq).await;
    let parsed = plantd_shared::subject::subject_to_topic(m.subject.as_str()).expect("subject");
    assert_eq!(parsed.topic.as_str(), "line1/val\nve");
    assert_eq!(m.headers.get(headers::QOS).map(|v| v.as_str()), Some("1"));

    // Over the socket: an error frame, and the socket goes on.
    let (addr, _server) = serve(&f).await;
    let mut ws = connect_ws(addr, &token).await;
    let bad = json!({"op": "command", "id": "c1", "site": "plant-1", "topic": "t", "content_type": "a\nb"});
    ws.send(Message::Text(bad.to_string().into()))
        .await
        .expect("send");
    let e = next(&mut ws).await;
    assert_eq!(
        (e["id"].as_str(), e["error"].as_str()),
        (Some("c1"), Some("bad_request")),
        "{e}"
    );
    let good = json!({"op": "command", "id": "c2", "site": "plant-1", "topic": "a\rb"});
    ws.send(Message::Text(good.to_string().into()))
        .await
        .expect("send");
    let sent = next(&mut ws).await;
    assert_eq!(
        (sent["id"].as_str(), sent["op"].as_str()),
        (Some("c2"), Some("sent")),
        "{sent}"
    );
}
