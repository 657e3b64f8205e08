//! The REST layer: a password login, a state round trip whose stale write
//! is a typed 409, the API's errors as values, history pages as a stream,
//! and no secret in `Debug`.

use std::time::Duration;

use futures::StreamExt as _;
use plantd_client::proxy::{params, types};
use plantd_client::{Error, Options, Plantd};
use serde_json::json;

use crate::common::{SITE, Stack, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_a_state_round_trip_and_a_conflict_that_names_itself() {
    let stack = Stack::start().await;
    let plantd = &stack.admin;
    let created = plantd
        .rest()
        .post_state_scopes(&types::NewScope {
            scope: "sdk".to_owned(),
        })
        .await
        .expect("the scope is created");
    assert_eq!(created.status, 201);

    assert_eq!(
        plantd
            .get_state::<serde_json::Value>("sdk", "recipe")
            .await
            .expect("read"),
        None
    );
    let etag = plantd
        .put_state("sdk", "recipe", &json!({"temp": 180}), None)
        .await
        .expect("write");
    let got = plantd
        .get_state::<serde_json::Value>("sdk", "recipe")
        .await
        .expect("read")
        .expect("present");
    assert_eq!(got.value, json!({"temp": 180}));
    assert_eq!(got.etag, etag);
    plantd
        .put_state("sdk", "recipe", &json!({"temp": 190}), Some(&etag))
        .await
        .expect("a write with the current ETag");
    // Someone else wrote since `etag` was read: 409, and nothing changes.
    let stale = plantd
        .put_state("sdk", "recipe", &json!({"temp": 200}), Some(&etag))
        .await
        .expect_err("a write with a stale ETag");
    assert!(stale.is_conflict(), "{stale:?}");
    assert_eq!(stale.code(), "conflict");
    assert!(matches!(&stale, Error::Api { status: 409, message, .. } if !message.is_empty()));
    let now = plantd
        .get_state::<serde_json::Value>("sdk", "recipe")
        .await
        .expect("read")
        .expect("present");
    assert_eq!(now.value, json!({"temp": 190}));

    // The API's refusals are typed values with its code and message.
    let missing = plantd
        .rest()
        .get_sites_site_last(
            "no-such-site",
            &params::GetSitesSiteLastParams {
                topic: "a/b".to_owned(),
            },
        )
        .await
        .expect_err("an unregistered site");
    assert_eq!(
        (missing.status(), missing.code()),
        (Some(404), "not_found"),
        "{missing:?}"
    );

    // A wrong password is the API's 401, not a refusal of a token.
    let wrong = Plantd::login(&stack.up.url, &stack.up.admin_email, "wrong password")
        .await
        .expect_err("a wrong password");
    assert_eq!(wrong.status(), Some(401), "{wrong:?}");

    // Secrets never show.
    let shown = format!("{plantd:?}");
    assert!(!shown.contains(&stack.up.admin_password), "{shown}");
    assert!(!shown.contains("eyJ"), "a JWT in {shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_are_one_stream_and_a_slow_call_is_a_typed_timeout() {
    let stack = Stack::start().await;
    let (id, token) = stack
        .device("sdk-history", &["sdk/#"], &["sdk/mute/#"])
        .await;
    let mut device = stack.mqtt(&id, &token).await;
    for n in 1..=7 {
        device.publish1("sdk/history/n", false, n.to_string()).await;
    }
    // Two per page: the stream follows the cursors.
    let page = params::GetSitesSiteHistoryParams {
        limit: Some(2),
        order: Some(types::Order::Asc),
        ..Default::default()
    };
    let values = plantd_testkit::eventually(WAIT, "all seven in history", || async {
        let all: Vec<_> = stack
            .admin
            .history(SITE, "sdk/history/#", page.clone())
            .collect()
            .await;
        let values: Vec<String> = all
            .into_iter()
            .map(|m| m.expect("a page"))
            .map(|m| match m.value {
                Some(serde_json::Value::String(s)) => s,
                other => format!("{other:?}"),
            })
            .collect();
        (values.len() == 7).then_some(values)
    })
    .await;
    assert_eq!(values, ["1", "2", "3", "4", "5", "6", "7"]);

    // A device serves `sdk/mute/#` but never answers: with a client time
    // limit of 500 ms and a service-call limit of 10 s, the call ends as a
    // typed timeout after 500 ms instead of hanging.
    device.sub("sdk/mute/#", rumqttc::QoS::AtLeastOnce).await;
    let hasty = stack
        .login(Options {
            timeout: Duration::from_millis(500),
            ..Options::default()
        })
        .await;
    let limit = params::PostSitesSiteCallTopicParams {
        timeout_ms: Some(10_000),
    };
    plantd_testkit::eventually(
        WAIT,
        "the call to time out (not 503: the responder is there)",
        || async {
            let e = hasty
                .rest()
                .post_sites_site_call_topic(
                    SITE,
                    "sdk/mute/status",
                    &limit,
                    plantd_client::RawBody::text("?"),
                )
                .await
                .expect_err("nobody answers");
            match e {
                Error::Timeout(d) => Some(d),
                Error::Api { status: 503, .. } => None,
                other => panic!("{other:?}"),
            }
        },
    )
    .await;
}
