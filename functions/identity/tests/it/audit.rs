//! The audit trail through the identity API over a real nats-server: who
//! did what from where is recorded for logins and privileged actions,
//! `GET /v1/audit` is scoped to the caller's organisation, refusals are
//! recorded, bad queries are 400s naming the parameter, and
//! `GET /v1/audit/verify` reports a forged record. The chain mechanics are
//! in `audit_chain.rs`.

use crate::common;

use axum::http::StatusCode;
use common::{ADMIN, ADMIN_PW, call, fixture, org_with_admin, root_token, send, token};
use plantd_shared::audit::{self, Record};
use serde_json::{Value, json};

/// The records of `GET /v1/audit?<query>` as `token`.
async fn records(f: &common::Fixture, token: &str, query: &str) -> Vec<Value> {
    let (s, v) = call(
        &f.app,
        "GET",
        &format!("/v1/audit?{query}"),
        Some(token),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{query}: {v}");
    v["records"].as_array().expect("records").clone()
}

fn sub_of(token: &str) -> String {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("jwt");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64");
    let v: Value = serde_json::from_slice(&bytes).expect("claims");
    v["sub"].as_str().expect("sub").to_owned()
}

#[tokio::test]
async fn logins_are_recorded_with_outcome_source_and_request_id() {
    let f = fixture().await;
    let (s, _, _) = send(
        &f.app,
        "POST",
        "/v1/auth/login",
        None,
        Some(json!({"email": ADMIN, "password": "not the password"})),
        Some("198.51.100.7"),
        &[("x-request-id", "req-bad-login")],
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, v, headers) = send(
        &f.app,
        "POST",
        "/v1/auth/login",
        None,
        Some(json!({"email": ADMIN, "password": ADMIN_PW})),
        Some("198.51.100.8"),
        &[("x-request-id", "req-good-login")],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        headers.get("x-request-id").and_then(|h| h.to_str().ok()),
        Some("req-good-login"),
        "the request id is echoed"
    );
    let root = token(&v);
    let root_id = sub_of(&root);
    // An unknown account: recorded in the bootstrap organisation's chain.
    let (s, _) = common::login(&f.app, "nobody@plantd.example", "whatever it is").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    let logins = records(&f, &root, "action=auth.login").await;
    assert_eq!(logins.len(), 3, "{logins:#?}");
    let failed = &logins[0];
    assert_eq!(failed["outcome"], "failure");
    assert_eq!(failed["actor"], root_id);
    assert_eq!(failed["target"], format!("user:{root_id}"));
    assert_eq!(failed["source"], "198.51.100.7");
    assert_eq!(failed["request_id"], "req-bad-login");
    assert_eq!(failed["org"], "plantd");
    let ok = &logins[1];
    assert_eq!(ok["outcome"], "success");
    assert_eq!(ok["actor_kind"], "user");
    assert_eq!(ok["source"], "198.51.100.8");
    assert_eq!(ok["request_id"], "req-good-login");
    let unknown = &logins[2];
    assert_eq!(unknown["outcome"], "failure");
    assert_eq!(unknown["actor_kind"], "anonymous");
    assert_eq!(unknown["target"], "email:nobody@plantd.example");
    // Without a client id, one is made up (and still echoed).
    assert!(
        unknown["request_id"]
            .as_str()
            .is_some_and(|r| r.len() == 32)
    );
    // Every record carries its place in the chain.
    assert_eq!(ok["prev"], failed["hash"]);
    // The chain starts with the bootstrap administrator, created by plantd.
    let boot = records(&f, &root, "action=user.create").await;
    assert_eq!(boot[0]["actor_kind"], "system");
    assert_eq!(boot[0]["n"], 1);
    assert_eq!(boot[0]["prev"], audit::GENESIS);
}

#[tokio::test]
async fn a_privileged_action_is_recorded_with_actor_target_and_origin() {
    let f = fixture().await;
    let root = root_token(&f).await;
    let (s, v, headers) = send(
        &f.app,
        "POST",
        "/v1/orgs",
        Some(&root),
        Some(json!({"id": "initech", "name": "Initech"})),
        Some("203.0.113.5"),
        &[("x-request-id", "create-initech")],
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(headers["x-request-id"], "create-initech");
    // The superadmin acted on initech: the record is in initech's chain
    // and names the actor's own organisation.
    let got = records(&f, &root, "org=initech&action=org.create").await;
    assert_eq!(got.len(), 1, "{got:#?}");
    let r: Record = serde_json::from_value(got[0].clone()).expect("a record");
    assert_eq!(r.actor, sub_of(&root));
    assert_eq!(r.actor_org.as_deref(), Some("plantd"));
    assert_eq!(r.org, "initech");
    assert_eq!(r.target, "org:initech");
    assert_eq!(r.outcome, audit::Outcome::Success);
    assert_eq!(r.source.as_deref(), Some("203.0.113.5"));
    assert_eq!(r.request_id.as_deref(), Some("create-initech"));
    assert_eq!(r.n, 1);
    assert_eq!(r.prev, audit::GENESIS);
    // Roles too, in the org that owns them.
    let (s, _) = call(
        &f.app,
        "POST",
        "/v1/roles",
        Some(&root),
        Some(json!({"name": "auditor", "perms": ["identity:audit:read"]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let got = records(&f, &root, "action=role.*").await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["action"], "role.create");
    assert_eq!(got[0]["target"], "role:auditor");
}

#[tokio::test]
async fn org_admins_see_their_own_trail_and_nobody_elses() {
    let f = fixture().await;
    let root = root_token(&f).await;
    let initech = org_with_admin(&f, &root, "initech").await;
    let acme = org_with_admin(&f, &root, "acme").await;
    let (s, _) = call(
        &f.app,
        "POST",
        "/v1/roles",
        Some(&initech),
        Some(json!({"name": "ops", "perms": ["telemetry:*:read"]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);

    let mine = records(&f, &initech, "").await;
    assert!(!mine.is_empty());
    assert!(mine.iter().all(|r| r["org"] == "initech"), "{mine:#?}");
    assert!(mine.iter().any(|r| r["action"] == "role.create"));
    // acme's admin sees none of initech's records...
    let theirs = records(&f, &acme, "").await;
    assert!(theirs.iter().all(|r| r["org"] == "acme"), "{theirs:#?}");
    assert!(!theirs.iter().any(|r| r["action"] == "role.create"));
    // ...and may not ask for them.
    for path in ["/v1/audit?org=initech", "/v1/audit/verify?org=initech"] {
        let (s, v) = call(&f.app, "GET", path, Some(&acme), None).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}: {v}");
    }
    // The superadmin may, and an unknown organisation is a 404.
    assert!(!records(&f, &root, "org=initech").await.is_empty());
    let (s, _) = call(&f.app, "GET", "/v1/audit?org=nope", Some(&root), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // A user without identity:audit:read sees nothing at all.
    common::create_user(
        &f,
        &initech,
        "v@initech.example",
        "viewer password!",
        &["viewer"],
    )
    .await;
    let (s, v) = common::login(&f.app, "v@initech.example", "viewer password!").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = call(&f.app, "GET", "/v1/audit", Some(&token(&v)), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_refused_request_is_recorded_as_denied() {
    let f = fixture().await;
    let root = root_token(&f).await;
    let initech = org_with_admin(&f, &root, "initech").await;
    let (s, _) = call(
        &f.app,
        "POST",
        "/v1/orgs",
        Some(&initech),
        Some(json!({"id": "evil", "name": "Evil"})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let denied = records(&f, &initech, "action=access.denied").await;
    assert_eq!(denied.len(), 1, "{denied:#?}");
    assert_eq!(denied[0]["outcome"], "denied");
    assert_eq!(denied[0]["target"], "POST /v1/orgs");
    assert_eq!(denied[0]["actor"], sub_of(&initech));
}

#[tokio::test]
async fn malformed_queries_are_400s_naming_the_parameter() {
    let f = fixture().await;
    let root = root_token(&f).await;
    for (query, param) in [
        ("limit=0", "limit"),
        ("limit=many", "limit"),
        ("limit=1001", "limit"),
        ("since=yesterday", "since"),
        ("until=2026-13-01T00:00:00Z", "until"),
        (
            "since=2026-12-02T00:00:00Z&until=2026-12-01T00:00:00Z",
            "until",
        ),
        ("cursor=abc", "cursor"),
        ("action=auth.nope", "action"),
        ("actor=", "actor"),
        ("org=a.b", "org"),
        ("bogus=1", "bogus"),
    ] {
        let (s, v) = call(
            &f.app,
            "GET",
            &format!("/v1/audit?{query}"),
            Some(&root),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{query}: {v}");
        let message = v["message"].as_str().unwrap_or_default();
        assert!(message.contains(param), "{query}: {message}");
    }
    let (s, _) = call(&f.app, "GET", "/v1/audit", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn pages_follow_the_cursor_and_time_filters_apply() {
    let f = fixture().await;
    let root = root_token(&f).await;
    for i in 0..5 {
        let (s, _) = call(
            &f.app,
            "POST",
            "/v1/roles",
            Some(&root),
            Some(json!({"name": format!("r{i}"), "perms": []})),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let q = match &cursor {
            Some(c) => format!("/v1/audit?action=role.create&limit=2&cursor={c}"),
            None => "/v1/audit?action=role.create&limit=2".to_owned(),
        };
        let (s, v) = call(&f.app, "GET", &q, Some(&root), None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        pages += 1;
        for r in v["records"].as_array().expect("records") {
            seen.push(r["target"].as_str().expect("target").to_owned());
        }
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(
        seen,
        ["role:r0", "role:r1", "role:r2", "role:r3", "role:r4"]
    );
    assert!(
        records(&f, &root, "since=2999-01-01T00:00:00Z")
            .await
            .is_empty()
    );
    assert_eq!(
        records(&f, &root, "action=role.create&until=2999-01-01T00:00:00Z")
            .await
            .len(),
        5
    );
}

#[tokio::test]
async fn verify_reports_an_intact_chain_and_then_a_forged_record() {
    let f = fixture().await;
    let root = root_token(&f).await;
    let (s, _) = call(
        &f.app,
        "POST",
        "/v1/roles",
        Some(&root),
        Some(json!({"name": "ops", "perms": []})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, v) = call(&f.app, "GET", "/v1/audit/verify", Some(&root), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["ok"], true, "{v}");
    let intact = v["records"].as_u64().expect("records");
    assert!(intact >= 2, "{v}");
    // Someone with publish rights on NATS appends a record claiming to be
    // the next one.
    let page = records(&f, &root, "action=role.create").await;
    let mut forged: Record = serde_json::from_value(page[0].clone()).expect("record");
    forged.n = intact + 1;
    forged.target = "role:innocent".into();
    let js = f.nats.jetstream().await;
    js.publish(
        audit::subject("plantd").expect("subject"),
        serde_json::to_vec(&forged).expect("json").into(),
    )
    .await
    .expect("publish")
    .await
    .expect("stored");
    let (s, v) = call(&f.app, "GET", "/v1/audit/verify", Some(&root), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["broken"]["reason"]["kind"], "link", "{v}");
    assert_eq!(v["broken"]["record"]["target"], "role:innocent");
    assert_eq!(v["last_n"].as_u64(), Some(intact));
}

/// The actions of the records of `GET /v1/audit?<query>`, in order.
async fn actions(f: &common::Fixture, token: &str, query: &str) -> Vec<(String, String, String)> {
    records(f, token, query)
        .await
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap_or_default().to_owned(),
                r["target"].as_str().unwrap_or_default().to_owned(),
                r["outcome"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn users_devices_service_accounts_tokens_and_revocations_are_recorded() {
    let f = fixture().await;
    let root = root_token(&f).await;
    let admin = org_with_admin(&f, &root, "initech").await;
    common::register_site(&f, "initech", "plant1").await;
    let user = common::create_user(
        &f,
        &admin,
        "op@initech.example",
        "operator password",
        &["operator"],
    )
    .await;
    let (s, _) = call(
        &f.app,
        "PUT",
        &format!("/v1/users/{user}/roles"),
        Some(&admin),
        Some(json!({"roles": ["viewer"]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(
        &f.app,
        "PATCH",
        &format!("/v1/users/{user}"),
        Some(&admin),
        Some(json!({"active": false})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(
        &f.app,
        "POST",
        &format!("/v1/users/{user}/revoke"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(
        &f.app,
        "DELETE",
        &format!("/v1/users/{user}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    let (s, sa) = call(
        &f.app,
        "POST",
        "/v1/service-accounts",
        Some(&admin),
        Some(json!({"name": "etl", "roles": ["viewer"]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{sa}");
    let sa_id = sa["client_id"].as_str().expect("client_id").to_owned();
    let (s, v) = call(&f.app, "POST", "/v1/auth/token", None, Some(json!({
        "grant_type": "client_credentials", "client_id": sa_id, "client_secret": sa["client_secret"]}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = call(
        &f.app,
        "POST",
        "/v1/auth/token",
        None,
        Some(json!({
        "grant_type": "client_credentials", "client_id": sa_id, "client_secret": "wrong"})),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = call(
        &f.app,
        "POST",
        &format!("/v1/service-accounts/{sa_id}/revoke"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(
        &f.app,
        "DELETE",
        &format!("/v1/service-accounts/{sa_id}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    let (s, dev) = call(
        &f.app,
        "POST",
        "/v1/devices",
        Some(&admin),
        Some(json!({"name": "valve", "site": "plant1", "publish": ["valve/#"]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{dev}");
    let dev_id = dev["client_id"].as_str().expect("client_id").to_owned();
    let (s, _) = call(
        &f.app,
        "PATCH",
        &format!("/v1/devices/{dev_id}"),
        Some(&admin),
        Some(json!({"active": false})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(
        &f.app,
        "DELETE",
        &format!("/v1/devices/{dev_id}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    let u = format!("user:{user}");
    let sa_t = format!("service_account:{sa_id}");
    let d = format!("device:{dev_id}");
    let got = actions(&f, &admin, "").await;
    let want: Vec<(String, String, String)> = [
        ("user.create", &u, "success"),
        ("user.update", &u, "success"),
        ("auth.revoke", &u, "success"),
        ("user.update", &u, "success"),
        ("auth.revoke", &u, "success"),
        ("auth.revoke", &u, "success"),
        ("user.delete", &u, "success"),
        ("auth.revoke", &u, "success"),
        ("service_account.create", &sa_t, "success"),
        ("auth.token", &sa_t, "success"),
        ("auth.token", &sa_t, "failure"),
        ("auth.revoke", &sa_t, "success"),
        ("service_account.delete", &sa_t, "success"),
        ("auth.revoke", &sa_t, "success"),
        ("device.create", &d, "success"),
        ("device.update", &d, "success"),
        ("auth.revoke", &d, "success"),
        ("device.delete", &d, "success"),
        ("auth.revoke", &d, "success"),
    ]
    .iter()
    .map(|(a, t, o)| ((*a).to_owned(), (*t).clone(), (*o).to_owned()))
    .collect();
    // The org's own earlier records (its admin's login) come first.
    let tail = &got[got.len() - want.len()..];
    assert_eq!(tail, want.as_slice(), "{got:#?}");
    let revokes = records(&f, &admin, &format!("action=auth.revoke&target={u}")).await;
    assert_eq!(revokes[0]["detail"]["reason"], "role removed");
    assert_eq!(revokes[1]["detail"]["reason"], "deactivated");
    let (s, v) = call(&f.app, "GET", "/v1/audit/verify", Some(&admin), None).await;
    assert_eq!((s, &v["ok"]), (StatusCode::OK, &json!(true)), "{v}");
}

#[tokio::test]
async fn a_lockout_and_its_clearing_are_recorded() {
    let f = fixture().await;
    let root = root_token(&f).await;
    let admin = org_with_admin(&f, &root, "initech").await;
    let email = "admin@initech.example";
    let mut refused = false;
    for _ in 0..10 {
        let (s, _, _) = send(
            &f.app,
            "POST",
            "/v1/auth/login",
            None,
            Some(json!({"email": email, "password": "wrong wrong wrong"})),
            Some("192.0.2.66"),
            &[],
        )
        .await;
        if s == StatusCode::TOO_MANY_REQUESTS {
            refused = true;
            break;
        }
    }
    assert!(refused, "the attacker's address is throttled");
    let lockouts = records(&f, &admin, "action=auth.lockout").await;
    assert_eq!(lockouts.len(), 1, "{lockouts:#?}");
    assert_eq!(lockouts[0]["target"], format!("email:{email}"));
    assert_eq!(lockouts[0]["source"], "192.0.2.66");
    let throttled = records(&f, &admin, "action=auth.login&actor=*").await;
    let last = throttled.last().expect("a login record");
    assert_eq!(last["outcome"], "denied");
    assert_eq!(last["detail"]["reason"], "throttled");

    let (s, list) = call(&f.app, "GET", "/v1/lockouts", Some(&admin), None).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let id = list[0]["id"].as_str().expect("id").to_owned();
    let (s, _) = call(
        &f.app,
        "DELETE",
        &format!("/v1/lockouts/{id}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let cleared = records(&f, &admin, "action=auth.lockout_clear").await;
    assert_eq!(cleared.len(), 1);
    assert_eq!(cleared[0]["target"], format!("lockout:{id}"));
    assert_eq!(cleared[0]["actor"], sub_of(&admin));
}

#[tokio::test]
async fn a_key_rotation_is_recorded() {
    let nats = plantd_testkit::Nats::start().await;
    let js = nats.jetstream().await;
    plantd_shared::streams::ensure(&js, &plantd_shared::streams::Settings::default())
        .await
        .expect("streams");
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = plantd_identity::Keys::open_file(&dir.path().join("signing-key.pem")).expect("keys");
    let state = plantd_identity::AppState::new(&js, keys, plantd_identity::Settings::default())
        .await
        .expect("state");
    plantd_identity::bootstrap::ensure_admin(&state, ADMIN, ADMIN_PW)
        .await
        .expect("bootstrap");
    let app = plantd_identity::app(state);
    let (_, v) = common::login(&app, ADMIN, ADMIN_PW).await;
    let root = token(&v);
    let (s, r) = call(&app, "POST", "/v1/keys/rotate", Some(&root), None).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let (s, v) = call(
        &app,
        "GET",
        "/v1/audit?action=auth.key_rotate",
        Some(&root),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let got = v["records"].as_array().expect("records");
    assert_eq!(got.len(), 1, "{v}");
    assert_eq!(
        got[0]["target"],
        format!("key:{}", r["signing_kid"].as_str().expect("kid"))
    );
    assert_eq!(got[0]["detail"]["retired_kid"], r["retired_kid"]);
}

#[tokio::test]
async fn refresh_reuse_and_logout_are_recorded() {
    let f = fixture().await;
    let (_, v) = common::login(&f.app, ADMIN, ADMIN_PW).await;
    let root = token(&v);
    let first = v["refresh_token"].as_str().expect("rt").to_owned();
    let refresh = |rt: &str| json!({ "refresh_token": rt });
    let (s, v) = call(
        &f.app,
        "POST",
        "/v1/auth/refresh",
        None,
        Some(refresh(&first)),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // The first refresh token again: a stolen copy; its family is revoked.
    let (s, _) = call(
        &f.app,
        "POST",
        "/v1/auth/refresh",
        None,
        Some(refresh(&first)),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = call(&f.app, "POST", "/v1/auth/logout", Some(&root), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    let (_, v) = common::login(&f.app, ADMIN, ADMIN_PW).await;
    let root = token(&v);
    let me = format!("user:{}", sub_of(&root));
    let got: Vec<(String, String)> = records(&f, &root, "action=auth.*")
        .await
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap_or_default().to_owned(),
                r["detail"]["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("auth.login", ""),
        ("auth.refresh", ""),
        ("auth.revoke", "refresh token reused"),
        ("auth.logout", ""),
        ("auth.login", ""),
    ]
    .iter()
    .map(|(a, r)| ((*a).to_owned(), (*r).to_owned()))
    .collect();
    assert_eq!(got, want);
    let revoke = records(&f, &root, "action=auth.revoke").await;
    assert_eq!(revoke[0]["target"], me);
}

#[tokio::test]
async fn narrowing_a_role_records_the_change_and_the_revocation() {
    let f = fixture().await;
    let root = root_token(&f).await;
    let role = json!({"name": "ops", "perms": ["telemetry:*:read", "commands:*:send"]});
    let (s, _) = call(&f.app, "POST", "/v1/roles", Some(&root), Some(role)).await;
    assert_eq!(s, StatusCode::CREATED);
    let narrower = json!({"name": "ops", "perms": ["telemetry:*:read"]});
    let (s, v) = call(&f.app, "PUT", "/v1/roles/ops", Some(&root), Some(narrower)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let got = actions(&f, &root, "target=role:ops").await;
    let want = [
        ("role.create", "role:ops", "success"),
        ("role.update", "role:ops", "success"),
        ("auth.revoke", "role:ops", "success"),
    ];
    let want: Vec<_> = want
        .iter()
        .map(|(a, t, o)| ((*a).to_owned(), (*t).to_owned(), (*o).to_owned()))
        .collect();
    assert_eq!(got, want);
}
