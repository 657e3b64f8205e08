//! Analytics conditions against a real nats-server: results with a
//! `signal` published into `PLANTD_AGGREGATES` on
//! `plantd.<site>.agg.<rule>.<key>` (as the analytics function and the
//! edge store them) move the (alert rule, site, key) instance — `fire` →
//! one firing record in `PLANTD_ALERTS`, `clear` → resolved — through the
//! engine bound to the trigger; a redelivered or re-published result is
//! still one record; another organisation's site and results without a
//! signal count for nothing; a fire and its clear reaching the engine in
//! one batch (a `followed_by` match, an edge's results after an outage)
//! are a firing and a resolved record and one notification each, across
//! redelivery and a restart.

mod notify_common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream;
use plantd_alerts::{AlertRecord, AlertState, ManualClock, RecordKind, Rule, Stores};
use plantd_analytics::{Output, Signal};
use plantd_shared::sites::Sites;
use plantd_shared::streams;
use plantd_shared::subject::{Site, aggregate_subject};
use plantd_testkit::webhook::Receiver;
use plantd_testkit::{Nats, eventually};
use plantd_trigger::{ConsumerSettings, Handler as _, Item, Trigger};
use time::OffsetDateTime;

const WAIT: Duration = Duration::from_secs(20);
const ORG: &str = "acme";
const SITE: &str = "plant1";
const OTHER_SITE: &str = "other";
const RULE: &str = "press_held";
const KEY: &str = "line1/press";

const ALERT: &str = r#"{"id":"analytics-press_held","severity":"critical","notify":["ops"],
    "condition":{"kind":"analytics","rule":"press_held"}}"#;

struct Setup {
    _nats: Nats,
    js: jetstream::Context,
    clock: Arc<ManualClock>,
}

async fn setup() -> Setup {
    let nats = Nats::start_with_streams().await;
    let js = nats.jetstream().await;
    let sites = Sites::open(&js).await.expect("sites");
    for (site, org) in [(SITE, ORG), (OTHER_SITE, "globex")] {
        sites
            .register(&Site::new(site).expect("site"), org, "")
            .await
            .expect("register");
    }
    let stores = Stores::open(&js).await.expect("stores");
    let rule = Rule::from_json(ALERT.as_bytes()).expect("valid rule");
    stores.put_rule(ORG, &rule).await.expect("put rule");
    Setup {
        _nats: nats,
        js,
        clock: Arc::new(ManualClock::new(OffsetDateTime::now_utc())),
    }
}

fn output(key: &str, start: i64, signal: Option<Signal>) -> Output {
    Output {
        rule: RULE.into(),
        key: key.into(),
        window_start: start,
        window_end: start + 30_000,
        revision: 0,
        values: BTreeMap::from([("max_value".to_owned(), 8.6)]),
        dropped_late: 0,
        signal,
    }
}

impl Setup {
    /// An engine bound to `PLANTD_AGGREGATES` (and the other streams) by a
    /// real trigger; its own clock task ticks once an hour.
    async fn running(&self) -> (Trigger, plantd_alerts::Running) {
        let mut trigger = Trigger::new(self.js.clone());
        let settings = ConsumerSettings {
            max_wait: Duration::from_millis(10),
            ..ConsumerSettings::default()
        };
        let running = plantd_alerts::start(
            &self.js,
            &mut trigger,
            self.clock.clone(),
            Duration::from_secs(3600),
            settings,
        )
        .await
        .expect("engine starts");
        (trigger, running)
    }

    /// Stores `out` of `site` as the analytics function does (message id
    /// `<site>:<output id>`); its stream sequence.
    async fn publish(&self, site: &str, out: &Output) -> u64 {
        let subject = aggregate_subject(&Site::new(site).expect("site"), &out.rule, &out.key);
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("{site}:{}", out.id()).as_str());
        self.js
            .publish_with_headers(
                subject,
                headers,
                serde_json::to_vec(out).expect("json").into(),
            )
            .await
            .expect("publish")
            .await
            .expect("stored")
            .sequence
    }

    /// The stored item `out` (sequence `seq`) as the trigger hands it over.
    fn item(&self, seq: u64, out: &Output) -> Item {
        Item {
            stream: streams::AGGREGATES.into(),
            sequence: seq,
            subject: aggregate_subject(&Site::new(SITE).expect("site"), &out.rule, &out.key).into(),
            headers: HeaderMap::new(),
            payload: serde_json::to_vec(out).expect("json").into(),
            published: OffsetDateTime::now_utc(),
            delivered: 2,
            replay: None,
        }
    }

    async fn records(&self) -> Vec<AlertRecord> {
        let mut stream = self.js.get_stream(streams::ALERTS).await.expect("stream");
        let last = stream.info().await.expect("info").state.last_sequence;
        let mut out = Vec::new();
        for seq in 1..=last {
            if let Ok(msg) = stream.get_raw_message(seq).await {
                out.push(serde_json::from_slice(&msg.payload).expect("record"));
            }
        }
        out
    }

    async fn wait_records(&self, n: usize) -> Vec<AlertRecord> {
        eventually(WAIT, &format!("{n} alert records"), || async {
            let r = self.records().await;
            (r.len() >= n).then_some(r)
        })
        .await
    }

    /// Waits until the trigger's consumer on `PLANTD_AGGREGATES` has
    /// acknowledged everything.
    async fn drained(&self) {
        plantd_testkit::wait::drained(
            &self.js,
            streams::AGGREGATES,
            "alerts_PLANTD_AGGREGATES",
            WAIT,
        )
        .await;
    }
}

#[tokio::test]
async fn a_fire_signal_fires_once_and_clear_resolves() {
    let s = setup().await;
    let (_trigger, running) = s.running().await;
    let engine = running.engine();
    assert!(
        running
            .consumers
            .iter()
            .any(|c| c == "alerts_PLANTD_AGGREGATES"),
        "{:?}",
        running.consumers
    );

    let fire = output(KEY, 0, Some(Signal::Fire));
    let seq = s.publish(SITE, &fire).await;
    let records = s.wait_records(1).await;
    let firing = &records[0];
    assert_eq!(
        (firing.from, firing.to),
        (AlertState::Inactive, AlertState::Firing)
    );
    assert_eq!(firing.rule, "analytics-press_held");
    assert_eq!(firing.site, SITE);
    assert_eq!(firing.labels.get("key").map(String::as_str), Some(KEY));
    assert_eq!(firing.notify, vec!["ops".to_owned()]);
    assert_eq!(firing.value, Some(8.6));
    let ev = firing.evidence.last().expect("evidence");
    assert_eq!(
        (ev.stream.as_str(), ev.sequence),
        (streams::AGGREGATES, seq)
    );
    assert_eq!(ev.text.as_deref(), Some(r#"{"max_value":8.6}"#));

    // The same result again: de-duplicated by the stream; a later result
    // that fires again (a revision) while firing; the stored item handed
    // to the engine a second time (a redelivery): still one record.
    s.publish(SITE, &fire).await;
    let mut revised = fire.clone();
    revised.revision = 1;
    s.publish(SITE, &revised).await;
    let item = Item {
        stream: streams::AGGREGATES.into(),
        sequence: seq,
        subject: aggregate_subject(&Site::new(SITE).expect("site"), RULE, KEY).into(),
        headers: HeaderMap::new(),
        payload: serde_json::to_vec(&fire).expect("json").into(),
        published: OffsetDateTime::now_utc(),
        delivered: 2,
        replay: None,
    };
    assert_eq!(engine.handle(&[item]).await.failures().count(), 0);
    s.drained().await;
    engine.tick().await;
    assert_eq!(s.records().await.len(), 1, "{:?}", s.records().await);

    s.publish(SITE, &output(KEY, 30_000, Some(Signal::Clear)))
        .await;
    let records = s.wait_records(2).await;
    assert!(records[1].is_resolution(), "{:?}", records[1]);
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r.kind == RecordKind::Transition));
}

#[tokio::test]
async fn only_signals_of_the_rules_org_sites_and_of_the_named_rule_count() {
    let s = setup().await;
    let (_trigger, running) = s.running().await;
    let engine = running.engine();
    // Another organisation's site with a rule of the same name; a windowed
    // aggregate (no signal); another rule's signal on our site.
    s.publish(OTHER_SITE, &output(KEY, 0, Some(Signal::Fire)))
        .await;
    s.publish(SITE, &output(KEY, 0, None)).await;
    let mut other_rule = output(KEY, 0, Some(Signal::Fire));
    other_rule.rule = "something_else".into();
    s.publish(SITE, &other_rule).await;
    s.drained().await;
    engine.tick().await;
    assert!(
        engine.instances().await.is_empty(),
        "{:?}",
        engine.instances().await
    );
    assert!(s.records().await.is_empty());

    // A clear before the fire it follows (a retried item arriving late)
    // does not overturn the newer fire.
    s.publish(SITE, &output(KEY, 60_000, Some(Signal::Fire)))
        .await;
    s.wait_records(1).await;
    s.publish(SITE, &output(KEY, 30_000, Some(Signal::Clear)))
        .await;
    s.drained().await;
    engine.tick().await;
    let states: Vec<AlertState> = engine.instances().await.iter().map(|i| i.state).collect();
    assert_eq!(states, vec![AlertState::Firing]);
    assert_eq!(s.records().await.len(), 1);
}

/// A `followed_by` match as the analytics engine emits it: the fire and the
/// clear of one episode, detected at the same instant (revisions 0 and 1).
fn followed_by(key: &str, start: i64) -> (Output, Output) {
    let mut fire = output(key, start, Some(Signal::Fire));
    fire.window_end = start + 4_000;
    let mut clear = fire.clone();
    clear.revision = 1;
    clear.signal = Some(Signal::Clear);
    (fire, clear)
}

#[tokio::test]
async fn a_fire_and_its_clear_in_one_batch_fire_resolve_and_notify_once_each() {
    let s = setup().await;
    let receiver = Receiver::start().await;
    notify_common::channel(&s.js, ORG, "ops", notify_common::webhook(&receiver.url())).await;
    let (notifier, _) = notify_common::bound(&s.js, notify_common::notifier(&s.js).await).await;

    // Both stored before the engine starts, so its first fetch holds both.
    let (fire, clear) = followed_by(KEY, 0);
    let seqs = [s.publish(SITE, &fire).await, s.publish(SITE, &clear).await];
    let (_trigger, running) = s.running().await;
    let engine = running.engine();
    let records = s.wait_records(2).await;
    s.drained().await;
    let moves: Vec<(AlertState, AlertState)> = records.iter().map(|r| (r.from, r.to)).collect();
    assert_eq!(
        moves,
        vec![
            (AlertState::Inactive, AlertState::Firing),
            (AlertState::Firing, AlertState::Inactive)
        ]
    );
    assert!(records[1].is_resolution());

    // The same batch handed over again, to this engine and to one started
    // afresh over the same buckets (a restart): nothing more.
    let batch = [s.item(seqs[0], &fire), s.item(seqs[1], &clear)];
    assert_eq!(engine.handle(&batch).await.failures().count(), 0);
    let restarted = plantd_alerts::Engine::new(&s.js, s.clock.clone())
        .await
        .expect("a restarted engine");
    assert_eq!(restarted.handle(&batch).await.failures().count(), 0);
    restarted.tick().await;
    engine.tick().await;

    // Another key's pair handed to the engine directly as one batch (no
    // doubt it is one): a firing and a resolution as well.
    let (fire2, clear2) = followed_by("line2/press", 60_000);
    let seqs2 = [
        s.publish(SITE, &fire2).await,
        s.publish(SITE, &clear2).await,
    ];
    let batch2 = [s.item(seqs2[0], &fire2), s.item(seqs2[1], &clear2)];
    assert_eq!(restarted.handle(&batch2).await.failures().count(), 0);
    let records = s.wait_records(4).await;
    s.drained().await;
    engine.tick().await;
    let records_now = s.records().await;
    assert_eq!(records_now.len(), 4, "{records_now:?}");
    let line2: Vec<(AlertState, AlertState)> = records
        .iter()
        .filter(|r| r.labels.get("key").map(String::as_str) == Some("line2/press"))
        .map(|r| (r.from, r.to))
        .collect();
    assert_eq!(
        line2,
        vec![
            (AlertState::Inactive, AlertState::Firing),
            (AlertState::Firing, AlertState::Inactive)
        ]
    );
    let states: Vec<AlertState> = engine.instances().await.iter().map(|i| i.state).collect();
    assert_eq!(states, vec![AlertState::Inactive, AlertState::Inactive]);

    // One POST per record: a firing and a resolution per key, once each
    // (every record handled by the notifier by the time its consumer's
    // ack floor passes the last of them).
    let last =
        s.js.get_stream(streams::ALERTS)
            .await
            .expect("stream")
            .info()
            .await
            .expect("info")
            .state
            .last_sequence;
    let durable = format!("{}_{}", plantd_alerts::NOTIFIER, streams::ALERTS);
    eventually(WAIT, "the notifier to handle every record", || async {
        let stream = s.js.get_stream(streams::ALERTS).await.ok()?;
        let info = stream.consumer_info(&durable).await.ok()?;
        (info.ack_floor.stream_sequence >= last).then_some(())
    })
    .await;
    let posts = receiver.delivered();
    for r in &records_now {
        let n = posts
            .iter()
            .filter(|p| p.json()["record"]["id"] == r.id.as_str())
            .count();
        assert_eq!(n, 1, "one POST for {}", r.id);
    }
    let mut events: Vec<String> = posts
        .iter()
        .map(|p| p.json()["event"].as_str().unwrap_or_default().to_owned())
        .collect();
    events.sort();
    assert_eq!(events, ["firing", "firing", "resolved", "resolved"]);
    notifier.shutdown().await;
}
