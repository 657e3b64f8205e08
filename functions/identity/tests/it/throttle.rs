//! Login throttling by (email, source) and by source, against a real
//! nats-server: an attacker's address is refused while the operator logs
//! in from another one; administrators see and clear throttles; a forged
//! `X-Forwarded-For` does not get an attacker a fresh source.

use crate::common;

use std::time::Duration;

use axum::http::StatusCode;
use common::{
    ADMIN, ADMIN_PW, call, create_user, fixture, fixture_with, login_from, org_with_admin,
    root_token, send, token,
};
use plantd_identity::Settings;
use plantd_identity::throttle::ThrottleSettings;
use plantd_shared::http::source::TrustedProxies;
use serde_json::{Value, json};

const ATTACKER: &str = "203.0.113.66";
const OPERATOR: &str = "198.51.100.10";

fn retry_after(h: &axum::http::HeaderMap) -> u64 {
    h.get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After header")
}

#[tokio::test]
async fn hammering_an_account_slows_the_attacker_not_the_operator() {
    let f = fixture().await;
    // The attacker's first failures are answered, then it is delayed.
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let (s, _, h) = login_from(&f.app, ATTACKER, ADMIN, "wrong password!!").await;
        if s == StatusCode::TOO_MANY_REQUESTS {
            assert!(retry_after(&h) >= 1);
        }
        statuses.push(s);
    }
    assert_eq!(
        &statuses[..4],
        &[StatusCode::UNAUTHORIZED; 4],
        "free failures, then the first delayed one still checked"
    );
    assert!(
        statuses[4..]
            .iter()
            .all(|s| *s == StatusCode::TOO_MANY_REQUESTS),
        "then refused while the delay runs: {statuses:?}"
    );
    // Even the right password is refused from the attacker's address...
    let (s, v, h) = login_from(&f.app, ATTACKER, ADMIN, ADMIN_PW).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert!(retry_after(&h) >= 1);
    // ...while the operator, from their own address, gets in at once.
    let (s, v, _) = login_from(&f.app, OPERATOR, ADMIN, ADMIN_PW).await;
    assert_eq!(s, StatusCode::OK, "the real user is not locked out: {v}");
    let admin = token(&v);

    // The admin sees the throttle and clears it.
    let (s, list) = call(&f.app, "GET", "/v1/lockouts", Some(&admin), None).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let entry = list
        .as_array()
        .expect("a list")
        .iter()
        .find(|e| e["kind"] == "account" && e["source"] == ATTACKER)
        .expect("the attacker's throttle is listed")
        .clone();
    assert_eq!(entry["email"], ADMIN);
    assert!(entry["retry_after_secs"].as_u64().expect("secs") >= 1);
    assert!(entry["failures"].as_u64().expect("n") >= 4);
    let id = entry["id"].as_str().expect("id");
    let (s, _) = call(
        &f.app,
        "DELETE",
        &format!("/v1/lockouts/{id}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, list) = call(&f.app, "GET", "/v1/lockouts", Some(&admin), None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        !list.as_array().expect("list").iter().any(|e| e["id"] == id),
        "cleared: {list}"
    );
    let (s, v, _) = login_from(&f.app, ATTACKER, ADMIN, ADMIN_PW).await;
    assert_eq!(s, StatusCode::OK, "cleared, the address may log in: {v}");
    let (s, _) = call(
        &f.app,
        "DELETE",
        &format!("/v1/lockouts/{id}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "already cleared");
    let (s, _) = call(&f.app, "DELETE", "/v1/lockouts/..%2F", Some(&admin), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "a malformed id is 404, not 500");
}

#[tokio::test]
async fn delays_grow_and_expire() {
    let f = fixture_with(Settings {
        throttle: ThrottleSettings {
            free_failures: 1,
            base_delay: Duration::from_millis(300),
            ..ThrottleSettings::default()
        },
        ..Settings::default()
    })
    .await;
    // 1st failure free; 2nd sets a 300 ms delay.
    for _ in 0..2 {
        let (s, _, _) = login_from(&f.app, ATTACKER, ADMIN, "wrong password!!").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    let (s, _, _) = login_from(&f.app, ATTACKER, ADMIN, "wrong password!!").await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    // The delay is served (a clock, not an event: the contract is a time).
    tokio::time::sleep(Duration::from_millis(350)).await;
    let (s, _, _) = login_from(&f.app, ATTACKER, ADMIN, "wrong password!!").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "checked again after the delay");
    let (s, _, _) = login_from(&f.app, ATTACKER, ADMIN, "wrong password!!").await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    // Now 600 ms: still refused after 350 ms.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let (s, _, _) = login_from(&f.app, ATTACKER, ADMIN, ADMIN_PW).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "the delay doubled");
}

#[tokio::test]
async fn one_source_failing_across_accounts_is_refused() {
    let f = fixture_with(Settings {
        throttle: ThrottleSettings {
            source_max_attempts: 5,
            ..ThrottleSettings::default()
        },
        ..Settings::default()
    })
    .await;
    for i in 0..5 {
        let (s, _, _) = login_from(
            &f.app,
            ATTACKER,
            &format!("user{i}@plantd.example"),
            "guess password",
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    let (s, v, h) = login_from(&f.app, ATTACKER, "user9@plantd.example", "guess").await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert!(retry_after(&h) > 60, "refused for the source block");
    let (s, _, _) = login_from(&f.app, ATTACKER, ADMIN, ADMIN_PW).await;
    assert_eq!(
        s,
        StatusCode::TOO_MANY_REQUESTS,
        "the whole source is refused"
    );
    let (s, v, _) = login_from(&f.app, OPERATOR, ADMIN, ADMIN_PW).await;
    assert_eq!(s, StatusCode::OK, "other sources are not: {v}");
    // Source throttles belong to no organisation: only the superadmin
    // sees them.
    let root = token(&v);
    let (_, list) = call(&f.app, "GET", "/v1/lockouts", Some(&root), None).await;
    assert!(
        list.as_array()
            .expect("list")
            .iter()
            .any(|e| e["kind"] == "source" && e["source"] == ATTACKER),
        "{list}"
    );
    let acme = org_with_admin(&f, &root, "acme").await;
    let (s, list) = call(&f.app, "GET", "/v1/lockouts", Some(&acme), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list, json!([]), "another org's admin sees none of it");
}

#[tokio::test]
async fn a_forged_forwarded_for_header_gets_no_fresh_source() {
    let f = fixture().await;
    for i in 0..8 {
        let (s, _, _) = send(
            &f.app,
            "POST",
            "/v1/auth/login",
            None,
            Some(json!({"email": ADMIN, "password": "wrong password!!"})),
            Some(ATTACKER),
            &[("x-forwarded-for", &format!("10.1.2.{i}"))],
        )
        .await;
        if i >= 4 {
            assert_eq!(
                s,
                StatusCode::TOO_MANY_REQUESTS,
                "the header from an untrusted peer is ignored"
            );
        }
    }
}

#[tokio::test]
async fn a_trusted_proxy_names_the_client() {
    let proxy = "10.0.0.1";
    let f = fixture_with(Settings {
        trusted_proxies: TrustedProxies::parse(proxy).expect("list"),
        ..Settings::default()
    })
    .await;
    let via = |client: &'static str, pw: &'static str| {
        let app = f.app.clone();
        async move {
            send(
                &app,
                "POST",
                "/v1/auth/login",
                None,
                Some(json!({"email": ADMIN, "password": pw})),
                Some(proxy),
                &[("x-forwarded-for", client)],
            )
            .await
            .0
        }
    };
    for _ in 0..6 {
        via(ATTACKER, "wrong password!!").await;
    }
    assert_eq!(via(ATTACKER, ADMIN_PW).await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        via(OPERATOR, ADMIN_PW).await,
        StatusCode::OK,
        "behind the same proxy, another client is another source"
    );
}

#[tokio::test]
async fn org_admins_see_their_own_users_throttles_only() {
    let f = fixture().await;
    let root = root_token(&f).await;
    let acme = org_with_admin(&f, &root, "acme").await;
    let globex = org_with_admin(&f, &root, "globex").await;
    create_user(
        &f,
        &acme,
        "op@acme.example",
        "operator password",
        &["operator"],
    )
    .await;
    for _ in 0..5 {
        login_from(&f.app, ATTACKER, "op@acme.example", "wrong password!!").await;
    }
    let ids = |v: &Value| -> Vec<String> {
        v.as_array()
            .expect("list")
            .iter()
            .filter(|e| e["kind"] == "account")
            .filter_map(|e| e["email"].as_str().map(str::to_owned))
            .collect()
    };
    let (_, a) = call(&f.app, "GET", "/v1/lockouts", Some(&acme), None).await;
    assert_eq!(ids(&a), vec!["op@acme.example"]);
    let (_, g) = call(&f.app, "GET", "/v1/lockouts", Some(&globex), None).await;
    assert!(ids(&g).is_empty(), "{g}");
    let id = a[0]["id"].as_str().expect("id");
    let (s, _) = call(
        &f.app,
        "DELETE",
        &format!("/v1/lockouts/{id}"),
        Some(&globex),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "not another org's to clear");
    // A viewer may not list them.
    create_user(&f, &acme, "v@acme.example", "viewer password", &["viewer"]).await;
    let (_, v, _) = login_from(&f.app, OPERATOR, "v@acme.example", "viewer password").await;
    let (s, _) = call(&f.app, "GET", "/v1/lockouts", Some(&token(&v)), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}
