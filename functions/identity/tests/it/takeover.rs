//! Account and site takeovers an outside tester tried (decision 0063):
//! a holder of `identity:user:update` resetting the password of someone
//! holding more (the bootstrap superadmin included) and logging in as
//! them; a password reset or change that left the old sessions running;
//! a deleted site id registered by another organisation, which would then
//! read the first one's history under it; and audit queries with
//! extreme parameters.

use crate::common;

use axum::http::StatusCode;
use common::{Fixture, call, create_user, fixture, login, org_with_admin, root_token, token};
use serde_json::{Value, json};

const NEW_PW: &str = "a brand new password";

async fn whoami(f: &Fixture, token: &str) -> (StatusCode, Value) {
    call(&f.app, "GET", "/v1/auth/whoami", Some(token), None).await
}

async fn refresh(f: &Fixture, rt: &str) -> StatusCode {
    call(
        &f.app,
        "POST",
        "/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": rt})),
    )
    .await
    .0
}

/// The `sub` of a token (its user id).
async fn user_id(f: &Fixture, token: &str) -> String {
    let (s, me) = whoami(f, token).await;
    assert_eq!(s, StatusCode::OK, "{me}");
    me["sub"].as_str().expect("sub").to_owned()
}

#[tokio::test]
async fn an_admin_of_the_bootstrap_organisation_cannot_take_over_the_superadmin() {
    let f = fixture().await;
    let root = root_token(&f).await;
    let root_id = user_id(&f, &root).await;
    // An ordinary admin in the superadmin's own organisation.
    create_user(
        &f,
        &root,
        "ops@plantd.example",
        "ops admin password",
        &["admin"],
    )
    .await;
    let (s, v) = login(&f.app, "ops@plantd.example", "ops admin password").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let ops = token(&v);

    let uri = format!("/v1/users/{root_id}");
    let (s, v) = call(
        &f.app,
        "PATCH",
        &uri,
        Some(&ops),
        Some(json!({"password": NEW_PW})),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "password reset of the superadmin: {v}"
    );
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("permission *")),
        "{v}"
    );
    let (s, v) = login(&f.app, common::ADMIN, NEW_PW).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "the new password must not work: {v}"
    );

    // Nor may they strip, lock out, log out or delete the superadmin.
    let roles = format!("/v1/users/{root_id}/roles");
    let (s, v) = call(
        &f.app,
        "PUT",
        &roles,
        Some(&ops),
        Some(json!({"roles": ["viewer"]})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v) = call(
        &f.app,
        "PATCH",
        &uri,
        Some(&ops),
        Some(json!({"active": false})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let revoke = format!("/v1/users/{root_id}/revoke");
    let (s, v) = call(&f.app, "POST", &revoke, Some(&ops), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v) = call(&f.app, "DELETE", &uri, Some(&ops), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");

    // The superadmin is untouched and still in charge.
    assert_eq!(whoami(&f, &root).await.0, StatusCode::OK);
    let (s, v) = login(&f.app, common::ADMIN, common::ADMIN_PW).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn a_help_desk_role_resets_only_whom_it_outranks() {
    let f = fixture().await;
    let root = root_token(&f).await;
    let acme = org_with_admin(&f, &root, "acme").await;
    let (s, v) = call(
        &f.app,
        "POST",
        "/v1/roles",
        Some(&acme),
        Some(json!({"name": "helpdesk", "perms": ["identity:user:read", "identity:user:update"]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    create_user(
        &f,
        &acme,
        "desk@acme.example",
        "help desk password",
        &["helpdesk"],
    )
    .await;
    let (s, v) = login(&f.app, "desk@acme.example", "help desk password").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let desk = token(&v);
    let admin_id = user_id(&f, &acme).await;
    let plain = create_user(&f, &acme, "temp@acme.example", "temporary password", &[]).await;

    // The organisation's admin is out of the help desk's reach…
    let uri = format!("/v1/users/{admin_id}");
    let (s, v) = call(
        &f.app,
        "PATCH",
        &uri,
        Some(&desk),
        Some(json!({"password": NEW_PW})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v) = login(&f.app, "admin@acme.example", NEW_PW).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    // …a user holding nothing more than the help desk is not.
    let uri = format!("/v1/users/{plain}");
    let (s, v) = call(
        &f.app,
        "PATCH",
        &uri,
        Some(&desk),
        Some(json!({"password": NEW_PW})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = login(&f.app, "temp@acme.example", NEW_PW).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // And the admin still manages an operator.
    let op = create_user(
        &f,
        &acme,
        "op@acme.example",
        "operator password",
        &["operator"],
    )
    .await;
    let uri = format!("/v1/users/{op}");
    let (s, v) = call(
        &f.app,
        "PATCH",
        &uri,
        Some(&acme),
        Some(json!({"password": NEW_PW})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn a_password_reset_ends_every_session_of_the_user() {
    let f = fixture().await;
    let root = root_token(&f).await;
    let acme = org_with_admin(&f, &root, "acme").await;
    let id = create_user(
        &f,
        &acme,
        "op@acme.example",
        "operator password",
        &["operator"],
    )
    .await;
    // Someone who learnt the old password is logged in.
    let (s, stolen) = login(&f.app, "op@acme.example", "operator password").await;
    assert_eq!(s, StatusCode::OK, "{stolen}");

    let uri = format!("/v1/users/{id}");
    let (s, v) = call(
        &f.app,
        "PATCH",
        &uri,
        Some(&acme),
        Some(json!({"password": NEW_PW})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    assert_eq!(
        whoami(&f, &token(&stolen)).await.0,
        StatusCode::UNAUTHORIZED
    );
    let rt = stolen["refresh_token"].as_str().expect("refresh token");
    assert_eq!(refresh(&f, rt).await, StatusCode::UNAUTHORIZED);
    let (s, v) = login(&f.app, "op@acme.example", NEW_PW).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn changing_ones_password_ends_every_other_login() {
    let f = fixture().await;
    let root = root_token(&f).await;
    let acme = org_with_admin(&f, &root, "acme").await;
    create_user(
        &f,
        &acme,
        "op@acme.example",
        "operator password",
        &["operator"],
    )
    .await;
    let (s, mine) = login(&f.app, "op@acme.example", "operator password").await;
    assert_eq!(s, StatusCode::OK, "{mine}");
    let (s, stolen) = login(&f.app, "op@acme.example", "operator password").await;
    assert_eq!(s, StatusCode::OK, "{stolen}");

    let (s, v) = call(
        &f.app,
        "POST",
        "/v1/auth/password",
        Some(&token(&mine)),
        Some(json!({"current_password": "operator password", "new_password": NEW_PW})),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");

    assert_eq!(
        whoami(&f, &token(&stolen)).await.0,
        StatusCode::UNAUTHORIZED
    );
    let rt = stolen["refresh_token"].as_str().expect("refresh token");
    assert_eq!(refresh(&f, rt).await, StatusCode::UNAUTHORIZED);
    let (s, v) = login(&f.app, "op@acme.example", NEW_PW).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn a_deleted_site_id_stays_with_its_organisation() {
    let f = fixture().await;
    let root = root_token(&f).await;
    let acme = org_with_admin(&f, &root, "acme").await;
    let initech = org_with_admin(&f, &root, "initech").await;
    let create = |t: &str, body: Value| {
        let t = t.to_owned();
        let app = f.app.clone();
        async move { call(&app, "POST", "/v1/sites", Some(&t), Some(body)).await }
    };
    let (s, v) = create(&acme, json!({"id": "plant-x"})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = call(&f.app, "DELETE", "/v1/sites/plant-x", Some(&acme), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");

    // Its telemetry, logs and queued commands are still under plant-x.
    let (s, v) = create(&initech, json!({"id": "plant-x"})).await;
    assert_eq!(
        s,
        StatusCode::CONFLICT,
        "another organisation took the id: {v}"
    );
    let (s, v) = create(&root, json!({"id": "plant-x", "org": "initech"})).await;
    assert_eq!(
        s,
        StatusCode::CONFLICT,
        "nor may the superadmin give it away: {v}"
    );
    let (s, v) = call(&f.app, "GET", "/v1/sites/plant-x", Some(&initech), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");

    // The organisation that owned it may register it again.
    let (s, v) = create(&acme, json!({"id": "plant-x"})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["org"], "acme");
}

#[tokio::test]
async fn mqtt_grants_are_handed_out_only_by_who_holds_them() {
    let f = fixture().await;
    let root = root_token(&f).await;
    let acme = org_with_admin(&f, &root, "acme").await;
    common::register_site(&f, "acme", "plant-1").await;
    // An installer registers devices publishing under line1/ only.
    let (s, v) = call(
        &f.app,
        "POST",
        "/v1/roles",
        Some(&acme),
        Some(
            json!({"name": "installer", "perms": ["identity:device:create", "identity:user:create"],
            "mqtt": {"plant-1": {"publish": ["line1/#"]}}}),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    create_user(
        &f,
        &acme,
        "inst@acme.example",
        "installer password",
        &["installer"],
    )
    .await;
    let (s, v) = login(&f.app, "inst@acme.example", "installer password").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let installer = token(&v);
    let device = |publish: &[&str], subscribe: &[&str]| {
        let body =
            json!({"name": "d", "site": "plant-1", "publish": publish, "subscribe": subscribe});
        let (app, t) = (f.app.clone(), installer.clone());
        async move { call(&app, "POST", "/v1/devices", Some(&t), Some(body)).await }
    };
    let (s, v) = device(&["line1/press/temp"], &[]).await;
    assert_eq!(s, StatusCode::CREATED, "within its own grant: {v}");
    let (s, v) = device(&[], &["#"]).await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "a device reading every topic: {v}"
    );
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("subscribe #")),
        "{v}"
    );
    let (s, v) = device(&["#"], &[]).await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "a device writing every topic: {v}"
    );
    // Nor can it give a person the viewer's subscribe-to-everything.
    let (s, v) = call(
        &f.app,
        "POST",
        "/v1/users",
        Some(&installer),
        Some(
            json!({"email": "v@acme.example", "password": "viewer password", "roles": ["viewer"]}),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");

    // An admin's grants end where '#' does: '$' topics are not in them.
    let (s, v) = call(
        &f.app,
        "POST",
        "/v1/roles",
        Some(&acme),
        Some(json!({"name": "sys", "mqtt": {"*": {"subscribe": ["$SYS/#"]}}})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
}

#[tokio::test]
async fn a_stolen_token_cannot_guess_the_password_at_full_speed() {
    let f = fixture().await;
    let root = root_token(&f).await;
    let acme = org_with_admin(&f, &root, "acme").await;
    create_user(
        &f,
        &acme,
        "op@acme.example",
        "operator password",
        &["operator"],
    )
    .await;
    let (s, v) = login(&f.app, "op@acme.example", "operator password").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let stolen = token(&v);
    let guess = |current: &'static str| {
        let (app, t) = (f.app.clone(), stolen.clone());
        async move {
            common::send(
                &app,
                "POST",
                "/v1/auth/password",
                Some(&t),
                Some(json!({"current_password": current, "new_password": NEW_PW})),
                Some("198.51.100.9"),
                &[],
            )
            .await
        }
    };
    // The free failures a login has (and the first delayed one, still
    // checked), then refused while the delay runs.
    for _ in 0..4 {
        assert_eq!(guess("wrong guess").await.0, StatusCode::UNAUTHORIZED);
    }
    let (s, v, h) = guess("operator password").await;
    assert_eq!(
        s,
        StatusCode::TOO_MANY_REQUESTS,
        "refused before the check: {v}"
    );
    assert!(h.get("retry-after").is_some());
    // The password is still the owner's.
    let (s, v) = login(&f.app, "op@acme.example", "operator password").await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn extreme_audit_queries_are_refused_or_answered_never_a_failure() {
    let f = fixture().await;
    let root = root_token(&f).await;
    let max = u64::MAX;
    for q in [
        format!("limit={max}"),
        "limit=-1".to_owned(),
        "limit=0".to_owned(),
        format!("cursor={max}"),
        "cursor=%FF".to_owned(),
        "since=9999-12-31T23:59:59Z".to_owned(),
        "since=0000-01-01T00:00:00Z".to_owned(),
        "since=-5".to_owned(),
        format!("until={max}"),
        format!("actor={}", "*".repeat(5000)),
        format!("target={}*", "x".repeat(5000)),
        "action=*".to_owned(),
        "org=..".to_owned(),
        "org=%3E".to_owned(),
        "org=a.*".to_owned(),
    ] {
        for path in ["/v1/audit", "/v1/audit/verify"] {
            let uri = format!("{path}?{q}");
            let (s, v) = call(&f.app, "GET", &uri, Some(&root), None).await;
            assert!(s.is_success() || s.is_client_error(), "{uri}: {s} {v}");
        }
    }
}

#[tokio::test]
async fn device_and_refresh_tokens_are_not_api_credentials() {
    let f = fixture().await;
    let root = root_token(&f).await;
    let acme = org_with_admin(&f, &root, "acme").await;
    common::register_site(&f, "acme", "plant-1").await;
    let (s, creds) = call(
        &f.app,
        "POST",
        "/v1/devices",
        Some(&acme),
        Some(json!({"name": "d", "site": "plant-1", "publish": ["line1/#"]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{creds}");
    let (s, v) = call(
        &f.app,
        "POST",
        "/v1/auth/token",
        None,
        Some(
            json!({"grant_type": "client_credentials", "client_id": creds["client_id"],
            "client_secret": creds["client_secret"]}),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let device = token(&v);
    let (s, v) = login(&f.app, "admin@acme.example", "org admin password").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let refresh = v["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_owned();
    for bearer in [&device, &refresh] {
        for (method, uri) in [
            ("GET", "/v1/auth/whoami"),
            ("GET", "/v1/users"),
            ("GET", "/v1/sites"),
        ] {
            let (s, v) = call(&f.app, method, uri, Some(bearer), None).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{uri}: {v}");
        }
    }
}
