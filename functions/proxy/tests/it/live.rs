//! The WebSocket at `/v1/ws` with a real WebSocket client against the
//! router under `axum::serve`, over a real nats-server. Live messages are
//! published on the proxy's own NATS connection after the `subscribed`
//! answer arrives, so the server has the subscription before the message
//! (one connection keeps its order).

use crate::common;

use std::time::Duration;

use common::{Fixture, Ws, connect_ws, fixture, serve};
use futures::{SinkExt as _, StreamExt as _};
use plantd_shared::headers;
use plantd_shared::streams::COMMANDS;
use serde_json::{Value, json};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

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

async fn publish(f: &Fixture, subject: &str, qos: &str, payload: &'static [u8]) {
    let mut h = async_nats::HeaderMap::new();
    h.insert(headers::QOS, qos);
    f.state
        .client
        .publish_with_headers(subject.to_owned(), h, payload.into())
        .await
        .expect("publish");
}

#[tokio::test]
async fn a_subscriber_receives_live_messages_for_its_filter_only() {
    let f = fixture().await;
    let (addr, _server) = serve(&f).await;
    let token = f.token_with("acme", &[], &[("plant-1", &[], &["line1/#"])]);
    let mut ws = connect_ws(addr, &token).await;

    send(
        &mut ws,
        json!({"op": "subscribe", "id": "t", "site": "plant-1", "filter": "line1/+/temp"}),
    )
    .await;
    assert_eq!(next(&mut ws).await, json!({"op": "subscribed", "id": "t"}));

    // Outside the filter, on another site, and a wildcard match: only the
    // last arrives, and it is the first frame after the answer.
    publish(&f, "plantd.plant-1.up.line1.press.hum", "0", b"40").await;
    publish(&f, "plantd.plant-2.up.line1.press.temp", "0", b"99").await;
    publish(&f, "plantd.plant-1.up.line1.press.temp", "1", b"21.5").await;
    publish(&f, "plantd.plant-1.up.line1.oven.temp", "0", &[0, 255]).await;
    let m = next(&mut ws).await;
    assert_eq!(m["op"], "message");
    assert_eq!(m["id"], "t");
    assert_eq!(m["site"], "plant-1");
    assert_eq!(m["topic"], "line1/press/temp");
    assert_eq!(m["payload"], "21.5");
    assert_eq!(m["headers"][headers::QOS], "1");
    let m = next(&mut ws).await;
    assert_eq!(m["topic"], "line1/oven/temp");
    assert_eq!(m["payload_base64"], "AP8=");
    assert!(m.get("payload").is_none());
}

#[tokio::test]
async fn a_forbidden_filter_is_refused() {
    let f = fixture().await;
    let (addr, _server) = serve(&f).await;
    let token = f.token_with("acme", &[], &[("plant-1", &[], &["line1/#"])]);
    let mut ws = connect_ws(addr, &token).await;

    for (id, site, filter) in [
        ("wide", "plant-1", "#"),
        ("other-line", "plant-1", "line2/x"),
        ("other-site", "plant-2", "line1/#"),
    ] {
        send(
            &mut ws,
            json!({"op": "subscribe", "id": id, "site": site, "filter": filter}),
        )
        .await;
        let e = next(&mut ws).await;
        assert_eq!(e["op"], "error", "{filter} on {site}: {e}");
        assert_eq!(e["id"], id);
        assert_eq!(e["error"], "forbidden");
    }
    send(
        &mut ws,
        json!({"op": "subscribe", "id": "bad", "site": "plant-1", "filter": "a/#/b"}),
    )
    .await;
    assert_eq!(next(&mut ws).await["error"], "bad_request");
    send(&mut ws, json!({"op": "dance"})).await;
    assert_eq!(next(&mut ws).await["error"], "bad_request");
}

#[tokio::test]
async fn the_handshake_needs_a_valid_token_and_accepts_it_in_the_query() {
    let f = fixture().await;
    let (addr, _server) = serve(&f).await;
    // (No token at all upgrades, for an `auth` first frame: live_auth.rs.)
    match connect_async(format!("ws://{addr}/v1/ws?access_token=not.a.token")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 401);
        }
        other => panic!("expected 401, got {other:?}"),
    }
    let token = f.token_with("acme", &[], &[("plant-1", &[], &["#"])]);
    let (mut ws, _) = connect_async(format!("ws://{addr}/v1/ws?access_token={token}"))
        .await
        .expect("connect with ?access_token=");
    send(
        &mut ws,
        json!({"op": "subscribe", "id": "all", "site": "plant-1", "filter": "#"}),
    )
    .await;
    assert_eq!(next(&mut ws).await["op"], "subscribed");

    // MQTT's `$` rule, which NATS's `>` does not know: `#` does not match
    // `$status/x`, so the first message is the ordinary one after it.
    let site = plantd_shared::subject::Site::new("plant-1").expect("site");
    let dollar = plantd_shared::topic::Topic::new("$status/x").expect("topic");
    let subject = plantd_shared::subject::topic_to_subject(
        &site,
        plantd_shared::subject::Channel::Up,
        &dollar,
    );
    publish(&f, &subject, "0", b"hidden").await;
    publish(&f, "plantd.plant-1.up.a", "0", b"seen").await;
    let m = next(&mut ws).await;
    assert_eq!(
        (m["topic"].as_str(), m["payload"].as_str()),
        (Some("a"), Some("seen"))
    );
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let f = fixture().await;
    let (addr, _server) = serve(&f).await;
    let token = f.token_with("acme", &[], &[("plant-1", &[], &["line1/#"])]);
    let mut ws = connect_ws(addr, &token).await;
    for id in ["a", "b"] {
        send(
            &mut ws,
            json!({"op": "subscribe", "id": id, "site": "plant-1", "filter": "line1/#"}),
        )
        .await;
        assert_eq!(next(&mut ws).await["op"], "subscribed");
    }
    publish(&f, "plantd.plant-1.up.line1.x", "0", b"1").await;
    let mut ids: Vec<String> = Vec::new();
    for _ in 0..2 {
        ids.push(next(&mut ws).await["id"].as_str().expect("id").to_owned());
    }
    ids.sort();
    assert_eq!(ids, ["a", "b"]);

    send(&mut ws, json!({"op": "unsubscribe", "id": "a"})).await;
    assert_eq!(
        next(&mut ws).await,
        json!({"op": "unsubscribed", "id": "a"})
    );
    for payload in [&b"2"[..], b"3", b"4"] {
        publish(&f, "plantd.plant-1.up.line1.x", "0", payload).await;
    }
    for want in ["2", "3", "4"] {
        let m = next(&mut ws).await;
        assert_eq!(
            (m["id"].as_str(), m["payload"].as_str()),
            (Some("b"), Some(want))
        );
    }
    send(&mut ws, json!({"op": "unsubscribe", "id": "a"})).await;
    assert_eq!(next(&mut ws).await["error"], "not_found");
}

#[tokio::test]
async fn a_command_over_the_socket_lands_in_the_commands_stream() {
    let f = fixture().await;
    let (addr, _server) = serve(&f).await;
    let token = f.token("acme", &["commands:plant-1:send"]);
    let mut ws = connect_ws(addr, &token).await;
    send(
        &mut ws,
        json!({"op": "command", "id": "c1", "site": "plant-1", "topic": "line1/valve/set", "payload": "open", "qos": 2}),
    )
    .await;
    let sent = next(&mut ws).await;
    assert_eq!(sent["op"], "sent", "{sent}");
    assert_eq!(sent["id"], "c1");
    assert_eq!(sent["stream"], COMMANDS);
    let seq = sent["sequence"].as_u64().expect("sequence");
    let m = f.stored_command(seq).await;
    assert_eq!(m.subject.as_str(), "plantd.plant-1.down.line1.valve.set");
    assert_eq!(m.payload.as_ref(), b"open");
    assert_eq!(m.headers.get(headers::QOS).map(|v| v.as_str()), Some("2"));

    send(
        &mut ws,
        json!({"op": "command", "id": "c2", "site": "plant-2", "topic": "t"}),
    )
    .await;
    let e = next(&mut ws).await;
    assert_eq!(
        (e["id"].as_str(), e["error"].as_str()),
        (Some("c2"), Some("forbidden"))
    );
    send(
        &mut ws,
        json!({"op": "command", "id": "c3", "site": "plant-1", "topic": "t", "colour": "red"}),
    )
    .await;
    assert_eq!(next(&mut ws).await["error"], "bad_request");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_not_buffered() {
    let f = fixture().await;
    let (addr, _server) = serve(&f).await;
    let token = f.token_with("acme", &[], &[("plant-1", &[], &["#"])]);
    let mut ws = connect_ws(addr, &token).await;
    send(
        &mut ws,
        json!({"op": "subscribe", "id": "all", "site": "plant-1", "filter": "#"}),
    )
    .await;
    assert_eq!(next(&mut ws).await["op"], "subscribed");
    // Far more than the queue (256 frames) plus what the sockets buffer.
    static BIG: [u8; 64 * 1024] = [b'x'; 64 * 1024];
    for _ in 0..1000 {
        publish(&f, "plantd.plant-1.up.flood", "0", &BIG).await;
    }
    f.state.client.flush().await.expect("flush");
    // Now read: the stream ends (a close frame or a reset) instead of
    // delivering all 1000.
    let mut delivered = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("the server ends the socket")
        {
            Some(Ok(Message::Text(_))) => delivered += 1,
            Some(Ok(Message::Close(frame))) => {
                if let Some(frame) = frame {
                    assert_eq!(u16::from(frame.code), 1008);
                }
                break;
            }
            Some(Ok(_)) => {}
            // The close frame may be stuck behind unread data; a reset
            // ends the socket too.
            Some(Err(_)) | None => break,
        }
    }
    assert!(delivered < 1000, "delivered all {delivered}");
}

#[tokio::test]
async fn the_socket_closes_when_the_token_expires() {
    use plantd_shared::claims::{API_AUDIENCE, Audience, Claims, PrincipalKind};
    let f = fixture().await;
    let (addr, _server) = serve(&f).await;
    let now = plantd_shared::jwt::now_secs();
    let token = f
        .key
        .sign(&Claims {
            iss: "plantd-identity".into(),
            sub: "user-short".into(),
            aud: Audience::One(API_AUDIENCE.into()),
            exp: now + 2,
            iat: now,
            nbf: None,
            jti: "jti-short-lived".into(),
            org: "acme".into(),
            kind: PrincipalKind::User,
            roles: Vec::new(),
            perms: Vec::new(),
            mqtt: Default::default(),
        })
        .expect("sign");
    let mut ws = connect_ws(addr, &token).await;
    let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("closed within 10 s")
        .expect("a frame")
        .expect("not an error");
    match frame {
        Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 1008);
            assert_eq!(frame.reason.as_str(), "token expired");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// Stores a telemetry message in `PLANTD_TELEMETRY` (as the edge's uplink
/// does) and returns its stream sequence.
async fn store(f: &Fixture, subject: &str, payload: &'static [u8]) -> u64 {
    f.state
        .js
        .publish(subject.to_owned(), payload.into())
        .await
        .expect("publish")
        .await
        .expect("stored")
        .sequence
}

#[tokio::test]
async fn a_sequenced_subscriber_resumes_after_a_reconnect_without_a_gap_or_a_repeat() {
    let f = fixture().await;
    let (addr, _server) = serve(&f).await;
    let token = f.token_with("acme", &[], &[("plant-1", &[], &["line1/#"])]);
    let mut ws = connect_ws(addr, &token).await;

    // Stored before the subscription: not delivered ("sequenced" starts at
    // the next message).
    store(&f, "plantd.plant-1.up.line1.m1.count", b"0").await;
    send(
        &mut ws,
        json!({"op": "subscribe", "id": "s", "site": "plant-1", "filter": "line1/#", "sequenced": true}),
    )
    .await;
    let ack = next(&mut ws).await;
    assert_eq!(ack["op"], "subscribed", "{ack}");
    let s1 = store(&f, "plantd.plant-1.up.line1.m1.count", b"1").await;
    store(&f, "plantd.plant-2.up.line1.m1.count", b"other site").await;
    let s2 = store(&f, "plantd.plant-1.up.line1", b"2").await;
    let m = next(&mut ws).await;
    assert_eq!(
        (m["payload"].as_str(), m["sequence"].as_u64()),
        (Some("1"), Some(s1)),
        "{m}"
    );
    assert!(m["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{m}");
    let m = next(&mut ws).await;
    assert_eq!(
        (m["topic"].as_str(), m["sequence"].as_u64()),
        (Some("line1"), Some(s2)),
        "{m}"
    );
    let last = s2;
    drop(ws);

    // The link drops; the device goes on.
    let s3 = store(&f, "plantd.plant-1.up.line1.m1.count", b"3").await;
    let s4 = store(&f, "plantd.plant-1.up.line1.m2.count", b"4").await;

    let mut ws = connect_ws(addr, &token).await;
    send(
        &mut ws,
        json!({"op": "subscribe", "id": "s", "site": "plant-1", "filter": "line1/#", "from_sequence": last + 1}),
    )
    .await;
    let ack = next(&mut ws).await;
    assert_eq!(ack["from_sequence"], last + 1, "{ack}");
    assert!(ack.get("missed").is_none(), "{ack}");
    let m = next(&mut ws).await;
    assert_eq!(
        (m["payload"].as_str(), m["sequence"].as_u64()),
        (Some("3"), Some(s3))
    );
    let m = next(&mut ws).await;
    assert_eq!(
        (m["payload"].as_str(), m["sequence"].as_u64()),
        (Some("4"), Some(s4))
    );
    // And it goes on live from the stream.
    let s5 = store(&f, "plantd.plant-1.up.line1.m1.count", b"5").await;
    let m = next(&mut ws).await;
    assert_eq!(
        (m["payload"].as_str(), m["sequence"].as_u64()),
        (Some("5"), Some(s5))
    );
}

#[tokio::test]
async fn a_resume_the_stream_no_longer_holds_says_so_and_bad_sequences_are_refused() {
    let f = fixture().await;
    let (addr, _server) = serve(&f).await;
    let token = f.token_with("acme", &[], &[("plant-1", &[], &["line1/#"])]);
    let mut ws = connect_ws(addr, &token).await;

    send(
        &mut ws,
        json!({"op": "subscribe", "id": "z", "site": "plant-1", "filter": "line1/#", "from_sequence": 0}),
    )
    .await;
    let e = next(&mut ws).await;
    assert_eq!(
        (e["op"].as_str(), e["error"].as_str()),
        (Some("error"), Some("bad_request")),
        "{e}"
    );

    store(&f, "plantd.plant-1.up.line1.a", b"old").await;
    let kept = store(&f, "plantd.plant-1.up.line1.a", b"kept").await;
    // Retention drops the first one.
    f.state
        .js
        .get_stream(plantd_shared::streams::TELEMETRY)
        .await
        .expect("stream")
        .purge()
        .sequence(kept)
        .await
        .expect("purge");
    send(
        &mut ws,
        json!({"op": "subscribe", "id": "r", "site": "plant-1", "filter": "line1/#", "from_sequence": 1}),
    )
    .await;
    let ack = next(&mut ws).await;
    assert_eq!(
        (ack["from_sequence"].as_u64(), ack["missed"].as_bool()),
        (Some(kept), Some(true)),
        "{ack}"
    );
    let m = next(&mut ws).await;
    assert_eq!(
        (m["payload"].as_str(), m["sequence"].as_u64()),
        (Some("kept"), Some(kept))
    );
}

#[tokio::test]
async fn a_replay_runs_at_the_pace_of_a_slow_reader_instead_of_closing_it() {
    let f = fixture().await;
    let (addr, _server) = serve(&f).await;
    let token = f.token_with("acme", &[], &[("plant-1", &[], &["line1/#"])]);
    let mut ws = connect_ws(addr, &token).await;
    send(
        &mut ws,
        json!({"op": "subscribe", "id": "s", "site": "plant-1", "filter": "line1/#", "sequenced": true}),
    )
    .await;
    assert_eq!(next(&mut ws).await["op"], "subscribed");
    // While the client reads nothing, far more than the queue (256 frames)
    // plus what the sockets buffer is stored — the backlog a client finds
    // when it resumes after a long gap.
    static BIG: [u8; 64 * 1024] = [b'x'; 64 * 1024];
    let mut stored = Vec::new();
    for _ in 0..600 {
        stored.push(store(&f, "plantd.plant-1.up.line1.m1.blob", &BIG).await);
    }
    // Every one arrives, in order, and the socket stays open.
    for (i, want) in stored.iter().enumerate() {
        let m = next(&mut ws).await;
        assert_eq!(
            (m["op"].as_str(), m["sequence"].as_u64()),
            (Some("message"), Some(*want)),
            "message {i}"
        );
    }
    send(&mut ws, json!({"op": "unsubscribe", "id": "s"})).await;
    assert_eq!(next(&mut ws).await["op"], "unsubscribed");
}
