//! `plantd streams --replicas 3` on a three-node region: every stream and
//! bucket exists with three replicas on three different nodes of the
//! region, a second run changes nothing it should not, and asking for more
//! replicas than the region has nodes fails naming the stream.

use std::time::Duration;

use plantd_cluster_tests::SuperCluster;
use plantd_shared::streams;

use crate::common::plantd_streams;

#[tokio::test(flavor = "multi_thread")]
async fn plantd_streams_replicas_3_sets_up_every_stream_and_bucket_on_three_nodes() {
    let cluster = SuperCluster::start(&[("region-a", 3)]).await;
    let first = plantd_streams(&cluster, "region-a", 3, &[]).await;
    assert_eq!(
        first.created.len(),
        streams::STREAMS.len() + streams::BUCKETS.len(),
        "{first:?}"
    );
    let js = cluster.jetstream("region-a").await;
    let names = streams::STREAMS
        .iter()
        .map(|s| (*s).to_owned())
        .chain(streams::BUCKETS.iter().map(|b| format!("KV_{b}")));
    for name in names {
        let mut s = js.get_stream(&name).await.expect("stream");
        let info = s.info().await.expect("info");
        assert_eq!(info.config.num_replicas, 3, "{name}");
        let c = info.cluster.as_ref().expect("clustered");
        assert_eq!(c.name.as_deref(), Some("region-a"), "{name}");
        let mut peers: Vec<&str> = c.replicas.iter().map(|r| r.name.as_str()).collect();
        peers.extend(c.leader.as_deref());
        peers.sort_unstable();
        peers.dedup();
        assert_eq!(peers.len(), 3, "{name} on three nodes: {peers:?}");
    }
    // Idempotent: the second run updates, creates nothing.
    let second = plantd_streams(&cluster, "region-a", 3, &[]).await;
    assert!(second.created.is_empty(), "{second:?}");

    // Sizing flags (docs/deploy.md): seven days of telemetry, a 20-minute
    // de-duplication window, applied to the existing streams.
    let sized = plantd_cli::streams::Options {
        url: cluster.urls("region-a", plantd_cluster_tests::User::Plantd),
        ca: Some(cluster.pki.ca.clone()),
        replicas: 3,
        retention: Some(Duration::from_secs(7 * 86_400)),
        duplicate_window: Some(Duration::from_secs(20 * 60)),
        ..plantd_cli::streams::Options::new("")
    };
    plantd_cli::streams::ensure(&sized)
        .await
        .expect("sized run");
    let mut t = js.get_stream(streams::TELEMETRY).await.expect("stream");
    let config = &t.info().await.expect("info").config;
    assert_eq!(config.max_age, Duration::from_secs(7 * 86_400));
    assert_eq!(config.duplicate_window, Duration::from_secs(20 * 60));
    assert_eq!(config.num_replicas, 3);

    // Five replicas on three nodes: refused, naming the stream.
    let options = plantd_cli::streams::Options {
        url: cluster.urls("region-a", plantd_cluster_tests::User::Plantd),
        ca: Some(cluster.pki.ca.clone()),
        replicas: 5,
        ..plantd_cli::streams::Options::new("")
    };
    let err = plantd_cli::streams::ensure(&options)
        .await
        .expect_err("more replicas than nodes");
    assert!(format!("{err:#}").contains(streams::TELEMETRY), "{err:#}");
}
