//! Sites belong to organisations: `/v1/sites` (create, list, get, update,
//! delete) with its refusals, and token issuance that never grants another
//! organisation's site — login, refresh, service-account and device tokens.

use crate::common;

use axum::http::StatusCode;
use common::{
    ADMIN, ADMIN_PW, Fixture, call, create_user, fixture, login, org_with_admin, root_token, token,
};
use plantd_shared::claims::site_audience;
use plantd_shared::jwt::{self, VerifyOptions};
use plantd_shared::subject::Site;
use serde_json::{Value, json};

async fn create_site(f: &Fixture, admin: &str, body: Value) -> (StatusCode, Value) {
    call(&f.app, "POST", "/v1/sites", Some(admin), Some(body)).await
}

fn ids(list: &Value) -> Vec<&str> {
    list.as_array()
        .expect("a list")
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect()
}

fn login_body(email: &str, password: &str, sites: &[&str]) -> Value {
    json!({"email": email, "password": password, "sites": sites})
}

#[tokio::test]
async fn org_admins_manage_their_own_sites_only() {
    let f = fixture().await;
    let root = root_token(&f).await;
    let acme = org_with_admin(&f, &root, "acme").await;
    let initech = org_with_admin(&f, &root, "initech").await;

    let (s, v) = create_site(
        &f,
        &acme,
        json!({"id": "plant-1", "name": "Plant 1", "description": "north hall", "labels": {"line": "north"}}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["id"], "plant-1");
    assert_eq!(v["org"], "acme", "the caller's organisation by default");
    assert_eq!(v["labels"]["line"], "north");
    assert!(v["created_ms"].as_u64().is_some_and(|t| t > 0));

    // Ids are global: initech cannot take it, acme cannot take it twice.
    for admin in [&initech, &acme] {
        let (s, v) = create_site(&f, admin, json!({"id": "plant-1"})).await;
        assert_eq!(s, StatusCode::CONFLICT, "{v}");
        assert_eq!(v["error"], "conflict");
    }
    assert_eq!(
        create_site(&f, &initech, json!({"id": "initech-1"}))
            .await
            .0,
        StatusCode::CREATED
    );

    let (s, list) = call(&f.app, "GET", "/v1/sites", Some(&acme), None).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert_eq!(ids(&list), vec!["plant-1"], "acme sees its own only");
    let (_, list) = call(&f.app, "GET", "/v1/sites", Some(&initech), None).await;
    assert_eq!(ids(&list), vec!["initech-1"]);
    let (s, v) = call(&f.app, "GET", "/v1/sites?org=acme", Some(&initech), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");

    // Another organisation's site: refused with a clear message, never shown
    // or changed.
    let uri = "/v1/sites/plant-1";
    for (method, body) in [
        ("GET", None),
        ("PATCH", Some(json!({"name": "mine now"}))),
        ("DELETE", None),
    ] {
        let (s, v) = call(&f.app, method, uri, Some(&initech), body).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{method}: {v}");
        assert_eq!(v["error"], "forbidden");
        assert!(
            v["message"]
                .as_str()
                .is_some_and(|m| m.contains("another organisation")),
            "{v}"
        );
    }
    // ... and acting for another organisation is the superadmin's alone.
    let (s, v) = create_site(&f, &acme, json!({"id": "sneaky", "org": "initech"})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");

    // The owner updates and reads it.
    let (s, v) = call(
        &f.app,
        "PATCH",
        uri,
        Some(&acme),
        Some(json!({"name": "Plant one", "labels": {"line": "south"}})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["name"], "Plant one");
    assert_eq!(v["description"], "north hall", "untouched fields stay");
    let (s, v) = call(&f.app, "GET", uri, Some(&acme), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["labels"], json!({"line": "south"}));
    assert_eq!(v["org"], "acme");

    // Viewers read their organisation's sites but manage none.
    create_user(
        &f,
        &acme,
        "vic@acme.example",
        "viewer password",
        &["viewer"],
    )
    .await;
    let (_, v) = login(&f.app, "vic@acme.example", "viewer password").await;
    let viewer = token(&v);
    assert_eq!(
        call(&f.app, "GET", uri, Some(&viewer), None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        ids(&call(&f.app, "GET", "/v1/sites", Some(&viewer), None)
            .await
            .1),
        vec!["plant-1"]
    );
    assert_eq!(
        create_site(&f, &viewer, json!({"id": "plant-9"})).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&f.app, "DELETE", uri, Some(&viewer), None).await.0,
        StatusCode::FORBIDDEN
    );

    // Deleted: gone for its owner too.
    assert_eq!(
        call(&f.app, "DELETE", uri, Some(&acme), None).await.0,
        StatusCode::NO_CONTENT
    );
    let (s, v) = call(&f.app, "GET", uri, Some(&acme), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
}

#[tokio::test]
async fn bad_site_requests_get_clear_4xx() {
    let f = fixture().await;
    let root = root_token(&f).await;
    let acme = org_with_admin(&f, &root, "acme").await;
    for (body, want) in [
        (json!({"id": "a.b"}), StatusCode::BAD_REQUEST),
        (json!({"id": ""}), StatusCode::BAD_REQUEST),
        (json!({"id": "x".repeat(65)}), StatusCode::BAD_REQUEST),
        (json!({"id": "ok", "extra": 1}), StatusCode::BAD_REQUEST),
        (json!({"name": "no id"}), StatusCode::BAD_REQUEST),
        (
            json!({"id": "ok", "labels": {"bad key": "v"}}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"id": "ok", "name": "n".repeat(500)}),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (s, v) = create_site(&f, &acme, body.clone()).await;
        assert_eq!(s, want, "{body}: {v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
    for (method, uri, want) in [
        ("GET", "/v1/sites/nowhere", StatusCode::NOT_FOUND),
        ("DELETE", "/v1/sites/nowhere", StatusCode::NOT_FOUND),
        ("GET", "/v1/sites/a.b", StatusCode::BAD_REQUEST),
        ("GET", "/v1/sites?bogus=1", StatusCode::BAD_REQUEST),
    ] {
        let (s, v) = call(&f.app, method, uri, Some(&acme), None).await;
        assert_eq!(s, want, "{method} {uri}: {v}");
    }
    let (s, v) = call(
        &f.app,
        "PATCH",
        "/v1/sites/nowhere",
        Some(&acme),
        Some(json!({"name": "x"})),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(
        create_site(&f, &acme, json!({"id": "plant-1"})).await.0,
        StatusCode::CREATED
    );
    let (s, v) = call(
        &f.app,
        "PATCH",
        "/v1/sites/plant-1",
        Some(&acme),
        Some(json!({"org": "initech"})),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "the owner cannot be patched: {v}"
    );
    let (s, _) = call(&f.app, "GET", "/v1/sites", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

/// `_plantd` carries plantd's own components' logs
/// (`plantd._plantd.log.plantd.<component>`): no organisation, not even
/// the superadmin, may register it or any id starting with `_`.
#[tokio::test]
async fn site_ids_starting_with_an_underscore_are_reserved() {
    let f = fixture().await;
    let root = root_token(&f).await;
    let acme = org_with_admin(&f, &root, "acme").await;
    for (token, id) in [(&acme, "_plantd"), (&root, "_plantd"), (&acme, "_x")] {
        let (s, v) = create_site(&f, token, json!({ "id": id })).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{id}: {v}");
        let message = v["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("id") && message.contains("reserved"),
            "the error names the field and why: {v}"
        );
    }
    let (s, v) = create_site(&f, &acme, json!({"id": "plant_1"})).await;
    assert_eq!(
        s,
        StatusCode::CREATED,
        "an underscore inside an id is fine: {v}"
    );
}

#[tokio::test]
async fn the_superadmin_manages_any_organisations_sites() {
    let f = fixture().await;
    let root = root_token(&f).await;
    let acme = org_with_admin(&f, &root, "acme").await;
    let (s, v) = create_site(&f, &root, json!({"id": "acme-hq", "org": "acme"})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["org"], "acme");
    let (s, v) = create_site(&f, &root, json!({"id": "local"})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["org"], "plantd");
    let (s, v) = create_site(&f, &root, json!({"id": "x", "org": "nosuch"})).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "an unknown organisation: {v}");

    let (_, all) = call(&f.app, "GET", "/v1/sites", Some(&root), None).await;
    assert_eq!(ids(&all), vec!["acme-hq", "local"]);
    let (_, only) = call(&f.app, "GET", "/v1/sites?org=acme", Some(&root), None).await;
    assert_eq!(ids(&only), vec!["acme-hq"]);
    let (_, mine) = call(&f.app, "GET", "/v1/sites", Some(&acme), None).await;
    assert_eq!(
        ids(&mine),
        vec!["acme-hq"],
        "acme owns what root made for it"
    );

    let (s, v) = call(
        &f.app,
        "PATCH",
        "/v1/sites/acme-hq",
        Some(&root),
        Some(json!({"description": "set by the superadmin"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        call(&f.app, "DELETE", "/v1/sites/acme-hq", Some(&root), None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn tokens_carry_only_sites_of_the_callers_organisation() {
    let f = fixture().await;
    let root = root_token(&f).await;
    let _acme = org_with_admin(&f, &root, "acme").await;
    let initech = org_with_admin(&f, &root, "initech").await;
    let (s, _) = create_site(&f, &root, json!({"id": "plant-1", "org": "acme"})).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = create_site(&f, &initech, json!({"id": "initech-1"})).await;
    assert_eq!(s, StatusCode::CREATED);

    // Login: another organisation's site is refused, an unknown one too.
    let login_as = |email: &'static str, sites: &'static [&'static str]| {
        let app = f.app.clone();
        async move {
            call(
                &app,
                "POST",
                "/v1/auth/login",
                None,
                Some(login_body(email, "org admin password", sites)),
            )
            .await
        }
    };
    let (s, v) = login_as("admin@initech.example", &["plant-1"]).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("plant-1") && m.contains("another organisation")),
        "{v}"
    );
    let (s, v) = login_as("admin@initech.example", &["nowhere"]).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, v) = login_as("admin@initech.example", &["initech-1"]).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let initech_site = Site::new("initech-1").expect("site");
    jwt::verify(
        &token(&v),
        f.state.keys.jwks(),
        &VerifyOptions::for_audience(site_audience(&initech_site)),
    )
    .expect("valid for its own site's edge");
    let (s, v) = login_as("admin@acme.example", &["plant-1"]).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let acme_refresh = v["refresh_token"].as_str().expect("rt").to_owned();

    // Service accounts: the same rule.
    let (s, creds) = call(
        &f.app,
        "POST",
        "/v1/service-accounts",
        Some(&initech),
        Some(json!({"name": "historian", "roles": ["viewer"]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{creds}");
    let sa_token = |sites: &'static [&'static str]| {
        let app = f.app.clone();
        let body = json!({"grant_type": "client_credentials", "client_id": creds["client_id"], "client_secret": creds["client_secret"], "sites": sites});
        async move { call(&app, "POST", "/v1/auth/token", None, Some(body)).await }
    };
    let (s, v) = sa_token(&["plant-1"]).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v) = sa_token(&["initech-1"]).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // Devices: registered only on their organisation's sites ...
    let (s, v) = call(
        &f.app,
        "POST",
        "/v1/devices",
        Some(&initech),
        Some(json!({"name": "spy", "site": "plant-1", "publish": ["#"]})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v) = call(
        &f.app,
        "POST",
        "/v1/devices",
        Some(&initech),
        Some(json!({"name": "ghost", "site": "nowhere"})),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, dev) = call(
        &f.app,
        "POST",
        "/v1/devices",
        Some(&initech),
        Some(json!({"name": "press", "site": "initech-1", "publish": ["a/#"]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{dev}");
    let dev_body = json!({"grant_type": "client_credentials", "client_id": dev["client_id"], "client_secret": dev["client_secret"]});
    let (s, v) = call(
        &f.app,
        "POST",
        "/v1/auth/token",
        None,
        Some(dev_body.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // ... and again at token time: a deleted site issues no more tokens.
    assert_eq!(
        call(
            &f.app,
            "DELETE",
            "/v1/sites/initech-1",
            Some(&initech),
            None
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );
    let (s, v) = call(&f.app, "POST", "/v1/auth/token", None, Some(dev_body)).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");

    // Refresh re-checks the sites of the login: moved away → refused.
    let (s, v) = call(
        &f.app,
        "POST",
        "/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": acme_refresh})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let next = v["refresh_token"].as_str().expect("rt").to_owned();
    assert_eq!(
        call(&f.app, "DELETE", "/v1/sites/plant-1", Some(&root), None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    let (s, v) = call(
        &f.app,
        "POST",
        "/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": next})),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
}

#[tokio::test]
async fn a_superadmin_token_for_another_organisations_site_is_audited_in_the_owners_chain() {
    let f = fixture().await;
    let root = root_token(&f).await;
    let _acme = org_with_admin(&f, &root, "acme").await;
    let (s, _) = create_site(&f, &root, json!({"id": "plant-1", "org": "acme"})).await;
    assert_eq!(s, StatusCode::CREATED);

    let (s, v) = call(
        &f.app,
        "POST",
        "/v1/auth/login",
        None,
        Some(login_body(ADMIN, ADMIN_PW, &["plant-1"])),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "the superadmin may: {v}");

    let page = plantd_shared::audit::read(
        &f.nats.jetstream().await,
        &plantd_shared::audit::Query {
            org: "acme".into(),
            action: Some("site.cross_org".into()),
            limit: 10,
            ..plantd_shared::audit::Query::default()
        },
    )
    .await
    .expect("read acme's trail");
    assert_eq!(page.records.len(), 1, "one record in acme's chain");
    let r = &page.records[0].record;
    assert_eq!(r.target, "site:plant-1");
    assert_eq!(r.actor_org.as_deref(), Some("plantd"));
    assert_eq!(
        r.detail.as_ref().and_then(|d| d["via"].as_str()),
        Some("token")
    );
    // An organisation's own admin reaching its own site records nothing of
    // the kind.
    let (s, _) = call(
        &f.app,
        "POST",
        "/v1/auth/login",
        None,
        Some(login_body(
            "admin@acme.example",
            "org admin password",
            &["plant-1"],
        )),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let again = plantd_shared::audit::read(
        &f.nats.jetstream().await,
        &plantd_shared::audit::Query {
            org: "acme".into(),
            action: Some("site.cross_org".into()),
            limit: 10,
            ..plantd_shared::audit::Query::default()
        },
    )
    .await
    .expect("read again");
    assert_eq!(again.records.len(), 1);
}
