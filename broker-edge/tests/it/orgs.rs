//! The edge knows which organisation owns its site and refuses a CONNECT
//! whose token belongs to another one — v5 CONNACK 0x87, 3.1.1 return
//! code 5 — whatever its audience and grants say: a second organisation's
//! admin, service-account and device tokens, all issued for this site with
//! `#` grants, against the real `plantd-edge` binary. The owner comes from
//! `--org`, or from the site record in `plantd_sites` (cached for offline
//! restarts); without it, an edge that verifies tokens does not start.

use crate::common;
use crate::edge_proc;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;
use edge_proc::{SITE, start_edge, start_plain};
use plantd_shared::claims::{Audience, Claims, MqttGrant, PrincipalKind, site_audience};
use plantd_shared::jwt::{SigningKey, jwks_of, now_secs};
use plantd_shared::sites::Sites;
use plantd_shared::subject::Site;
use plantd_testkit::Nats;
use rumqttc::v5::mqttbytes::QoS as Q5;

/// A token for this site's edge: `org`, `kind`, `roles`, MQTT `#` on
/// every site (what identity's admin role grants) and on the site itself.
fn token(key: &SigningKey, sub: &str, org: &str, kind: PrincipalKind, roles: &[&str]) -> String {
    let all = MqttGrant {
        publish: vec!["#".into()],
        subscribe: vec!["#".into()],
    };
    let mqtt: BTreeMap<String, MqttGrant> = [("*".to_owned(), all.clone()), (SITE.to_owned(), all)]
        .into_iter()
        .collect();
    let now = now_secs();
    let claims = Claims {
        iss: "plantd-identity".into(),
        sub: sub.into(),
        aud: Audience::One(site_audience(&Site::new(SITE).expect("site"))),
        exp: now + 600,
        iat: now.saturating_sub(60),
        nbf: None,
        jti: format!("jti-{sub}"),
        org: org.into(),
        kind,
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        perms: vec!["*".into()],
        mqtt,
    };
    key.sign(&claims).expect("sign")
}

/// A signing key and its JWKS file in `dir`.
fn issuer(dir: &Path) -> (SigningKey, PathBuf) {
    let key = SigningKey::generate_ed25519("k1").expect("key");
    let file = dir.join("jwks.json");
    std::fs::write(
        &file,
        serde_json::to_vec(&jwks_of([&key]).expect("jwks")).expect("JSON"),
    )
    .expect("write the JWKS");
    (key, file)
}

/// Asserts that `token` connects (v5) and may subscribe to `#`.
async fn admitted(b: &TestBroker, who: &str, token: &str) {
    let (mut c, _) = v5(b, who, token_creds5(token)).await;
    c.client
        .subscribe("#", Q5::AtMostOnce)
        .await
        .expect("subscribe");
    let ack = c.suback().await;
    assert_eq!(
        ack.return_codes,
        vec![m5::SubscribeReasonCode::Success(Q5::AtMostOnce)],
        "{who}"
    );
    c.disconnect().await;
}

/// Another organisation's tokens, each for this site with `#` grants.
fn intruders(key: &SigningKey) -> Vec<(&'static str, String)> {
    vec![
        (
            "initech admin",
            token(key, "ivan", "initech", PrincipalKind::User, &["admin"]),
        ),
        (
            "initech service account",
            token(
                key,
                "sa-historian",
                "initech",
                PrincipalKind::Service,
                &["admin"],
            ),
        ),
        (
            "initech device",
            token(
                key,
                "dev-spy",
                "initech",
                PrincipalKind::Device,
                &["device"],
            ),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_organisations_tokens_are_refused_at_connect() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (key, jwks) = issuer(dir.path());
    let edge = start_plain(
        &dir.path().join("edge"),
        &[
            "--jwks-file",
            jwks.to_str().expect("utf-8 path"),
            "--org",
            "acme",
        ],
    )
    .await;
    let b = TestBroker::external(edge.mqtt, edge.http);
    for (who, t) in intruders(&key) {
        refused_by_both_versions(&b, who, &t).await;
    }
    // mosquitto's client hears "not authorised" too.
    let (_, spy) = &intruders(&key)[0];
    let out = tokio::process::Command::new(mosquitto("mosquitto_sub"))
        .args(["-h", "127.0.0.1", "-p", &edge.mqtt.port().to_string()])
        .args([
            "-V", "mqttv311", "-u", "ivan", "-P", spy, "-t", "#", "-C", "1",
        ])
        .output()
        .await
        .expect("run mosquitto_sub");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(err.contains("not authori"), "{err}");

    // The owner's device, and the bootstrap superadmin, get in.
    admitted(
        &b,
        "acme-device",
        &token(&key, "press-1", "acme", PrincipalKind::Device, &["device"]),
    )
    .await;
    admitted(
        &b,
        "root",
        &token(&key, "root", "plantd", PrincipalKind::User, &["superadmin"]),
    )
    .await;
    // An admin of the bootstrap organisation is no superadmin.
    refused_by_both_versions(
        &b,
        "plantd admin",
        &token(&key, "ops", "plantd", PrincipalKind::User, &["admin"]),
    )
    .await;
}

async fn register(nats: &Nats, site: &str, org: &str) {
    Sites::open(&nats.jetstream().await)
        .await
        .expect("plantd_sites")
        .register(&Site::new(site).expect("site"), org, site)
        .await
        .expect("register");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_comes_from_the_site_registry_and_survives_an_offline_restart() {
    let nats = Nats::start_with_streams().await;
    register(&nats, SITE, "acme").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (key, jwks) = issuer(dir.path());
    let data = dir.path().join("edge");
    let flags = ["--jwks-file", jwks.to_str().expect("utf-8 path")];

    let edge = start_edge(&nats, &data, &flags).await;
    let b = TestBroker::external(edge.mqtt, edge.http);
    for (who, t) in intruders(&key) {
        refused_by_both_versions(&b, who, &t).await;
    }
    let acme = token(&key, "press-1", "acme", PrincipalKind::Device, &["device"]);
    admitted(&b, "acme", &acme).await;
    // Wait for the exit: the next edge opens the same data directory (its
    // file locks are released only when this process has gone).
    let mut edge = edge;
    edge.proc
        .terminate(std::time::Duration::from_secs(30))
        .await
        .expect("the edge stops");
    assert!(
        data.join(plantd_edge::owner::CACHE_FILE).exists(),
        "the record is cached"
    );

    // No uplink now: the cached record still says who owns the site.
    let edge = start_plain(&data, &flags).await;
    let b = TestBroker::external(edge.mqtt, edge.http);
    refused_by_both_versions(&b, "initech offline", &intruders(&key)[0].1).await;
    admitted(&b, "acme offline", &acme).await;
}

/// Runs the binary until it exits: its status and its output.
async fn run_to_exit(args: &[&str]) -> (bool, String) {
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_plantd-edge"))
            .args([
                "--site",
                SITE,
                "--mqtt-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .args(args)
            .env("RUST_LOG", "info")
            .output(),
    )
    .await
    .expect("the edge exits in time")
    .expect("run plantd-edge");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_that_cannot_tell_its_owner_does_not_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_key, jwks) = issuer(dir.path());
    let jwks = jwks.to_str().expect("utf-8 path").to_owned();
    let data = dir.path().join("edge");
    let data = data.to_str().expect("utf-8 path");

    // Tokens verified, no --org, no registry, no cached record.
    let (ok, out) = run_to_exit(&["--jwks-file", &jwks, "--data-dir", data]).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("organisation that owns site plant-1 is unknown") && out.contains("--org"),
        "{out}"
    );

    // --org contradicting the registry.
    let nats = Nats::start_with_streams().await;
    register(&nats, SITE, "acme").await;
    let url = nats.url();
    let (ok, out) = run_to_exit(&[
        "--jwks-file",
        &jwks,
        "--data-dir",
        data,
        "--nats-url",
        &url,
        "--org",
        "initech",
    ])
    .await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("belongs to organisation acme") && out.contains("--org initech"),
        "{out}"
    );
}
