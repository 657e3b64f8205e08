//! The identity API through its router (`oneshot`, no port) over a real
//! nats-server with JetStream: login and tokens, rotation and reuse
//! detection, compare-and-set, and tenant isolation. Login throttling is
//! in `throttle.rs`, the other routes in `routes.rs`.

use crate::common;

use axum::http::StatusCode;
use common::{ADMIN, ADMIN_PW, call, fixture, login, org_with_admin, token};
use plantd_identity::bootstrap;
use plantd_shared::claims::{Permissions, site_audience};
use plantd_shared::jwt::{self, JwkSet, SigningKey, VerifyOptions};
use plantd_shared::subject::Site;
use plantd_shared::topic::Topic;
use serde_json::json;

#[tokio::test]
async fn login_issues_tokens_that_verify_against_the_jwks() {
    let f = fixture().await;
    let (s, v) = login(&f.app, ADMIN, ADMIN_PW).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["token_type"], "Bearer");
    assert!(
        v["refresh_token"]
            .as_str()
            .is_some_and(|r| r.starts_with("rt_"))
    );
    let access = token(&v);
    let (s, jwks) = call(&f.app, "GET", "/.well-known/jwks.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let jwks: JwkSet = serde_json::from_value(jwks).expect("a JWKS document");
    let claims =
        jwt::verify(&access, &jwks, &VerifyOptions::for_audience("plantd:api")).expect("verifies");
    assert_eq!(claims.org, "plantd");
    assert!(claims.roles.contains(&"superadmin".to_owned()));
    let (s, who) = call(&f.app, "GET", "/v1/auth/whoami", Some(&access), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(who["sub"], claims.sub);
    // Bootstrapping again changes nothing and never resets the password.
    let again = bootstrap::ensure_admin(&f.state, ADMIN, "another long password")
        .await
        .expect("again");
    assert_eq!(again, bootstrap::Bootstrap::Exists);
    assert_eq!(login(&f.app, ADMIN, ADMIN_PW).await.0, StatusCode::OK);
}

#[tokio::test]
async fn unknown_user_and_wrong_password_look_the_same() {
    let f = fixture().await;
    let (s1, v1) = login(&f.app, "nobody@plantd.example", "whatever password").await;
    let (s2, v2) = login(&f.app, ADMIN, "wrong password!!").await;
    assert_eq!(s1, StatusCode::UNAUTHORIZED);
    assert_eq!((s1, &v1), (s2, &v2), "no hint which one was wrong");
    // Nor in the time taken: the unknown account is verified against a
    // hash with exactly the cost of the stored user's (argon2 reads its
    // parameters from the hash), and a real, well-formed one (a malformed
    // hash is refused before any hashing).
    use argon2::password_hash::PasswordHash;
    let users: Vec<plantd_identity::model::User> =
        f.state.store.list("user.").await.expect("users");
    let admin = users.iter().find(|u| u.email == ADMIN).expect("the admin");
    let stored = PasswordHash::new(&admin.password_hash).expect("stored hash");
    let dummy = PasswordHash::new(&f.state.dummy_hash).expect("a valid dummy hash");
    assert_eq!(
        (dummy.algorithm, dummy.version, &dummy.params),
        (stored.algorithm, stored.version, &stored.params),
        "same algorithm, version and cost"
    );
    assert_eq!(dummy.salt.map(|s| s.len()), stored.salt.map(|s| s.len()));
    assert_eq!(dummy.hash.map(|h| h.len()), stored.hash.map(|h| h.len()));
}

#[tokio::test]
async fn reusing_a_rotated_refresh_token_revokes_the_family() {
    let f = fixture().await;
    let (_, v) = login(&f.app, ADMIN, ADMIN_PW).await;
    let first = v["refresh_token"].as_str().expect("rt").to_owned();
    let (s, v) = call(
        &f.app,
        "POST",
        "/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": first})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let second = v["refresh_token"].as_str().expect("rt").to_owned();
    assert_ne!(first, second, "rotated");
    // An attacker replays the first token...
    let (s, _) = call(
        &f.app,
        "POST",
        "/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": first})),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // ...and the legitimate holder's newer token is now dead too.
    let (s, _) = call(
        &f.app,
        "POST",
        "/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": second})),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn logout_revokes_the_access_token() {
    let f = fixture().await;
    let (_, v) = login(&f.app, ADMIN, ADMIN_PW).await;
    let access = token(&v);
    let rt = v["refresh_token"].as_str().expect("rt").to_owned();
    let (s, _) = call(
        &f.app,
        "POST",
        "/v1/auth/logout",
        Some(&access),
        Some(json!({"refresh_token": rt})),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(
        call(&f.app, "GET", "/v1/auth/whoami", Some(&access), None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    let (s, _) = call(
        &f.app,
        "POST",
        "/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": rt})),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn concurrent_updates_to_one_user_both_land() {
    let f = fixture().await;
    let (_, v) = login(&f.app, ADMIN, ADMIN_PW).await;
    let root = token(&v);
    let (s, u) = call(
        &f.app,
        "POST",
        "/v1/users",
        Some(&root),
        Some(json!({"email": "op@plantd.example", "password": "operator password", "roles": ["operator"]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{u}");
    let id = u["id"].as_str().expect("id").to_owned();
    let uri = format!("/v1/users/{id}");
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let app = f.app.clone();
            let uri = uri.clone();
            let root = root.clone();
            tokio::spawn(async move {
                for i in 0..10 {
                    let (s, v) = call(
                        &app,
                        "PATCH",
                        &uri,
                        Some(&root),
                        Some(json!({"attributes": {format!("w{w}-{i}"): "x"}})),
                    )
                    .await;
                    assert_eq!(s, StatusCode::OK, "{v}");
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    let (_, u) = call(&f.app, "GET", &uri, Some(&root), None).await;
    let attrs = u["attributes"].as_object().expect("attributes");
    assert_eq!(
        attrs.len(),
        20,
        "every update from both writers landed: {attrs:?}"
    );
}

#[tokio::test]
async fn organisations_cannot_see_or_change_each_other() {
    let f = fixture().await;
    let (_, v) = login(&f.app, ADMIN, ADMIN_PW).await;
    let root = token(&v);
    let a = org_with_admin(&f, &root, "acme").await;
    let b = org_with_admin(&f, &root, "globex").await;
    let (_, bu) = call(
        &f.app,
        "POST",
        "/v1/users",
        Some(&b),
        Some(json!({"email": "eve@globex.example", "password": "globex user pass"})),
    )
    .await;
    let b_user = bu["id"].as_str().expect("id").to_owned();

    let (s, list) = call(&f.app, "GET", "/v1/users", Some(&a), None).await;
    assert_eq!(s, StatusCode::OK);
    let emails: Vec<&str> = list
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|u| u["email"].as_str())
        .collect();
    assert_eq!(emails, vec!["admin@acme.example"], "only acme's users");
    let uri = format!("/v1/users/{b_user}");
    assert_eq!(
        call(&f.app, "GET", &uri, Some(&a), None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(
            &f.app,
            "PATCH",
            &uri,
            Some(&a),
            Some(json!({"active": false}))
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&f.app, "DELETE", &uri, Some(&a), None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&f.app, "GET", "/v1/orgs/globex", Some(&a), None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    // An org admin cannot create organisations or hand out more than it has.
    let (s, _) = call(
        &f.app,
        "POST",
        "/v1/orgs",
        Some(&a),
        Some(json!({"id": "evil", "name": "evil"})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (_, me) = call(&f.app, "GET", "/v1/auth/whoami", Some(&a), None).await;
    let me = me["sub"].as_str().expect("sub").to_owned();
    let (s, _) = call(
        &f.app,
        "PUT",
        &format!("/v1/users/{me}/roles"),
        Some(&a),
        Some(json!({"roles": ["superadmin"]})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = call(
        &f.app,
        "POST",
        "/v1/roles",
        Some(&a),
        Some(json!({"name": "god", "perms": ["*"]})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn devices_get_site_tokens_with_their_own_topics() {
    let f = fixture().await;
    let (_, v) = login(&f.app, ADMIN, ADMIN_PW).await;
    let root = token(&v);
    let a = org_with_admin(&f, &root, "acme").await;
    common::register_site(&f, "acme", "plant-1").await;
    let (s, creds) = call(
        &f.app,
        "POST",
        "/v1/devices",
        Some(&a),
        Some(json!({"name": "press 1", "site": "plant-1", "publish": ["line1/press1/#"], "subscribe": ["line1/press1/cmd/+"]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{creds}");
    let (s, t) = call(
        &f.app,
        "POST",
        "/v1/auth/token",
        None,
        Some(json!({"grant_type": "client_credentials", "client_id": creds["client_id"], "client_secret": creds["client_secret"]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{t}");
    let site = Site::new("plant-1").expect("site");
    let claims = jwt::verify(
        &token(&t),
        f.state.keys.jwks(),
        &VerifyOptions::for_audience(site_audience(&site)),
    )
    .expect("valid for the site's edge");
    let p = Permissions::from_claims(&claims);
    assert!(p.can_publish(&site, &Topic::new("line1/press1/temp").expect("t")));
    assert!(!p.can_publish(&site, &Topic::new("line2/x").expect("t")));
    assert!(!p.can_publish(
        &Site::new("plant-2").expect("s"),
        &Topic::new("line1/press1/temp").expect("t")
    ));
    assert!(
        jwt::verify(
            &token(&t),
            f.state.keys.jwks(),
            &VerifyOptions::for_audience("plantd:api")
        )
        .is_err(),
        "a device token is not an API token"
    );
    let (s, _) = call(
        &f.app,
        "POST",
        "/v1/auth/token",
        None,
        Some(json!({"grant_type": "client_credentials", "client_id": creds["client_id"], "client_secret": "wrong"})),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let f = fixture().await;
    let (s, v) = call(&f.app, "GET", "/v1/users", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(v["error"], "unauthorized");
    let (s, v) = call(
        &f.app,
        "POST",
        "/v1/auth/login",
        None,
        Some(json!({"email": "a@b.c", "password": "x", "extra": 1})),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "unknown fields are refused: {v}"
    );
    let big = "x".repeat(100_000);
    let (s, _) = call(
        &f.app,
        "POST",
        "/v1/auth/login",
        None,
        Some(json!({"email": big, "password": "x"})),
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    let (_, v) = login(&f.app, ADMIN, ADMIN_PW).await;
    let root = token(&v);
    let (_, _) = call(
        &f.app,
        "POST",
        "/v1/users",
        Some(&root),
        Some(json!({"email": "viewer@plantd.example", "password": "viewer password", "roles": ["viewer"]})),
    )
    .await;
    let (_, v) = login(&f.app, "viewer@plantd.example", "viewer password").await;
    let viewer = token(&v);
    let (s, v) = call(
        &f.app,
        "POST",
        "/v1/users",
        Some(&viewer),
        Some(json!({"email": "x@plantd.example", "password": "some password"})),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "authenticated but not allowed is 403, not 401: {v}"
    );
    let forged = SigningKey::generate_ed25519("k1").expect("key");
    let claims = jwt::verify(
        &viewer,
        f.state.keys.jwks(),
        &VerifyOptions::for_audience("plantd:api"),
    )
    .expect("claims");
    let forged_token = forged.sign(&claims).expect("sign");
    assert_eq!(
        call(&f.app, "GET", "/v1/auth/whoami", Some(&forged_token), None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
}
