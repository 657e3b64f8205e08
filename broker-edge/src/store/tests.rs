use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;

use super::codec::{Mark, SessionState};
use super::*;
use crate::clock::{Clock, Now};
use crate::mailbox::PushOutcome;
use crate::message::MessageProperties;
use crate::protocol::QoS;
use crate::session::OutFlight;

fn publication(topic: &str, payload: &'static [u8]) -> Arc<Publication> {
    Arc::new(Publication {
        topic: Arc::from(topic),
        payload: Bytes::from_static(payload),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: MessageProperties::default(),
        origin: None,
        received: None,
    })
}

fn delivery(payload: &'static [u8]) -> Delivery {
    Delivery {
        publication: publication("q", payload),
        qos: QoS::AtLeastOnce,
        retain: false,
        subscription_ids: vec![],
        stored: None,
    }
}

fn live_state() -> Box<SessionState> {
    Box::new(SessionState {
        expiry: u32::MAX,
        disconnected_at_ms: Some(Now::system().unix_ms),
        ..SessionState::default()
    })
}

/// A route batch storing `payloads` for `id` from sequence `first`, with
/// their mailbox slots reserved.
fn stored(id: &str, mailbox: &Arc<Mailbox>, first: u64, payloads: &[&'static [u8]]) -> RouteBatch {
    let mut b = RouteBatch::default();
    for (seq, p) in (first..).zip(payloads) {
        assert_eq!(mailbox.reserve(), PushOutcome::Queued);
        let mut d = delivery(p);
        d.stored = Some(seq);
        b.deliveries.push(StoredDelivery {
            client_id: Arc::from(id),
            mailbox: mailbox.clone(),
            delivery: d,
        });
    }
    b
}

fn progress(id: &str, mailbox: &Arc<Mailbox>) -> Box<Progress> {
    Box::new(Progress {
        client_id: Arc::from(id),
        mailbox: mailbox.clone(),
        conn_id: 1,
        sent: vec![],
        released: vec![],
        done: vec![],
        incoming_done: vec![],
        replies: vec![],
    })
}

fn start(dir: &Path, metrics: &Arc<Metrics>) -> StoreHandle {
    OpenedStore::open(dir, Clock::system())
        .expect("open")
        .start(metrics.clone(), SyncPolicy::EveryCommit)
        .expect("start")
}

#[tokio::test]
async fn queued_and_in_flight_messages_survive_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics = Arc::new(Metrics::default());
    let mailbox = Arc::new(Mailbox::new(100, metrics.clone()));
    let h = start(dir.path(), &metrics);
    h.send(Op::RetainedPut(publication("a", b"1")));
    h.send(Op::RetainedPut(publication("b", b"2")));
    h.send(Op::RetainedDelete(Arc::from("a")));
    h.send(Op::SessionPut {
        client_id: Arc::from("live"),
        state: live_state(),
    });
    h.send(Op::SessionPut {
        client_id: Arc::from("gone"),
        state: Box::new(SessionState {
            expiry: 1,
            disconnected_at_ms: Some(1_000),
            ..SessionState::default()
        }),
    });
    let mut b = stored("live", &mailbox, 0, &[b"w", b"x", b"y", b"z"]);
    b.incoming.push((Arc::from("live"), 9));
    b.incoming.push((Arc::from("live"), 10));
    h.route(b);
    h.route(stored("gone", &mailbox, 0, &[b"lost"]));
    // Sent 0 and 1 and 2; 0 acknowledged, 1 released (QoS 2), PUBREL 10 in.
    let mut p = progress("live", &mailbox);
    p.sent = vec![(0, 5), (1, 6), (2, 7)];
    p.done = vec![0];
    p.released = vec![(1, 6)];
    p.incoming_done = vec![10];
    h.send(Op::Progress(p));
    let will = Will {
        topic: Arc::from("status/live"),
        payload: Bytes::from_static(b"offline"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: MessageProperties::default(),
        delay_secs: 30,
    };
    h.send(Op::WillPut {
        client_id: Arc::from("live"),
        will: Box::new(will),
        fire_at_ms: 42,
    });
    h.flush().await;
    assert_eq!(
        mailbox.len(),
        5,
        "every stored delivery reached the mailbox"
    );
    assert_eq!(metrics.store_sessions.load(Relaxed), 2);
    assert_eq!(metrics.store_retained.load(Relaxed), 1);
    assert_eq!(
        metrics.store_queued.load(Relaxed),
        3,
        "y, z, lost (x released)"
    );
    assert_eq!(metrics.store_inflight.load(Relaxed), 2);
    assert_eq!(metrics.store_wills.load(Relaxed), 1);
    h.close().await;

    let mut store = OpenedStore::open(dir.path(), Clock::system()).expect("reopen");
    let loaded = store.take_loaded();
    let topics: Vec<_> = loaded.retained.iter().map(|p| &*p.topic).collect();
    assert_eq!(topics, ["b"]);
    assert_eq!(loaded.sessions.len(), 1, "the expired session is dropped");
    let s = &loaded.sessions[0];
    assert_eq!(&*s.client_id, "live");
    assert_eq!(s.next_seq, 4);
    assert_eq!(s.state.incoming_qos2, vec![9]);
    let out: Vec<_> = s
        .state
        .outgoing
        .iter()
        .map(|(pkid, f)| match f {
            OutFlight::Publish(d) => (*pkid, Some(d.publication.payload.clone()), d.stored),
            OutFlight::Released(stored) => (*pkid, None, *stored),
        })
        .collect();
    assert_eq!(
        out,
        [
            (6, None, Some(1)),
            (7, Some(Bytes::from_static(b"y")), Some(2))
        ],
        "in flight in send order: the release of x, then y"
    );
    let queued: Vec<_> = s
        .queue
        .iter()
        .map(|d| (&d.publication.payload[..], d.stored))
        .collect();
    assert_eq!(queued, [(&b"z"[..], Some(3))]);
    let (will, fire_at) = s.will.as_ref().expect("the waiting will");
    assert_eq!(
        (&*will.topic, will.delay_secs, *fire_at),
        ("status/live", 30, 42)
    );

    // Deleting the session deletes everything stored for it.
    let h = store
        .start(metrics.clone(), SyncPolicy::EveryCommit)
        .expect("start");
    h.send(Op::SessionDelete(Arc::from("live")));
    h.flush().await;
    for (gauge, name) in [
        (&metrics.store_sessions, "sessions"),
        (&metrics.store_queued, "queued"),
        (&metrics.store_inflight, "inflight"),
        (&metrics.store_wills, "wills"),
    ] {
        assert_eq!(gauge.load(Relaxed), 0, "{name}");
    }
    h.close().await;
}

#[tokio::test]
async fn answers_wait_for_the_commit_and_keep_their_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics = Arc::new(Metrics::default());
    let publisher = Arc::new(Mailbox::new(100, metrics.clone()));
    let subscriber = Arc::new(Mailbox::new(100, metrics.clone()));
    let h = start(dir.path(), &metrics);
    // What the router does for an answer it holds.
    let ack = |pkid| {
        publisher.hold_ack();
        Release::Ack {
            ack: AckTo {
                mailbox: publisher.clone(),
                conn_id: 3,
                pkid,
                qos: QoS::AtLeastOnce,
            },
            reason: 0,
            held: true,
        }
    };
    let mut b = stored("s", &subscriber, 0, &[b"m"]);
    b.releases.push(ack(1));
    h.route(b);
    // Nothing to store, but held behind the first: it goes through the
    // pipeline too.
    h.route(RouteBatch {
        releases: vec![ack(2)],
        ..RouteBatch::default()
    });
    let mut p = progress("s", &subscriber);
    p.replies.push(LinkCtl::PubComp { pkid: 4 });
    p.incoming_done.push(4);
    h.send(Op::Progress(p));
    h.flush().await;
    assert!(!publisher.holds_acks(), "every held answer released");
    let mut ctl = Vec::new();
    publisher.pop_ctl(3, &mut ctl);
    let pkids: Vec<_> = ctl
        .iter()
        .map(|c| match c {
            LinkCtl::PubAck { pkid, .. } => *pkid,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(pkids, [1, 2], "in order");
    assert_eq!(subscriber.len(), 1, "the delivery filled its reserved slot");
    let mut ctl = Vec::new();
    subscriber.pop_ctl(1, &mut ctl);
    assert!(matches!(ctl[..], [LinkCtl::PubComp { pkid: 4 }]));
    h.close().await;
}

#[tokio::test]
async fn a_format_1_file_is_migrated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(FILE_NAME);
    {
        let db = Database::create(&path).expect("create");
        let txn = db.begin_write().expect("txn");
        {
            let mut meta = txn.open_table(META).expect("meta");
            meta.insert("format", 1u64).expect("format");
            let mut sessions = txn.open_table(SESSIONS).expect("sessions");
            let state = SessionState {
                expiry: u32::MAX,
                disconnected_at_ms: Some(Now::system().unix_ms),
                next_pkid: 9,
                incoming_qos2: vec![3],
                outgoing: vec![
                    (7, OutFlight::Publish(delivery(b"in flight"))),
                    (8, OutFlight::Released(None)),
                ],
                subs: vec![],
            };
            let v = codec::encode_session(&state, Now::system());
            sessions.insert("old", v.as_slice()).expect("session");
            let mut queue = txn.open_table(QUEUE).expect("queue");
            let v = codec::encode_queued(&delivery(b"queued"), Now::system());
            queue.insert(("old", 0u64), v.as_slice()).expect("queued");
        }
        txn.commit().expect("commit");
    }
    for round in 0..2 {
        let mut store = OpenedStore::open(dir.path(), Clock::system()).expect("open");
        let loaded = store.take_loaded();
        let s = &loaded.sessions[0];
        assert_eq!(s.state.incoming_qos2, vec![3], "round {round}");
        assert!(matches!(
            &s.state.outgoing[..],
            [(7, OutFlight::Publish(d)), (8, OutFlight::Released(Some(2)))]
                if d.stored == Some(1) && &d.publication.payload[..] == b"in flight"
        ));
        assert_eq!(s.queue.len(), 1);
        assert_eq!(s.next_seq, 3);
        let txn = store.db.begin_read().expect("read");
        let meta = txn.open_table(META).expect("meta");
        let format = meta.get("format").expect("get").map(|v| v.value());
        assert_eq!(format, Some(STORE_FORMAT));
        let inflight = txn.open_table(INFLIGHT).expect("inflight");
        let mark = inflight
            .get(("old", 2u64))
            .expect("get")
            .map(|v| codec::decode_mark(v.value()));
        assert_eq!(mark, Some(Ok(Mark::Released(8))));
    }
}

#[tokio::test]
async fn the_last_write_of_a_session_wins_within_and_across_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics = Arc::new(Metrics::default());
    let h = start(dir.path(), &metrics);
    let put = |expiry| Op::SessionPut {
        client_id: Arc::from("s"),
        state: Box::new(SessionState {
            expiry,
            disconnected_at_ms: Some(Now::system().unix_ms),
            ..SessionState::default()
        }),
    };
    for expiry in 1..=50 {
        h.send(put(expiry * 100));
    }
    h.send(Op::SessionDelete(Arc::from("s")));
    h.send(put(7777));
    h.close().await;
    let mut store = OpenedStore::open(dir.path(), Clock::system()).expect("reopen");
    let loaded = store.take_loaded();
    assert_eq!(loaded.sessions.len(), 1);
    assert_eq!(loaded.sessions[0].state.expiry, 7777);
}

#[tokio::test]
async fn without_fsync_commits_are_kept_and_synced_at_close() {
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics = Arc::new(Metrics::default());
    let h = OpenedStore::open(dir.path(), Clock::system())
        .expect("open")
        .start(metrics.clone(), SyncPolicy::for_fsync("never"))
        .expect("start");
    h.send(Op::SessionPut {
        client_id: Arc::from("n"),
        state: live_state(),
    });
    h.flush().await;
    h.close().await;
    let mut store = OpenedStore::open(dir.path(), Clock::system()).expect("reopen");
    assert_eq!(store.take_loaded().sessions.len(), 1);
}

#[test]
fn a_corrupt_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(FILE_NAME);
    std::fs::write(&path, vec![0xa5u8; 64 * 1024]).expect("write garbage");
    let e = OpenedStore::open(dir.path(), Clock::system()).expect_err("refused");
    let msg = e.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
}

#[test]
fn a_bad_record_is_an_error_naming_file_table_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(FILE_NAME);
    {
        let db = Database::create(&path).expect("create");
        let txn = db.begin_write().expect("txn");
        {
            let mut t = txn.open_table(INFLIGHT).expect("table");
            t.insert(("dev-1", 4u64), [1u8, 9].as_slice())
                .expect("insert");
            let mut t = txn.open_table(SESSIONS).expect("table");
            let v = codec::encode_session(&live_state(), Now::system());
            t.insert("dev-1", v.as_slice()).expect("insert");
        }
        txn.commit().expect("commit");
    }
    let e = OpenedStore::open(dir.path(), Clock::system()).expect_err("refused");
    let msg = e.to_string();
    assert!(
        msg.contains(&path.display().to_string())
            && msg.contains("inflight")
            && msg.contains("dev-1#4"),
        "{msg}"
    );
}
