//! The proxy's audit records over a real nats-server: commands (REST,
//! `/v1/ws`, the AWS WebSocket function), service calls and state scopes
//! are recorded with actor, target, outcome and origin in the chain of the
//! organisation that owns the site; refusals are recorded too; and the
//! chain verifies. The fixture registers `plant-1` and `plant-2` to
//! `acme`.

use crate::aws_common;
use crate::common;

use common::{ORG, connect_ws, fixture, send, send_json, serve};
use futures::{SinkExt as _, StreamExt as _};
use plantd_shared::audit::{self, Query, Stored};
use plantd_shared::claims::{API_AUDIENCE, Audience, Claims, PrincipalKind};
use plantd_shared::jwt::now_secs;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// `org`'s audit records with `action`, oldest first.
async fn recorded(f: &common::Fixture, org: &str, action: &str) -> Vec<Stored> {
    audit::read(
        &f.nats.jetstream().await,
        &Query {
            org: org.into(),
            action: Some(action.into()),
            limit: 100,
            ..Query::default()
        },
    )
    .await
    .expect("read the trail")
    .records
}

#[tokio::test]
async fn commands_calls_and_scopes_are_recorded() {
    let f = fixture().await;
    let token = f.token(
        ORG,
        &["commands:*:send", "services:*:call", "state:scope:*:admin"],
    );
    let a = send(
        &f.app,
        "POST",
        "/v1/sites/plant-1/commands",
        Some(&token),
        &[
            ("content-type", "application/json"),
            ("x-request-id", "cmd-1"),
        ],
        json!({"topic": "valve/7/set", "payload": "open", "qos": 1}).to_string(),
    )
    .await;
    assert_eq!(a.status.as_u16(), 202, "{:?}", a.json());
    assert_eq!(a.header("x-request-id"), Some("cmd-1"));
    let sequence = a.json()["sequence"].as_u64().expect("sequence");
    let cmds = recorded(&f, ORG, "command.send").await;
    assert_eq!(cmds.len(), 1);
    let r = &cmds[0].record;
    assert_eq!(r.actor, format!("user-{ORG}"));
    assert_eq!(r.target, "command:plant-1/valve/7/set");
    assert_eq!(r.outcome, audit::Outcome::Success);
    assert_eq!(r.request_id.as_deref(), Some("cmd-1"));
    let detail = r.detail.clone().expect("detail");
    assert_eq!(detail["sequence"], sequence);
    assert_eq!(detail["payload_bytes"], 4);

    // A service call nobody answers: recorded as a failure.
    let a = send(
        &f.app,
        "POST",
        "/v1/sites/plant-1/call/pump/echo?timeout_ms=200",
        Some(&token),
        &[],
        "ping",
    )
    .await;
    assert_eq!(a.status.as_u16(), 503, "{:?}", a.json());
    let calls = recorded(&f, ORG, "service.call").await;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].record.target, "call:plant-1/pump/echo");
    assert_eq!(calls[0].record.outcome, audit::Outcome::Failure);

    for (method, uri, body) in [
        ("POST", "/v1/state/scopes", Some(json!({"scope": "line1"}))),
        ("DELETE", "/v1/state/scopes/line1", None),
    ] {
        let a = match &body {
            Some(b) => send_json(&f.app, method, uri, Some(&token), b).await,
            None => send(&f.app, method, uri, Some(&token), &[], "").await,
        };
        assert!(a.status.is_success(), "{method} {uri}: {:?}", a.json());
    }
    let created = recorded(&f, ORG, "state.scope_create").await;
    let deleted = recorded(&f, ORG, "state.scope_delete").await;
    assert_eq!(created[0].record.target, "scope:line1");
    assert_eq!(deleted[0].record.target, "scope:line1");

    // The command was never taken: cancelling it is recorded too.
    let a = send(
        &f.app,
        "DELETE",
        &format!("/v1/sites/plant-1/commands/{sequence}"),
        Some(&token),
        &[],
        "",
    )
    .await;
    assert!(a.status.is_success(), "{:?}", a.json());
    let cancels = recorded(&f, ORG, "command.cancel").await;
    assert_eq!(cancels.len(), 1);
    assert_eq!(
        cancels[0].record.target,
        format!("command:plant-1/{sequence}")
    );

    let v = audit::verify(&f.nats.jetstream().await, ORG)
        .await
        .expect("verify");
    assert!(v.ok(), "{v:?}");
    assert_eq!(v.records, 5);
}

#[tokio::test]
async fn refusals_are_recorded_in_the_callers_organisation() {
    let f = fixture().await;
    // initech's admin tries acme's site: the site door refuses (403).
    let other = f.token("initech", &["commands:*:send"]);
    let a = send_json(
        &f.app,
        "POST",
        "/v1/sites/plant-1/commands",
        Some(&other),
        &json!({"topic": "valve/7/set", "payload": "open"}),
    )
    .await;
    assert_eq!(a.status.as_u16(), 403);
    let denied = recorded(&f, "initech", "access.denied").await;
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].record.target, "POST /v1/sites/plant-1/commands");
    assert_eq!(denied[0].record.outcome, audit::Outcome::Denied);
    assert!(
        recorded(&f, ORG, "command.send").await.is_empty(),
        "nothing was sent"
    );
}

#[tokio::test]
async fn the_superadmin_acting_on_a_site_is_recorded_in_the_owners_chain() {
    let f = fixture().await;
    let now = now_secs();
    let root = f
        .key
        .sign(&Claims {
            iss: "plantd-identity".into(),
            sub: "root".into(),
            aud: Audience::One(API_AUDIENCE.into()),
            exp: now + 600,
            iat: now,
            nbf: None,
            jti: "jti-root".into(),
            org: plantd_shared::sites::BOOTSTRAP_ORG.into(),
            kind: PrincipalKind::User,
            roles: vec![plantd_shared::sites::SUPERADMIN_ROLE.into()],
            perms: vec!["*".into()],
            mqtt: Default::default(),
        })
        .expect("sign");
    let a = send_json(
        &f.app,
        "POST",
        "/v1/sites/plant-2/commands",
        Some(&root),
        &json!({"topic": "lights", "payload": "off"}),
    )
    .await;
    assert_eq!(a.status.as_u16(), 202, "{:?}", a.json());
    let cmds = recorded(&f, ORG, "command.send").await;
    assert_eq!(cmds.len(), 1, "in acme's chain");
    assert_eq!(cmds[0].record.actor, "root");
    assert_eq!(
        cmds[0].record.actor_org.as_deref(),
        Some(plantd_shared::sites::BOOTSTRAP_ORG)
    );
    // Reading another organisation's telemetry is recorded too: every
    // cross-organisation door passed, in the owner's chain.
    let read = common::get(&f.app, "/v1/sites/plant-2/last?topic=lights", Some(&root)).await;
    assert!(
        read.status.is_success() || read.status.as_u16() == 404,
        "{:?}",
        read.json()
    );
    let crossings = recorded(&f, ORG, "site.cross_org").await;
    assert_eq!(crossings.len(), 2, "the command and the read");
    assert!(
        crossings
            .iter()
            .all(|c| c.record.actor == "root" && c.record.target == "site:plant-2")
    );
}

#[tokio::test]
async fn websocket_commands_are_recorded_and_so_are_refused_ones() {
    let f = fixture().await;
    let (addr, server) = serve(&f).await;
    let token = f.token(ORG, &["commands:plant-1:send"]);
    let mut ws = connect_ws(addr, &token).await;
    for frame in [
        json!({"op": "command", "id": "c1", "site": "plant-1", "topic": "a/b", "payload": "x"}),
        json!({"op": "command", "id": "c2", "site": "plant-2", "topic": "a/b", "payload": "x"}),
    ] {
        ws.send(Message::Text(frame.to_string().into()))
            .await
            .expect("send");
        let answer = loop {
            match ws.next().await.expect("a frame").expect("ok") {
                Message::Text(t) => break serde_json::from_str::<Value>(&t).expect("json"),
                _ => continue,
            }
        };
        assert_eq!(answer["id"], frame["id"], "{answer}");
    }
    let cmds = recorded(&f, ORG, "command.send").await;
    assert_eq!(cmds.len(), 2, "{cmds:#?}");
    assert_eq!(cmds[0].record.target, "command:plant-1/a/b");
    assert_eq!(cmds[0].record.outcome, audit::Outcome::Success);
    assert!(cmds[0].record.request_id.is_some(), "the handshake's id");
    assert_eq!(cmds[1].record.target, "command:plant-2/a/b");
    assert_eq!(cmds[1].record.outcome, audit::Outcome::Denied);
    server.abort();
}

#[tokio::test]
async fn aws_websocket_commands_are_recorded_with_api_gateways_source_and_request_id() {
    let f = fixture().await;
    let moto = plantd_testkit::Moto::start().await;
    let reg = aws_common::registry(&moto, "conns").await;
    let ws = plantd_proxy::aws::websocket::Handler::new(f.state.clone(), reg, 2);
    let mut c = aws_common::claims("carol", 600, &[]);
    c.perms = vec!["commands:plant-1:send".to_owned()];
    let token = f.key.sign(&c).expect("sign");
    let r = ws
        .handle_value(aws_common::event("connect-header.json", "c1", &token))
        .await;
    assert_eq!(r.status_code, 200);
    let r = ws
        .handle_value(aws_common::event("command.json", "c1", ""))
        .await;
    assert_eq!(r.status_code, 200, "{r:?}");
    let cmds = recorded(&f, ORG, "command.send").await;
    assert_eq!(cmds.len(), 1);
    let rec = &cmds[0].record;
    assert_eq!(rec.actor, "carol");
    assert_eq!(rec.target, "command:plant-1/line1/valve/set");
    assert_eq!(rec.source.as_deref(), Some("203.0.113.7"));
    assert_eq!(rec.request_id.as_deref(), Some("Uq1LbFbPIAMFTIg="));
}
