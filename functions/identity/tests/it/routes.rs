//! The identity routes that had no test: service accounts, user delete,
//! password change, roles get/put/delete, devices list and delete — each
//! with its refusals (another organisation, missing permission, bad input).

use crate::common;

use axum::http::StatusCode;
use common::{
    ADMIN, ADMIN_PW, call, create_user, fixture, login, org_with_admin, root_token, token,
};
use serde_json::{Value, json};

fn client_token_body(creds: &Value) -> Value {
    json!({"grant_type": "client_credentials", "client_id": creds["client_id"], "client_secret": creds["client_secret"]})
}

#[tokio::test]
async fn service_accounts_are_created_listed_used_and_deleted() {
    let f = fixture().await;
    let root = root_token(&f).await;
    let acme = org_with_admin(&f, &root, "acme").await;
    let globex = org_with_admin(&f, &root, "globex").await;
    let (s, creds) = call(
        &f.app,
        "POST",
        "/v1/service-accounts",
        Some(&acme),
        Some(json!({"name": "historian", "roles": ["viewer"]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{creds}");
    let id = creds["client_id"].as_str().expect("client_id").to_owned();
    assert!(id.starts_with("sa-"));
    assert!(
        creds["client_secret"]
            .as_str()
            .is_some_and(|s| s.len() >= 16)
    );

    let (s, list) = call(&f.app, "GET", "/v1/service-accounts", Some(&acme), None).await;
    assert_eq!(s, StatusCode::OK);
    let list = list.as_array().expect("list").clone();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["client_id"], id.as_str());
    assert_eq!(list[0]["roles"], json!(["viewer"]));
    assert!(list[0].get("secret_hash").is_none(), "no secret material");
    let (_, other) = call(&f.app, "GET", "/v1/service-accounts", Some(&globex), None).await;
    assert_eq!(other, json!([]), "another org sees none");

    // Its token carries its roles' permissions and verifies for the API.
    let (s, t) = call(
        &f.app,
        "POST",
        "/v1/auth/token",
        None,
        Some(client_token_body(&creds)),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{t}");
    let sa = token(&t);
    assert!(t.get("refresh_token").is_none(), "no refresh for programs");
    let (s, who) = call(&f.app, "GET", "/v1/auth/whoami", Some(&sa), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(who["sub"], id.as_str());
    assert_eq!(who["kind"], "service");
    assert_eq!(who["org"], "acme");
    let (s, _) = call(&f.app, "GET", "/v1/users", Some(&sa), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "a viewer may not list users");
    let (s, _) = call(
        &f.app,
        "POST",
        "/v1/auth/token",
        None,
        Some(json!({"grant_type": "password", "client_id": id, "client_secret": "x"})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "only client_credentials");

    // Refusals: roles beyond the caller's, no permission, another org.
    let (s, _) = call(
        &f.app,
        "POST",
        "/v1/service-accounts",
        Some(&acme),
        Some(json!({"name": "x", "roles": ["superadmin"]})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = call(
        &f.app,
        "POST",
        "/v1/service-accounts",
        Some(&sa),
        Some(json!({"name": "x"})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let uri = format!("/v1/service-accounts/{id}");
    assert_eq!(
        call(&f.app, "DELETE", &uri, Some(&globex), None).await.0,
        StatusCode::NOT_FOUND
    );

    assert_eq!(
        call(&f.app, "DELETE", &uri, Some(&acme), None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call(&f.app, "DELETE", &uri, Some(&acme), None).await.0,
        StatusCode::NOT_FOUND
    );
    let (_, list) = call(&f.app, "GET", "/v1/service-accounts", Some(&acme), None).await;
    assert_eq!(list, json!([]));
    let (s, _) = call(
        &f.app,
        "POST",
        "/v1/auth/token",
        None,
        Some(client_token_body(&creds)),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "a deleted account gets no token"
    );
}

#[tokio::test]
async fn a_deleted_user_cannot_log_in_and_the_email_is_free_again() {
    let f = fixture().await;
    let root = root_token(&f).await;
    let acme = org_with_admin(&f, &root, "acme").await;
    let id = create_user(
        &f,
        &acme,
        "gone@acme.example",
        "soon gone password",
        &["viewer"],
    )
    .await;
    assert_eq!(
        login(&f.app, "gone@acme.example", "soon gone password")
            .await
            .0,
        StatusCode::OK
    );
    let uri = format!("/v1/users/{id}");
    let (_, v) = login(&f.app, "gone@acme.example", "soon gone password").await;
    let viewer = token(&v);
    assert_eq!(
        call(&f.app, "DELETE", &uri, Some(&viewer), None).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&f.app, "DELETE", &uri, Some(&acme), None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call(&f.app, "GET", &uri, Some(&acme), None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&f.app, "DELETE", &uri, Some(&acme), None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&f.app, "DELETE", "/v1/users/not..valid", Some(&acme), None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        login(&f.app, "gone@acme.example", "soon gone password")
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    create_user(
        &f,
        &acme,
        "gone@acme.example",
        "a brand new password",
        &["viewer"],
    )
    .await;
    assert_eq!(
        login(&f.app, "gone@acme.example", "a brand new password")
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn users_change_their_own_password() {
    let f = fixture().await;
    let root = root_token(&f).await;
    let change = |token: String, current: &'static str, new: &'static str| {
        let app = f.app.clone();
        async move {
            call(
                &app,
                "POST",
                "/v1/auth/password",
                Some(&token),
                Some(json!({"current_password": current, "new_password": new})),
            )
            .await
            .0
        }
    };
    assert_eq!(
        change(root.clone(), "not my password", "a new long password").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        change(root.clone(), ADMIN_PW, "short").await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        change(root.clone(), ADMIN_PW, "a new long password").await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        login(&f.app, ADMIN, ADMIN_PW).await.0,
        StatusCode::UNAUTHORIZED
    );
    // The change ended every session, the one that made it too.
    assert_eq!(
        call(&f.app, "GET", "/v1/auth/whoami", Some(&root), None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    let (s, v) = login(&f.app, ADMIN, "a new long password").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let root = token(&v);
    // Programs have no password.
    let (_, creds) = call(
        &f.app,
        "POST",
        "/v1/service-accounts",
        Some(&root),
        Some(json!({"name": "bot"})),
    )
    .await;
    let (_, t) = call(
        &f.app,
        "POST",
        "/v1/auth/token",
        None,
        Some(client_token_body(&creds)),
    )
    .await;
    assert_eq!(
        change(token(&t), "x", "a new long password").await,
        StatusCode::FORBIDDEN
    );
    let (s, _) = call(
        &f.app,
        "POST",
        "/v1/auth/password",
        Some(&root),
        Some(json!({"new_password": "a new long password"})),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "the current password is required"
    );
}

#[tokio::test]
async fn roles_are_read_replaced_and_deleted() {
    let f = fixture().await;
    let root = root_token(&f).await;
    let acme = org_with_admin(&f, &root, "acme").await;
    let globex = org_with_admin(&f, &root, "globex").await;
    let (s, r) = call(
        &f.app,
        "POST",
        "/v1/roles",
        Some(&acme),
        Some(json!({"name": "line-reader", "perms": ["telemetry:*:read"], "mqtt": {"plant-1": {"subscribe": ["line1/#"]}}})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    let (s, r) = call(&f.app, "GET", "/v1/roles/line-reader", Some(&acme), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(r["perms"], json!(["telemetry:*:read"]));
    assert_eq!(r["builtin"], false);
    let (s, r) = call(&f.app, "GET", "/v1/roles/viewer", Some(&acme), None).await;
    assert_eq!((s, &r["builtin"]), (StatusCode::OK, &json!(true)));
    assert_eq!(
        call(&f.app, "GET", "/v1/roles/line-reader", Some(&globex), None)
            .await
            .0,
        StatusCode::NOT_FOUND,
        "another org's role is invisible"
    );
    assert_eq!(
        call(&f.app, "GET", "/v1/roles/nope", Some(&acme), None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );

    // Replace: new permissions land; tokens issued afterwards carry them.
    let (s, r) = call(
        &f.app,
        "PUT",
        "/v1/roles/line-reader",
        Some(&acme),
        Some(json!({"description": "reads line 1", "perms": ["telemetry:*:read", "state:scope:*:read"]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["name"], "line-reader");
    create_user(
        &f,
        &acme,
        "r@acme.example",
        "reader password",
        &["line-reader"],
    )
    .await;
    let (_, v) = login(&f.app, "r@acme.example", "reader password").await;
    let (_, who) = call(&f.app, "GET", "/v1/auth/whoami", Some(&token(&v)), None).await;
    assert_eq!(
        who["perms"],
        json!(["telemetry:*:read", "state:scope:*:read"])
    );
    // Refusals on PUT.
    for (name, body, want) in [
        (
            "line-reader",
            json!({"perms": ["*"]}),
            StatusCode::FORBIDDEN,
        ),
        ("viewer", json!({"perms": []}), StatusCode::CONFLICT),
        ("missing", json!({"perms": []}), StatusCode::NOT_FOUND),
        ("Bad Name", json!({"perms": []}), StatusCode::BAD_REQUEST),
        (
            "line-reader",
            json!({"mqtt": {"plant-1": {"publish": ["a/#/b"]}}}),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (s, v) = call(
            &f.app,
            "PUT",
            &format!("/v1/roles/{}", name.replace(' ', "%20")),
            Some(&acme),
            Some(body),
        )
        .await;
        assert_eq!(s, want, "PUT {name}: {v}");
    }
    assert_eq!(
        call(
            &f.app,
            "PUT",
            "/v1/roles/line-reader",
            Some(&globex),
            Some(json!({"perms": []}))
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );

    // Delete.
    assert_eq!(
        call(&f.app, "DELETE", "/v1/roles/viewer", Some(&acme), None)
            .await
            .0,
        StatusCode::CONFLICT,
        "built-in roles stay"
    );
    assert_eq!(
        call(&f.app, "DELETE", "/v1/roles/line-reader", Some(&acme), None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call(&f.app, "GET", "/v1/roles/line-reader", Some(&acme), None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let (_, v) = login(&f.app, "r@acme.example", "reader password").await;
    let (_, who) = call(&f.app, "GET", "/v1/auth/whoami", Some(&token(&v)), None).await;
    assert_eq!(who["perms"], json!([]), "a deleted role grants nothing");
}

#[tokio::test]
async fn devices_are_listed_and_deleted() {
    let f = fixture().await;
    let root = root_token(&f).await;
    let acme = org_with_admin(&f, &root, "acme").await;
    let globex = org_with_admin(&f, &root, "globex").await;
    common::register_site(&f, "acme", "plant-1").await;
    let (s, creds) = call(
        &f.app,
        "POST",
        "/v1/devices",
        Some(&acme),
        Some(json!({"name": "press 1", "site": "plant-1", "publish": ["line1/press1/#"]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{creds}");
    let id = creds["client_id"].as_str().expect("id").to_owned();
    let (s, list) = call(&f.app, "GET", "/v1/devices", Some(&acme), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        list,
        json!([{"client_id": id, "name": "press 1", "site": "plant-1", "publish": ["line1/press1/#"], "subscribe": [], "active": true}])
    );
    assert_eq!(
        call(&f.app, "GET", "/v1/devices", Some(&globex), None)
            .await
            .1,
        json!([])
    );
    for body in [
        json!({"name": "x", "site": "bad site"}),
        json!({"name": "x", "site": "plant-1", "publish": ["a/#/b"]}),
        json!({"name": "x"}),
    ] {
        let (s, v) = call(&f.app, "POST", "/v1/devices", Some(&acme), Some(body)).await;
        assert_eq!(s.as_u16() / 100, 4, "a clear 4xx: {v}");
    }
    let uri = format!("/v1/devices/{id}");
    assert_eq!(
        call(&f.app, "DELETE", &uri, Some(&globex), None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&f.app, "DELETE", &uri, Some(&acme), None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call(&f.app, "DELETE", &uri, Some(&acme), None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&f.app, "GET", "/v1/devices", Some(&acme), None)
            .await
            .1,
        json!([])
    );
    let (s, _) = call(
        &f.app,
        "POST",
        "/v1/auth/token",
        None,
        Some(client_token_body(&creds)),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "a deleted device gets no token"
    );
}
