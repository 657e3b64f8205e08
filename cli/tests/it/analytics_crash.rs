//! `plantd functions` killed with SIGKILL at pseudo-random points of a
//! 100,000-reading run and started again, over and over: every analytics
//! result in `PLANTD_AGGREGATES` — windows of several keys and kinds,
//! revisions from late readings — equals the result the test computes
//! itself with `plantd_analytics::Engine` on the same readings in stream
//! order: same ids, same values, none twice, none missing
//! (docs/decisions/0029-analytics-exactly-once.md).
//!
//! Readings are published straight into `PLANTD_TELEMETRY` with
//! async-nats, in bursts, while a killer task kills the host every
//! 150–650 ms (seeded, the seed is printed) until it was killed at least
//! five times and every reading is published. A short `ack_wait` hands a
//! killed host's batch to its successor within a second; the idle clock
//! is off, so results depend on the readings alone.

use crate::common;

use common::{Killer, Rng, nats_with_site};

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream;
use plantd_analytics::{Engine, Event, Output, Placement, Rule, Source, StoredRule};
use plantd_shared::headers;
use plantd_shared::streams;
use plantd_testkit::wait::drained;

const ORG: &str = "acme";
const SITE: &str = "plant1";
const READINGS: usize = 100_000;
const BURST: usize = 2_000;
const KILLS: u32 = 5;
const MACHINES: usize = 20;
const WAIT: Duration = Duration::from_secs(90);
/// 2026-12-06T10:00:00Z.
const T0: i64 = 1_796_551_200_000;

fn rules() -> Vec<Rule> {
    [
        (
            "temp_1s",
            r#"SELECT avg(value), max(value), count(*) FROM "line1/+/temp" WITH (lateness = '3s') GROUP BY topic, TUMBLE(1s)"#,
        ),
        (
            "line_hop",
            r#"SELECT sum(value), min(value), stddev(value) FROM "line1/#" WITH (delay = '500ms', lateness = '2s') GROUP BY '*', HOP(5s, 1s)"#,
        ),
        (
            "machine_session",
            r#"SELECT count(*), last(value) FROM "line1/+/temp" WITH (lateness = '1s') GROUP BY topic, SESSION(300ms)"#,
        ),
    ]
    .into_iter()
    .map(|(name, sql)| Rule::from_sql(name, sql).expect("a valid rule"))
    .collect()
}

/// Reading `i`: (topic, payload, received at). Machines report in turn
/// every 10 ms of event time; every 97th reading is 2.5 s late (a revision
/// of a closed window), every 1,009th 9 s late (beyond the lateness:
/// counted, not applied); machine 7 pauses now and then (sessions end).
fn reading(i: usize) -> (String, String, i64) {
    let machine = i % MACHINES;
    let mut at = T0 + (i as i64) * 10;
    if i.is_multiple_of(97) && i > 1_000 {
        at -= 2_500;
    }
    if i.is_multiple_of(1_009) && i > 2_000 {
        at -= 9_000;
    }
    let topic = if machine == 7 && (i / 2_000) % 2 == 1 {
        "line1/m7/pause".to_owned()
    } else {
        format!("line1/m{machine}/temp")
    };
    (topic, format!("{}", 15 + (i * 31) % 29), at)
}

/// Publishes readings `range` in one burst; returns their stream sequences.
async fn publish(js: &jetstream::Context, range: std::ops::Range<usize>) -> Vec<u64> {
    let mut acks = Vec::with_capacity(range.len());
    for i in range {
        let (topic, payload, at) = reading(i);
        let mut h = HeaderMap::new();
        h.insert(headers::RECEIVED, headers::format_time(at as u64).as_str());
        h.insert("Nats-Msg-Id", format!("{SITE}:test:{i}").as_str());
        let subject = format!("plantd.{SITE}.up.{}", topic.replace('/', "."));
        acks.push(
            js.publish_with_headers(subject, h, payload.into())
                .await
                .expect("publish"),
        );
    }
    let mut seqs = Vec::with_capacity(acks.len());
    for a in acks {
        seqs.push(a.await.expect("stored").sequence);
    }
    seqs
}

#[tokio::test]
async fn a_host_killed_at_random_points_stores_every_analytics_result_exactly_once() {
    let seed = Rng::run_seed();
    let (nats, js) = nats_with_site(SITE, ORG).await;
    let bucket = js
        .get_key_value(streams::ANALYTICS_RULES_BUCKET)
        .await
        .expect("rules bucket");
    for rule in rules() {
        let stored = StoredRule {
            org: ORG.into(),
            sites: Vec::new(),
            at: Placement::Cloud,
            enabled: true,
            source: Source::Json,
            rule,
            updated_by: "test".into(),
            updated_at: String::new(),
        };
        bucket
            .put(
                stored.key(),
                serde_json::to_vec(&stored).expect("json").into(),
            )
            .await
            .expect("store the rule");
    }

    let killer = Killer::start(
        &nats.url(),
        &[("PLANTD_ANALYTICS_IDLE_CLOSE_MS", "0")],
        seed,
    );

    // Bursts, paced so the host is killed while it works through them.
    let mut seqs = Vec::with_capacity(READINGS);
    let mut rng = Rng(seed ^ 0x9e37_79b9_7f4a_7c15);
    let mut next = 0;
    while next < READINGS {
        let end = (next + BURST).min(READINGS);
        seqs.extend(publish(&js, next..end).await);
        next = end;
        tokio::time::sleep(Duration::from_millis(rng.between(20, 120))).await;
    }
    plantd_testkit::eventually(WAIT, "the host to have been killed enough", || {
        let k = killer.kills();
        async move { (k >= KILLS).then_some(()) }
    })
    .await;
    let (mut host, kills) = killer.stop().await;
    println!("killed {kills} times");
    drained(&js, streams::TELEMETRY, "analytics_PLANTD_TELEMETRY", WAIT).await;

    // The reference: the engine itself on every reading in stream order.
    let mut engine = Engine::new(rules()).expect("engine");
    let mut outputs = Vec::new();
    for (i, seq) in seqs.iter().enumerate() {
        let (topic, payload, at) = reading(i);
        engine.process_into(
            &Event {
                topic: &topic,
                payload: payload.as_bytes(),
                received_at: at,
                stream_seq: *seq,
            },
            &mut outputs,
        );
    }
    let want: BTreeMap<String, Output> = outputs
        .into_iter()
        .map(|o| (format!("{SITE}:{}", o.id()), o))
        .collect();
    assert!(want.len() > 20_000, "results: {}", want.len());
    assert!(want.values().any(|o| o.revision > 0), "revisions");
    assert!(want.values().any(|o| o.dropped_late > 0), "dropped late");

    let stored = plantd_analytics_function::results::read(&js, &format!("plantd.{SITE}.agg.>"))
        .await
        .expect("read the results");
    let mut got: BTreeMap<String, Output> = BTreeMap::new();
    let mut twice = Vec::new();
    for r in stored {
        if got.insert(r.id.clone(), r.output).is_some() {
            twice.push(r.id);
        }
    }
    assert!(
        twice.is_empty(),
        "stored twice: {:?}",
        &twice[..twice.len().min(10)]
    );
    let missing: Vec<_> = want
        .keys()
        .filter(|k| !got.contains_key(*k))
        .take(10)
        .collect();
    assert!(
        missing.is_empty(),
        "missing (of {}): {missing:?}",
        want.len()
    );
    let extra: Vec<_> = got
        .keys()
        .filter(|k| !want.contains_key(*k))
        .take(10)
        .collect();
    assert!(extra.is_empty(), "not in the reference: {extra:?}");
    let differ: Vec<_> = want
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(v))
        .map(|(k, v)| (k.clone(), v.clone(), got.get(k).cloned()))
        .take(3)
        .collect();
    assert!(differ.is_empty(), "values differ: {differ:#?}");
    host.kill().await.expect("stop the host");
}
