//! The site changing hands while the edge runs, against the real
//! `plantd-edge` binary, a real nats-server and rumqttc clients: the site
//! record in `plantd_sites` rewritten to another organisation closes the
//! old owner's live connections (v5 DISCONNECT 0x87, 3.1.1 close) and
//! refuses their new CONNECTs while the new owner's tokens are admitted;
//! the site deleted drops every token connection (the superadmin's too)
//! but not anonymous ones; with `--org`, a record naming another owner is
//! a mismatch that admits nobody until it names `--org` again. Each
//! decision is counted in `/metrics`, and `site.json` follows.

use crate::common;
use crate::edge_proc;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use edge_proc::{Edge, SITE, metric, start_edge};
use plantd_shared::claims::Claims;
use plantd_shared::jwt::SigningKey;
use plantd_shared::sites::Sites;
use plantd_shared::subject::Site;
use plantd_testkit::{Nats, eventually};
use rumqttc::v5::mqttbytes::QoS as Q5;

/// Signs tokens for this site; its JWKS is a file the edge reads.
pub struct Issuer {
    /// The signing key.
    key: SigningKey,
    /// The JWKS file.
    pub jwks: PathBuf,
}

impl Issuer {
    pub fn new(dir: &Path) -> Issuer {
        let key = SigningKey::generate_ed25519("k1").expect("key");
        let jwks = dir.join("jwks.json");
        std::fs::write(&jwks, plantd_testkit::jwks::document(&[&key])).expect("write the JWKS");
        Issuer { key, jwks }
    }

    /// A token of `sub` in `org` with `roles`, `#` grants on the site.
    pub fn token(&self, sub: &str, org: &str, roles: &[&str]) -> String {
        let claims = Claims {
            org: org.into(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            ..device_claims(sub, SITE, &["#"], &["#"])
        };
        self.key.sign(&claims).expect("sign")
    }

    pub fn jwks_arg(&self) -> &str {
        self.jwks.to_str().expect("utf-8 path")
    }
}

/// A 3.1.1 client's connection ended (not a timeout).
async fn closed4(c: &mut V4) {
    let e = loop {
        if let Err(e) = c.incoming().await {
            break e;
        }
    };
    assert!(!e.contains("timeout"), "3.1.1 connection closed: {e}");
}

/// A v5 client is still connected: a SUBSCRIBE is answered.
async fn alive(c: &mut V5, who: &str) {
    let ack = c.sub("still/here", Q5::AtMostOnce).await;
    assert_eq!(
        ack.return_codes,
        vec![m5::SubscribeReasonCode::Success(Q5::AtMostOnce)],
        "{who} is still connected"
    );
}

async fn sites(nats: &Nats) -> Sites {
    Sites::open(&nats.jetstream().await)
        .await
        .expect("plantd_sites")
}

/// Rewrites the site's record to `org`.
async fn reassign(sites: &Sites, org: &str) {
    let (mut record, revision) = sites
        .get(SITE)
        .await
        .expect("read the site")
        .expect("registered");
    record.org = org.into();
    sites.update(&record, revision).await.expect("re-register");
}

/// Waits until `/metrics` counts `n` decisions `decision`.
async fn decisions(edge: &Edge, decision: &str, n: f64) {
    let name = format!("plantd_site_owner_changes_total{{decision=\"{decision}\"}}");
    eventually(Duration::from_secs(10), &name, || async {
        (metric(edge, &name).await == Some(n)).then_some(())
    })
    .await;
}

fn cached_owner(data: &Path) -> Option<String> {
    let text = std::fs::read(data.join(plantd_edge::owner::CACHE_FILE)).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
    v["org"].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_moved_to_another_organisation_or_deleted_drops_the_connections_it_no_longer_admits()
{
    let nats = Nats::start_with_streams().await;
    let sites = sites(&nats).await;
    let site = Site::new(SITE).expect("site");
    sites.register(&site, "acme", SITE).await.expect("register");
    let dir = tempfile::tempdir().expect("temp dir");
    let issuer = Issuer::new(dir.path());
    let data = dir.path().join("edge");
    let edge = start_edge(&nats, &data, &["--jwks-file", issuer.jwks_arg()]).await;
    let b = TestBroker::external(edge.mqtt, edge.http);

    let acme = issuer.token("press-1", "acme", &["device"]);
    let root = issuer.token("root", "plantd", &["superadmin"]);
    let (mut acme5, _) = v5(&b, "acme-5", token_creds5(&acme)).await;
    let mut acme4 = v4(&b, "acme-4", token_creds4(&acme)).await;
    let (mut superadmin, _) = v5(&b, "root", token_creds5(&root)).await;
    // The binary runs with --allow-anonymous (edge_proc).
    let (mut anonymous, _) = v5(&b, "anonymous", |_| {}).await;

    reassign(&sites, "initech").await;
    let why = acme5.ended().await;
    assert!(why.contains("NotAuthorized"), "v5 DISCONNECT 0x87: {why}");
    closed4(&mut acme4).await;
    refused_by_both_versions(&b, "acme after the move", &acme).await;
    let initech = issuer.token("ivan", "initech", &["device"]);
    let (mut initech5, _) = v5(&b, "initech", token_creds5(&initech)).await;
    alive(&mut initech5, "the new owner's device").await;
    alive(&mut superadmin, "the superadmin").await;
    alive(&mut anonymous, "the anonymous client").await;
    decisions(&edge, "changed", 1.0).await;
    assert_eq!(
        metric(&edge, "plantd_site_owner_disconnects_total").await,
        Some(2.0),
        "acme's two connections"
    );
    assert_eq!(cached_owner(&data).as_deref(), Some("initech"));

    sites.delete(SITE).await.expect("delete the site");
    let why = initech5.ended().await;
    assert!(why.contains("NotAuthorized"), "v5 DISCONNECT 0x87: {why}");
    let why = superadmin.ended().await;
    assert!(
        why.contains("NotAuthorized"),
        "nobody owns the site, not even for the superadmin: {why}"
    );
    alive(&mut anonymous, "the anonymous client").await;
    refused_by_both_versions(&b, "initech after the deletion", &initech).await;
    decisions(&edge, "deleted", 1.0).await;
    assert_eq!(cached_owner(&data), None, "the cached record is removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_org_a_record_naming_another_owner_admits_nobody_until_it_is_fixed() {
    let nats = Nats::start_with_streams().await;
    let sites = sites(&nats).await;
    let site = Site::new(SITE).expect("site");
    sites.register(&site, "acme", SITE).await.expect("register");
    let dir = tempfile::tempdir().expect("temp dir");
    let issuer = Issuer::new(dir.path());
    let edge = start_edge(
        &nats,
        &dir.path().join("edge"),
        &["--jwks-file", issuer.jwks_arg(), "--org", "acme"],
    )
    .await;
    let b = TestBroker::external(edge.mqtt, edge.http);
    let acme = issuer.token("press-1", "acme", &["device"]);
    let initech = issuer.token("ivan", "initech", &["device"]);
    let (mut acme5, _) = v5(&b, "acme-5", token_creds5(&acme)).await;

    reassign(&sites, "initech").await;
    let why = acme5.ended().await;
    assert!(why.contains("NotAuthorized"), "v5 DISCONNECT 0x87: {why}");
    decisions(&edge, "mismatch", 1.0).await;
    refused_by_both_versions(&b, "acme during the mismatch", &acme).await;
    refused_by_both_versions(&b, "initech during the mismatch", &initech).await;

    reassign(&sites, "acme").await;
    decisions(&edge, "restored", 1.0).await;
    let (mut again, _) = v5(&b, "acme-again", token_creds5(&acme)).await;
    alive(&mut again, "acme once the record names --org again").await;
    refused_by_both_versions(&b, "initech after the fix", &initech).await;
}
