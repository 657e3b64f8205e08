//! Sites belong to organisations at every door of the proxy: a second
//! organisation's admin and service-account tokens — with every permission
//! string and MQTT grant a role can give, for site `*` — are refused on
//! another organisation's site at the REST routes (history, last,
//! commands, service calls) and at `/v1/ws` (subscribe, command), with a
//! clear 403; an unknown site is a 404 and a malformed one a 400. Device
//! tokens are not API tokens at all (401). The fixture registers `plant-1`
//! and `plant-2` to `acme`.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::StatusCode;
use common::{Fixture, Ws, connect_ws, fixture, get, send_json, serve};
use futures::{SinkExt as _, StreamExt as _};
use plantd_shared::claims::{
    API_AUDIENCE, Audience, Claims, MqttGrant, PrincipalKind, site_audience,
};
use plantd_shared::jwt::now_secs;
use plantd_shared::streams::COMMANDS;
use plantd_shared::subject::Site;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// What the built-in `admin` role grants, as identity expands it.
const ADMIN_PERMS: [&str; 4] = [
    "telemetry:*:read",
    "commands:*:send",
    "services:*:call",
    "state:scope:*:admin",
];

/// A token of `kind` in `org` with `roles`, the admin role's permissions
/// and MQTT grants `#` on every site, for the API (devices: for site
/// `plant-1`'s edge, as identity issues them).
fn mint(f: &Fixture, org: &str, kind: PrincipalKind, roles: &[&str]) -> String {
    let now = now_secs();
    let mqtt: BTreeMap<String, MqttGrant> = [(
        "*".to_owned(),
        MqttGrant {
            publish: vec!["#".into()],
            subscribe: vec!["#".into()],
        },
    )]
    .into_iter()
    .collect();
    let aud = match kind {
        PrincipalKind::Device => site_audience(&Site::new("plant-1").expect("site")),
        _ => API_AUDIENCE.to_owned(),
    };
    let claims = Claims {
        iss: "plantd-identity".into(),
        sub: format!("{org}-{kind:?}"),
        aud: Audience::One(aud),
        exp: now + 600,
        iat: now,
        nbf: None,
        jti: format!("jti-{org}-{kind:?}-{}", roles.join("-")),
        org: org.into(),
        kind,
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        perms: ADMIN_PERMS.iter().map(|p| (*p).to_owned()).collect(),
        mqtt,
    };
    f.key.sign(&claims).expect("sign")
}

async fn stored(f: &Fixture, stream: &str) -> u64 {
    plantd_testkit::stream_messages(&f.nats.jetstream().await, stream).await
}

/// Every site-scoped REST door for `site` with `token`: status and body.
async fn rest_doors(f: &Fixture, site: &str, token: &str) -> Vec<(String, StatusCode, Value)> {
    let mut out = Vec::new();
    for uri in [
        format!("/v1/sites/{site}/history?filter=%23"),
        format!("/v1/sites/{site}/last?topic=line1/temp"),
        format!("/v1/sites/{site}/series?topic=line1/temp&buckets=10"),
        format!("/v1/sites/{site}/aggregates"),
        format!("/v1/sites/{site}/commands?state=pending"),
        format!("/v1/logs?site={site}"),
    ] {
        let a = get(&f.app, &uri, Some(token)).await;
        out.push((uri, a.status, a.json()));
    }
    let uri = format!("/v1/sites/{site}/commands");
    let a = send_json(
        &f.app,
        "POST",
        &uri,
        Some(token),
        &json!({"topic": "valve/7/set", "payload": "open"}),
    )
    .await;
    out.push((uri, a.status, a.json()));
    let uri = format!("/v1/sites/{site}/call/press/1/reset?timeout_ms=100");
    let a = send_json(&f.app, "POST", &uri, Some(token), &json!({})).await;
    out.push((uri, a.status, a.json()));
    out
}

#[tokio::test]
async fn another_organisations_tokens_are_refused_at_every_rest_door() {
    let f = fixture().await;
    // acme's reading, which initech must never see.
    f.nats
        .jetstream()
        .await
        .publish("plantd.plant-1.up.line1.temp", "21.5".into())
        .await
        .expect("publish")
        .await
        .expect("stored");

    let initech_admin = mint(&f, "initech", PrincipalKind::User, &["admin"]);
    let initech_service = mint(&f, "initech", PrincipalKind::Service, &["admin"]);
    let commands_before = stored(&f, COMMANDS).await;
    for token in [&initech_admin, &initech_service] {
        for (uri, status, body) in rest_doors(&f, "plant-1", token).await {
            assert_eq!(status, StatusCode::FORBIDDEN, "{uri}: {body}");
            assert_eq!(body["error"], "forbidden", "{uri}: {body}");
            assert_eq!(
                body["message"], "site plant-1 belongs to another organisation",
                "{uri}"
            );
        }
    }
    assert_eq!(
        stored(&f, COMMANDS).await,
        commands_before,
        "no command was stored for acme's site"
    );

    // A device token of initech is no API token at all.
    let device = mint(&f, "initech", PrincipalKind::Device, &["device"]);
    for (uri, status, _) in rest_doors(&f, "plant-1", &device).await {
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
    }

    // Unknown and malformed sites: 404 and 400, for anyone.
    let acme = mint(&f, "acme", PrincipalKind::User, &["admin"]);
    for (uri, status, body) in rest_doors(&f, "nowhere", &acme).await {
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}: {body}");
        assert_eq!(body["message"], "site nowhere not found", "{uri}");
    }
    for (uri, status, body) in rest_doors(&f, "bad.site", &acme).await {
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
    }

    // The owner goes through every door (the call finds no device: 503;
    // `/v1/logs` has no index here: 503).
    let doors = rest_doors(&f, "plant-1", &acme).await;
    let statuses: Vec<StatusCode> = doors.iter().map(|(_, s, _)| *s).collect();
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            // This proxy runs no log index (the owner passed the door).
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::ACCEPTED,
            StatusCode::SERVICE_UNAVAILABLE
        ],
        "{doors:?}"
    );
    assert_eq!(
        doors[0].2["messages"].as_array().map(Vec::len),
        Some(1),
        "acme reads its reading: {:?}",
        doors[0]
    );

    // The bootstrap superadmin may act for any organisation.
    let root = mint(&f, "plantd", PrincipalKind::User, &["superadmin"]);
    let a = get(
        &f.app,
        "/v1/sites/plant-1/last?topic=line1/temp",
        Some(&root),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json());
    // ... but an admin of the bootstrap organisation may not.
    let plantd_admin = mint(&f, "plantd", PrincipalKind::User, &["admin"]);
    let a = get(
        &f.app,
        "/v1/sites/plant-1/last?topic=line1/temp",
        Some(&plantd_admin),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
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
async fn another_organisations_socket_neither_subscribes_nor_commands() {
    let f = fixture().await;
    let (addr, _server) = serve(&f).await;
    let commands_before = stored(&f, COMMANDS).await;
    for token in [
        mint(&f, "initech", PrincipalKind::User, &["admin"]),
        mint(&f, "initech", PrincipalKind::Service, &["admin"]),
    ] {
        let mut ws = connect_ws(addr, &token).await;
        send(
            &mut ws,
            json!({"op": "subscribe", "id": "spy", "site": "plant-1", "filter": "#"}),
        )
        .await;
        assert_eq!(
            next(&mut ws).await,
            json!({"op": "error", "id": "spy", "error": "forbidden",
                   "message": "site plant-1 belongs to another organisation"})
        );
        send(
            &mut ws,
            json!({"op": "command", "id": "c", "site": "plant-1", "topic": "valve/7/set", "payload": "open"}),
        )
        .await;
        let v = next(&mut ws).await;
        assert_eq!(
            (v["id"].as_str(), v["error"].as_str()),
            (Some("c"), Some("forbidden")),
            "{v}"
        );
        send(
            &mut ws,
            json!({"op": "subscribe", "id": "ghost", "site": "nowhere", "filter": "#"}),
        )
        .await;
        let v = next(&mut ws).await;
        assert_eq!(v["error"], "not_found", "{v}");
    }
    assert_eq!(stored(&f, COMMANDS).await, commands_before);

    // A device token cannot open the API socket.
    let device = mint(&f, "initech", PrincipalKind::Device, &["device"]);
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{addr}/v1/ws"),
    )
    .expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {device}").parse().expect("header"),
    );
    assert!(tokio_tungstenite::connect_async(req).await.is_err());

    // acme's own socket on the same site: subscribed, and the reading
    // arrives; initech's socket (still open, subscribed to its own site)
    // never hears it.
    f.register_site("initech", "initech-1").await;
    let mut spy = connect_ws(addr, &mint(&f, "initech", PrincipalKind::User, &["admin"])).await;
    send(
        &mut spy,
        json!({"op": "subscribe", "id": "own", "site": "initech-1", "filter": "#"}),
    )
    .await;
    assert_eq!(
        next(&mut spy).await,
        json!({"op": "subscribed", "id": "own"})
    );
    let mut ws = connect_ws(addr, &mint(&f, "acme", PrincipalKind::User, &["admin"])).await;
    send(
        &mut ws,
        json!({"op": "subscribe", "id": "all", "site": "plant-1", "filter": "#"}),
    )
    .await;
    assert_eq!(
        next(&mut ws).await,
        json!({"op": "subscribed", "id": "all"})
    );
    f.state
        .client
        .publish("plantd.plant-1.up.line1.temp", "21.5".into())
        .await
        .expect("publish");
    f.state
        .client
        .publish("plantd.initech-1.up.mark", "end".into())
        .await
        .expect("publish");
    let m = next(&mut ws).await;
    assert_eq!(
        (m["site"].as_str(), m["payload"].as_str()),
        (Some("plant-1"), Some("21.5"))
    );
    // Published after acme's reading on one connection: when it arrives,
    // acme's reading would have arrived before it.
    let m = next(&mut spy).await;
    assert_eq!(
        (m["site"].as_str(), m["payload"].as_str()),
        (Some("initech-1"), Some("end")),
        "{m}"
    );
}
