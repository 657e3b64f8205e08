//! A site's leaf node (`leaf-site.conf`) connected to the region over TLS
//! as the leaf user: a client on the site publishes through it into the
//! cloud's `PLANTD_TELEMETRY` (acknowledged end to end), and the leaf's own
//! client port refuses a wrong password.

use std::time::Duration;

use plantd_cluster_tests::{Leaf, SuperCluster};
use plantd_shared::streams;

use crate::common::{consume, plantd_streams};

#[tokio::test(flavor = "multi_thread")]
async fn a_site_publishes_through_its_leaf_into_the_region_streams() {
    let cluster = SuperCluster::start(&[("region-a", 3)]).await;
    plantd_streams(&cluster, "region-a", 3, &[]).await;
    let leaf = Leaf::start(&cluster, "plant-1", "region-a").await;
    let site = async_nats::jetstream::new(leaf.client(&cluster).await);
    // The stream's interest reaches the leaf moments after it connected.
    plantd_testkit::eventually(
        Duration::from_secs(30),
        "the region's stream acknowledging through the leaf",
        || {
            let site = site.clone();
            async move {
                site.publish("plantd.plant-1.up.press.bar", "4.2".into())
                    .await
                    .ok()?
                    .await
                    .ok()
            }
        },
    )
    .await;
    let js = cluster.jetstream("region-a").await;
    assert_eq!(consume(&js, streams::TELEMETRY, 1).await, ["4.2"]);

    let wrong = tokio::time::timeout(
        Duration::from_secs(5),
        async_nats::ConnectOptions::new()
            .add_root_certificates(cluster.pki.ca.clone())
            .require_tls(true)
            .user_and_password("edge".into(), "wrong".into())
            .connect(format!("tls://127.0.0.1:{}", leaf.port)),
    )
    .await;
    assert!(
        !matches!(wrong, Ok(Ok(_))),
        "the leaf accepted a wrong password"
    );
}
