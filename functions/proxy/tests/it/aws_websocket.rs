//! The `websocket` function's handler, in process, over the real parts:
//! tokens verified by the REST routes' `ApiTrust` (keys and the revocation
//! list on a real nats-server), connections in DynamoDB (`moto`), events
//! from the API Gateway fixtures in `tests/fixtures/`.

use crate::aws_common;
use crate::common;

use aws_common::{claims, event, registry, with_body};
use plantd_proxy::aws::Registry;
use plantd_proxy::aws::websocket::{Handler, WsResponse};
use plantd_shared::headers;
use plantd_shared::streams::COMMANDS;
use plantd_shared::subject::Site;
use plantd_testkit::Moto;
use serde_json::{Value, json};

/// The proxy fixture, moto with a registry table `conns`, the registry,
/// and a route handler over them that allows two subscriptions a socket.
async fn setup() -> (common::Fixture, Moto, Registry, Handler) {
    let f = common::fixture().await;
    let moto = Moto::start().await;
    let reg = registry(&moto, "conns").await;
    let ws = Handler::new(f.state.clone(), reg.clone(), 2);
    (f, moto, reg, ws)
}

/// The frame in a route response.
fn frame(r: &WsResponse) -> Value {
    assert_eq!(r.status_code, 200, "{r:?}");
    serde_json::from_str(r.body.as_deref().expect("a frame")).expect("JSON")
}

/// The id and error code of an error frame in a route response.
fn error(r: &WsResponse) -> (Value, String) {
    let v = frame(r);
    assert_eq!(v["op"], "error", "{v}");
    (
        v["id"].clone(),
        v["error"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Each of `bodies`, sent as the body of event fixture `fixture` on
/// connection `c1`, is refused as `bad_request` with `id` echoed; a body
/// that is not JSON is refused with no id.
async fn assert_bad_requests(ws: &Handler, fixture: &str, id: &str, bodies: &[Value]) {
    for body in bodies {
        let r = ws
            .handle_value(with_body(event(fixture, "c1", ""), body))
            .await;
        assert_eq!(error(&r), (json!(id), "bad_request".to_owned()), "{body}");
    }
    let mut raw = event(fixture, "c1", "");
    raw["body"] = json!("not json");
    assert_eq!(
        error(&ws.handle_value(raw).await),
        (Value::Null, "bad_request".to_owned())
    );
}

#[tokio::test]
async fn connect_authenticates_like_the_rest_routes_and_refuses_with_401_or_403() {
    let (f, _moto, reg, ws) = setup().await;
    let grants: &[(&str, &[&str])] = &[("plant-1", &["line1/#"])];

    // The token as a query parameter (browsers) and as a bearer header.
    let token = f.key.sign(&claims("alice", 600, grants)).expect("sign");
    let r = ws
        .handle_value(event("connect-query.json", "c-query", &token))
        .await;
    assert_eq!(
        r,
        WsResponse {
            status_code: 200,
            body: None
        }
    );
    let r = ws
        .handle_value(event("connect-header.json", "c-header", &token))
        .await;
    assert_eq!(r.status_code, 200);
    let stored = reg
        .connection("c-query")
        .await
        .expect("get")
        .expect("recorded");
    assert_eq!(stored.claims.sub, "alice");
    assert!(reg.connection("c-header").await.expect("get").is_some());
    // `access_token`, the local /v1/ws parameter, works too.
    let mut e = event("connect-query.json", "c-access", "");
    e["queryStringParameters"] = json!({"access_token": token});
    assert_eq!(ws.handle_value(e).await.status_code, 200);

    // No token at all: accepted, nothing recorded — the socket
    // authenticates with its first frame (`auth`, below).
    let r = ws
        .handle_value(event("connect-bare.json", "c-none", ""))
        .await;
    assert_eq!(r.status_code, 200);
    assert!(reg.connection("c-none").await.expect("get").is_none());
    // A bad token, one signed by another key, an expired one, a revoked
    // one: 401, nothing recorded.
    let other = plantd_shared::jwt::SigningKey::generate_ed25519("test-key").expect("key");
    let revoked_claims = claims("mallory", 600, grants);
    let revoked = f.key.sign(&revoked_claims).expect("sign");
    f.revoke(&revoked_claims.jti, "").await;
    for (conn, e) in [
        ("c-bad", event("connect-query.json", "c-bad", "not.a.token")),
        (
            "c-forged",
            event(
                "connect-header.json",
                "c-forged",
                &other.sign(&claims("eve", 600, grants)).expect("sign"),
            ),
        ),
        (
            "c-expired",
            event(
                "connect-query.json",
                "c-expired",
                &f.key.sign(&claims("old", -120, grants)).expect("sign"),
            ),
        ),
        (
            "c-revoked",
            event("connect-query.json", "c-revoked", &revoked),
        ),
    ] {
        assert_eq!(ws.handle_value(e).await.status_code, 401, "{conn}");
        assert!(reg.connection(conn).await.expect("get").is_none(), "{conn}");
    }
    // A valid token without any MQTT subscribe grant could receive nothing.
    let useless = f.key.sign(&claims("bob", 600, &[])).expect("sign");
    let r = ws
        .handle_value(event("connect-query.json", "c-useless", &useless))
        .await;
    assert_eq!(r.status_code, 403);
    // Not a WebSocket event at all.
    assert_eq!(
        ws.handle_value(json!({"rawPath": "/"})).await.status_code,
        400
    );
}

#[tokio::test]
async fn subscribe_unsubscribe_default_and_disconnect() {
    let (f, _moto, reg, ws) = setup().await;
    let token = f
        .key
        .sign(&claims("alice", 600, &[("plant-1", &["line1/#"])]))
        .expect("sign");
    assert_eq!(
        ws.handle_value(event("connect-query.json", "c1", &token))
            .await
            .status_code,
        200
    );
    let site = Site::new("plant-1").expect("site");

    // Covered by the grant: stored and acknowledged.
    let r = ws.handle_value(event("subscribe.json", "c1", "")).await;
    assert_eq!(frame(&r), json!({"op": "subscribed", "id": "temps"}));
    let subs = reg.by_site(&site).await.expect("query");
    assert_eq!(subs.len(), 1);
    assert_eq!(
        (subs[0].filter.as_str(), subs[0].expires),
        (
            "line1/+/temp",
            reg.connection("c1")
                .await
                .expect("get")
                .expect("c1")
                .expires
        )
    );

    let sub = |body: Value| with_body(event("subscribe.json", "c1", ""), &body);
    // The same id again: conflict.
    let r = ws.handle_value(event("subscribe.json", "c1", "")).await;
    assert_eq!(error(&r), (json!("temps"), "conflict".to_owned()));
    // Outside the grant (another subtree, another site, a wider filter): forbidden.
    for (s, filter) in [
        ("plant-1", "line2/#"),
        ("plant-2", "line1/#"),
        ("plant-1", "#"),
    ] {
        let r = ws
            .handle_value(sub(
                json!({"op": "subscribe", "id": "x", "site": s, "filter": filter}),
            ))
            .await;
        assert_eq!(
            error(&r),
            (json!("x"), "forbidden".to_owned()),
            "{s} {filter}"
        );
    }
    // Bad filter, bad site, unknown field, not JSON: bad_request.
    assert_bad_requests(
        &ws,
        "subscribe.json",
        "x",
        &[
            json!({"op": "subscribe", "id": "x", "site": "plant-1", "filter": "line1/#/x"}),
            json!({"op": "subscribe", "id": "x", "site": "pl ant", "filter": "line1/#"}),
            json!({"op": "subscribe", "id": "x", "site": "plant-1", "filter": "line1/#", "qos": 1}),
        ],
    )
    .await;
    // The limit (2 here).
    let r = ws
        .handle_value(sub(
            json!({"op": "subscribe", "id": "press", "site": "plant-1", "filter": "line1/press/#"}),
        ))
        .await;
    assert_eq!(frame(&r), json!({"op": "subscribed", "id": "press"}));
    let r = ws
        .handle_value(sub(
            json!({"op": "subscribe", "id": "third", "site": "plant-1", "filter": "line1/a"}),
        ))
        .await;
    assert_eq!(error(&r), (json!("third"), "bad_request".to_owned()));
    // A connection that never passed $connect.
    let r = ws
        .handle_value(event("subscribe.json", "c-unknown", ""))
        .await;
    assert_eq!(error(&r), (json!("temps"), "unauthorized".to_owned()));

    // Unsubscribe: once, then not_found.
    let r = ws.handle_value(event("unsubscribe.json", "c1", "")).await;
    assert_eq!(frame(&r), json!({"op": "unsubscribed", "id": "temps"}));
    let r = ws.handle_value(event("unsubscribe.json", "c1", "")).await;
    assert_eq!(error(&r), (json!("temps"), "not_found".to_owned()));

    // Anything else: an error frame naming what is accepted.
    let r = ws.handle_value(event("default.json", "c1", "")).await;
    let v = frame(&r);
    assert_eq!(
        (v["op"].as_str(), v["id"].as_str(), v["error"].as_str()),
        (Some("error"), Some("c1"), Some("bad_request"))
    );
    assert!(
        v["message"]
            .as_str()
            .unwrap_or_default()
            .contains("subscribe"),
        "{v}"
    );

    // $disconnect removes the connection and what is left of its subscriptions.
    assert_eq!(reg.by_site(&site).await.expect("query").len(), 1);
    let r = ws.handle_value(event("disconnect.json", "c1", "")).await;
    assert_eq!(r.status_code, 200);
    assert!(reg.connection("c1").await.expect("get").is_none());
    assert!(reg.by_site(&site).await.expect("query").is_empty());
}

/// The stored command at `seq`: subject, payload and headers (first value
/// of each) as the proxy set them: plantd's, without the send time, which
/// differs between two sends.
async fn stored_command(
    f: &common::Fixture,
    seq: u64,
) -> (String, Vec<u8>, std::collections::BTreeMap<String, String>) {
    let m = f.stored_command(seq).await;
    let headers = m
        .headers
        .iter()
        .filter(|(name, _)| {
            let name = name.to_string();
            name.starts_with("Plantd-") && name != headers::SENT
        })
        .filter_map(|(name, values)| Some((name.to_string(), values.first()?.as_str().to_owned())))
        .collect();
    assert!(
        m.headers.get(headers::SENT).is_some(),
        "a command carries its send time"
    );
    (m.subject.to_string(), m.payload.to_vec(), headers)
}

#[tokio::test]
async fn command_lands_in_the_commands_stream_like_the_rest_route_and_the_local_socket() {
    let (f, _moto, _reg, ws) = setup().await;
    // A token that may send commands to plant-1 and subscribe to nothing:
    // the socket is still worth accepting.
    let mut c = claims("carol", 600, &[]);
    c.perms = vec!["commands:plant-1:send".to_owned()];
    let token = f.key.sign(&c).expect("sign");
    assert_eq!(
        ws.handle_value(event("connect-header.json", "c1", &token))
            .await
            .status_code,
        200
    );

    // The fixture: a command with every option.
    let r = ws.handle_value(event("command.json", "c1", "")).await;
    let sent = frame(&r);
    assert_eq!(
        (
            sent["op"].as_str(),
            sent["id"].as_str(),
            sent["stream"].as_str()
        ),
        (Some("sent"), Some("c1"), Some(COMMANDS)),
        "{sent}"
    );
    let (subject, payload, got) =
        stored_command(&f, sent["sequence"].as_u64().expect("sequence")).await;
    assert_eq!(subject, "plantd.plant-1.down.line1.valve.set");
    assert_eq!(payload, b"open");
    let expected: std::collections::BTreeMap<String, String> = [
        (headers::QOS, "2"),
        (headers::RETAIN, "true"),
        (headers::TOPIC, "line1/valve/set"),
        (headers::TTL, "30"),
        (headers::CONTENT_TYPE, "text/plain"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(got, expected);

    // The same command through POST /v1/sites/{site}/commands is stored
    // with the same subject, payload and headers.
    let body = json!({"topic": "line1/valve/set", "payload": "open", "qos": 2,
                      "retain": true, "ttl_secs": 30, "content_type": "text/plain"});
    let rest = common::send_json(
        &f.app,
        "POST",
        "/v1/sites/plant-1/commands",
        Some(&token),
        &body,
    )
    .await;
    assert_eq!(rest.status.as_u16(), 202, "{:?}", rest.json());
    let seq = rest.json()["sequence"].as_u64().expect("sequence");
    assert_eq!(stored_command(&f, seq).await, (subject, payload, expected));

    let command = |body: Value| with_body(event("command.json", "c1", ""), &body);
    // Another site: forbidden, as the REST route answers 403 `forbidden`
    // (and the local socket the same frame, tests/live.rs).
    let other = json!({"op": "command", "id": "c2", "site": "plant-2", "topic": "t"});
    let r = ws.handle_value(command(other)).await;
    assert_eq!(error(&r), (json!("c2"), "forbidden".to_owned()));
    let rest = common::send_json(
        &f.app,
        "POST",
        "/v1/sites/plant-2/commands",
        Some(&token),
        &json!({"topic": "t"}),
    )
    .await;
    assert_eq!(
        (rest.status.as_u16(), rest.json()["error"].as_str()),
        (403, Some("forbidden"))
    );
    // An unknown field, no site, QoS 3, not JSON: bad_request.
    assert_bad_requests(
        &ws,
        "command.json",
        "c3",
        &[
            json!({"op": "command", "id": "c3", "site": "plant-1", "topic": "t", "colour": "red"}),
            json!({"op": "command", "id": "c3", "topic": "t"}),
            json!({"op": "command", "id": "c3", "site": "plant-1", "topic": "t", "qos": 3}),
        ],
    )
    .await;
    // A connection that never passed $connect.
    let r = ws
        .handle_value(event("command.json", "c-unknown", ""))
        .await;
    assert_eq!(error(&r), (json!("c1"), "unauthorized".to_owned()));

    // Once the token is revoked, the connection can neither command nor
    // subscribe, even before the fan-out closes it.
    f.revoke(&c.jti, &c.exp.to_string()).await;
    let r = ws.handle_value(event("command.json", "c1", "")).await;
    assert_eq!(error(&r), (json!("c1"), "unauthorized".to_owned()));
}

/// A socket opened without a token (the app's, through the dashboard's
/// `/v1/ws`) authenticates with its first frame: the same verification and
/// refusals as `$connect`, as frames.
#[tokio::test]
async fn auth_as_the_first_frame_authenticates_a_socket_opened_without_a_token() {
    let (f, _moto, reg, ws) = setup().await;
    let grants: &[(&str, &[&str])] = &[("plant-1", &["line1/#"])];
    let r = ws.handle_value(event("connect-bare.json", "c1", "")).await;
    assert_eq!(r.status_code, 200);

    // Before `auth`, nothing but `auth` is accepted.
    let r = ws.handle_value(event("subscribe.json", "c1", "")).await;
    let (id, code) = error(&r);
    assert_eq!((id, code.as_str()), (json!("temps"), "unauthorized"));
    assert!(
        frame(&r)["message"]
            .as_str()
            .unwrap_or_default()
            .contains("\"op\":\"auth\"")
    );

    // Refused: not a token, an expired one, a revoked one (unauthorized);
    // one that can do nothing on a socket (forbidden); a malformed frame.
    let revoked_claims = claims("mallory", 600, grants);
    let revoked = f.key.sign(&revoked_claims).expect("sign");
    f.revoke(&revoked_claims.jti, "").await;
    let expired = f.key.sign(&claims("old", -120, grants)).expect("sign");
    let useless = f.key.sign(&claims("bob", 600, &[])).expect("sign");
    for (token, code) in [
        ("not.a.token", "unauthorized"),
        (expired.as_str(), "unauthorized"),
        (revoked.as_str(), "unauthorized"),
        (useless.as_str(), "forbidden"),
    ] {
        let r = ws.handle_value(event("auth.json", "c1", token)).await;
        assert_eq!(error(&r), (Value::Null, code.to_owned()), "{token}");
        assert!(reg.connection("c1").await.expect("get").is_none());
    }
    let r = ws
        .handle_value(with_body(
            event("auth.json", "c1", ""),
            &json!({"op": "auth", "token": "a.b.c", "extra": 1}),
        ))
        .await;
    assert_eq!(error(&r).1, "bad_request");

    // A good token: `authenticated`, recorded as `$connect` records.
    let c = claims("alice", 600, grants);
    let token = f.key.sign(&c).expect("sign");
    let r = ws.handle_value(event("auth.json", "c1", &token)).await;
    assert_eq!(
        frame(&r),
        json!({"op": "authenticated", "sub": "alice", "org": "acme", "expires": c.exp})
    );
    let stored = reg.connection("c1").await.expect("get").expect("recorded");
    assert_eq!(
        (stored.claims.sub.as_str(), stored.expires),
        ("alice", c.exp)
    );
    // Once only.
    let r = ws.handle_value(event("auth.json", "c1", &token)).await;
    assert_eq!(error(&r).1, "conflict");
    // Then the socket works as one authenticated on the handshake.
    let r = ws.handle_value(event("subscribe.json", "c1", "")).await;
    assert_eq!(frame(&r), json!({"op": "subscribed", "id": "temps"}));
}
