//! `plantd sites` against `plantd up`: the local site is registered to the
//! bootstrap organisation at start; sites are listed, created (a taken id
//! exits 6), shown (unknown exits 5, malformed 2, another organisation's 4)
//! and deleted.

use crate::common;

use common::{login, plantd, run, stderr, stdout, up_logged_in};

#[tokio::test]
async fn sites_are_listed_created_shown_and_deleted() {
    let data = tempfile::tempdir().expect("tmp");
    let (up, root) = up_logged_in(data.path(), &[]).await;
    let url = up.functions_url();

    // plantd up registered its edge's site to the bootstrap organisation.
    let out = run(plantd(root.path()).args(["sites", "list", "--json"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let list: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    let local = list
        .as_array()
        .expect("a list")
        .iter()
        .find(|s| s["id"] == "local")
        .expect("local is registered");
    assert_eq!(local["org"], "plantd");

    let out = run(plantd(root.path()).args([
        "sites",
        "create",
        "plant-9",
        "--name",
        "Plant 9",
        "--label",
        "line=north",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("plant-9 registered to organisation plantd"));
    let out = run(plantd(root.path()).args(["sites", "create", "plant-9"]));
    assert_eq!(out.status.code(), Some(6), "taken: {}", stderr(&out));
    let out = run(plantd(root.path()).args(["sites", "create", "x", "--label", "nolabel"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    let out = run(plantd(root.path()).args(["sites", "get", "plant-9"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let line = stdout(&out);
    assert!(
        line.contains("plant-9") && line.contains("Plant 9") && line.contains("line=north"),
        "{line}"
    );
    let out = run(plantd(root.path()).args(["sites", "get", "nowhere"]));
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let out = run(plantd(root.path()).args(["sites", "get", "a.b"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // Another organisation's administrator cannot see or delete them.
    let pw = data.path().join("initech-password");
    std::fs::write(&pw, "initech admin password").expect("write");
    let root_token = stdout(&run(plantd(root.path()).arg("token")));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let created = reqwest::Client::new()
        .post(format!("{url}/v1/orgs"))
        .bearer_auth(root_token.trim())
        .json(&serde_json::json!({"id": "initech", "name": "Initech",
            "admin_email": "admin@initech.example", "admin_password": "initech admin password"}))
        .send()
        .await
        .expect("create org");
    assert_eq!(created.status(), 201);
    let other = tempfile::tempdir().expect("config dir");
    login(other.path(), &url, "admin@initech.example", &pw);
    let out = run(plantd(other.path()).args(["sites", "get", "local"]));
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("another organisation"),
        "{}",
        stderr(&out)
    );
    let out = run(plantd(other.path()).args(["sites", "delete", "plant-9"]));
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let out = run(plantd(other.path()).args(["sites", "list"]));
    assert!(out.status.success());
    assert_eq!(stdout(&out), "", "initech has no sites");

    let out = run(plantd(root.path()).args(["sites", "delete", "plant-9"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(plantd(root.path()).args(["sites", "get", "plant-9"]));
    assert_eq!(out.status.code(), Some(5));
}
