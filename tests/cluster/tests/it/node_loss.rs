//! A three-node region of `cluster-node.conf` with plantd's streams at R3
//! (`plantd streams --replicas 3`), and the real edge binary uplinking a
//! device's QoS 1 messages to it over TLS with the edge user:
//!
//! * the node leading `PLANTD_TELEMETRY` — also the first URL the edge's
//!   uplink uses — is SIGKILLed mid-run: the edge moves to the other URLs,
//!   and every message the device had acknowledged is in the stream once;
//!   the killed node, started again, catches up;
//! * an edge whose first URL is a dead node connects through the others.

use std::time::Duration;

use plantd_cluster_tests::edge;
use plantd_cluster_tests::{SuperCluster, User};
use plantd_shared::streams;
use plantd_testkit::eventually;

use crate::common::{SETTLE, consume, plantd_streams, publish_acked, same_once};

const REGION: &str = "region-a";

/// The edge user's URLs of `region`'s nodes, node `first` first.
fn urls_from(cluster: &SuperCluster, first: usize) -> String {
    let all: Vec<String> = cluster
        .urls(REGION, User::Edge)
        .split(',')
        .map(str::to_owned)
        .collect();
    let mut ordered = vec![all[first].clone()];
    ordered.extend(
        all.iter()
            .enumerate()
            .filter(|(i, _)| *i != first)
            .map(|(_, u)| u.clone()),
    );
    ordered.join(",")
}

/// Index of the node leading `stream`.
async fn leader_of(cluster: &SuperCluster, stream: &str) -> usize {
    let js = cluster.jetstream(REGION).await;
    let leader = eventually(SETTLE, "a stream leader", || {
        let js = js.clone();
        async move {
            let mut s = js.get_stream(stream).await.ok()?;
            let info = s.info().await.ok()?;
            info.cluster.as_ref()?.leader.clone()
        }
    })
    .await;
    cluster
        .region(REGION)
        .nodes
        .iter()
        .position(|n| n.name == leader)
        .unwrap_or_else(|| panic!("leader {leader} is no node"))
}

#[tokio::test(flavor = "multi_thread")]
async fn r3_streams_lose_nothing_when_the_leader_node_is_killed_during_an_uplink_run() {
    let mut cluster = SuperCluster::start(&[(REGION, 3)]).await;
    plantd_streams(&cluster, REGION, 3, &[]).await;
    let leader = leader_of(&cluster, streams::TELEMETRY).await;
    let data = tempfile::tempdir().expect("tempdir");
    let edge = edge::start(
        &urls_from(&cluster, leader),
        &cluster.pki.ca,
        data.path(),
        &[],
    )
    .await;

    const COUNT: usize = 300;
    let edge_ref = &edge;
    let cluster_ref = &mut cluster;
    let acked = publish_acked(edge.mqtt, "line/1/temp", "r3", COUNT, async |i| {
        if i == 100 {
            // JetStream has acknowledged some to the edge: kill the leader
            // they went to while the device keeps publishing.
            eventually(SETTLE, "the uplink's first acknowledgements", || async {
                edge_ref
                    .metric("plantd_uplink_acked_total")
                    .await
                    .filter(|n| *n >= 50.0)
            })
            .await;
            cluster_ref.region_mut(REGION).nodes[leader].kill().await;
        }
    })
    .await;

    eventually(
        SETTLE,
        "the edge's journal drained to the two nodes left",
        || async {
            (edge.metric("plantd_journal_records_unacked").await == Some(0.0)).then_some(())
        },
    )
    .await;
    let js = cluster.jetstream(REGION).await;
    let got = consume(&js, streams::TELEMETRY, COUNT).await;
    same_once(&acked, &got);
    let info = js
        .get_stream(streams::TELEMETRY)
        .await
        .expect("stream")
        .info()
        .await
        .expect("info")
        .clone();
    assert_eq!(
        info.state.messages, COUNT as u64,
        "nothing twice, nothing lost"
    );
    assert!(
        edge.metric("plantd_uplink_state{state=\"up\"}").await == Some(1.0),
        "the uplink is up on the other nodes"
    );

    // The killed node comes back on its store and catches up.
    cluster.region_mut(REGION).nodes[leader].start().await;
    let name = cluster.region(REGION).nodes[leader].name.clone();
    eventually(SETTLE, "the restarted node current again", || {
        let js = js.clone();
        let name = name.clone();
        async move {
            let mut s = js.get_stream(streams::TELEMETRY).await.ok()?;
            let info = s.info().await.ok()?;
            let c = info.cluster.as_ref()?;
            // Three peers again, every follower current, the restarted
            // node among them.
            let back = c.leader.as_deref() == Some(name.as_str())
                || c.replicas.iter().any(|r| r.name == name);
            let current = c.replicas.len() == 2 && c.replicas.iter().all(|r| r.current);
            (back && current).then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edge_whose_first_url_is_a_dead_node_uplinks_through_the_others() {
    let mut cluster = SuperCluster::start(&[(REGION, 3)]).await;
    plantd_streams(&cluster, REGION, 3, &[]).await;
    cluster.region_mut(REGION).nodes[0].kill().await;
    let data = tempfile::tempdir().expect("tempdir");
    // Every node in the list, the dead one first.
    let edge = edge::start(&urls_from(&cluster, 0), &cluster.pki.ca, data.path(), &[]).await;
    let acked = publish_acked(edge.mqtt, "line/2/temp", "failover", 20, async |_| {}).await;
    let js = cluster.jetstream(REGION).await;
    let got = consume(&js, streams::TELEMETRY, acked.len()).await;
    same_once(&acked, &got);
    eventually(Duration::from_secs(10), "the uplink up", || async {
        (edge.metric("plantd_uplink_state{state=\"up\"}").await == Some(1.0)).then_some(())
    })
    .await;
}
