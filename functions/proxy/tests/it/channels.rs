//! `/v1/alert-channels` over a real nats-server: channels are created,
//! read, replaced and deleted in the caller's organisation only (another
//! organisation's → 404); no answer ever carries a webhook's secret; bad
//! channels are refused naming the field; test sends reach a real
//! receiver signed with the stored secret (502 when refused); writes are
//! audited. A channel whose sealed secret does not open with the proxy's
//! channel key answers 409 naming it, until a PUT gives a new secret.

use crate::common;

use common::{ORG, fixture, get, send, send_json};
use plantd_shared::audit::{self, Query};
use plantd_testkit::webhook::Receiver;
use serde_json::{Value, json};

const SECRET: &str = "the channel secret, 32 bytes...!";
const ADMIN: &[&str] = &["alerts:admin"];

fn webhook(url: &str) -> Value {
    json!({ "webhook": { "url": url, "secret": SECRET, "headers": {"Authorization": "Bearer hidden"} },
            "matchers": [{"label": "severity", "op": "=", "value": "critical"}] })
}

#[tokio::test]
async fn channels_are_managed_and_never_show_their_secret() {
    let f = fixture().await;
    let token = f.token(ORG, ADMIN);
    let receiver = Receiver::start().await;

    let a = send_json(
        &f.app,
        "PUT",
        "/v1/alert-channels/ops",
        Some(&token),
        &webhook(&receiver.url()),
    )
    .await;
    assert_eq!(a.status.as_u16(), 201, "{:?}", a.json());
    let shown = String::from_utf8_lossy(&a.body).into_owned();
    assert!(
        !shown.contains(SECRET) && !shown.contains("hidden"),
        "{shown}"
    );
    let v = a.json();
    assert_eq!(v["name"], "ops");
    assert_eq!(v["type"], "webhook");
    assert_eq!(v["webhook"]["url"], receiver.url());
    assert_eq!(v["webhook"]["secret_set"], true);
    assert_eq!(v["webhook"]["headers"], json!(["Authorization"]));
    assert_eq!(v["send_resolved"], true);
    assert_eq!(v["matchers"][0]["value"], "critical");

    for answer in [
        get(&f.app, "/v1/alert-channels/ops", Some(&token)).await,
        get(&f.app, "/v1/alert-channels", Some(&token)).await,
    ] {
        assert_eq!(answer.status.as_u16(), 200);
        let text = String::from_utf8_lossy(&answer.body).into_owned();
        assert!(text.contains("\"ops\""), "{text}");
        assert!(!text.contains(SECRET) && !text.contains("hidden"), "{text}");
    }

    // Replaced without a secret: the stored one is kept and signs.
    let a = send_json(
        &f.app,
        "PUT",
        "/v1/alert-channels/ops",
        Some(&token),
        &json!({ "webhook": { "url": receiver.url() }, "send_resolved": false }),
    )
    .await;
    assert_eq!(a.status.as_u16(), 200, "{:?}", a.json());
    assert_eq!(a.json()["send_resolved"], false);
    let a = send(
        &f.app,
        "POST",
        "/v1/alert-channels/ops/test",
        Some(&token),
        &[],
        "",
    )
    .await;
    assert_eq!(a.status.as_u16(), 200, "{:?}", a.json());
    assert_eq!(a.json()["delivered"], true);
    assert_eq!(a.json()["receipt"], "200");
    let got = receiver
        .wait_for(1, std::time::Duration::from_secs(10))
        .await;
    assert!(
        got[0].verify(SECRET),
        "signed with the secret kept from the first PUT"
    );
    assert_eq!(got[0].json()["event"], "test");
    assert_eq!(got[0].json()["record"]["org"], ORG);

    // A refusing receiver: 502 with its answer.
    receiver.fail_next(1, 410);
    let a = send(
        &f.app,
        "POST",
        "/v1/alert-channels/ops/test",
        Some(&token),
        &[],
        "",
    )
    .await;
    assert_eq!(a.status.as_u16(), 502, "{:?}", a.json());
    assert!(
        a.json()["message"]
            .as_str()
            .unwrap_or_default()
            .contains("410"),
        "{:?}",
        a.json()
    );

    let a = send(
        &f.app,
        "DELETE",
        "/v1/alert-channels/ops",
        Some(&token),
        &[],
        "",
    )
    .await;
    assert_eq!(a.status.as_u16(), 204);
    assert_eq!(
        get(&f.app, "/v1/alert-channels/ops", Some(&token))
            .await
            .status
            .as_u16(),
        404
    );
    let a = send(
        &f.app,
        "DELETE",
        "/v1/alert-channels/ops",
        Some(&token),
        &[],
        "",
    )
    .await;
    assert_eq!(a.status.as_u16(), 404);

    let js = f.nats.jetstream().await;
    let actions: Vec<String> = audit::read(
        &js,
        &Query {
            org: ORG.into(),
            limit: 100,
            ..Query::default()
        },
    )
    .await
    .expect("read the trail")
    .records
    .into_iter()
    .map(|s| s.record.action.to_string())
    .filter(|a| a.starts_with("alert.channel"))
    .collect();
    assert_eq!(
        actions,
        vec![
            "alert.channel_put",
            "alert.channel_put",
            "alert.channel_test",
            "alert.channel_test",
            "alert.channel_delete"
        ]
    );
}

#[tokio::test]
async fn another_organisations_channel_is_not_found() {
    let f = fixture().await;
    let ours = f.token(ORG, ADMIN);
    let theirs = f.token("initech", ADMIN);
    let a = send_json(
        &f.app,
        "PUT",
        "/v1/alert-channels/ops",
        Some(&ours),
        &webhook("http://127.0.0.1:9/x"),
    )
    .await;
    assert_eq!(a.status.as_u16(), 201);

    assert_eq!(
        get(&f.app, "/v1/alert-channels/ops", Some(&theirs))
            .await
            .status
            .as_u16(),
        404
    );
    let a = send(
        &f.app,
        "POST",
        "/v1/alert-channels/ops/test",
        Some(&theirs),
        &[],
        "",
    )
    .await;
    assert_eq!(a.status.as_u16(), 404);
    let a = send(
        &f.app,
        "DELETE",
        "/v1/alert-channels/ops",
        Some(&theirs),
        &[],
        "",
    )
    .await;
    assert_eq!(a.status.as_u16(), 404);
    let list = get(&f.app, "/v1/alert-channels", Some(&theirs))
        .await
        .json();
    assert_eq!(list["channels"], json!([]));
    // Their own channel of the same name is theirs alone.
    let a = send_json(
        &f.app,
        "PUT",
        "/v1/alert-channels/ops",
        Some(&theirs),
        &webhook("http://127.0.0.1:9/y"),
    )
    .await;
    assert_eq!(a.status.as_u16(), 201);
    let ours_now = get(&f.app, "/v1/alert-channels/ops", Some(&ours))
        .await
        .json();
    assert_eq!(ours_now["webhook"]["url"], "http://127.0.0.1:9/x");

    // Without alerts:admin: 403, even to read.
    let viewer = f.token(ORG, &["alerts:read"]);
    assert_eq!(
        get(&f.app, "/v1/alert-channels", Some(&viewer))
            .await
            .status
            .as_u16(),
        403
    );
}

#[tokio::test]
async fn bad_channels_are_refused_naming_the_field() {
    let f = fixture().await;
    let token = f.token(ORG, ADMIN);
    let cases = [
        ("ops", json!({}), "webhook"),
        (
            "ops",
            json!({"webhook": {"url": "ftp://x", "secret": SECRET}}),
            "webhook.url",
        ),
        (
            "ops",
            json!({"webhook": {"url": "http://x"}}),
            "webhook.secret",
        ),
        (
            "ops",
            json!({"webhook": {"url": "http://x", "secret": SECRET, "timeout_ms": "soon"}}),
            "webhook.timeout_ms",
        ),
        ("ops", json!({"webhok": {}}), "webhok"),
        (
            "ops",
            json!({"sns": {"topic_arn": "not-an-arn"}}),
            "sns.topic_arn",
        ),
        (
            "ops",
            json!({"webhook": {"url": "http://x", "secret": SECRET},
            "matchers": [{"label": "site", "op": "=~", "value": "("}]}),
            "matchers[0].value",
        ),
        (
            "Bad.Name",
            json!({"webhook": {"url": "http://x", "secret": SECRET}}),
            "name",
        ),
    ];
    for (name, body, field) in cases {
        let a = send_json(
            &f.app,
            "PUT",
            &format!("/v1/alert-channels/{name}"),
            Some(&token),
            &body,
        )
        .await;
        assert_eq!(a.status.as_u16(), 400, "{body}: {:?}", a.json());
        let message = a.json()["message"].as_str().unwrap_or_default().to_owned();
        assert!(
            message.contains(field),
            "{body}: {message:?} should name {field}"
        );
    }
    assert_eq!(
        get(&f.app, "/v1/alert-channels", Some(&token)).await.json()["channels"],
        json!([])
    );
}

#[tokio::test]
async fn a_secret_sealed_with_another_key_is_a_conflict_until_replaced() {
    let f = fixture().await;
    let token = f.token(ORG, ADMIN);
    let receiver = Receiver::start().await;
    // Written by a deployment with another channel key.
    let spec: plantd_alerts::notify::ChannelSpec =
        serde_json::from_value(webhook(&receiver.url())).expect("spec");
    let elsewhere = plantd_alerts::notify::Channels::open(
        &f.nats.jetstream().await,
        std::sync::Arc::new(plantd_alerts::notify::ChannelKeys::generate()),
    )
    .await
    .expect("channels");
    elsewhere
        .put(&spec.into_channel(ORG, "ops", None).expect("channel"))
        .await
        .expect("stored");

    for (method, path, body) in [
        ("GET", "/v1/alert-channels/ops", None),
        ("POST", "/v1/alert-channels/ops/test", None),
        (
            "PUT",
            "/v1/alert-channels/ops",
            Some(json!({"webhook": {"url": receiver.url()}})),
        ),
    ] {
        let a = match &body {
            Some(b) => send_json(&f.app, method, path, Some(&token), b).await,
            None => send(&f.app, method, path, Some(&token), &[], Vec::new()).await,
        };
        assert_eq!(a.status.as_u16(), 409, "{method} {path}: {:?}", a.json());
        let text = String::from_utf8_lossy(&a.body).into_owned();
        assert!(
            text.contains("channel acme.ops: its webhook secret does not open")
                && !text.contains(SECRET),
            "{text}"
        );
    }
    assert!(receiver.requests().is_empty(), "nothing sent unsigned");

    // A PUT with a secret replaces it; the channel works again.
    let a = send_json(
        &f.app,
        "PUT",
        "/v1/alert-channels/ops",
        Some(&token),
        &webhook(&receiver.url()),
    )
    .await;
    assert_eq!(a.status.as_u16(), 200, "{:?}", a.json());
    let a = send(
        &f.app,
        "POST",
        "/v1/alert-channels/ops/test",
        Some(&token),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(a.status.as_u16(), 200, "{:?}", a.json());
    assert!(receiver.requests()[0].verify(SECRET));
}
