//! Sites belong to organisations on the AWS path too: the `websocket`
//! function refuses a second organisation's `subscribe` and `command` on
//! another organisation's site (its admin's and its service account's
//! tokens; a device token is not accepted at `$connect`), and the fan-out
//! posts a subscription only while its site is owned by the organisation
//! it was authorised for (read from `plantd_sites`). Real parts: nats-server,
//! DynamoDB in `moto`, the management API stand-in.

use crate::aws_common;
use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use aws_common::{Stub, claims, event, registry, sdk, with_body};
use plantd_proxy::aws::fanout::{Fanout, management_client};
use plantd_proxy::aws::registry::{Interest, Subscribed};
use plantd_proxy::aws::websocket::{Handler, WsResponse};
use plantd_shared::claims::{Audience, PrincipalKind, site_audience};
use plantd_shared::sites::{SiteCache, Sites};
use plantd_shared::streams::COMMANDS;
use plantd_shared::subject::Site;
use plantd_shared::topic::{Filter, Topic};
use plantd_testkit::Moto;
use serde_json::{Value, json};

fn site(s: &str) -> Site {
    Site::new(s).expect("a site")
}

/// The frame of a route response.
fn frame(r: &WsResponse) -> Value {
    assert_eq!(r.status_code, 200, "{r:?}");
    serde_json::from_str(r.body.as_deref().expect("a frame")).expect("JSON")
}

/// A token of `org` (`kind`, `roles`) with the admin role's permissions and
/// MQTT grant `#` on every site.
fn token(f: &common::Fixture, sub: &str, org: &str, kind: PrincipalKind) -> String {
    let mut c = claims(sub, 600, &[("*", &["#"])]);
    c.org = org.into();
    c.kind = kind;
    c.roles = vec!["admin".into()];
    c.perms = vec!["commands:*:send".into(), "telemetry:*:read".into()];
    if kind == PrincipalKind::Device {
        c.aud = Audience::One(site_audience(&site("plant-1")));
    }
    f.key.sign(&c).expect("sign")
}

async fn commands_stored(f: &common::Fixture) -> u64 {
    plantd_testkit::stream_messages(&f.nats.jetstream().await, COMMANDS).await
}

#[tokio::test]
async fn the_websocket_function_refuses_another_organisations_site() {
    let f = common::fixture().await;
    let moto = Moto::start().await;
    let reg = registry(&moto, "conns").await;
    let ws = Handler::new(f.state.clone(), reg.clone(), 10);
    let before = commands_stored(&f).await;

    for (conn, kind) in [
        ("initech-admin", PrincipalKind::User),
        ("initech-service", PrincipalKind::Service),
    ] {
        let t = token(&f, conn, "initech", kind);
        let r = ws
            .handle_value(event("connect-header.json", conn, &t))
            .await;
        assert_eq!(r.status_code, 200, "{conn}: the socket itself is allowed");
        let r = ws
            .handle_value(with_body(
                event("subscribe.json", conn, ""),
                &json!({"op": "subscribe", "id": "spy", "site": "plant-1", "filter": "#"}),
            ))
            .await;
        assert_eq!(
            frame(&r),
            json!({"op": "error", "id": "spy", "error": "forbidden",
                   "message": "site plant-1 belongs to another organisation"}),
            "{conn}"
        );
        let r = ws
            .handle_value(with_body(
                event("command.json", conn, ""),
                &json!({"op": "command", "id": "c", "site": "plant-1", "topic": "valve/7/set", "payload": "open"}),
            ))
            .await;
        let v = frame(&r);
        assert_eq!(
            (v["id"].as_str(), v["error"].as_str()),
            (Some("c"), Some("forbidden")),
            "{conn}: {v}"
        );
        let r = ws
            .handle_value(with_body(
                event("subscribe.json", conn, ""),
                &json!({"op": "subscribe", "id": "ghost", "site": "nowhere", "filter": "#"}),
            ))
            .await;
        assert_eq!(frame(&r)["error"], "not_found", "{conn}");
    }
    assert!(
        reg.by_site(&site("plant-1"))
            .await
            .expect("query")
            .is_empty(),
        "nothing was recorded for acme's site"
    );
    assert_eq!(commands_stored(&f).await, before, "no command was stored");

    // A device token is no API token: refused at the handshake.
    let device = token(&f, "press", "initech", PrincipalKind::Device);
    let r = ws
        .handle_value(event("connect-header.json", "initech-device", &device))
        .await;
    assert_eq!(r.status_code, 401);

    // acme's own socket subscribes, and the subscription records the owner.
    let acme = token(&f, "alice", "acme", PrincipalKind::User);
    assert_eq!(
        ws.handle_value(event("connect-header.json", "acme-1", &acme))
            .await
            .status_code,
        200
    );
    let r = ws.handle_value(event("subscribe.json", "acme-1", "")).await;
    assert_eq!(frame(&r), json!({"op": "subscribed", "id": "temps"}));
    let subs = reg.by_site(&site("plant-1")).await.expect("query");
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0].site_org.as_deref(), Some("acme"));
}

#[tokio::test]
async fn the_fan_out_posts_only_while_the_site_is_owned_by_the_subscribers_organisation() {
    let f = common::fixture().await;
    let moto = Moto::start().await;
    let reg = registry(&moto, "conns").await;
    let acme = claims("alice", 600, &[("*", &["#"])]);
    let mut initech = claims("ivan", 600, &[("*", &["#"])]);
    initech.org = "initech".into();
    reg.connect("acme-conn", &acme).await.expect("connect");
    reg.connect("initech-conn", &initech)
        .await
        .expect("connect");
    // acme's subscription, as the websocket function records it, and one
    // that claims initech owns plant-1 (a forged or stale item).
    for (conn, owner) in [("acme-conn", "acme"), ("initech-conn", "initech")] {
        let added = reg
            .subscribe(
                conn,
                "all",
                &Interest {
                    site: &site("plant-1"),
                    site_org: owner,
                    filter: &Filter::new("#").expect("filter"),
                },
                acme.exp,
                10,
            )
            .await
            .expect("subscribe");
        assert_eq!(added, Subscribed::Added);
    }
    let stub = Stub::start(&[]).await;
    let config = sdk(&moto.endpoint()).await;
    let sites = Sites::open(&f.nats.jetstream().await)
        .await
        .expect("plantd_sites");
    let fanout = Fanout::new(reg.clone(), management_client(&config, &stub.endpoint))
        .with_sites(SiteCache::new(sites.clone(), Duration::ZERO));
    let plant = site("plant-1");
    let topic = Topic::new("line1/temp").expect("topic");
    let none = BTreeMap::new();
    let fan_out = || fanout.fan_out(&plant, &topic, b"21.5", &none);
    let posted_to = |stub: &Stub| -> Vec<String> {
        stub.seen().into_iter().map(|s| s.path).collect::<Vec<_>>()
    };

    let report = fan_out().await.expect("fan-out");
    assert_eq!((report.delivered, report.not_owned), (1, 1), "{report:?}");
    assert_eq!(posted_to(&stub), ["/@connections/acme-conn"]);

    // The site is deleted: nobody hears it any more.
    sites.delete("plant-1").await.expect("delete");
    let report = fan_out().await.expect("fan-out");
    assert_eq!((report.delivered, report.not_owned), (0, 2), "{report:?}");

    // Registered anew to initech: acme's old subscription stays silent.
    f.register_site("initech", "plant-1").await;
    let report = fan_out().await.expect("fan-out");
    assert_eq!((report.delivered, report.not_owned), (1, 1), "{report:?}");
    assert_eq!(
        posted_to(&stub),
        ["/@connections/acme-conn", "/@connections/initech-conn"]
    );
}
