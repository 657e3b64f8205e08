//! Two regions of `cluster-node.conf` joined by gateways (a super-cluster):
//! plantd's streams at R3 in region A, mirrored into region B by `plantd
//! streams --mirror-into region-b`. With every node of region A stopped,
//! region B holds every message JetStream acknowledged in region A — and
//! every KV record — once the mirrors had caught up (their lag is the
//! recovery point, watched by an alarm: docs/deploy.md).

use async_nats::jetstream;
use plantd_cli::streams::mirror_name;
use plantd_cluster_tests::SuperCluster;
use plantd_shared::streams;
use plantd_testkit::eventually;

use crate::common::{SETTLE, payloads, plantd_streams, same_once};

/// Waits until the mirror of `origin` in region B has copied `count`
/// messages and reports no lag.
async fn caught_up(js: &jetstream::Context, origin: &str, count: u64) {
    let name = mirror_name(origin, "region-b");
    eventually(SETTLE, &format!("{name} caught up"), || {
        let js = js.clone();
        let name = name.clone();
        async move {
            let mut s = js.get_stream(&name).await.ok()?;
            let info = s.info().await.ok()?;
            let lag = info.mirror.as_ref()?.lag;
            (info.state.messages >= count && lag == 0).then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn region_b_holds_every_acknowledged_message_with_region_a_stopped() {
    let mut cluster = SuperCluster::start(&[("region-a", 3), ("region-b", 3)]).await;
    let report = plantd_streams(&cluster, "region-a", 3, &["region-b"]).await;
    assert!(
        report
            .created
            .contains(&mirror_name(streams::TELEMETRY, "region-b")),
        "{report:?}"
    );
    let a = cluster.jetstream("region-a").await;
    // The streams are in region A, their mirrors in region B.
    for (stream, region) in [
        (streams::TELEMETRY.to_owned(), "region-a"),
        (mirror_name(streams::TELEMETRY, "region-b"), "region-b"),
        (
            mirror_name(&format!("KV_{}", streams::IDENTITY_BUCKET), "region-b"),
            "region-b",
        ),
    ] {
        let mut s = a.get_stream(&stream).await.expect("stream");
        let info = s.info().await.expect("info");
        let c = info.cluster.as_ref().expect("clustered");
        assert_eq!(c.name.as_deref(), Some(region), "{stream}");
        assert_eq!(info.config.num_replicas, 3, "{stream}");
    }

    // Telemetry and an identity record, each acknowledged by region A.
    const COUNT: usize = 200;
    let mut acked = Vec::with_capacity(COUNT);
    for i in 0..COUNT {
        let payload = format!("reading-{i}");
        a.publish(
            format!("plantd.plant-{}.up.line.temp", i % 4),
            payload.clone().into(),
        )
        .await
        .expect("publish")
        .await
        .expect("region A acknowledges");
        acked.push(payload);
    }
    let identity = a
        .get_key_value(streams::IDENTITY_BUCKET)
        .await
        .expect("identity bucket");
    identity
        .put("user.ada", r#"{"name":"ada"}"#.into())
        .await
        .expect("region A acknowledges the record");
    caught_up(&a, streams::TELEMETRY, COUNT as u64).await;
    caught_up(&a, &format!("KV_{}", streams::IDENTITY_BUCKET), 1).await;

    // Region A goes away, every node at once.
    for node in &mut cluster.region_mut("region-a").nodes {
        node.kill().await;
    }
    drop(a);

    // Region B serves what it holds by itself (direct gets are answered by
    // the mirror's own replicas, in region B).
    let b = cluster.jetstream("region-b").await;
    let got = payloads(
        &b,
        &mirror_name(streams::TELEMETRY, "region-b"),
        COUNT as u64,
    )
    .await;
    same_once(&acked, &got);
    let records = payloads(
        &b,
        &mirror_name(&format!("KV_{}", streams::IDENTITY_BUCKET), "region-b"),
        1,
    )
    .await;
    assert_eq!(records, [r#"{"name":"ada"}"#]);
}
