//! Analytics conditions against a real nats-server: results with a
//! `signal` published into `PLANTD_AGGREGATES` on
//! `plantd.<site>.agg.<rule>.<key>` (as the analytics function and the
//! edge store them) move the (alert rule, site, key) instance — `fire` →
//! one firing record in `PLANTD_ALERTS`, `clear` → resolved — through the
//! engine bound to the trigger; a redelivered or re-published result is
//! still one record; another organisation's site and results without a
//! signal count for nothing.

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
        stream: streams::AGGREGATES.to_owned(),
        sequence: seq,
        subject: aggregate_subject(&Site::new(SITE).expect("site"), RULE, KEY),
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
