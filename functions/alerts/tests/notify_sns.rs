//! SNS channels against the moto emulator: a firing record routed to an
//! SNS channel is published once to its topic with a subject, the
//! notification JSON as the message and the severity, site and rule as
//! message attributes. What moto published is read from its
//! `/moto-api/data.json` (each topic's `sent_notifications`).

mod notify_common;

use aws_config::{Region, SdkConfig};
use aws_sdk_sns::config::Credentials;
use notify_common::*;
use plantd_alerts::notify::sns::Publisher;
use plantd_testkit::{Moto, eventually, http, init_tracing};
use serde_json::Value;

async fn sdk(endpoint: &str) -> SdkConfig {
    plantd_shared::aws::config_loader()
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
        .load()
        .await
}

/// What moto's topic `arn` has published: `[message id, message, subject,
/// attributes, group]` each.
async fn sent(moto: &Moto, arn: &str) -> Vec<Value> {
    let resp = http::get(moto.port(), "/moto-api/data.json")
        .await
        .expect("moto data");
    let data: Value = serde_json::from_slice(&resp.body).expect("JSON");
    data["sns"]["Topic"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["arn"] == arn)
        .flat_map(|t| {
            t["sent_notifications"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

#[tokio::test]
async fn a_firing_record_is_published_to_the_topic_once() {
    init_tracing();
    let moto = Moto::start().await;
    let config = sdk(&moto.endpoint()).await;
    let topic = aws_sdk_sns::Client::new(&config)
        .create_topic()
        .name("plant-alerts")
        .send()
        .await
        .expect("moto creates the topic");
    let arn = topic.topic_arn().expect("an ARN").to_owned();
    let (_nats, js) = nats().await;
    channel(
        &js,
        ORG,
        "aws",
        serde_json::json!({ "sns": { "topic_arn": arn } }),
    )
    .await;
    let notifier = notifier(&js).await.with_sns(Publisher::with_config(config));
    let (trigger, _) = bound(&js, notifier).await;

    let record = firing("overheat", 1, &["aws"]);
    publish(&js, &record).await;
    let got = eventually(WAIT, "the SNS publish in moto", || async {
        let s = sent(&moto, &arn).await;
        (!s.is_empty()).then_some(s)
    })
    .await;
    assert_eq!(got.len(), 1, "{got:?}");
    let [_, message, subject, attributes, _] = got[0].as_array().expect("a tuple").as_slice()
    else {
        panic!("unexpected shape {:?}", got[0]);
    };
    assert_eq!(subject, "[FIRING] Rule overheat on plant-1");
    let body: Value = serde_json::from_str(message.as_str().expect("text")).expect("JSON message");
    assert_eq!(body["id"], "aws:overheat:k1:1");
    assert_eq!(body["event"], "firing");
    assert_eq!(body["record"]["id"], record.id);
    assert_eq!(attributes["severity"]["Value"], "critical");
    assert_eq!(attributes["site"]["Value"], "plant-1");
    assert_eq!(attributes["rule"]["Value"], "overheat");

    // A second record proves the first is not published again.
    publish(&js, &firing("overheat", 2, &["aws"])).await;
    let got = eventually(WAIT, "the second SNS publish", || async {
        let s = sent(&moto, &arn).await;
        (s.len() >= 2).then_some(s)
    })
    .await;
    assert_eq!(got.len(), 2, "{got:?}");
    trigger.shutdown().await;
}

#[tokio::test]
async fn a_publish_to_a_missing_topic_fails_the_test_send() {
    let moto = Moto::start().await;
    let (_nats, js) = nats().await;
    let ch = channel(
        &js,
        ORG,
        "aws",
        serde_json::json!({ "sns": { "topic_arn": "arn:aws:sns:us-east-1:123456789012:none" } }),
    )
    .await;
    let notifier = notifier(&js)
        .await
        .with_sns(Publisher::with_config(sdk(&moto.endpoint()).await));
    let err = notifier.send_test(&ch).await.expect_err("no such topic");
    assert!(
        err.to_string()
            .contains("arn:aws:sns:us-east-1:123456789012:none"),
        "{err}"
    );
}
