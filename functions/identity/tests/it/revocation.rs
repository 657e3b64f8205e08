//! Revocation that bites at once: deactivating, deleting, taking a role
//! away from, or explicitly revoking a user, service account or device
//! puts every live token id of it into `plantd_revoked` (the list edges
//! and proxies watch), and a user's refresh tokens stop working.

use crate::common;

use axum::http::StatusCode;
use common::{Fixture, call, create_user, fixture, login, org_with_admin, root_token, token};
use plantd_shared::jwt::{self, VerifyOptions};
use serde_json::{Value, json};

/// The `jti` of a token this identity service signed (any audience).
fn jti(f: &Fixture, token: &str) -> String {
    let claims: Value = {
        let payload = token.split('.').nth(1).expect("a JWT");
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64url");
        serde_json::from_slice(&bytes).expect("claims")
    };
    // The token is genuine (checked for the API audience when it has it).
    let _ = jwt::verify(
        token,
        f.state.keys.jwks(),
        &VerifyOptions::for_audience("plantd:api"),
    );
    claims["jti"].as_str().expect("jti").to_owned()
}

async fn revoked(f: &Fixture, token: &str) -> bool {
    f.state
        .store
        .is_revoked(&jti(f, token))
        .await
        .expect("lookup")
}

async fn whoami(f: &Fixture, token: &str) -> StatusCode {
    call(&f.app, "GET", "/v1/auth/whoami", Some(token), None)
        .await
        .0
}

async fn refresh(f: &Fixture, rt: &str) -> (StatusCode, Value) {
    call(
        &f.app,
        "POST",
        "/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": rt})),
    )
    .await
}

#[tokio::test]
async fn logging_a_user_out_everywhere_revokes_every_token_and_refresh() {
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
    let (_, a) = login(&f.app, "op@acme.example", "operator password").await;
    let (_, b) = login(&f.app, "op@acme.example", "operator password").await;
    let (s, r) = refresh(&f, b["refresh_token"].as_str().expect("rt")).await;
    assert_eq!(s, StatusCode::OK);
    let (ta, tb, tr) = (token(&a), token(&b), token(&r));
    let rt = r["refresh_token"].as_str().expect("rt").to_owned();
    let rt_a = a["refresh_token"].as_str().expect("rt").to_owned();

    let (s, v) = call(
        &f.app,
        "POST",
        &format!("/v1/users/{id}/revoke"),
        Some(&acme),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["revoked"], 3, "two logins and a refresh");
    for t in [&ta, &tb, &tr] {
        assert!(revoked(&f, t).await, "in plantd_revoked");
        assert_eq!(whoami(&f, t).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(refresh(&f, &rt).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(refresh(&f, &rt_a).await.0, StatusCode::UNAUTHORIZED);
    // The user may log in again, and that session works.
    let (s, v) = login(&f.app, "op@acme.example", "operator password").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(whoami(&f, &token(&v)).await, StatusCode::OK);
    assert_eq!(
        refresh(&f, v["refresh_token"].as_str().expect("rt"))
            .await
            .0,
        StatusCode::OK
    );
    // Refusals.
    let (s, _) = call(
        &f.app,
        "POST",
        &format!("/v1/users/{id}/revoke"),
        Some(&token(&v)),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "an operator may not");
    let globex = org_with_admin(&f, &root, "globex").await;
    let (s, _) = call(
        &f.app,
        "POST",
        &format!("/v1/users/{id}/revoke"),
        Some(&globex),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "another org's user");
    let (s, _) = call(&f.app, "POST", "/v1/users/a.b*/revoke", Some(&acme), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn deactivating_or_deleting_a_user_revokes_its_tokens() {
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
    let (_, v) = login(&f.app, "op@acme.example", "operator password").await;
    let t = token(&v);
    let (s, _) = call(
        &f.app,
        "PATCH",
        &format!("/v1/users/{id}"),
        Some(&acme),
        Some(json!({"attributes": {"shift": "night"}})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        whoami(&f, &t).await,
        StatusCode::OK,
        "other changes revoke nothing"
    );
    let (s, _) = call(
        &f.app,
        "PATCH",
        &format!("/v1/users/{id}"),
        Some(&acme),
        Some(json!({"active": false})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(revoked(&f, &t).await);
    assert_eq!(whoami(&f, &t).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        refresh(&f, v["refresh_token"].as_str().expect("rt"))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );

    let id2 = create_user(
        &f,
        &acme,
        "two@acme.example",
        "another password",
        &["viewer"],
    )
    .await;
    let (_, v) = login(&f.app, "two@acme.example", "another password").await;
    let t = token(&v);
    let (s, _) = call(
        &f.app,
        "DELETE",
        &format!("/v1/users/{id2}"),
        Some(&acme),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(revoked(&f, &t).await);
    assert_eq!(whoami(&f, &t).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn taking_a_role_away_revokes_tokens_but_not_the_session() {
    let f = fixture().await;
    let root = root_token(&f).await;
    let acme = org_with_admin(&f, &root, "acme").await;
    let id = create_user(
        &f,
        &acme,
        "op@acme.example",
        "operator password",
        &["viewer"],
    )
    .await;
    let (_, v) = login(&f.app, "op@acme.example", "operator password").await;
    let t = token(&v);
    let uri = format!("/v1/users/{id}/roles");
    let (s, _) = call(
        &f.app,
        "PUT",
        &uri,
        Some(&acme),
        Some(json!({"roles": ["viewer", "operator"]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        whoami(&f, &t).await,
        StatusCode::OK,
        "adding a role revokes nothing"
    );
    let (s, _) = call(
        &f.app,
        "PUT",
        &uri,
        Some(&acme),
        Some(json!({"roles": ["operator"]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        whoami(&f, &t).await,
        StatusCode::UNAUTHORIZED,
        "the old grants are gone"
    );
    let (s, r) = refresh(&f, v["refresh_token"].as_str().expect("rt")).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "the session goes on with the new roles: {r}"
    );
    let (_, who) = call(&f.app, "GET", "/v1/auth/whoami", Some(&token(&r)), None).await;
    assert_eq!(who["roles"], json!(["operator"]));
}

async fn service_account(f: &Fixture, admin: &str) -> (String, Value) {
    let (s, creds) = call(
        &f.app,
        "POST",
        "/v1/service-accounts",
        Some(admin),
        Some(json!({"name": "bot", "roles": ["operator"]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{creds}");
    (creds["client_id"].as_str().expect("id").to_owned(), creds)
}

async fn client_token(f: &Fixture, creds: &Value) -> (StatusCode, Value) {
    call(
        &f.app,
        "POST",
        "/v1/auth/token",
        None,
        Some(json!({"grant_type": "client_credentials", "client_id": creds["client_id"], "client_secret": creds["client_secret"]})),
    )
    .await
}

#[tokio::test]
async fn service_accounts_are_revoked_deactivated_and_deleted() {
    let f = fixture().await;
    let root = root_token(&f).await;
    let acme = org_with_admin(&f, &root, "acme").await;
    let (id, creds) = service_account(&f, &acme).await;
    let uri = format!("/v1/service-accounts/{id}");

    let t1 = token(&client_token(&f, &creds).await.1);
    let (s, v) = call(&f.app, "POST", &format!("{uri}/revoke"), Some(&acme), None).await;
    assert_eq!((s, &v["revoked"]), (StatusCode::OK, &json!(1)), "{v}");
    assert_eq!(whoami(&f, &t1).await, StatusCode::UNAUTHORIZED);

    let t2 = token(&client_token(&f, &creds).await.1);
    assert_eq!(whoami(&f, &t2).await, StatusCode::OK, "a new token works");
    let (s, v) = call(
        &f.app,
        "PATCH",
        &uri,
        Some(&acme),
        Some(json!({"roles": ["viewer"]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["roles"], json!(["viewer"]));
    assert_eq!(
        whoami(&f, &t2).await,
        StatusCode::UNAUTHORIZED,
        "role taken away"
    );

    let t3 = token(&client_token(&f, &creds).await.1);
    let (s, v) = call(
        &f.app,
        "PATCH",
        &uri,
        Some(&acme),
        Some(json!({"active": false})),
    )
    .await;
    assert_eq!((s, &v["active"]), (StatusCode::OK, &json!(false)));
    assert_eq!(whoami(&f, &t3).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        client_token(&f, &creds).await.0,
        StatusCode::UNAUTHORIZED,
        "inactive: no token"
    );
    let (s, _) = call(
        &f.app,
        "PATCH",
        &uri,
        Some(&acme),
        Some(json!({"active": true})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let t4 = token(&client_token(&f, &creds).await.1);
    assert_eq!(
        call(&f.app, "DELETE", &uri, Some(&acme), None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(whoami(&f, &t4).await, StatusCode::UNAUTHORIZED);

    // Refusals.
    assert_eq!(
        call(&f.app, "POST", &format!("{uri}/revoke"), Some(&acme), None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(
            &f.app,
            "PATCH",
            &uri,
            Some(&acme),
            Some(json!({"active": false}))
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    let (id, _) = service_account(&f, &acme).await;
    let (s, _) = call(
        &f.app,
        "PATCH",
        &format!("/v1/service-accounts/{id}"),
        Some(&acme),
        Some(json!({"roles": ["superadmin"]})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "no escalation through PATCH");
    let (s, _) = call(
        &f.app,
        "PATCH",
        &format!("/v1/service-accounts/{id}"),
        Some(&acme),
        Some(json!({"colour": "red"})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = call(
        &f.app,
        "DELETE",
        "/v1/service-accounts/a.b.c",
        Some(&acme),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "a malformed id is 404, not 503");
}

#[tokio::test]
async fn devices_are_revoked_and_deactivated() {
    let f = fixture().await;
    let root = root_token(&f).await;
    let acme = org_with_admin(&f, &root, "acme").await;
    // Devices need a registered site when sites are enforced; the test
    // uses whatever the device route accepts for the org's first site.
    let (s, _) = call(
        &f.app,
        "POST",
        "/v1/sites",
        Some(&acme),
        Some(json!({"id": "plant-1", "name": "plant 1"})),
    )
    .await;
    assert!(
        s.is_success() || s == StatusCode::NOT_FOUND || s == StatusCode::METHOD_NOT_ALLOWED,
        "{s}"
    );
    let (s, creds) = call(
        &f.app,
        "POST",
        "/v1/devices",
        Some(&acme),
        Some(json!({"name": "press", "site": "plant-1", "publish": ["a/#"]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{creds}");
    let id = creds["client_id"].as_str().expect("id").to_owned();
    let uri = format!("/v1/devices/{id}");

    let t1 = token(&client_token(&f, &creds).await.1);
    let t2 = token(&client_token(&f, &creds).await.1);
    let (s, v) = call(&f.app, "POST", &format!("{uri}/revoke"), Some(&acme), None).await;
    assert_eq!((s, &v["revoked"]), (StatusCode::OK, &json!(2)), "{v}");
    assert!(revoked(&f, &t1).await && revoked(&f, &t2).await);

    let t3 = token(&client_token(&f, &creds).await.1);
    assert!(!revoked(&f, &t3).await);
    let (s, v) = call(
        &f.app,
        "PATCH",
        &uri,
        Some(&acme),
        Some(json!({"active": false})),
    )
    .await;
    assert_eq!((s, &v["active"]), (StatusCode::OK, &json!(false)), "{v}");
    assert!(revoked(&f, &t3).await);
    assert_eq!(client_token(&f, &creds).await.0, StatusCode::UNAUTHORIZED);
    let (s, _) = call(
        &f.app,
        "PATCH",
        &uri,
        Some(&acme),
        Some(json!({"active": true})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let t4 = token(&client_token(&f, &creds).await.1);
    assert_eq!(
        call(&f.app, "DELETE", &uri, Some(&acme), None).await.0,
        StatusCode::NO_CONTENT
    );
    assert!(revoked(&f, &t4).await, "deleting revokes too");
    assert_eq!(
        call(&f.app, "POST", &format!("{uri}/revoke"), Some(&acme), None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn narrowing_or_deleting_a_role_revokes_its_holders_tokens() {
    let f = fixture().await;
    let root = root_token(&f).await;
    let acme = org_with_admin(&f, &root, "acme").await;
    let (s, _) = call(
        &f.app,
        "POST",
        "/v1/roles",
        Some(&acme),
        Some(json!({"name": "reader", "perms": ["telemetry:*:read"]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    create_user(&f, &acme, "r@acme.example", "reader password", &["reader"]).await;
    create_user(&f, &acme, "o@acme.example", "other password", &["viewer"]).await;
    let (_, v) = login(&f.app, "r@acme.example", "reader password").await;
    let (_, o) = login(&f.app, "o@acme.example", "other password").await;
    let (holder, other) = (token(&v), token(&o));

    let (s, _) = call(
        &f.app,
        "PUT",
        "/v1/roles/reader",
        Some(&acme),
        Some(json!({"perms": ["telemetry:*:read", "state:scope:*:read"]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        whoami(&f, &holder).await,
        StatusCode::OK,
        "widening revokes nothing"
    );
    let (s, _) = call(
        &f.app,
        "PUT",
        "/v1/roles/reader",
        Some(&acme),
        Some(json!({"perms": ["state:scope:*:read"]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        whoami(&f, &holder).await,
        StatusCode::UNAUTHORIZED,
        "narrowed"
    );
    assert_eq!(whoami(&f, &other).await, StatusCode::OK, "not a holder");

    let (_, v) = login(&f.app, "r@acme.example", "reader password").await;
    let holder = token(&v);
    assert_eq!(
        call(&f.app, "DELETE", "/v1/roles/reader", Some(&acme), None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        whoami(&f, &holder).await,
        StatusCode::UNAUTHORIZED,
        "deleted"
    );
    assert_eq!(whoami(&f, &other).await, StatusCode::OK);
    for uri in ["/v1/roles/a.b*", "/v1/roles/%3E"] {
        assert_eq!(
            call(&f.app, "GET", uri, Some(&acme), None).await.0,
            StatusCode::NOT_FOUND,
            "{uri}"
        );
        assert_eq!(
            call(&f.app, "DELETE", uri, Some(&acme), None).await.0,
            StatusCode::NOT_FOUND,
            "{uri}"
        );
    }
}
