//! The alert engine against a real nats-server: the lifecycle of threshold,
//! absence and log rules, no-data, redelivery, restarts, silences and
//! acknowledgements — each transition written once to `PLANTD_ALERTS`;
//! a reading that trips and one that clears in one batch are a firing and
//! a resolution, not nothing.
//! Time is a [`ManualClock`] stepped with [`Engine::tick`], so durations
//! are tested without sleeping.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream;
use plantd_alerts::{
    AlertRecord, AlertState, Clock as _, Engine, InstanceState, ManualClock, RecordKind, Rule,
    Silence, Stores,
};
use plantd_shared::sites::Sites;
use plantd_shared::streams;
use plantd_shared::subject::{Channel, Site, topic_to_subject};
use plantd_shared::topic::Topic;
use plantd_testkit::{Nats, eventually};
use plantd_trigger::{ConsumerSettings, Handler as _, Item, Trigger};
use time::OffsetDateTime;

const WAIT: Duration = Duration::from_secs(20);
const ORG: &str = "acme";
const SITE: &str = "plant1";

struct Setup {
    _nats: Nats,
    js: jetstream::Context,
    clock: Arc<ManualClock>,
    stores: Stores,
}

async fn setup() -> Setup {
    let nats = Nats::start_with_streams().await;
    let js = nats.jetstream().await;
    let sites = Sites::open(&js).await.expect("sites");
    sites
        .register(&Site::new(SITE).expect("site"), ORG, "")
        .await
        .expect("register");
    sites
        .register(&Site::new("other").expect("site"), "globex", "")
        .await
        .expect("register");
    let stores = Stores::open(&js).await.expect("stores");
    Setup {
        _nats: nats,
        js,
        clock: Arc::new(ManualClock::new(OffsetDateTime::now_utc())),
        stores,
    }
}

impl Setup {
    async fn rule(&self, json: &str) -> Rule {
        let rule = Rule::from_json(json.as_bytes()).expect("valid rule");
        self.stores.put_rule(ORG, &rule).await.expect("put rule");
        rule
    }

    /// An engine fed by a real trigger (batches wait 10 ms); its clock
    /// task ticks once an hour, so only the test's ticks count.
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

    async fn publish(&self, subject: &str, payload: &str) -> u64 {
        self.js
            .publish(subject.to_owned(), payload.to_owned().into())
            .await
            .expect("publish")
            .await
            .expect("stored")
            .sequence
    }

    /// Every record in `PLANTD_ALERTS`, in order.
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

    fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }
}

fn transitions(records: &[AlertRecord]) -> Vec<(AlertState, AlertState)> {
    records
        .iter()
        .filter(|r| r.kind == RecordKind::Transition)
        .map(|r| (r.from, r.to))
        .collect()
}

async fn state_of(engine: &Engine, rule: &str) -> Option<InstanceState> {
    engine
        .instances()
        .await
        .into_iter()
        .find(|s| s.rule == rule)
}

async fn wait_state(engine: &Engine, rule: &str, want: AlertState) -> InstanceState {
    eventually(WAIT, &format!("{rule} {want:?}"), || async {
        state_of(engine, rule).await.filter(|s| s.state == want)
    })
    .await
}

const HOT: &str = r#"{"id":"hot","name":"Line 1 too hot","severity":"critical","for":"10s",
    "group_by":["topic"],"notify":["ops"],
    "condition":{"kind":"threshold","topic":"line1/+/temp","op":">","value":80}}"#;

#[tokio::test]
async fn threshold_goes_pending_then_firing_only_after_for_and_resolves() {
    let s = setup().await;
    s.rule(HOT).await;
    let (_trigger, running) = s.running().await;
    let engine = running.engine();
    s.publish("plantd.plant1.up.line1.oven.temp", "91.5").await;
    let pending = wait_state(engine, "hot", AlertState::Pending).await;
    assert_eq!(pending.key, "topic=line1/oven/temp");
    assert_eq!(
        transitions(&s.wait_records(1).await),
        vec![(AlertState::Inactive, AlertState::Pending)]
    );

    s.advance(9);
    engine.tick().await;
    assert_eq!(
        state_of(engine, "hot").await.map(|x| x.state),
        Some(AlertState::Pending),
        "not before `for`"
    );
    s.advance(1);
    engine.tick().await;
    let records = s.wait_records(2).await;
    let firing = &records[1];
    assert_eq!(
        (firing.from, firing.to),
        (AlertState::Pending, AlertState::Firing)
    );
    assert_eq!(firing.rule_name, "Line 1 too hot");
    assert_eq!(firing.notify, vec!["ops".to_owned()]);
    assert_eq!(firing.subject(), "plantd.plant1.alert.hot");
    assert_eq!(
        firing.evidence.last().and_then(|e| e.value),
        Some(91.5),
        "evidence: {:?}",
        firing.evidence
    );
    assert!(!firing.silenced);

    s.publish("plantd.plant1.up.line1.oven.temp", "40").await;
    wait_state(engine, "hot", AlertState::Inactive).await;
    engine.tick().await;
    let records = s.wait_records(3).await;
    assert!(records[2].is_resolution());
    assert_eq!(
        transitions(&records),
        vec![
            (AlertState::Inactive, AlertState::Pending),
            (AlertState::Pending, AlertState::Firing),
            (AlertState::Firing, AlertState::Inactive)
        ]
    );
}

#[tokio::test]
async fn absence_fires_when_the_topic_goes_silent_and_not_before() {
    let s = setup().await;
    s.rule(r#"{"id":"heartbeat","condition":{"kind":"absence","topic":"line1/heartbeat","after":"30s"}}"#)
        .await;
    let (_trigger, running) = s.running().await;
    let engine = running.engine();
    s.publish("plantd.plant1.up.line1.heartbeat", "1").await;
    wait_state(engine, "heartbeat", AlertState::Inactive).await;
    s.advance(29);
    engine.tick().await;
    assert!(
        s.records().await.is_empty(),
        "silent 29s of 30s: nothing yet"
    );
    s.advance(1);
    engine.tick().await;
    let records = s.wait_records(1).await;
    assert_eq!(
        transitions(&records),
        vec![(AlertState::Inactive, AlertState::Firing)]
    );
    s.publish("plantd.plant1.up.line1.heartbeat", "1").await;
    wait_state(engine, "heartbeat", AlertState::Inactive).await;
    assert!(s.wait_records(2).await[1].is_resolution());
}

#[tokio::test]
async fn no_data_is_its_own_state_never_resolved() {
    let s = setup().await;
    s.rule(r#"{"id":"pressure","no_data":{"after":"1m"},
        "condition":{"kind":"threshold","topic":"line1/pressure","field":"bar","op":">=","value":6}}"#)
        .await;
    let (_trigger, running) = s.running().await;
    let engine = running.engine();
    s.publish("plantd.plant1.up.line1.pressure", r#"{"bar": 7.2}"#)
        .await;
    wait_state(engine, "pressure", AlertState::Firing).await;
    s.advance(60);
    engine.tick().await;
    wait_state(engine, "pressure", AlertState::NoData).await;
    let records = s.wait_records(2).await;
    assert_eq!(
        transitions(&records),
        vec![
            (AlertState::Inactive, AlertState::Firing),
            (AlertState::Firing, AlertState::NoData)
        ]
    );
    assert!(
        !records.iter().any(AlertRecord::is_resolution),
        "no data is not resolved"
    );
    // Data again, below the threshold: out of no-data, not a resolution.
    s.publish("plantd.plant1.up.line1.pressure", r#"{"bar": 1}"#)
        .await;
    wait_state(engine, "pressure", AlertState::Inactive).await;
    let records = s.wait_records(3).await;
    assert_eq!(
        (records[2].from, records[2].to),
        (AlertState::NoData, AlertState::Inactive)
    );
    assert!(!records[2].is_resolution());
}

#[tokio::test]
async fn a_log_count_rule_fires_and_resolves() {
    let s = setup().await;
    s.rule(
        r#"{"id":"overheat","group_by":["source"],
        "condition":{"kind":"log_count","match":"|= \"overheat\"","window":"1m","threshold":2}}"#,
    )
    .await;
    let (_trigger, running) = s.running().await;
    let engine = running.engine();
    s.publish(
        "plantd.plant1.log.plc",
        "level=warn msg=\"overheat on zone 2\"",
    )
    .await;
    s.publish("plantd.plant1.log.plc", "all good").await;
    s.publish(
        "plantd.plant1.log.plc",
        "level=warn msg=\"overheat on zone 3\"",
    )
    .await;
    wait_state(engine, "overheat", AlertState::Inactive).await;
    s.publish("plantd.plant1.log.plc", "overheat again").await;
    let firing = wait_state(engine, "overheat", AlertState::Firing).await;
    assert_eq!(firing.key, "source=plc");
    let records = s.wait_records(1).await;
    assert_eq!(records[0].value, Some(3.0));
    assert_eq!(records[0].evidence.len(), 3, "{:?}", records[0].evidence);
    assert!(
        records[0].summary.contains("3 lines"),
        "{}",
        records[0].summary
    );
    s.advance(61);
    engine.tick().await;
    wait_state(engine, "overheat", AlertState::Inactive).await;
    assert!(s.wait_records(2).await[1].is_resolution());
}

#[tokio::test]
async fn a_trip_and_a_clear_in_one_batch_fire_and_resolve_on_an_odd_topic() {
    let s = setup().await;
    s.rule(
        r#"{"id":"spike","group_by":["topic"],
        "condition":{"kind":"threshold","topic":"line1/#","op":">","value":80}}"#,
    )
    .await;
    // A topic holding ',' and '=' (its instance key is
    // `topic=line1/a=b,c`): stored before the engine starts, so one batch
    // holds the reading that trips and the one that clears.
    let topic = Topic::new("line1/a=b,c").expect("topic");
    let subject = topic_to_subject(&Site::new(SITE).expect("site"), Channel::Up, &topic);
    let trip = s.publish(&subject, "91").await;
    let clear = s.publish(&subject, "20").await;
    let (_trigger, running) = s.running().await;
    let engine = running.engine();
    let records = s.wait_records(2).await;
    assert_eq!(
        transitions(&records),
        vec![
            (AlertState::Inactive, AlertState::Firing),
            (AlertState::Firing, AlertState::Inactive)
        ]
    );
    assert_eq!(records[0].value, Some(91.0));
    assert_eq!(records[0].key, "topic=line1/a=b,c");
    assert!(records[1].is_resolution());
    // Redelivered, and a tick: nothing more, and the instance is kept (its
    // key still fits the rule's grouping).
    let batch = [
        item(streams::TELEMETRY, trip, &subject, "91"),
        item(streams::TELEMETRY, clear, &subject, "20"),
    ];
    assert!(engine.handle(&batch).await.is_success());
    engine.tick().await;
    let st = state_of(engine, "spike")
        .await
        .expect("the instance is kept");
    assert_eq!((st.state, st.n), (AlertState::Inactive, 2));
    assert_eq!(s.records().await.len(), 2);
    // It fires again on the next trip, as transition 3.
    s.publish(&subject, "99").await;
    let records = s.wait_records(3).await;
    assert_eq!(
        (records[2].from, records[2].to, records[2].n),
        (AlertState::Inactive, AlertState::Firing, 3)
    );
}

fn item(stream: &str, sequence: u64, subject: &str, payload: &str) -> Item {
    Item {
        stream: stream.into(),
        sequence,
        subject: subject.into(),
        headers: HeaderMap::new(),
        payload: payload.to_owned().into(),
        published: OffsetDateTime::now_utc(),
        delivered: 1,
        replay: None,
    }
}

#[tokio::test]
async fn redelivered_items_change_nothing() {
    let s = setup().await;
    s.rule(r#"{"id":"errors","condition":{"kind":"log_count","match":"|= \"error\"","window":"5m","threshold":2}}"#)
        .await;
    let engine = Engine::new(&s.js, s.clock.clone()).await.expect("engine");
    let batch: Vec<Item> = (1..=2)
        .map(|seq| {
            item(
                streams::LOGS,
                seq,
                "plantd.plant1.log.app",
                "disk error on sda",
            )
        })
        .collect();
    for _ in 0..3 {
        assert!(engine.handle(&batch).await.is_success());
    }
    let st = state_of(&engine, "errors").await.expect("instance");
    assert_eq!(
        st.state,
        AlertState::Inactive,
        "two lines, counted once each: {:?}",
        st.buckets
    );
    assert!(s.records().await.is_empty());
    // The third line makes three: one firing, whatever is redelivered.
    let third = vec![item(streams::LOGS, 3, "plantd.plant1.log.app", "fan error")];
    for _ in 0..3 {
        assert!(engine.handle(&third).await.is_success());
        assert!(engine.handle(&batch).await.is_success());
    }
    assert_eq!(
        transitions(&s.wait_records(1).await),
        vec![(AlertState::Inactive, AlertState::Firing)]
    );
    assert_eq!(s.records().await.len(), 1);
}

#[tokio::test]
async fn a_restart_midway_writes_each_transition_once() {
    let s = setup().await;
    s.rule(HOT).await;
    let subject = "plantd.plant1.up.line1.oven.temp";
    let first = Engine::new(&s.js, s.clock.clone()).await.expect("engine");
    assert!(
        first
            .handle(&[item(streams::TELEMETRY, 1, subject, "95")])
            .await
            .is_success()
    );
    assert_eq!(s.wait_records(1).await.len(), 1);
    drop(first);

    // A new engine on the same stores: the same item redelivered (the
    // ack was lost), then the clock passes `for`.
    let second = Engine::new(&s.js, s.clock.clone()).await.expect("engine");
    assert!(
        second
            .handle(&[item(streams::TELEMETRY, 1, subject, "95")])
            .await
            .is_success()
    );
    s.advance(10);
    second.tick().await;
    assert_eq!(
        transitions(&s.wait_records(2).await),
        vec![
            (AlertState::Inactive, AlertState::Pending),
            (AlertState::Pending, AlertState::Firing)
        ]
    );

    // A crash after the state (with its outbox) was stored and before the
    // record was published: the next engine publishes it, once, however
    // many start.
    let (mut st, rev) = s
        .stores
        .instances()
        .await
        .expect("instances")
        .into_iter()
        .find(|(x, _)| x.rule == "hot")
        .expect("instance");
    let rule = s
        .stores
        .rule(ORG, "hot")
        .await
        .expect("read")
        .expect("rule");
    let cool = item(streams::TELEMETRY, 2, subject, "20");
    st.observe(
        &rule,
        2,
        &plantd_alerts::instance::Observation::Reading {
            value: Some(20.0),
            holds: false,
        },
        None,
        s.clock.now(),
    );
    st.evaluate(&rule, &[], s.clock.now());
    assert_eq!(st.outbox.len(), 1);
    s.stores
        .cas(&st, Some(rev))
        .await
        .expect("crash after the CAS");
    drop(second);
    for _ in 0..2 {
        let again = Engine::new(&s.js, s.clock.clone()).await.expect("engine");
        assert!(again.handle(std::slice::from_ref(&cool)).await.is_success());
        again.tick().await;
    }
    let records = s.wait_records(3).await;
    assert_eq!(records.len(), 3, "{records:#?}");
    assert!(records[2].is_resolution());
    let (stored, _) = s
        .stores
        .instance(&st.id)
        .await
        .expect("read")
        .expect("instance");
    assert!(stored.outbox.is_empty(), "outbox cleared");

    // A crash after the record was published and before the outbox was
    // cleared: the next engine publishes it again, the stream drops it.
    let (mut st, rev) = s
        .stores
        .instance(&st.id)
        .await
        .expect("read")
        .expect("instance");
    st.outbox.push(records[2].clone());
    s.stores
        .cas(&st, Some(rev))
        .await
        .expect("crash after the publish");
    let again = Engine::new(&s.js, s.clock.clone()).await.expect("engine");
    again.tick().await;
    let (stored, _) = s
        .stores
        .instance(&st.id)
        .await
        .expect("read")
        .expect("instance");
    assert!(stored.outbox.is_empty(), "outbox cleared");
    assert_eq!(s.records().await.len(), 3, "stored once");
}

#[tokio::test]
async fn a_matching_silence_marks_records_silenced() {
    let s = setup().await;
    s.rule(
        r#"{"id":"hot","condition":{"kind":"threshold","topic":"line1/temp","op":">","value":80}}"#,
    )
    .await;
    let now = OffsetDateTime::now_utc();
    let silence = Silence {
        id: "s-1".into(),
        matchers: vec![
            "site=plant1".parse().expect("matcher"),
            "rule=~h.*".parse().expect("matcher"),
        ],
        starts: now - time::Duration::minutes(1),
        ends: now + time::Duration::hours(2),
        comment: "maintenance".into(),
        created_by: "test".into(),
    };
    s.stores.put_silence(ORG, &silence).await.expect("silence");
    let engine = Engine::new(&s.js, s.clock.clone()).await.expect("engine");
    engine
        .handle(&[item(
            streams::TELEMETRY,
            1,
            "plantd.plant1.up.line1.temp",
            "99",
        )])
        .await;
    let records = s.wait_records(1).await;
    assert_eq!(records[0].to, AlertState::Firing);
    assert!(records[0].silenced, "stored, marked silenced");

    // Another organisation's silence never applies.
    s.stores.delete_silence(ORG, "s-1").await.expect("delete");
    s.stores
        .put_silence("globex", &silence)
        .await
        .expect("silence");
    engine.reload().await.expect("reload");
    engine
        .handle(&[item(
            streams::TELEMETRY,
            2,
            "plantd.plant1.up.line1.temp",
            "1",
        )])
        .await;
    let records = s.wait_records(2).await;
    assert!(!records[1].silenced);
}

#[tokio::test]
async fn an_ack_writes_one_ack_record_and_stops_repeats() {
    let s = setup().await;
    s.rule(r#"{"id":"hot","repeat_interval":"1m","condition":{"kind":"threshold","topic":"line1/temp","op":">","value":80}}"#)
        .await;
    let engine = Engine::new(&s.js, s.clock.clone()).await.expect("engine");
    engine
        .handle(&[item(
            streams::TELEMETRY,
            1,
            "plantd.plant1.up.line1.temp",
            "99",
        )])
        .await;
    s.advance(60);
    engine.tick().await;
    let records = s.wait_records(2).await;
    assert_eq!(records[1].kind, RecordKind::Repeat);
    assert!(records[1].id.ends_with(":1:r1"), "{}", records[1].id);

    let id = state_of(&engine, "hot").await.expect("instance").id;
    let ack = s
        .stores
        .acknowledge(ORG, &id, "alice", "on it", OffsetDateTime::now_utc())
        .await
        .expect("ack");
    assert_eq!(ack.kind, RecordKind::Ack);
    assert_eq!(ack.ack.as_ref().map(|a| a.note.as_str()), Some("on it"));
    let again = s
        .stores
        .acknowledge(ORG, &id, "bob", "", OffsetDateTime::now_utc())
        .await;
    assert!(
        matches!(again, Err(plantd_alerts::StoreError::Refused(_))),
        "{again:?}"
    );
    let other = s
        .stores
        .acknowledge("globex", &id, "eve", "", OffsetDateTime::now_utc())
        .await;
    assert!(
        matches!(other, Err(plantd_alerts::StoreError::NotFound(_))),
        "{other:?}"
    );

    // The engine's cached copy is stale: it reloads, keeps the ack and
    // writes no more repeats.
    s.advance(120);
    engine.tick().await;
    let records = s.wait_records(3).await;
    assert_eq!(records.len(), 3, "{records:#?}");
    assert_eq!(records[2].kind, RecordKind::Ack);
    let st = state_of(&engine, "hot").await.expect("instance");
    assert_eq!(st.ack.map(|a| a.by), Some("alice".to_owned()));
}

#[tokio::test]
async fn rules_apply_to_their_organisations_sites_only() {
    let s = setup().await;
    s.rule(r##"{"id":"hot","sites":["plant1"],"condition":{"kind":"threshold","topic":"#","op":">","value":80}}"##)
        .await;
    let engine = Engine::new(&s.js, s.clock.clone()).await.expect("engine");
    engine
        .handle(&[
            item(streams::TELEMETRY, 1, "plantd.other.up.line1.temp", "99"),
            item(streams::TELEMETRY, 2, "plantd.unknown.up.line1.temp", "99"),
        ])
        .await;
    assert!(
        engine.instances().await.is_empty(),
        "another org's site and an unregistered one"
    );
}

#[tokio::test]
async fn plantd_own_log_lines_alert_the_bootstrap_organisation() {
    let s = setup().await;
    let rule = Rule::from_json(
        br#"{"id":"plantd-errors","group_by":["source"],
            "condition":{"kind":"log_count","match":"{level>=\"error\"}","window":"5m","threshold":0}}"#,
    )
    .expect("rule");
    s.stores
        .put_rule(plantd_shared::sites::BOOTSTRAP_ORG, &rule)
        .await
        .expect("put");
    let engine = Engine::new(&s.js, s.clock.clone()).await.expect("engine");
    let line = r#"{"level":"error","msg":"KV unavailable"}"#;
    let subject = "plantd._plantd.log.plantd.proxy";
    assert!(
        engine
            .handle(&[item(streams::LOGS, 1, subject, line)])
            .await
            .is_success()
    );
    let records = s.wait_records(1).await;
    assert_eq!(records[0].site, "_plantd");
    assert_eq!(records[0].org, plantd_shared::sites::BOOTSTRAP_ORG);
    assert_eq!(records[0].key, "source=plantd/proxy");
}

/// Engine and trigger, crashed by dropping them (their tasks are aborted
/// wherever they are: before the CAS, between it and the publish, or
/// before the outbox is cleared) and started again on the same stores.
#[tokio::test]
async fn crashes_at_random_points_write_each_transition_exactly_once() {
    let s = setup().await;
    s.rule(
        r#"{"id":"hot","condition":{"kind":"threshold","topic":"line1/temp","op":">","value":50}}"#,
    )
    .await;
    let settings = ConsumerSettings {
        max_wait: Duration::from_millis(5),
        ack_wait: Duration::from_millis(500),
        backoff: vec![Duration::from_millis(50)],
        ..ConsumerSettings::default()
    };
    let start = || async {
        let mut trigger = Trigger::new(s.js.clone());
        let running = plantd_alerts::start(
            &s.js,
            &mut trigger,
            s.clock.clone(),
            Duration::from_secs(3600),
            settings.clone(),
        )
        .await
        .expect("engine starts");
        (trigger, running)
    };
    let mut engine = Some(start().await);
    // A fixed pseudo-random run: values, and after which ones to crash
    // and how long into the handling.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut state, mut expected) = (false, Vec::new());
    let id = plantd_alerts::instance::instance_id(ORG, "hot", SITE, "");
    for _ in 0..40 {
        let hot = next() % 3 == 0;
        let seq = s
            .publish("plantd.plant1.up.line1.temp", if hot { "90" } else { "10" })
            .await;
        if hot != state {
            expected.push(if hot {
                (AlertState::Inactive, AlertState::Firing)
            } else {
                (AlertState::Firing, AlertState::Inactive)
            });
            state = hot;
        }
        if next() % 4 == 0 {
            // Crash-point injection (not synchronisation): let the
            // handler get 0-15 ms into the item, then kill everything.
            tokio::time::sleep(Duration::from_millis(next() % 16)).await;
            drop(engine.take());
            engine = Some(start().await);
        }
        // The item applied and its records confirmed before the next one,
        // so each value is its own evaluation.
        eventually(WAIT, &format!("item {seq} applied"), || async {
            let (st, _) = s.stores.instance(&id).await.ok()??;
            (st.applied.contains(seq) && st.outbox.is_empty()).then_some(())
        })
        .await;
    }
    let records = s.records().await;
    assert_eq!(transitions(&records), expected, "{records:#?}");
    let ids: std::collections::BTreeSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), records.len(), "no record twice");
    assert!(records.iter().enumerate().all(|(i, r)| r.n == i as u64 + 1));
    drop(engine);
}
