//! What a persistent session was promised survives a SIGKILL of the real
//! `plantd-edge` binary while its client is *connected* (see
//! `docs/decisions/0015-edge-session-store.md`, "Connected sessions"):
//!
//! * 200 QoS 1 messages acknowledged to their publisher for a connected
//!   subscriber (64 in flight, 136 queued) all arrive after the restart,
//!   in order, the 64 that were in flight with DUP and their packet ids;
//! * a QoS 2 exchange cut by the crash at every step completes exactly
//!   once: the publisher's resent PUBLISH is recognised, its PUBREL
//!   completed; a subscriber that had sent PUBREC gets the PUBREL again
//!   (not the message), one that had not gets the PUBLISH again (DUP, same
//!   packet id);
//! * a will waiting out its Will Delay Interval fires after the restart;
//! * PUBACKs keep the order of the PUBLISHes when only some of them wait
//!   for the store.
//!
//! Real clients: rumqttc 3.1.1 and 5.0, and the crate's raw socket client
//! for the QoS 2 steps.

use crate::common;
use crate::edge_proc;

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Raw, TestBroker, m5, v4, v4_unchecked, v5};
use edge_proc::{Edge, metric, start_plain};
use plantd_edge::protocol::{QoS as Q, v4 as p4};
use rumqttc::QoS;

fn broker(edge: &Edge) -> TestBroker {
    TestBroker::external(edge.mqtt, edge.http)
}

async fn start(data: &Path) -> (Edge, TestBroker) {
    let edge = start_plain(data, &[]).await;
    let b = broker(&edge);
    (edge, b)
}

/// Polls `/metrics` until `name` has the value `want`.
async fn await_metric(edge: &Edge, name: &str, want: f64) {
    plantd_testkit::eventually(
        Duration::from_secs(10),
        &format!("{name} to reach {want}"),
        || async { (metric(edge, name).await == Some(want)).then_some(()) },
    )
    .await;
}

async fn sigkill(mut edge: Edge) {
    edge.proc.kill().await.expect("SIGKILL");
}

/// Asserts that nothing arrives on `raw` for half a second.
async fn silent(raw: &mut Raw, who: &str) {
    if let Ok(f) = tokio::time::timeout(Duration::from_millis(500), raw.recv4()).await {
        panic!("{who}: expected nothing, got {f:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_in_flight_and_queued_for_a_connected_subscriber_survive_sigkill() {
    let data = tempfile::tempdir().expect("tempdir");
    let (edge, b) = start(data.path()).await;
    let persistent = |o: &mut rumqttc::MqttOptions| {
        o.set_clean_session(false);
    };
    // Connected, subscribed, and not acknowledging: the broker's in-flight
    // window (64) fills, the rest waits in the session's queue.
    let mut sub = v4(&b, "line-7", |o| {
        persistent(o);
        o.set_manual_acks(true);
    })
    .await;
    sub.sub("load/#", QoS::AtLeastOnce).await;
    let mut producer = v4(&b, "producer", |_| {}).await;
    for i in 0..200 {
        producer
            .client
            .publish("load/x", QoS::AtLeastOnce, false, format!("{i}"))
            .await
            .expect("publish");
    }
    for _ in 0..200 {
        producer.puback().await;
    }
    // Every PUBACK came after its message was committed for the session.
    assert_eq!(
        metric(&edge, "plantd_edge_session_store_queued").await,
        Some(200.0),
        "all 200 stored before their PUBACKs"
    );
    let mut first = Vec::new();
    for i in 0..64 {
        let m = sub.publish().await;
        assert_eq!(&m.payload[..], format!("{i}").as_bytes());
        assert!(!m.dup);
        first.push(m.pkid);
    }
    // The marks saying which were sent (with their packet ids) are
    // written behind; wait for them so the DUP flags below are exact.
    await_metric(&edge, "plantd_edge_session_store_inflight", 64.0).await;
    drop(sub);
    sigkill(edge).await;

    let (edge, b) = start(data.path()).await;
    let mut sub = v4_unchecked(&b, "line-7", persistent);
    let ack = sub.connack().await.expect("reconnect");
    assert!(ack.session_present, "the session survived SIGKILL");
    for i in 0..200 {
        let m = sub.publish().await;
        assert_eq!(
            &m.payload[..],
            format!("{i}").as_bytes(),
            "message {i}: all 200, in order"
        );
        assert_eq!(
            m.dup,
            i < 64,
            "message {i}: DUP exactly for those in flight"
        );
        if let Some(pkid) = first.get(i) {
            assert_eq!(m.pkid, *pkid, "message {i}: same packet id");
        }
    }
    sub.no_publish().await;
    // Acknowledged: the store lets go of them.
    await_metric(&edge, "plantd_edge_session_store_queued", 0.0).await;
    await_metric(&edge, "plantd_edge_session_store_inflight", 0.0).await;
    drop((sub, producer));
    sigkill(edge).await;
}

fn qos2_publish(pkid: u16, dup: bool) -> p4::Packet {
    p4::Packet::Publish(p4::Publish {
        dup,
        qos: Q::ExactlyOnce,
        retain: false,
        topic: "x/1".into(),
        pkid,
        payload: Bytes::from_static(b"exactly once"),
    })
}

async fn qos2_subscriber(b: &TestBroker, id: &str) -> Raw {
    let (mut raw, ack) = Raw::connect4(b, id, false, 30).await;
    assert_eq!(ack.code, 0);
    raw.send4(p4::Packet::Subscribe(p4::Subscribe {
        pkid: 1,
        filters: vec![("x/#".into(), Q::ExactlyOnce)],
    }))
    .await;
    assert!(matches!(raw.recv4().await, Some(p4::Packet::SubAck(_))));
    raw
}

async fn received(raw: &mut Raw, who: &str) -> p4::Publish {
    match raw.recv4().await {
        Some(p4::Packet::Publish(p)) => p,
        other => panic!("{who}: expected a PUBLISH, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos2_exchange_cut_by_sigkill_completes_exactly_once() {
    let data = tempfile::tempdir().expect("tempdir");
    let (edge, b) = start(data.path()).await;
    let mut released = qos2_subscriber(&b, "sub-released").await;
    let mut unanswered = qos2_subscriber(&b, "sub-unanswered").await;
    let (mut publisher, _) = Raw::connect4(&b, "pub-2", false, 30).await;
    publisher.send4(qos2_publish(9, false)).await;
    assert!(matches!(
        publisher.recv4().await,
        Some(p4::Packet::PubRec(9))
    ));
    // One subscriber answers PUBREC and gets PUBREL (sent only once the
    // release is stored), then the crash comes before its PUBCOMP.
    let m = received(&mut released, "sub-released").await;
    assert_eq!(m.qos, Q::ExactlyOnce);
    let released_pkid = m.pkid;
    released.send4(p4::Packet::PubRec(released_pkid)).await;
    assert!(matches!(
        released.recv4().await,
        Some(p4::Packet::PubRel(id)) if id == released_pkid
    ));
    // The other never answers its PUBLISH.
    let m = received(&mut unanswered, "sub-unanswered").await;
    let unanswered_pkid = m.pkid;
    await_metric(&edge, "plantd_edge_session_store_inflight", 2.0).await;
    drop((released, unanswered, publisher));
    sigkill(edge).await;

    let (edge, b) = start(data.path()).await;
    // The publisher, unsure its PUBLISH arrived, sends it again: it is
    // recognised (PUBREC) and not routed a second time; PUBREL completes it.
    let (mut publisher, ack) = Raw::connect4(&b, "pub-2", false, 30).await;
    assert!(ack.session_present);
    publisher.send4(qos2_publish(9, true)).await;
    assert!(matches!(
        publisher.recv4().await,
        Some(p4::Packet::PubRec(9))
    ));
    publisher.send4(p4::Packet::PubRel(9)).await;
    assert!(matches!(
        publisher.recv4().await,
        Some(p4::Packet::PubComp(9))
    ));

    let (mut released, ack) = Raw::connect4(&b, "sub-released", false, 30).await;
    assert!(ack.session_present);
    assert!(
        matches!(released.recv4().await, Some(p4::Packet::PubRel(id)) if id == released_pkid),
        "the released message gets its PUBREL again, not the PUBLISH"
    );
    released.send4(p4::Packet::PubComp(released_pkid)).await;

    let (mut unanswered, ack) = Raw::connect4(&b, "sub-unanswered", false, 30).await;
    assert!(ack.session_present);
    let again = received(&mut unanswered, "sub-unanswered").await;
    assert!(again.dup, "redelivered with DUP");
    assert_eq!(again.pkid, unanswered_pkid, "same packet id");
    assert_eq!(&again.payload[..], b"exactly once");
    unanswered.send4(p4::Packet::PubRec(unanswered_pkid)).await;
    assert!(matches!(
        unanswered.recv4().await,
        Some(p4::Packet::PubRel(id)) if id == unanswered_pkid
    ));
    unanswered.send4(p4::Packet::PubComp(unanswered_pkid)).await;

    // Nothing more: the message reached each subscriber exactly once.
    silent(&mut released, "sub-released").await;
    silent(&mut unanswered, "sub-unanswered").await;
    await_metric(&edge, "plantd_edge_session_store_inflight", 0.0).await;
    await_metric(&edge, "plantd_edge_session_store_queued", 0.0).await;

    // The publisher's packet id 9 was forgotten with its PUBCOMP: a new
    // message under the same id is a new message.
    publisher.send4(qos2_publish(9, false)).await;
    assert!(matches!(
        publisher.recv4().await,
        Some(p4::Packet::PubRec(9))
    ));
    assert_eq!(
        received(&mut released, "sub-released").await.payload,
        "exactly once"
    );
    drop((publisher, released, unanswered));
    sigkill(edge).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_will_waiting_out_its_delay_fires_after_sigkill() {
    let data = tempfile::tempdir().expect("tempdir");
    let (edge, b) = start(data.path()).await;
    let console = |o: &mut rumqttc::MqttOptions| {
        o.set_clean_session(false);
    };
    let mut watcher = v4(&b, "ops-console", console).await;
    watcher.sub("status/#", QoS::AtLeastOnce).await;
    let delay = 3;
    let (device, _) = v5(&b, "dev-9", |o| {
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(600));
        o.set_last_will(m5::LastWill::new(
            "status/dev-9",
            "connection lost",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            Some(m5::LastWillProperties {
                delay_interval: Some(delay),
                payload_format_indicator: None,
                message_expiry_interval: None,
                content_type: None,
                response_topic: None,
                correlation_data: None,
                user_properties: Vec::new(),
            }),
        ));
    })
    .await;
    // The device's connection drops without DISCONNECT: its will waits.
    drop(device);
    let dropped = Instant::now();
    await_metric(&edge, "plantd_edge_session_store_wills", 1.0).await;
    drop(watcher);
    sigkill(edge).await;

    let (edge, b) = start(data.path()).await;
    let mut watcher = v4_unchecked(&b, "ops-console", console);
    assert!(watcher.connack().await.expect("reconnect").session_present);
    let m = watcher.publish().await;
    assert_eq!(&m.topic[..], "status/dev-9");
    assert_eq!(&m.payload[..], b"connection lost");
    assert!(
        dropped.elapsed() >= Duration::from_secs(u64::from(delay)),
        "fired after its delay, not at once: {:?}",
        dropped.elapsed()
    );
    await_metric(&edge, "plantd_edge_session_store_wills", 0.0).await;
    watcher.no_publish().await;
    drop(watcher);
    sigkill(edge).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubacks_keep_the_order_of_the_publishes_when_some_wait_for_the_store() {
    let data = tempfile::tempdir().expect("tempdir");
    let (edge, b) = start(data.path()).await;
    // A persistent subscriber on `kept/#` (its messages wait for a commit),
    // nobody on `free/#` (acknowledged at once unless an earlier PUBACK of
    // the same publisher is still waiting).
    let mut keeper = v4(&b, "keeper", |o| {
        o.set_clean_session(false);
    })
    .await;
    keeper.sub("kept/#", QoS::AtLeastOnce).await;
    let (mut publisher, _) = Raw::connect4(&b, "mixed", true, 30).await;
    let n = 60u16;
    for pkid in 1..=n {
        let topic = if pkid % 3 == 0 { "free/x" } else { "kept/x" };
        publisher
            .send4(p4::Packet::Publish(p4::Publish {
                dup: false,
                qos: Q::AtLeastOnce,
                retain: false,
                topic: topic.into(),
                pkid,
                payload: Bytes::from(pkid.to_string()),
            }))
            .await;
    }
    for want in 1..=n {
        match publisher.recv4().await {
            Some(p4::Packet::PubAck(got)) => assert_eq!(got, want, "PUBACKs in order"),
            other => panic!("expected PUBACK {want}, got {other:?}"),
        }
    }
    for _ in 0..(n - n / 3) {
        keeper.publish().await;
    }
    drop((keeper, publisher));
    sigkill(edge).await;
}
