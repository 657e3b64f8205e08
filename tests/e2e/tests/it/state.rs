//! Scoped state through the local server with tokens the identity service
//! issues for real roles and organisations (the proxy's own tests mint
//! tokens with a test key; this proves the roles → permissions contract
//! between the two functions over HTTP): concurrent writers with `If-Match`
//! — exactly one wins, the other gets 409; a `viewer` reads but cannot
//! write (403); another organisation cannot read (404: its namespace has no
//! such scope).

use plantd_e2e::{Options, Stack};
use reqwest::Method;
use serde_json::json;

const PASSWORD: &str = "a long enough password for the e2e tests";

/// Creates organisation `id` with its first administrator; their email.
async fn org(stack: &Stack, root: &str, id: &str) -> String {
    let email = format!("admin@{id}.test");
    let (status, v) = stack
        .call(
            Method::POST,
            "/v1/orgs",
            Some(root),
            Some(&json!({"id": id, "name": id, "admin_email": email, "admin_password": PASSWORD})),
        )
        .await
        .expect("create org");
    assert_eq!(status, 201, "{v}");
    email
}

/// Creates a user with `roles` in the caller's organisation and logs in.
async fn user(stack: &Stack, admin: &str, email: &str, roles: &[&str]) -> String {
    let (status, v) = stack
        .call(
            Method::POST,
            "/v1/users",
            Some(admin),
            Some(&json!({"email": email, "password": PASSWORD, "roles": roles})),
        )
        .await
        .expect("create user");
    assert_eq!(status, 201, "{v}");
    stack.login_as(email, PASSWORD, &[]).await.expect("login")
}

async fn put(stack: &Stack, token: &str, value: &str, if_match: Option<&str>) -> (u16, String) {
    let mut req = stack
        .client
        .put(format!("{}/v1/state/line1/speed", stack.url()))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(value.to_owned());
    if let Some(tag) = if_match {
        req = req.header("if-match", tag);
    }
    let resp = req.send().await.expect("put");
    let etag = resp
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (resp.status().as_u16(), etag)
}

async fn get(stack: &Stack, token: &str) -> (u16, String) {
    let resp = stack
        .client
        .get(format!("{}/v1/state/line1/speed", stack.url()))
        .bearer_auth(token)
        .send()
        .await
        .expect("get");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

#[tokio::test]
async fn roles_and_organisations_from_identity_decide_what_state_allows() {
    let stack = Stack::start(Options::default()).await.expect("stack");
    let root = stack.login(&[]).await.expect("root login");
    let acme = org(&stack, &root, "acme").await;
    let globex = org(&stack, &root, "globex").await;
    let acme_admin = stack.login_as(&acme, PASSWORD, &[]).await.expect("login");
    let globex_admin = stack.login_as(&globex, PASSWORD, &[]).await.expect("login");

    let (status, v) = stack
        .call(
            Method::POST,
            "/v1/state/scopes",
            Some(&acme_admin),
            Some(&json!({"scope": "line1"})),
        )
        .await
        .expect("create scope");
    assert_eq!(status, 201, "{v}");
    let (status, etag) = put(&stack, &acme_admin, "1", None).await;
    assert_eq!(status, 200);
    assert!(!etag.is_empty());

    // Two writers holding the same revision: exactly one wins.
    let operator = user(&stack, &acme_admin, "operator@acme.test", &["operator"]).await;
    let (a, b) = tokio::join!(
        put(&stack, &operator, "2", Some(&etag)),
        put(&stack, &acme_admin, "3", Some(&etag)),
    );
    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409], "exactly one 2xx, the other 409");
    let (_, now) = get(&stack, &operator).await;
    assert!(now == "2" || now == "3", "{now}");

    // A viewer reads but cannot write.
    let viewer = user(&stack, &acme_admin, "viewer@acme.test", &["viewer"]).await;
    assert_eq!(get(&stack, &viewer).await, (200, now.clone()));
    let (status, _) = put(&stack, &viewer, "4", None).await;
    assert_eq!(status, 403);

    // Another organisation's administrator cannot read it (nor overwrite).
    assert_eq!(get(&stack, &globex_admin).await.0, 404);
    assert_eq!(put(&stack, &globex_admin, "5", None).await.0, 404);
    assert_eq!(get(&stack, &viewer).await, (200, now));
    stack.stop().await;
}
