//! The edge with its journal and JetStream uplink, as operators run it: the
//! real `plantd-edge` binary, a real nats-server, real MQTT clients.
//!
//! * QoS 1 messages reach JetStream with the contract's subject and headers,
//!   and `/readyz` and `/metrics` tell the truth.
//! * **Crash**: the edge is killed with SIGKILL in the middle of 100,000
//!   QoS 1 publishes and restarted; every message that got a PUBACK is in
//!   JetStream exactly once, in publish order per topic.
//! * **Outage**: nats-server is stopped while devices keep publishing and
//!   started again on the same port and store; nothing acknowledged is lost
//!   or duplicated and the backlog drains in order.
//! * **Journal identity**: a wiped data directory, an old backup restored,
//!   and an outage longer than the stream's duplicate window store every
//!   message once; a second live edge for the same site is refused.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt as _;
use plantd_shared::headers;
use plantd_shared::streams::{self, Settings};
use plantd_testkit::{Nats, eventually, http};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, Outgoing, QoS};

use crate::edge_proc;

use edge_proc::{drained, metric, start_edge};

/// Every telemetry message, grouped by publishing client, as (payload id,
/// topic) in stream order.
async fn stream_by_client(js: &jetstream::Context) -> HashMap<String, Vec<(u64, String)>> {
    let mut stream = js.get_stream(streams::TELEMETRY).await.expect("stream");
    let total = stream.info().await.expect("stream info").state.messages;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .expect("ordered consumer");
    let mut msgs = consumer.messages().await.expect("messages");
    let mut out: HashMap<String, Vec<(u64, String)>> = HashMap::new();
    for _ in 0..total {
        let m = tokio::time::timeout(Duration::from_secs(30), msgs.next())
            .await
            .expect("stream messages arrive")
            .expect("stream open")
            .expect("message");
        let h = m.headers.as_ref().expect("headers");
        let get = |k: &str| h.get(k).map(|v| v.as_str().to_owned()).unwrap_or_default();
        let id = String::from_utf8_lossy(&m.payload)
            .parse()
            .expect("payload is the id");
        out.entry(get(headers::CLIENT_ID))
            .or_default()
            .push((id, get(headers::TOPIC)));
    }
    out
}

fn of<'a>(all: &'a HashMap<String, Vec<(u64, String)>>, client: &str) -> &'a [(u64, String)] {
    all.get(client).map(Vec::as_slice).unwrap_or(&[])
}

/// Exactly once for every acknowledged id, at most once for the rest, and
/// increasing ids per topic.
fn check(contents: &[(u64, String)], acked: &HashSet<u64>) {
    let mut seen = HashSet::new();
    for (id, _) in contents {
        assert!(seen.insert(*id), "message {id} is in JetStream twice");
    }
    let missing: Vec<_> = acked
        .iter()
        .filter(|id| !seen.contains(id))
        .take(10)
        .collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?} ...");
    let mut last: HashMap<&str, u64> = HashMap::new();
    for (id, topic) in contents {
        if let Some(prev) = last.insert(topic, *id) {
            assert!(prev < *id, "topic {topic}: {id} after {prev}");
        }
    }
}

/// Publishes `ids` with QoS 1 on 4 topics, recording which got a PUBACK,
/// until done or the connection breaks; `on_acked(n)` may return true to
/// stop early (after it did something such as killing the edge).
async fn publish(
    mqtt: SocketAddr,
    client_id: &str,
    ids: std::ops::Range<u64>,
    acked: &mut HashSet<u64>,
    mut on_acked: impl FnMut(usize) -> bool,
) {
    let mut opts = MqttOptions::new(client_id, mqtt.ip().to_string(), mqtt.port());
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_inflight(100);
    let (client, mut events) = AsyncClient::new(opts, 1000);
    let total = ids.end - ids.start;
    let start = ids.start;
    let publisher = tokio::spawn(async move {
        for id in ids {
            let topic = format!("line/{}/value", id % 4);
            if client
                .publish(topic, QoS::AtLeastOnce, false, id.to_string())
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let mut next_id = start;
    let mut pkid_to_id: HashMap<u16, u64> = HashMap::new();
    loop {
        let ev = match tokio::time::timeout(Duration::from_secs(30), events.poll()).await {
            Ok(Ok(ev)) => ev,
            _ => break,
        };
        match ev {
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                pkid_to_id.insert(pkid, next_id);
                next_id += 1;
            }
            Event::Incoming(Incoming::PubAck(ack)) => {
                if let Some(id) = pkid_to_id.remove(&ack.pkid) {
                    acked.insert(id);
                }
                if on_acked(acked.len()) || acked.len() as u64 >= total {
                    break;
                }
            }
            _ => {}
        }
    }
    publisher.abort();
}

#[tokio::test]
async fn qos1_messages_reach_jetstream_with_the_contract_headers() {
    let nats = Nats::start().await;
    let js = nats.jetstream().await;
    streams::ensure(&js, &Settings::default())
        .await
        .expect("streams");
    let data = tempfile::tempdir().expect("tmp");
    let edge = start_edge(&nats, data.path(), &[]).await;
    let mut acked = HashSet::new();
    publish(edge.mqtt, "plc-1", 0..200, &mut acked, |_| false).await;
    assert_eq!(acked.len(), 200);
    drained(&edge).await;
    let all = stream_by_client(&js).await;
    check(of(&all, "plc-1"), &acked);
    assert_eq!(of(&all, "plc-1").len(), 200);

    let stream = js.get_stream(streams::TELEMETRY).await.expect("stream");
    let first = stream.get_raw_message(1).await.expect("first message");
    assert_eq!(first.subject.as_str(), "plantd.plant-1.up.line.0.value");
    let h = &first.headers;
    let id = h
        .get(headers::MSG_ID)
        .map(|v| v.as_str())
        .unwrap_or_default();
    let id = headers::MessageId::parse(id).expect("<site>:<journal id>:<seq>");
    assert_eq!((id.site, id.seq), ("plant-1", 1));
    assert_eq!(h.get(headers::QOS).map(|v| v.as_str()), Some("1"));
    assert_eq!(h.get(headers::CLIENT_ID).map(|v| v.as_str()), Some("plc-1"));
    assert_eq!(&first.payload[..], b"0", "payload byte for byte");

    let ready = http::get(edge.http.port(), "/readyz")
        .await
        .expect("readyz");
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert!(
        metric(&edge, "plantd_uplink_acked_total")
            .await
            .unwrap_or(0.0)
            >= 200.0
    );
}

#[tokio::test]
async fn sigkill_mid_stream_loses_and_duplicates_nothing_acknowledged() {
    let nats = Nats::start().await;
    let js = nats.jetstream().await;
    streams::ensure(&js, &Settings::default())
        .await
        .expect("streams");
    let data = tempfile::tempdir().expect("tmp");
    let mut edge = start_edge(&nats, data.path(), &[]).await;
    let kill_at = 10_000 + (rand::random::<u64>() % 60_000) as usize;
    let mut acked = HashSet::new();
    publish(edge.mqtt, "plc-1", 0..100_000, &mut acked, |n| n >= kill_at).await;
    edge.proc.kill().await.expect("SIGKILL the edge");
    let before_kill = acked.len();
    assert!(before_kill >= kill_at);

    // Restart on the same data directory; devices carry on.
    let edge = start_edge(&nats, data.path(), &[]).await;
    let mut more = HashSet::new();
    publish(edge.mqtt, "plc-2", 0..2_000, &mut more, |_| false).await;
    assert_eq!(more.len(), 2_000);
    drained(&edge).await;
    let all = stream_by_client(&js).await;
    check(of(&all, "plc-1"), &acked);
    check(of(&all, "plc-2"), &more);
}

#[tokio::test]
async fn an_uplink_outage_loses_and_duplicates_nothing() {
    let outage = std::env::var("PLANTD_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30u64);
    let mut nats = Nats::start().await;
    let js = nats.jetstream().await;
    streams::ensure(&js, &Settings::default())
        .await
        .expect("streams");
    let data = tempfile::tempdir().expect("tmp");
    let edge = start_edge(&nats, data.path(), &[]).await;
    let mut acked = HashSet::new();
    publish(edge.mqtt, "plc-1", 0..5_000, &mut acked, |_| false).await;
    nats.stop().await;
    // Devices keep publishing while the uplink is down: acknowledged from
    // the journal alone.
    let mut during = HashSet::new();
    let started = tokio::time::Instant::now();
    publish(edge.mqtt, "plc-2", 0..20_000, &mut during, |_| false).await;
    assert_eq!(
        during.len(),
        20_000,
        "the journal acknowledges while the uplink is down"
    );
    // Within seconds the edge stops claiming to be ready (polled: readiness
    // is only observable over HTTP).
    let why = eventually(
        Duration::from_secs(30),
        "an uplink that cannot progress to make the edge not ready",
        || async {
            let r = http::get(edge.http.port(), "/readyz")
                .await
                .expect("readyz");
            (r.status == 503).then(|| r.text())
        },
    )
    .await;
    assert!(why.contains("uplink"), "{why}");
    let rest = Duration::from_secs(outage).saturating_sub(started.elapsed());
    tokio::time::sleep(rest).await; // the outage itself, not synchronisation
    nats.start_again().await;
    let mut after = HashSet::new();
    publish(edge.mqtt, "plc-3", 0..5_000, &mut after, |_| false).await;
    drained(&edge).await;
    let all = stream_by_client(&nats.jetstream().await).await;
    check(of(&all, "plc-1"), &acked);
    check(of(&all, "plc-2"), &during);
    check(of(&all, "plc-3"), &after);
}

/// Every message of the site's uplink subjects in the stream, with its
/// message id, and a check that no message id repeats.
async fn message_ids_are_unique(js: &jetstream::Context) {
    let stream = js.get_stream(streams::TELEMETRY).await.expect("stream");
    let mut ids = HashSet::new();
    let mut seq = 1;
    while let Ok(m) = stream.get_raw_message(seq).await {
        let id = m
            .headers
            .get(headers::MSG_ID)
            .map(|v| v.as_str().to_owned())
            .expect("message id");
        assert!(
            headers::MessageId::parse(&id).is_some(),
            "message id {id:?} is <site>:<journal id>:<seq>"
        );
        assert!(ids.insert(id.clone()), "message id {id} stored twice");
        seq += 1;
    }
}

/// Copies a data directory (a backup, taken while the edge is stopped).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

async fn stop_edge(edge: &mut edge_proc::Edge) {
    edge.proc
        .terminate(Duration::from_secs(10))
        .await
        .expect("the edge stops");
}

#[tokio::test]
async fn a_wiped_data_directory_stores_every_message_of_both_runs_once() {
    let nats = Nats::start().await;
    let js = nats.jetstream().await;
    streams::ensure(&js, &Settings::default())
        .await
        .expect("streams");
    let first_disk = tempfile::tempdir().expect("tmp");
    let mut edge = start_edge(&nats, first_disk.path(), &[]).await;
    let mut first = HashSet::new();
    publish(edge.mqtt, "plc-1", 0..500, &mut first, |_| false).await;
    assert_eq!(first.len(), 500);
    drained(&edge).await;
    stop_edge(&mut edge).await;
    drop(first_disk); // the disk is replaced

    let second_disk = tempfile::tempdir().expect("tmp");
    let edge = start_edge(&nats, second_disk.path(), &[]).await;
    let mut second = HashSet::new();
    publish(edge.mqtt, "plc-2", 0..500, &mut second, |_| false).await;
    assert_eq!(second.len(), 500);
    drained(&edge).await;
    let all = stream_by_client(&js).await;
    check(of(&all, "plc-1"), &first);
    check(of(&all, "plc-2"), &second);
    assert_eq!(of(&all, "plc-1").len(), 500);
    assert_eq!(
        of(&all, "plc-2").len(),
        500,
        "the new journal's readings are stored"
    );
    message_ids_are_unique(&js).await;
}

#[tokio::test]
async fn an_old_backup_restored_loses_and_duplicates_nothing() {
    // A short duplicate window, passed before the backup comes back: the
    // stream cannot recognise a resend by its id any more.
    const WINDOW: Duration = Duration::from_secs(2);
    let mut nats = Nats::start().await;
    let js = nats.jetstream().await;
    let settings = Settings {
        duplicate_window: WINDOW,
        ..Settings::default()
    };
    streams::ensure(&js, &settings).await.expect("streams");
    let disk = tempfile::tempdir().expect("tmp");
    let backup = tempfile::tempdir().expect("tmp");
    let mut edge = start_edge(&nats, disk.path(), &[]).await;
    let mut before = HashSet::new();
    publish(edge.mqtt, "plc-1", 0..200, &mut before, |_| false).await;
    drained(&edge).await;
    // The backup holds records JetStream has not acknowledged yet.
    nats.stop().await;
    let mut unsent = HashSet::new();
    publish(edge.mqtt, "plc-1", 200..300, &mut unsent, |_| false).await;
    before.extend(unsent);
    assert_eq!(before.len(), 300);
    stop_edge(&mut edge).await;
    copy_dir(disk.path(), backup.path());

    // The original goes on: sends its backlog and newer readings.
    nats.start_again().await;
    let js = nats.jetstream().await;
    let mut edge = start_edge(&nats, disk.path(), &[]).await;
    let mut newer = HashSet::new();
    publish(edge.mqtt, "plc-2", 0..300, &mut newer, |_| false).await;
    assert_eq!(newer.len(), 300);
    drained(&edge).await;
    let stored_at = tokio::time::Instant::now();
    stop_edge(&mut edge).await;

    // Its disk dies; later the old backup is restored and carries on.
    let later = (WINDOW * 2).saturating_sub(stored_at.elapsed());
    tokio::time::sleep(later).await; // time passing, not synchronisation
    let edge = start_edge(&nats, backup.path(), &[]).await;
    let mut after = HashSet::new();
    publish(edge.mqtt, "plc-3", 0..300, &mut after, |_| false).await;
    assert_eq!(after.len(), 300);
    drained(&edge).await;
    let all = stream_by_client(&js).await;
    check(of(&all, "plc-1"), &before);
    check(of(&all, "plc-2"), &newer);
    check(of(&all, "plc-3"), &after);
    assert_eq!(of(&all, "plc-1").len(), 300);
    assert_eq!(of(&all, "plc-2").len(), 300, "newer messages are kept");
    assert_eq!(
        of(&all, "plc-3").len(),
        300,
        "the restored edge's new readings are stored"
    );
    message_ids_are_unique(&js).await;
    assert_eq!(
        metric(&edge, "plantd_uplink_already_stored_total").await,
        Some(100.0),
        "the backup's unacknowledged records were known stored, not sent again"
    );
}

#[tokio::test]
async fn an_outage_longer_than_the_duplicate_window_loses_and_duplicates_nothing() {
    const WINDOW: Duration = Duration::from_secs(2);
    let mut nats = Nats::start().await;
    let js = nats.jetstream().await;
    let settings = Settings {
        duplicate_window: WINDOW,
        ..Settings::default()
    };
    streams::ensure(&js, &settings).await.expect("streams");
    let data = tempfile::tempdir().expect("tmp");
    let mut edge = start_edge(&nats, data.path(), &[]).await;
    // Killed while the uplink is busy: JetStream holds records whose
    // acknowledgement the journal's cursor never recorded.
    let mut acked = HashSet::new();
    publish(edge.mqtt, "plc-1", 0..50_000, &mut acked, |n| n >= 20_000).await;
    edge.proc.kill().await.expect("SIGKILL the edge");
    let stored = js
        .get_stream(streams::TELEMETRY)
        .await
        .expect("stream")
        .info()
        .await
        .expect("info")
        .state
        .messages;

    // The uplink's outage: the edge comes back while nats-server is down,
    // devices keep publishing, and the outage outlasts the window.
    nats.stop().await;
    let outage = tokio::time::Instant::now();
    let edge = start_edge(&nats, data.path(), &[]).await;
    let mut during = HashSet::new();
    publish(edge.mqtt, "plc-2", 0..1_000, &mut during, |_| false).await;
    assert_eq!(during.len(), 1_000);
    let rest = (WINDOW * 2).saturating_sub(outage.elapsed());
    tokio::time::sleep(rest).await; // the outage itself, not synchronisation
    nats.start_again().await;
    let js = nats.jetstream().await;
    drained(&edge).await;

    let all = stream_by_client(&js).await;
    check(of(&all, "plc-1"), &acked);
    check(of(&all, "plc-2"), &during);
    message_ids_are_unique(&js).await;
    let skipped = metric(&edge, "plantd_uplink_already_stored_total")
        .await
        .unwrap_or(0.0);
    assert!(
        skipped > 0.0,
        "the restarted uplink must have found records JetStream already held \
         ({stored} stored at the kill)"
    );
}

#[tokio::test]
async fn a_second_live_edge_for_the_same_site_is_refused() {
    let nats = Nats::start().await;
    let js = nats.jetstream().await;
    streams::ensure(&js, &Settings::default())
        .await
        .expect("streams");
    let first_dir = tempfile::tempdir().expect("tmp");
    let first = start_edge(&nats, first_dir.path(), &[]).await;
    let mut acked = HashSet::new();
    publish(first.mqtt, "plc-1", 0..10, &mut acked, |_| false).await;
    drained(&first).await;

    // A spare configured with the same site (its own, empty data directory).
    let spare_dir = tempfile::tempdir().expect("tmp");
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_plantd-edge"))
            .args(["--site", edge_proc::SITE, "--mqtt-listen", "127.0.0.1:0"])
            .args(["--http-listen", "127.0.0.1:0", "--allow-anonymous"])
            .arg("--data-dir")
            .arg(spare_dir.path())
            .args(["--nats-url", nats.url().as_str()])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the second edge exits by itself")
    .expect("run plantd-edge");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "the second edge must not run: {text}"
    );
    assert!(
        text.contains("refusing to start")
            && text.contains("already served by another live edge")
            && text.contains(&first_dir.path().display().to_string()),
        "the refusal says why and names the holder: {text}"
    );
    // The first edge was not disturbed.
    let ready = http::get(first.http.port(), "/readyz")
        .await
        .expect("readyz");
    assert_eq!(ready.status, 200, "{}", ready.text());
}

/// Whether `edge`'s uplink reports the `refused` state.
async fn refused(edge: &edge_proc::Edge) -> bool {
    metric(edge, "plantd_uplink_state{state=\"refused\"}").await == Some(1.0)
}

#[tokio::test]
async fn an_edge_that_started_without_nats_never_publishes_beside_a_live_one() {
    let mut nats = Nats::start().await;
    let js = nats.jetstream().await;
    streams::ensure(&js, &Settings::default())
        .await
        .expect("streams");
    let first_dir = tempfile::tempdir().expect("tmp");
    let first = start_edge(&nats, first_dir.path(), &[]).await;
    let mut acked = HashSet::new();
    publish(first.mqtt, "plc-1", 0..10, &mut acked, |_| false).await;
    drained(&first).await;

    // The second edge for the site starts while NATS is out of reach: it
    // cannot be refused at start-up, so it runs and journals.
    nats.stop().await;
    let second_dir = tempfile::tempdir().expect("tmp");
    let second = start_edge(&nats, second_dir.path(), &[]).await;
    let mut journaled = HashSet::new();
    publish(second.mqtt, "plc-2", 0..10, &mut journaled, |_| false).await;
    nats.start_again().await;

    // Whichever confirms the lease first keeps it; the other one's uplink
    // is refused and says why. Never both publishing.
    let (loser, winner) = plantd_testkit::eventually(
        Duration::from_secs(60),
        "one of the two edges to be refused",
        || async {
            match (refused(&first).await, refused(&second).await) {
                (true, false) => Some((&first, &second)),
                (false, true) => Some((&second, &first)),
                (true, true) => panic!("both edges refused"),
                (false, false) => None,
            }
        },
    )
    .await;
    let why = http::get(loser.http.port(), "/readyz")
        .await
        .expect("readyz");
    assert_eq!(why.status, 503);
    assert!(
        why.text().contains("uplink refused") && why.text().contains("another live edge"),
        "{}",
        why.text()
    );
    assert!(!refused(winner).await, "the lease holder keeps publishing");
}
