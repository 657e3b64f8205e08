//! The hand-written typed calls (`plantd_client::alerting`,
//! `plantd_client::credentials`) against `plantd up`: alert rules,
//! silences and channels round trip with nothing lost; a channel test
//! reaches a real webhook receiver; the API's refusals are typed errors;
//! a stored session's tokens log in, say who they are, rotate, and a
//! reused refresh token is refused.

use plantd_client::alerting::{AlertFilter, LabelMatcher, NewSilence};
use plantd_client::credentials::{self, DEFAULT_TIMEOUT};
use plantd_client::proxy::types::{MatchOp, Severity};
use plantd_client::{Error, Plantd, Secret};
use plantd_testkit::webhook::Receiver;
use serde_json::json;

use crate::common::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_rules_silences_and_channels_are_typed_and_lose_nothing() {
    let stack = Stack::start().await;
    let rest = stack.admin.rest();

    // A rule: typed by the document, and it comes back as sent.
    let rule = json!({
        "id": "sdk-hot", "name": "Too hot", "severity": "critical", "for": "1m",
        "labels": {"team": "ops"},
        "condition": {"kind": "threshold", "topic": "line1/temp", "op": ">", "value": 80},
    });
    let put = rest
        .put_alert_rule("sdk-hot", &rule)
        .await
        .expect("the rule is stored");
    assert!(put.created, "a new rule is 201");
    let again = rest
        .put_alert_rule("sdk-hot", &rule)
        .await
        .expect("replaced");
    assert!(!again.created, "a replaced rule is 200");
    let rules = rest.list_alert_rules().await.expect("the rules");
    let got = rules
        .iter()
        .find(|r| r.id == "sdk-hot")
        .expect("the rule is listed");
    assert_eq!(got.severity, Some(Severity::Critical));
    assert_eq!(got.r#for.as_deref(), Some("1m"));
    assert_eq!(got.condition_kind(), Some("threshold"));
    assert_eq!(got.watches(), Some("line1/temp"));
    assert_eq!(
        got.labels
            .as_ref()
            .and_then(|l| l.get("team"))
            .map(String::as_str),
        Some("ops")
    );
    assert_eq!(got.condition["value"], json!(80.0));
    let one = rest.get_alert_rule("sdk-hot").await.expect("one rule");
    assert_eq!(&one, got);

    // A bad rule is the API's 400 naming the field, as a value.
    let bad = rest
        .put_alert_rule(
            "sdk-bad",
            &json!({"id": "sdk-bad", "for": "-1s",
            "condition": {"kind": "threshold", "topic": "t", "op": ">", "value": 1}}),
        )
        .await
        .expect_err("a negative `for` is refused");
    assert!(
        matches!(&bad, Error::Api { status: 400, message, .. } if message.contains("for")),
        "{bad:?}"
    );

    // Nothing fires yet; an unknown alert is a 404.
    let firing = rest
        .list_alerts(&AlertFilter {
            state: Some("firing".into()),
            ..AlertFilter::default()
        })
        .await
        .expect("the alerts");
    assert!(firing.is_empty(), "{firing:?}");
    let unknown = rest
        .alert_history("sdk-hot.0000")
        .await
        .expect_err("no such alert");
    assert!(unknown.is_not_found(), "{unknown:?}");

    // A silence: created, listed as active, ended.
    let silence = rest
        .create_silence(&NewSilence {
            matchers: vec![LabelMatcher {
                label: "rule".into(),
                op: MatchOp::Eq,
                value: "sdk-hot".into(),
            }],
            ends: "2099-01-01T00:00:00Z".into(),
            comment: Some("maintenance".into()),
            ..NewSilence::default()
        })
        .await
        .expect("the silence is created");
    let silence_id = silence.id.expect("the server names the silence");
    assert!(!silence_id.is_empty());
    let listed = rest.list_silences().await.expect("the silences");
    let s = listed
        .iter()
        .find(|s| s.id == silence_id)
        .expect("the silence is listed");
    assert!(s.active);
    assert_eq!(s.matchers[0].to_string(), "rule=sdk-hot");
    assert_eq!(s.comment, "maintenance");
    rest.delete_silence(&silence_id)
        .await
        .expect("the silence ends");

    // A channel: its target typed, its secret never sent back, a test
    // notification reaching a real receiver.
    let receiver = Receiver::start().await;
    let secret = "sdk test secret, long enough.....";
    let put = rest
        .put_channel(
            "sdk-ops",
            &json!({"webhook": {"url": receiver.url(), "secret": secret},
                "matchers": [{"label": "team", "op": "=", "value": "ops"}]}),
        )
        .await
        .expect("the channel is stored");
    assert!(put.created);
    let channels = rest.list_channels().await.expect("the channels");
    let c = channels
        .iter()
        .find(|c| c.name == "sdk-ops")
        .expect("the channel is listed");
    assert_eq!(c.r#type, "webhook");
    assert_eq!(c.target(), Some(receiver.url().as_str()));
    assert_eq!(c.matchers[0].to_string(), "team=ops");
    assert!(
        !serde_json::to_string(&channels)
            .expect("json")
            .contains(secret),
        "a channel's secret is never sent back"
    );
    rest.test_channel("sdk-ops")
        .await
        .expect("the receiver takes the test notification");
    rest.delete_channel("sdk-ops").await.expect("deleted");
    let gone = rest.get_channel("sdk-ops").await.expect_err("deleted");
    assert!(gone.is_not_found(), "{gone:?}");
    rest.delete_alert_rule("sdk-hot").await.expect("deleted");
    assert!(
        rest.get_alert_rule("sdk-hot")
            .await
            .expect_err("deleted")
            .is_not_found()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_session_tokens_log_in_rotate_and_a_reused_refresh_token_is_refused() {
    let stack = Stack::start().await;
    let up = &stack.up;
    let http = reqwest::Client::new();

    let wrong = credentials::login(
        &http,
        &up.url,
        &up.admin_email,
        &Secret::new("not the password"),
        &[],
        DEFAULT_TIMEOUT,
    )
    .await
    .expect_err("a wrong password");
    assert_eq!(wrong.status(), Some(401), "{wrong:?}");

    let issued = credentials::login(
        &http,
        &up.url,
        &up.admin_email,
        &Secret::new(up.admin_password.as_str()),
        &[],
        DEFAULT_TIMEOUT,
    )
    .await
    .expect("the administrator logs in");
    let shown = format!("{issued:?}");
    assert!(
        !shown.contains(issued.access_token.expose()),
        "Debug shows the token: {shown}"
    );
    assert!(issued.expires_in > 0);
    let me = Plantd::with_token(&up.url, issued.access_token.clone())
        .expect("a client")
        .rest()
        .get_auth_whoami()
        .await
        .expect("whoami")
        .value;
    assert!(!me.sub.is_empty() && !me.org.is_empty(), "{me:?}");
    assert!(!me.roles.is_empty(), "the administrator's roles");

    let first = issued.refresh_token.clone().expect("a refresh token");
    let renewed = credentials::refresh(&http, &up.url, &first, DEFAULT_TIMEOUT)
        .await
        .expect("the refresh token is exchanged");
    assert_ne!(renewed.refresh_token.as_ref(), Some(&first), "it rotates");
    let again = Plantd::with_token(&up.url, renewed.access_token.clone())
        .expect("a client")
        .rest()
        .get_auth_whoami()
        .await
        .expect("the renewed token works")
        .value;
    assert_eq!(again.sub, me.sub, "the same user");

    // Each refresh token works once.
    let reused = credentials::refresh(&http, &up.url, &first, DEFAULT_TIMEOUT)
        .await
        .expect_err("a refresh token used twice");
    assert_eq!(reused.status(), Some(401), "{reused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_scopes_and_keys_are_listed_with_their_revisions() {
    let stack = Stack::start().await;
    let plantd = &stack.admin;
    plantd
        .rest()
        .post_state_scopes(&plantd_client::proxy::types::NewScope {
            scope: "sdk-lists".to_owned(),
        })
        .await
        .expect("the scope is created");
    assert!(
        plantd
            .rest()
            .list_scopes()
            .await
            .expect("the scopes")
            .contains(&"sdk-lists".to_owned())
    );
    plantd
        .put_state("sdk-lists", "a", &json!(1), None)
        .await
        .expect("write");
    let etag = plantd
        .put_state("sdk-lists", "a", &json!(2), None)
        .await
        .expect("write");
    let keys = plantd
        .rest()
        .list_keys("sdk-lists")
        .await
        .expect("the keys");
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0].key, "a");
    assert_eq!(
        format!("\"{}\"", keys[0].revision),
        etag,
        "the revision is the ETag"
    );
    let unknown = plantd
        .rest()
        .list_keys("no-such-scope")
        .await
        .expect_err("an unknown scope");
    assert!(unknown.is_not_found(), "{unknown:?}");
}
