//! The uplink against a real nats-server: every journaled message reaches
//! JetStream exactly once, in order, with its headers — through an outage
//! and through a resend after a restart.

use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use plantd_bridge::{
    Uplink, UplinkConfig, UplinkConnector, UplinkMessage, UplinkState, UplinkStatus,
};
use plantd_journal::{Journal, Options};
use plantd_shared::headers;
use plantd_shared::streams::{self, Settings};
use plantd_shared::subject::Site;
use plantd_testkit::Nats;
use tokio::sync::{oneshot, watch};

fn site() -> Site {
    Site::new("plant-1").expect("site")
}

fn msg(i: u64) -> UplinkMessage {
    UplinkMessage {
        topic: format!("line{}/temp", i % 3),
        payload: Bytes::from(format!("{i}")),
        qos: 1,
        retain: false,
        received_ms: 1_795_404_726_000 + i,
        client_id: "plc-1".into(),
        payload_format: None,
        message_expiry: None,
        content_type: Some("text/plain".into()),
        response_topic: None,
        correlation_data: None,
        user_properties: vec![("unit".into(), "C".into())],
    }
}

async fn journal_n(j: &Journal, from: u64, n: u64) {
    for i in from..from + n {
        j.append(msg(i).encode().expect("encode"))
            .await
            .expect("append");
    }
}

struct Running {
    status: watch::Receiver<UplinkStatus>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(j: &Journal, nats: &Nats, cfg: UplinkConfig) -> Running {
    let connector = UplinkConnector::new(&nats.url(), async_nats::ConnectOptions::new());
    let uplink = Uplink::new(j.clone(), connector, cfg);
    let status = uplink.status();
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(uplink.run(async move {
        let _ = rx.await;
    }));
    Running { status, stop, task }
}

impl Running {
    async fn wait_acked(&mut self, seq: u64) -> UplinkStatus {
        let mut rx = self.status.clone();
        match tokio::time::timeout(Duration::from_secs(60), rx.wait_for(|s| s.acked_seq >= seq))
            .await
        {
            Ok(s) => s.expect("status").clone(),
            Err(_) => panic!("uplink did not reach {seq}: {:?}", *self.status.borrow()),
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("uplink task");
    }
}

/// Every message in the telemetry stream, in stream order, as
/// (journal sequence from the message id, payload).
async fn stream_contents(js: &jetstream::Context) -> Vec<(u64, String)> {
    let stream = js.get_stream(streams::TELEMETRY).await.expect("stream");
    let mut out = Vec::new();
    let mut seq = 1;
    while let Ok(m) = stream.get_raw_message(seq).await {
        let id = m
            .headers
            .get(headers::MSG_ID)
            .map(|v| v.as_str().to_owned())
            .expect("message id");
        let parsed = headers::MessageId::parse(&id).expect("id is site:journal:seq");
        assert_eq!(parsed.site, "plant-1");
        let journal_seq = parsed.seq;
        out.push((
            journal_seq,
            String::from_utf8_lossy(&m.payload).into_owned(),
        ));
        seq += 1;
    }
    out
}

/// Exactly once (every journal sequence 1..=n once), payloads intact, and
/// in journal order per topic (the guarantee: topics are `line<i % 3>`).
fn assert_exactly_once_in_order(contents: &[(u64, String)], n: u64) {
    let mut seen: Vec<u64> = contents.iter().map(|(seq, _)| *seq).collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        (1..=n).collect::<Vec<_>>(),
        "every message exactly once"
    );
    for (seq, payload) in contents {
        assert_eq!(payload, &(seq - 1).to_string(), "payload byte for byte");
    }
    for topic in 0..3 {
        let order: Vec<u64> = contents
            .iter()
            .map(|(seq, _)| *seq)
            .filter(|seq| (seq - 1) % 3 == topic)
            .collect();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "topic line{topic} out of order: {order:?}"
        );
    }
}

#[tokio::test]
async fn journaled_messages_reach_jetstream_once_in_order_with_headers() {
    let nats = Nats::start().await;
    let js = nats.jetstream().await;
    streams::ensure(&js, &Settings::default())
        .await
        .expect("streams");
    let dir = tempfile::tempdir().expect("tmp");
    let (j, _) = Journal::open(dir.path(), Options::default()).expect("journal");
    journal_n(&j, 0, 500).await;

    let mut up = start(&j, &nats, UplinkConfig::new(site())).await;
    let s = up.wait_acked(500).await;
    assert_eq!(s.state, UplinkState::Up);
    assert_eq!(
        j.acked(),
        500,
        "the journal cursor follows JetStream's acks"
    );
    assert_exactly_once_in_order(&stream_contents(&js).await, 500);

    let stream = js.get_stream(streams::TELEMETRY).await.expect("stream");
    let first = stream.get_raw_message(1).await.expect("first");
    assert_eq!(first.subject.as_str(), "plantd.plant-1.up.line0.temp");
    let h = &first.headers;
    assert_eq!(
        h.get(headers::TOPIC).map(|v| v.as_str()),
        Some("line0/temp")
    );
    assert_eq!(h.get(headers::QOS).map(|v| v.as_str()), Some("1"));
    assert_eq!(h.get(headers::RETAIN).map(|v| v.as_str()), Some("false"));
    assert_eq!(
        h.get(headers::CONTENT_TYPE).map(|v| v.as_str()),
        Some("text/plain")
    );
    assert_eq!(h.get("Plantd-User-unit").map(|v| v.as_str()), Some("C"));
    assert!(h.get(headers::RECEIVED).is_some());
    up.stop().await;
    j.close().await.expect("close");
}

#[tokio::test]
async fn an_outage_loses_and_duplicates_nothing() {
    let mut nats = Nats::start().await;
    let js = nats.jetstream().await;
    streams::ensure(&js, &Settings::default())
        .await
        .expect("streams");
    let dir = tempfile::tempdir().expect("tmp");
    let (j, _) = Journal::open(dir.path(), Options::default()).expect("journal");
    let mut cfg = UplinkConfig::new(site());
    cfg.ack_timeout = Duration::from_secs(1);
    cfg.backoff_max = Duration::from_millis(500);
    let mut up = start(&j, &nats, cfg).await;

    journal_n(&j, 0, 1000).await;
    up.wait_acked(300).await;
    nats.stop().await;
    // Devices keep publishing while the uplink is down.
    journal_n(&j, 1000, 1000).await;
    tokio::time::timeout(
        Duration::from_secs(30),
        up.status
            .wait_for(|s| matches!(s.state, UplinkState::Down | UplinkState::Stalled)),
    )
    .await
    .expect("the uplink must notice the outage")
    .expect("status");
    assert!(j.acked() < 2000, "nothing can be acknowledged while down");

    nats.start_again().await;
    journal_n(&j, 2000, 500).await;
    let s = up.wait_acked(2500).await;
    assert!(s.failures >= 1, "{s:?}");

    let js = nats.jetstream().await;
    assert_exactly_once_in_order(&stream_contents(&js).await, 2500);
    up.stop().await;
    j.close().await.expect("close");
}

#[tokio::test]
async fn a_resend_after_restart_is_deduplicated_by_jetstream() {
    let nats = Nats::start().await;
    let js = nats.jetstream().await;
    streams::ensure(&js, &Settings::default())
        .await
        .expect("streams");
    let dir = tempfile::tempdir().expect("tmp");
    let (j, _) = Journal::open(dir.path(), Options::default()).expect("journal");
    journal_n(&j, 0, 300).await;
    let mut up = start(&j, &nats, UplinkConfig::new(site())).await;
    up.wait_acked(300).await;
    up.stop().await;

    // As after a crash whose cursor lagged: everything is sent again (with
    // the resume off, the duplicate window alone catches it).
    let mut cfg = UplinkConfig::new(site());
    cfg.start = Some(1);
    cfg.resume = false;
    journal_n(&j, 300, 10).await;
    let mut again = start(&j, &nats, cfg).await;
    let s = again.wait_acked(310).await;
    assert_eq!(s.duplicates, 300, "JetStream recognised every resend");
    assert_exactly_once_in_order(&stream_contents(&js).await, 310);
    again.stop().await;
    j.close().await.expect("close");
}

#[tokio::test]
async fn a_missing_stream_is_reported_not_hidden() {
    let nats = Nats::start().await;
    let dir = tempfile::tempdir().expect("tmp");
    let (j, _) = Journal::open(dir.path(), Options::default()).expect("journal");
    journal_n(&j, 0, 5).await;
    let mut cfg = UplinkConfig::new(site());
    cfg.ack_timeout = Duration::from_secs(1);
    let mut up = start(&j, &nats, cfg).await;
    let s = tokio::time::timeout(
        Duration::from_secs(30),
        up.status.wait_for(|s| s.state == UplinkState::Down),
    )
    .await
    .expect("down")
    .expect("status")
    .clone();
    assert!(!s.is_healthy());
    assert!(
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("stream")),
        "{s:?}"
    );
    assert_eq!(j.acked(), 0, "nothing acknowledged without a stream");
    // Creating the stream lets the backlog drain.
    streams::ensure(&nats.jetstream().await, &Settings::default())
        .await
        .expect("streams");
    up.wait_acked(5).await;
    up.stop().await;
    j.close().await.expect("close");
}

/// The uplink's connection must never reconnect by itself: a reconnecting
/// client flushes what it queued while disconnected behind publishes lost
/// with the old connection, which would reorder a topic.
#[tokio::test]
async fn the_uplink_connection_closes_instead_of_reconnecting() {
    let mut nats = Nats::start().await;
    let connector = UplinkConnector::new(&nats.url(), async_nats::ConnectOptions::new());
    let conn = connector.connect().await.expect("connect");
    conn.client.flush().await.expect("flush while connected");
    let mut lost = conn.lost.clone();
    nats.restart().await;
    tokio::time::timeout(Duration::from_secs(30), lost.wait_for(|l| *l))
        .await
        .expect("the loss is reported")
        .expect("lost flag");
    // The server is back on the same port; a reconnecting client would
    // flush; this one has closed for good.
    let _ = nats.client().await;
    let flushed = tokio::time::timeout(Duration::from_secs(10), conn.client.flush()).await;
    assert!(
        !matches!(flushed, Ok(Ok(()))),
        "the uplink's client reconnected after losing its connection"
    );
}

#[tokio::test]
async fn a_new_connection_skips_what_jetstream_already_holds() {
    let nats = Nats::start().await;
    let js = nats.jetstream().await;
    streams::ensure(&js, &Settings::default())
        .await
        .expect("streams");
    let dir = tempfile::tempdir().expect("tmp");
    let (j, _) = Journal::open(dir.path(), Options::default()).expect("journal");
    journal_n(&j, 0, 300).await;
    let mut up = start(&j, &nats, UplinkConfig::new(site())).await;
    up.wait_acked(300).await;
    up.stop().await;

    // As after a crash whose cursor lagged far behind: told to start at 1,
    // the uplink learns that JetStream holds 1..=300 and sends none again.
    let mut cfg = UplinkConfig::new(site());
    cfg.start = Some(1);
    journal_n(&j, 300, 10).await;
    let mut again = start(&j, &nats, cfg).await;
    let s = again.wait_acked(310).await;
    assert_eq!(s.already_stored, 300, "{s:?}");
    assert_eq!(s.duplicates, 0, "nothing was sent twice: {s:?}");
    assert_eq!(s.published, 10, "{s:?}");
    assert_exactly_once_in_order(&stream_contents(&js).await, 310);
    again.stop().await;
    j.close().await.expect("close");
}

#[tokio::test]
async fn a_wiped_journal_never_collides_with_its_predecessor() {
    let nats = Nats::start().await;
    let js = nats.jetstream().await;
    streams::ensure(&js, &Settings::default())
        .await
        .expect("streams");
    for run in 0..2u64 {
        // A new directory each time: the journal starts again at 1.
        let dir = tempfile::tempdir().expect("tmp");
        let (j, _) = Journal::open(dir.path(), Options::default()).expect("journal");
        journal_n(&j, 0, 200).await;
        let mut up = start(&j, &nats, UplinkConfig::new(site())).await;
        let s = up.wait_acked(200).await;
        assert_eq!(s.duplicates, 0, "run {run}: {s:?}");
        up.stop().await;
        j.close().await.expect("close");
    }
    let stream = js.get_stream(streams::TELEMETRY).await.expect("stream");
    let mut ids = std::collections::HashSet::new();
    for seq in 1..=400 {
        let m = stream.get_raw_message(seq).await.expect("stored");
        let id = m
            .headers
            .get(headers::MSG_ID)
            .expect("id")
            .as_str()
            .to_owned();
        assert!(ids.insert(id), "message id repeated");
    }
    assert!(stream.get_raw_message(401).await.is_err(), "400 stored");
}

/// Record `i` of a journal interleaving log lines and telemetry: every
/// third is a log line on `$plantd/log/pump<i % 2>`.
fn mixed(i: u64) -> UplinkMessage {
    if i % 3 == 2 {
        UplinkMessage {
            topic: format!("$plantd/log/pump{}", i % 2),
            payload: Bytes::from(format!("{i}")),
            user_properties: vec![("level".into(), "warn".into())],
            ..msg(i)
        }
    } else {
        msg(i)
    }
}

/// Every message of `stream`, in stream order, as (journal sequence,
/// subject, payload).
async fn contents_of(js: &jetstream::Context, name: &str) -> Vec<(u64, String, String)> {
    let stream = js.get_stream(name).await.expect("stream");
    let last = stream.get_info().await.expect("info").state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let Ok(m) = stream.get_raw_message(seq).await else {
            continue; // deleted
        };
        let id = m.headers.get(headers::MSG_ID).expect("message id").as_str();
        let parsed = headers::MessageId::parse(id).expect("id is site:journal:seq");
        out.push((
            parsed.seq,
            m.subject.to_string(),
            String::from_utf8_lossy(&m.payload).into_owned(),
        ));
    }
    out
}

/// Each journal record `1..=n` in its own stream exactly once, log lines in
/// `PLANTD_LOGS` on `plantd.plant-1.log.pump<k>`, the rest in
/// `PLANTD_TELEMETRY`, in journal order per subject.
async fn assert_mixed_exactly_once(js: &jetstream::Context, n: u64) {
    let logs = contents_of(js, streams::LOGS).await;
    let telemetry = contents_of(js, streams::TELEMETRY).await;
    for (name, contents, is_log) in [("logs", &logs, true), ("telemetry", &telemetry, false)] {
        let mut seen: Vec<u64> = contents.iter().map(|(seq, _, _)| *seq).collect();
        seen.sort_unstable();
        let expected: Vec<u64> = (1..=n).filter(|s| ((s - 1) % 3 == 2) == is_log).collect();
        assert_eq!(seen, expected, "{name}: every record exactly once");
        let mut last: std::collections::HashMap<&str, u64> = Default::default();
        for (seq, subject, payload) in contents {
            assert_eq!(payload, &(seq - 1).to_string());
            if is_log {
                assert_eq!(
                    subject,
                    &format!("plantd.plant-1.log.pump{}", (seq - 1) % 2)
                );
            }
            if let Some(prev) = last.insert(subject, *seq) {
                assert!(prev < *seq, "{subject}: {seq} after {prev}");
            }
        }
    }
}

#[tokio::test]
async fn interleaved_log_lines_and_telemetry_survive_an_outage_once_each() {
    let mut nats = Nats::start().await;
    let js = nats.jetstream().await;
    streams::ensure(&js, &Settings::default())
        .await
        .expect("streams");
    let dir = tempfile::tempdir().expect("tmp");
    let (j, _) = Journal::open(dir.path(), Options::default()).expect("journal");
    let append = |from: u64, n: u64| {
        let j = j.clone();
        async move {
            for i in from..from + n {
                j.append(mixed(i).encode().expect("encode"))
                    .await
                    .expect("append");
            }
        }
    };
    let mut cfg = UplinkConfig::new(site());
    cfg.ack_timeout = Duration::from_secs(1);
    cfg.backoff_max = Duration::from_millis(500);
    let mut up = start(&j, &nats, cfg).await;
    append(0, 600).await;
    up.wait_acked(200).await;
    nats.stop().await;
    append(600, 600).await;
    tokio::time::timeout(
        Duration::from_secs(30),
        up.status
            .wait_for(|s| matches!(s.state, UplinkState::Down | UplinkState::Stalled)),
    )
    .await
    .expect("the uplink must notice the outage")
    .expect("status");
    nats.start_again().await;
    append(1200, 300).await;
    up.wait_acked(1500).await;
    assert_mixed_exactly_once(&nats.jetstream().await, 1500).await;
    up.stop().await;
    j.close().await.expect("close");
}

/// The two streams store independently: after a reconnection with a
/// lagging cursor (a crash: here the journal's copy taken before its
/// records went up) and past the duplicate window (no help from message
/// ids), the log lines one stream lacks are sent again, and the telemetry
/// it holds is not — and the other way round.
#[tokio::test]
async fn a_resume_skips_each_record_only_when_its_own_stream_holds_it() {
    const WINDOW: Duration = Duration::from_secs(1);
    let nats = Nats::start().await;
    let js = nats.jetstream().await;
    let settings = Settings {
        duplicate_window: WINDOW,
        ..Settings::default()
    };
    streams::ensure(&js, &settings).await.expect("streams");
    let dir = tempfile::tempdir().expect("tmp");
    let crashed = tempfile::tempdir().expect("tmp");
    let (j, _) = Journal::open(dir.path(), Options::default()).expect("journal");
    for i in 0..300 {
        j.append(mixed(i).encode().expect("encode"))
            .await
            .expect("append");
    }
    j.close().await.expect("close");
    // The journal as a crash leaves it: every record, cursor at 0.
    copy_dir(dir.path(), crashed.path());
    let (j, _) = Journal::open(dir.path(), Options::default()).expect("journal");
    let mut up = start(&j, &nats, UplinkConfig::new(site())).await;
    up.wait_acked(300).await;
    up.stop().await;
    j.close().await.expect("close");
    // As if the last 5 log lines and the last 4 readings never reached
    // their streams while later records of the other stream did.
    for (name, n) in [(streams::LOGS, 5), (streams::TELEMETRY, 4)] {
        let stream = js.get_stream(name).await.expect("stream");
        let last = stream.get_info().await.expect("info").state.last_sequence;
        for seq in last + 1 - n..=last {
            stream.delete_message(seq).await.expect("delete");
        }
    }
    tokio::time::sleep(WINDOW * 2).await; // time passing, not synchronisation

    let (j, _) = Journal::open(crashed.path(), Options::default()).expect("journal");
    assert_eq!(j.acked(), 0);
    for i in 300..303 {
        j.append(mixed(i).encode().expect("encode"))
            .await
            .expect("append");
    }
    let mut again = start(&j, &nats, UplinkConfig::new(site())).await;
    let s = again.wait_acked(303).await;
    assert_eq!(
        s.published,
        9 + 3,
        "exactly the missing records and the new ones are sent: {s:?}"
    );
    assert_eq!(s.already_stored, 291, "{s:?}");
    assert_eq!(s.duplicates, 0, "{s:?}");
    assert_mixed_exactly_once(&js, 303).await;
    again.stop().await;
    j.close().await.expect("close");
}

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

/// Record `i` of a journal interleaving telemetry, log lines and an edge's
/// analytics results: `i % 4 == 2` a log line, `i % 4 == 3` a result on
/// `$plantd/agg/avg_temp/line<i % 2>`.
fn three_streams(i: u64) -> UplinkMessage {
    match i % 4 {
        2 => UplinkMessage {
            topic: format!("$plantd/log/pump{}", i % 2),
            ..msg(i)
        },
        3 => UplinkMessage {
            topic: format!("$plantd/agg/avg_temp/line{}", i % 2),
            ..msg(i)
        },
        _ => msg(i),
    }
}

/// Analytics results resume like the other streams: after a reconnection
/// with a lagging cursor and past the duplicate window, exactly the results
/// `PLANTD_AGGREGATES` lacks are sent again (on
/// `plantd.<site>.agg.<rule>.<key>`), and nothing another stream holds.
#[tokio::test]
async fn a_resume_knows_what_the_aggregates_stream_holds() {
    const WINDOW: Duration = Duration::from_secs(1);
    let nats = Nats::start().await;
    let js = nats.jetstream().await;
    let settings = Settings {
        duplicate_window: WINDOW,
        ..Settings::default()
    };
    streams::ensure(&js, &settings).await.expect("streams");
    let dir = tempfile::tempdir().expect("tmp");
    let crashed = tempfile::tempdir().expect("tmp");
    let (j, _) = Journal::open(dir.path(), Options::default()).expect("journal");
    for i in 0..400 {
        j.append(three_streams(i).encode().expect("encode"))
            .await
            .expect("append");
    }
    j.close().await.expect("close");
    copy_dir(dir.path(), crashed.path());
    let (j, _) = Journal::open(dir.path(), Options::default()).expect("journal");
    let mut up = start(&j, &nats, UplinkConfig::new(site())).await;
    up.wait_acked(400).await;
    up.stop().await;
    j.close().await.expect("close");
    // The last 6 results never reached PLANTD_AGGREGATES, while later
    // telemetry and log lines reached theirs.
    let aggregates = js.get_stream(streams::AGGREGATES).await.expect("stream");
    let last = aggregates
        .get_info()
        .await
        .expect("info")
        .state
        .last_sequence;
    assert_eq!(last, 100, "every fourth record is a result");
    for seq in last - 5..=last {
        aggregates.delete_message(seq).await.expect("delete");
    }
    tokio::time::sleep(WINDOW * 2).await; // time passing, not synchronisation

    let (j, _) = Journal::open(crashed.path(), Options::default()).expect("journal");
    let mut again = start(&j, &nats, UplinkConfig::new(site())).await;
    let s = again.wait_acked(400).await;
    assert_eq!(s.published, 6, "exactly the missing results: {s:?}");
    assert_eq!(s.already_stored, 394, "{s:?}");
    again.stop().await;
    j.close().await.expect("close");
    let results = contents_of(&js, streams::AGGREGATES).await;
    let mut seen: Vec<u64> = results.iter().map(|(seq, _, _)| *seq).collect();
    seen.sort_unstable();
    let expected: Vec<u64> = (1..=400).filter(|s| (s - 1) % 4 == 3).collect();
    assert_eq!(seen, expected, "every result exactly once");
    for (seq, subject, _) in &results {
        assert_eq!(
            subject,
            &format!("plantd.plant-1.agg.avg_temp.line{}", (seq - 1) % 2)
        );
    }
    for (name, expected) in [(streams::TELEMETRY, 200), (streams::LOGS, 100)] {
        let n = plantd_testkit::stream_messages(&js, name).await;
        assert_eq!(n, expected, "{name}: nothing sent twice");
    }
}
