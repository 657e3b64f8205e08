//! The edge's analytics follow the site's owner while the edge runs
//! (real `plantd-edge` binary, nats-server, rumqttc): a site registered
//! after the edge started gets its owner's edge rules; when the site
//! changes hands the previous owner's rules stop at once and the new
//! owner's run (windows of the old owner's readings never feed them); a
//! deleted site runs no rule. Each step is seen by a local subscriber of
//! `$plantd/agg/#` and in `<data-dir>/analytics-rules.json`.

use crate::common;
use crate::edge_analytics::{AVG, WITHIN, client, no_result, put, reading, result, runs, stored};
use crate::edge_proc;

use std::path::Path;

use common::TestBroker;
use edge_proc::{SITE, start_edge};
use plantd_analytics::Placement;
use plantd_shared::sites::Sites;
use plantd_shared::subject::Site;
use plantd_testkit::{Nats, eventually};
use rumqttc::v5::mqttbytes::QoS;

/// The maximum of each `line1/<machine>/temp` per second.
const MAX: &str = r#"SELECT max(value) FROM "line1/+/temp" GROUP BY topic, TUMBLE(1s)"#;

/// The organisation the cached rules were chosen for.
fn cached_org(data: &Path) -> Option<String> {
    let text = std::fs::read(data.join(plantd_edge::analytics::RULES_FILE)).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
    v["org"].as_str().map(str::to_owned)
}

/// The rule names of the results until both `want` are seen.
async fn results_of(hmi: &mut common::V5, want: &[&str]) {
    let mut seen: Vec<String> = Vec::new();
    while !want.iter().all(|w| seen.iter().any(|s| s == w)) {
        let (topic, _) = result(hmi).await;
        let rule = topic
            .strip_prefix("$plantd/agg/")
            .and_then(|t| t.split('/').next())
            .unwrap_or_default()
            .to_owned();
        assert!(
            want.contains(&rule.as_str()),
            "a result of {rule} ({topic})"
        );
        seen.push(rule);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_runs_the_rules_of_whoever_owns_the_site_now() {
    let nats = Nats::start_with_streams().await;
    let js = nats.jetstream().await;
    let sites = Sites::open(&js).await.expect("plantd_sites");
    put(
        &js,
        &stored("acme", "avg_temp", Placement::Edge, &[SITE], AVG),
    )
    .await;
    put(
        &js,
        &stored("acme", "max_temp", Placement::Edge, &[SITE], MAX),
    )
    .await;
    put(
        &js,
        &stored("initech", "avg_temp", Placement::Edge, &[SITE], AVG),
    )
    .await;

    // Not registered yet: nobody's rules.
    let data = tempfile::tempdir().expect("tmp");
    let edge = start_edge(&nats, data.path(), &[]).await;
    let b = TestBroker::external(edge.mqtt, edge.http);
    runs(&edge, 0).await;
    let mut hmi = client(&b, "hmi").await;
    hmi.sub("$plantd/agg/#", QoS::AtLeastOnce).await;
    let mut plc = client(&b, "plc-1").await;

    // Registered to acme while running: acme's two rules.
    let site = Site::new(SITE).expect("site");
    sites.register(&site, "acme", SITE).await.expect("register");
    runs(&edge, 2).await;
    reading(&mut plc, "line1/m1/temp", "20").await;
    results_of(&mut hmi, &["avg_temp", "max_temp"]).await;

    // Moved to initech: its one rule, acme's stop.
    let (mut record, revision) = sites.get(SITE).await.expect("read").expect("registered");
    record.org = "initech".into();
    sites.update(&record, revision).await.expect("re-register");
    runs(&edge, 1).await;
    eventually(WITHIN, "the rules cached for initech", || async {
        (cached_org(data.path()).as_deref() == Some("initech")).then_some(())
    })
    .await;
    reading(&mut plc, "line1/m1/temp", "30").await;
    let (topic, out) = result(&mut hmi).await;
    assert!(topic.starts_with("$plantd/agg/avg_temp/"), "{topic}");
    assert_eq!(out.values["avg_value"], 30.0, "{out:?}");
    assert_eq!(out.values["count_value"], 1.0, "initech's window: {out:?}");
    no_result(&mut hmi).await;

    // Deleted: no rule runs.
    sites.delete(SITE).await.expect("delete the site");
    runs(&edge, 0).await;
    reading(&mut plc, "line1/m1/temp", "40").await;
    no_result(&mut hmi).await;
}
