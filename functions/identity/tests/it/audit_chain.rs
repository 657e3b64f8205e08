//! The audit chain itself (`plantd_shared::audit`) against a real
//! nats-server: appends link up, concurrent writers on separate
//! connections (two processes, or two Lambda instances) never fork an
//! organisation's chain, and tampering with the stream is reported at the
//! first broken record. The HTTP side (`GET /v1/audit`, who is recorded)
//! is in `audit.rs`.

use std::collections::HashSet;

use plantd_shared::audit::{
    self, Action, ActorKind, Auditor, BrokenReason, Event, GENESIS, Outcome, Query, Record,
};
use plantd_shared::streams::{self, Settings as StreamSettings};
use plantd_testkit::Nats;

async fn server(deny_delete: bool) -> Nats {
    let nats = Nats::start().await;
    let settings = StreamSettings {
        audit_deny_delete: deny_delete,
        ..StreamSettings::default()
    };
    streams::ensure(&nats.jetstream().await, &settings)
        .await
        .expect("streams");
    nats
}

fn event(org: &str, i: usize) -> Event {
    Event::new(Action::UserCreate, org)
        .actor(ActorKind::User, format!("writer-{i}"))
        .target(format!("user:{i}"))
        .origin(Some("192.0.2.1".into()), Some(format!("req-{i}")))
}

#[tokio::test]
async fn appends_link_up_and_organisations_have_separate_chains() {
    let nats = server(true).await;
    let js = nats.jetstream().await;
    let auditor = Auditor::new(js.clone());
    let first = auditor.append(event("acme", 0)).await.expect("append");
    assert_eq!((first.record.n, first.record.prev.as_str()), (1, GENESIS));
    let second = auditor.append(event("acme", 1)).await.expect("append");
    assert_eq!(second.record.n, 2);
    assert_eq!(second.record.prev, first.hash);
    let other = auditor.append(event("initech", 2)).await.expect("append");
    assert_eq!((other.record.n, other.record.prev.as_str()), (1, GENESIS));
    // A second auditor (another process) continues the same chain.
    let later = Auditor::new(js.clone())
        .append(event("acme", 3))
        .await
        .expect("append");
    assert_eq!(later.record.n, 3);
    assert_eq!(later.record.prev, second.hash);
    // The stream refuses deletes.
    let stream = js.get_stream(audit::STREAM).await.expect("stream");
    assert!(stream.delete_message(first.seq).await.is_err());
    auditor.record(event("acme", 4)).await;
    assert_eq!((auditor.recorded(), auditor.failures()), (4, 0));

    let v = audit::verify(&js, "acme").await.expect("verify");
    assert!(v.ok(), "{v:?}");
    assert_eq!((v.records, v.last_n), (4, 4));
    let page = audit::read(
        &js,
        &Query {
            org: "acme".into(),
            limit: 100,
            ..Query::default()
        },
    )
    .await
    .expect("read");
    assert_eq!(page.records.len(), 4);
    assert!(page.records.iter().all(|s| s.record.org == "acme"));
    assert_eq!(page.next, None);
    // An organisation nobody audited verifies as an empty chain.
    let empty = audit::verify(&js, "nobody").await.expect("verify");
    assert!(empty.ok() && empty.records == 0);
}

#[tokio::test]
async fn concurrent_writers_on_separate_connections_never_fork_the_chain() {
    let nats = server(true).await;
    const WRITERS: usize = 4;
    const EACH: usize = 25;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        // One connection and one auditor per writer: separate processes as
        // far as JetStream can tell.
        let auditor = Auditor::new(nats.jetstream().await);
        tasks.push(tokio::spawn(async move {
            for i in 0..EACH {
                auditor
                    .append(event("acme", w * 1000 + i))
                    .await
                    .expect("append");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let js = nats.jetstream().await;
    let v = audit::verify(&js, "acme").await.expect("verify");
    assert!(v.ok(), "forked: {:?}", v.broken);
    assert_eq!(v.records, (WRITERS * EACH) as u64);
    assert_eq!(v.last_n, (WRITERS * EACH) as u64);
    // Every event is there exactly once.
    let page = audit::read(
        &js,
        &Query {
            org: "acme".into(),
            limit: 1000,
            ..Query::default()
        },
    )
    .await
    .expect("read");
    let ids: HashSet<_> = page
        .records
        .iter()
        .map(|s| s.record.target.clone())
        .collect();
    assert_eq!(ids.len(), WRITERS * EACH);
}

#[tokio::test]
async fn a_deleted_and_rewritten_record_is_the_first_broken_one() {
    // The default stream refuses deletes; an attacker with control of the
    // server could still remove one, which is what this stream allows.
    let nats = server(false).await;
    let js = nats.jetstream().await;
    let auditor = Auditor::new(js.clone());
    let mut stored = Vec::new();
    for i in 0..5 {
        stored.push(auditor.append(event("acme", i)).await.expect("append"));
    }
    assert!(audit::verify(&js, "acme").await.expect("verify").ok());
    // Rewrite record 3: delete it and publish a doctored copy (a failed
    // login turned into a success) at the end of the subject.
    let stream = js.get_stream(audit::STREAM).await.expect("stream");
    let victim = &stored[2];
    assert!(stream.delete_message(victim.seq).await.expect("delete"));
    let mut forged: Record = victim.record.clone();
    forged.outcome = Outcome::Failure;
    js.publish(
        audit::subject("acme").expect("subject"),
        serde_json::to_vec(&forged).expect("json").into(),
    )
    .await
    .expect("publish")
    .await
    .expect("ack");
    let v = audit::verify(&js, "acme").await.expect("verify");
    let broken = v.broken.expect("tampering detected");
    assert_eq!(broken.seq, stored[3].seq, "the record after the gap");
    assert_eq!(
        broken.reason,
        BrokenReason::Numbering {
            expected_n: 3,
            found_n: 4
        }
    );
    assert_eq!(v.last_n, 2);
}

#[tokio::test]
async fn a_forged_record_appended_behind_the_auditors_back_is_detected() {
    let nats = server(true).await;
    let js = nats.jetstream().await;
    let auditor = Auditor::new(js.clone());
    for i in 0..3 {
        auditor.append(event("acme", i)).await.expect("append");
    }
    // Someone with publish rights writes a record with the right number but
    // a made-up link.
    let mut forged = auditor
        .append(event("acme", 3))
        .await
        .expect("append")
        .record;
    forged.n = 5;
    forged.prev = "f".repeat(64);
    js.publish(
        audit::subject("acme").expect("subject"),
        serde_json::to_vec(&forged).expect("json").into(),
    )
    .await
    .expect("publish")
    .await
    .expect("ack");
    let v = audit::verify(&js, "acme").await.expect("verify");
    let broken = v.broken.expect("forgery detected");
    assert!(
        matches!(broken.reason, BrokenReason::Link { .. }),
        "{:?}",
        broken.reason
    );
    assert_eq!(v.last_n, 4);
    // The auditor is not confused: it re-reads the tip and appends after
    // the forged record (the break stays visible where it is).
    let next = auditor.append(event("acme", 9)).await.expect("append");
    assert_eq!(next.record.n, 6);
}

#[tokio::test]
async fn recording_without_a_stream_fails_quietly_and_is_counted() {
    let nats = Nats::start().await;
    let auditor = Auditor::with_timeout(nats.jetstream().await, std::time::Duration::from_secs(2));
    auditor.record(event("acme", 0)).await;
    assert_eq!((auditor.recorded(), auditor.failures()), (0, 1));
    assert!(matches!(
        auditor.append(event("a.b", 0)).await,
        Err(audit::AuditError::BadOrg(_))
    ));
}
