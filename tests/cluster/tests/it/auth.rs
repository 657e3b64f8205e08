//! No way in without TLS and a password, and the edge user cannot do what
//! only plantd's services may: a node of `cluster-node.conf` with
//! `accounts.conf`, as deployed.

use std::time::Duration;

use plantd_cluster_tests::{SuperCluster, User};
use plantd_shared::streams;

use crate::common::plantd_streams;

/// A connection attempt that must fail (within 10 s).
async fn refused(what: &str, attempt: async_nats::ConnectOptions, url: String) {
    let result = tokio::time::timeout(Duration::from_secs(10), attempt.connect(url)).await;
    assert!(!matches!(result, Ok(Ok(_))), "{what}: connected");
}

#[tokio::test]
async fn the_client_port_refuses_plaintext_anonymous_and_wrong_passwords() {
    let cluster = SuperCluster::start(&[("region-a", 3)]).await;
    let port = cluster.region("region-a").nodes[0].client;
    let ca = cluster.pki.ca.clone();
    refused(
        "plaintext",
        async_nats::ConnectOptions::new()
            .user_and_password("plantd".into(), cluster.secrets.plantd.clone()),
        format!("nats://127.0.0.1:{port}"),
    )
    .await;
    refused(
        "no user",
        async_nats::ConnectOptions::new()
            .add_root_certificates(ca.clone())
            .require_tls(true),
        format!("tls://127.0.0.1:{port}"),
    )
    .await;
    refused(
        "wrong password",
        async_nats::ConnectOptions::new()
            .add_root_certificates(ca.clone())
            .require_tls(true)
            .user_and_password("plantd".into(), "not-the-password".into()),
        format!("tls://127.0.0.1:{port}"),
    )
    .await;
    // The right one gets in.
    let client = cluster.client("region-a", User::Plantd).await;
    client.flush().await.expect("the plantd user is connected");
}

#[tokio::test]
async fn the_edge_user_cannot_delete_streams_or_forge_identity() {
    let cluster = SuperCluster::start(&[("region-a", 3)]).await;
    plantd_streams(&cluster, "region-a", 3, &[]).await;
    // Refusals show as missing answers: wait 2 s for each, not the default 5.
    let edge = async_nats::jetstream::context::ContextBuilder::new()
        .timeout(Duration::from_secs(2))
        .build(cluster.client("region-a", User::Edge).await);
    // What an edge does: publish its site's telemetry.
    edge.publish("plantd.plant-1.up.line.temp", "21.5".into())
        .await
        .expect("publish")
        .await
        .expect("the edge may publish telemetry");
    // What it must not.
    let deleted = edge.delete_stream(streams::TELEMETRY).await;
    assert!(deleted.is_err(), "the edge deleted a stream");
    let identity = edge
        .get_key_value(streams::IDENTITY_BUCKET)
        .await
        .expect("the bucket is readable");
    let forged = identity.put("user.admin", "{}".into()).await;
    assert!(forged.is_err(), "the edge wrote an identity record");
    // Nor move its site to another organisation, nor register a device
    // certificate: both decide who an edge admits.
    for bucket in [streams::SITES_BUCKET, streams::DEVICE_CERTS_BUCKET] {
        let kv = edge
            .get_key_value(bucket)
            .await
            .expect("the bucket is readable");
        let forged = kv.put("plant-1", "{}".into()).await;
        assert!(forged.is_err(), "the edge wrote to {bucket}");
    }
    // The services' user may.
    let plantd = cluster.jetstream("region-a").await;
    let stream = plantd.get_stream(streams::TELEMETRY).await.expect("stream");
    assert_eq!(stream.cached_info().state.messages, 1);
}
