//! Pending commands through the router over a real nats-server, with no
//! edge running (the edge's side is tested in `tests/e2e` and the edge's
//! own tests): commands the edge has not taken are listed as queued and
//! cancelled by deleting them from the stream; a command an (offline)
//! edge holds is listed from its record and a cancel is requested (202);
//! bad input, another organisation's site or an unknown one get clear 4xx.

use crate::common;

use axum::body::Body;
use axum::http::StatusCode;
use common::{Fixture, fixture, get, send, send_json};
use plantd_shared::commands::{CommandState, HeldCommand, HoldReason};
use plantd_shared::streams::{COMMANDS, COMMANDS_BUCKET};
use serde_json::{Value, json};

async fn post(f: &Fixture, token: &str, body: Value) -> u64 {
    let a = send_json(
        &f.app,
        "POST",
        "/v1/sites/plant-1/commands",
        Some(token),
        &body,
    )
    .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.json());
    a.json()["sequence"].as_u64().expect("sequence")
}

async fn delete(f: &Fixture, token: &str, uri: &str) -> common::Answer {
    send(&f.app, "DELETE", uri, Some(token), &[], Body::empty()).await
}

fn ids(list: &Value) -> Vec<u64> {
    list["commands"]
        .as_array()
        .expect("commands")
        .iter()
        .map(|c| c["id"].as_u64().expect("id"))
        .collect()
}

#[tokio::test]
async fn commands_the_edge_has_not_taken_are_listed_and_cancelled() {
    let f = fixture().await;
    let token = f.token("acme", &["commands:plant-1:send"]);
    let a = post(
        &f,
        &token,
        json!({"topic": "valve/1/set", "payload": "open"}),
    )
    .await;
    let b = post(
        &f,
        &token,
        json!({"topic": "nobody/listens", "payload": "x"}),
    )
    .await;
    let c = post(
        &f,
        &token,
        json!({"topic": "valve/1/set", "payload": "close"}),
    )
    .await;
    // Another site's command is not ours; an expired one is not pending.
    let other = f.token("acme", &["commands:plant-2:send"]);
    let a2 = send_json(
        &f.app,
        "POST",
        "/v1/sites/plant-2/commands",
        Some(&other),
        &json!({"topic": "t", "payload": "x"}),
    )
    .await;
    let foreign = a2.json()["sequence"].as_u64().expect("seq");
    let js = f.nats.jetstream().await;
    let mut h = async_nats::HeaderMap::new();
    h.insert(plantd_shared::headers::TTL, "1");
    h.insert(
        plantd_shared::headers::SENT,
        plantd_shared::headers::format_time(plantd_shared::headers::now_ms() - 60_000).as_str(),
    );
    js.publish_with_headers("plantd.plant-1.down.old", h, "x".into())
        .await
        .expect("publish")
        .await
        .expect("stored");

    let list = get(
        &f.app,
        "/v1/sites/plant-1/commands?state=pending",
        Some(&token),
    )
    .await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.json());
    let list = list.json();
    assert_eq!(ids(&list), vec![a, b, c]);
    assert_eq!(list["commands"][1]["topic"], "nobody/listens");
    assert_eq!(list["commands"][1]["state"], "queued");
    assert!(list["commands"][1]["sent"].is_string());
    assert_eq!(list["truncated"], false);
    let first = get(&f.app, "/v1/sites/plant-1/commands?limit=1", Some(&token)).await;
    assert_eq!(ids(&first.json()), vec![a]);
    assert_eq!(first.json()["truncated"], true);

    let cancelled = delete(&f, &token, &format!("/v1/sites/plant-1/commands/{b}")).await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.json());
    assert_eq!(cancelled.json(), json!({"id": b, "state": "cancelled"}));
    let list = get(&f.app, "/v1/sites/plant-1/commands", Some(&token)).await;
    assert_eq!(ids(&list.json()), vec![a, c]);
    let stream = js.get_stream(COMMANDS).await.expect("stream");
    assert!(
        stream.direct_get(b).await.is_err(),
        "gone from the stream: JetStream never delivers it"
    );
    let again = delete(&f, &token, &format!("/v1/sites/plant-1/commands/{b}")).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND, "{}", again.json());
    let theirs = delete(&f, &token, &format!("/v1/sites/plant-1/commands/{foreign}")).await;
    assert_eq!(
        theirs.status,
        StatusCode::NOT_FOUND,
        "another site's command"
    );
}

#[tokio::test]
async fn a_command_an_offline_edge_holds_is_listed_and_its_cancel_requested() {
    let f = fixture().await;
    let token = f.token("acme", &["commands:plant-1:send"]);
    let id = post(
        &f,
        &token,
        json!({"topic": "nobody/listens", "payload": "x"}),
    )
    .await;
    // What the edge writes when it takes a command nobody subscribes to
    // (and then acknowledges it: the consumer's position passes it).
    let js = f.nats.jetstream().await;
    let kv = js.get_key_value(COMMANDS_BUCKET).await.expect("bucket");
    let record = HeldCommand {
        id,
        topic: "nobody/listens".into(),
        state: CommandState::Held,
        reason: HoldReason::NoSubscriber,
        sent: None,
        held_since: plantd_shared::headers::format_time(plantd_shared::headers::now_ms()),
        expires: "2999-01-01T00:00:00Z".into(),
        finished: None,
    };
    kv.create(format!("plant-1.{id}"), record.to_bytes().into())
        .await
        .expect("record");

    let list = get(&f.app, "/v1/sites/plant-1/commands", Some(&token)).await;
    let list = list.json();
    assert_eq!(ids(&list), vec![id], "{list}");
    assert_eq!(list["commands"][0]["state"], "held");
    assert_eq!(list["commands"][0]["reason"], "no_subscriber");
    assert_eq!(list["commands"][0]["expires"], "2999-01-01T00:00:00Z");

    // No edge answers: the request stands (202) and the list says so.
    let a = delete(&f, &token, &format!("/v1/sites/plant-1/commands/{id}")).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.json());
    assert_eq!(a.json(), json!({"id": id, "state": "cancel_requested"}));
    let list = get(&f.app, "/v1/sites/plant-1/commands", Some(&token)).await;
    assert_eq!(list.json()["commands"][0]["state"], "cancel_requested");
    let stored = kv
        .entry(format!("plant-1.{id}"))
        .await
        .expect("read")
        .expect("record");
    assert_eq!(
        HeldCommand::from_bytes(&stored.value)
            .expect("record")
            .state,
        CommandState::CancelRequested
    );

    // Once the edge has answered, the answer is final.
    let done = record.finish(CommandState::Delivered, 0);
    kv.put(format!("plant-1.{id}"), done.to_bytes().into())
        .await
        .expect("answer");
    let late = delete(&f, &token, &format!("/v1/sites/plant-1/commands/{id}")).await;
    assert_eq!(late.status, StatusCode::CONFLICT, "{}", late.json());
    assert!(
        late.json()["message"]
            .as_str()
            .is_some_and(|m| m.contains("delivered"))
    );
}

#[tokio::test]
async fn bad_pending_requests_get_clear_4xx() {
    let f = fixture().await;
    let token = f.token("acme", &["commands:plant-1:send"]);
    for (uri, want) in [
        (
            "/v1/sites/plant-1/commands?state=delivered",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/sites/plant-1/commands?limit=0",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/sites/plant-1/commands?limit=5000",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/sites/plant-1/commands?colour=red",
            StatusCode::BAD_REQUEST,
        ),
        ("/v1/sites/bad.site/commands", StatusCode::BAD_REQUEST),
    ] {
        let a = get(&f.app, uri, Some(&token)).await;
        assert_eq!(a.status, want, "{uri}: {}", a.json());
        assert!(a.json()["message"].is_string(), "{uri}");
    }
    for (uri, want) in [
        ("/v1/sites/plant-1/commands/abc", StatusCode::BAD_REQUEST),
        ("/v1/sites/plant-1/commands/0", StatusCode::BAD_REQUEST),
        ("/v1/sites/plant-1/commands/-1", StatusCode::BAD_REQUEST),
        ("/v1/sites/plant-1/commands/999999", StatusCode::NOT_FOUND),
    ] {
        let a = delete(&f, &token, uri).await;
        assert_eq!(a.status, want, "{uri}: {}", a.json());
    }
    let reader = f.token("acme", &["telemetry:plant-1:read"]);
    let a = get(&f.app, "/v1/sites/plant-1/commands", Some(&reader)).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = delete(&f, &reader, "/v1/sites/plant-1/commands/1").await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = get(&f.app, "/v1/sites/plant-1/commands", None).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);

    // Another organisation's site, and a site nobody registered.
    let id = post(&f, &token, json!({"topic": "t", "payload": "x"})).await;
    let stranger = f.token("initech", &["commands:*:send"]);
    let a = get(&f.app, "/v1/sites/plant-1/commands", Some(&stranger)).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.json());
    let a = delete(&f, &stranger, &format!("/v1/sites/plant-1/commands/{id}")).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.json());
    let list = get(&f.app, "/v1/sites/plant-1/commands", Some(&token)).await;
    assert_eq!(ids(&list.json()), vec![id], "still pending");
    let nowhere = f.token("acme", &["commands:plant-9:send"]);
    let a = get(&f.app, "/v1/sites/plant-9/commands", Some(&nowhere)).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.json());
}
