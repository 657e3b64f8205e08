//! The analytics function against a real nats-server: results equal the
//! engine's own on the same readings (each stored once, also across a
//! restart), rules change without a restart, another organisation's rule
//! never runs on a site, and the idle clock closes windows without new
//! readings.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream;
use plantd_analytics::{Engine, Event, Output, Rule, Source, StoredRule};
use plantd_analytics_function::{Running, Settings, results};
use plantd_shared::headers;
use plantd_shared::sites::Sites;
use plantd_shared::streams;
use plantd_shared::subject::Site;
use plantd_testkit::wait::drained;
use plantd_testkit::{Nats, eventually};
use plantd_trigger::{ConsumerSettings, Trigger};

const ORG: &str = "acme";
const SITE: &str = "plant1";
const DURABLE: &str = "analytics_PLANTD_TELEMETRY";
const WAIT: Duration = Duration::from_secs(30);
/// 2026-12-06T10:00:00Z.
const T0: i64 = 1_796_551_200_000;

fn rule(name: &str, sql: &str) -> Rule {
    Rule::from_sql(name, sql).expect("a valid rule")
}

async fn put_rule(js: &jetstream::Context, org: &str, rule: &Rule) {
    let stored = StoredRule {
        org: org.to_owned(),
        sites: Vec::new(),
        at: plantd_analytics::Placement::Cloud,
        enabled: true,
        source: Source::Json,
        rule: rule.clone(),
        updated_by: "test".into(),
        updated_at: String::new(),
    };
    js.get_key_value(streams::ANALYTICS_RULES_BUCKET)
        .await
        .expect("rules bucket")
        .put(
            stored.key(),
            serde_json::to_vec(&stored).expect("json").into(),
        )
        .await
        .expect("store the rule");
}

async fn setup() -> (Nats, jetstream::Context) {
    let nats = Nats::start_with_streams().await;
    let js = nats.jetstream().await;
    Sites::open(&js)
        .await
        .expect("sites")
        .register(&Site::new(SITE).expect("site"), ORG, "")
        .await
        .expect("register the site");
    (nats, js)
}

async fn start(js: &jetstream::Context, settings: Settings) -> (Trigger, Running) {
    let mut trigger = Trigger::new(js.clone());
    let base = ConsumerSettings {
        ack_wait: Duration::from_secs(1),
        ..ConsumerSettings::default()
    };
    let running = plantd_analytics_function::start(js, &mut trigger, settings, &base)
        .await
        .expect("analytics starts");
    (trigger, running)
}

fn no_idle() -> Settings {
    Settings {
        idle_close: None,
        ..Settings::default()
    }
}

/// One reading as published: (topic, payload, received at).
type Reading = (String, String, i64);

/// Publishes readings on `site`; returns their stream sequences.
async fn publish(js: &jetstream::Context, site: &str, readings: &[Reading]) -> Vec<u64> {
    let mut acks = Vec::new();
    for (topic, payload, at) in readings {
        let mut h = HeaderMap::new();
        h.insert(headers::RECEIVED, headers::format_time(*at as u64).as_str());
        let subject = format!("plantd.{site}.up.{}", topic.replace('/', "."));
        acks.push(
            js.publish_with_headers(subject, h, payload.clone().into())
                .await
                .expect("publish"),
        );
    }
    let mut seqs = Vec::new();
    for a in acks {
        seqs.push(a.await.expect("stored").sequence);
    }
    seqs
}

/// The results the engine computes itself, by message id.
fn reference(rules: &[Rule], readings: &[(Reading, u64)]) -> BTreeMap<String, Output> {
    let mut engine = Engine::new(rules.to_vec()).expect("engine");
    let mut out = Vec::new();
    for ((topic, payload, at), seq) in readings {
        engine.process_into(
            &Event {
                topic,
                payload: payload.as_bytes(),
                received_at: *at,
                stream_seq: *seq,
            },
            &mut out,
        );
    }
    out.into_iter()
        .map(|o| (format!("{SITE}:{}", o.id()), o))
        .collect()
}

/// Stored results by id; panics on a duplicate.
async fn stored(js: &jetstream::Context, site: &str) -> BTreeMap<String, Output> {
    let all = results::read(js, &format!("plantd.{site}.agg.>"))
        .await
        .expect("read results");
    let mut by_id = BTreeMap::new();
    for r in all {
        assert!(
            by_id.insert(r.id.clone(), r.output).is_none(),
            "result {} stored twice",
            r.id
        );
    }
    by_id
}

/// Readings on three machines, one every 100 ms of event time, with a
/// late one every 17th (1.5 s behind: a revision of a closed window).
fn readings(from: usize, to: usize) -> Vec<Reading> {
    (from..to)
        .map(|i| {
            let machine = i % 3;
            let mut at = T0 + (i as i64) * 100;
            if i % 17 == 0 && i > 20 {
                at -= 1_500;
            }
            (
                format!("line1/m{machine}/temp"),
                format!("{}", 20 + (i * 7) % 13),
                at,
            )
        })
        .collect()
}

fn rules() -> Vec<Rule> {
    vec![
        rule(
            "temp_1s",
            r#"SELECT avg(value), max(value), count(*) FROM "line1/+/temp" WITH (lateness = '3s') GROUP BY topic, TUMBLE(1s)"#,
        ),
        rule(
            "all_hop",
            r#"SELECT sum(value), min(value) FROM "line1/#" WITH (delay = '200ms', lateness = '2s') GROUP BY '*', HOP(2s, 1s)"#,
        ),
    ]
}

#[tokio::test]
async fn results_equal_the_engines_own_each_stored_once_across_a_restart() {
    let (_nats, js) = setup().await;
    for r in rules() {
        put_rule(&js, ORG, &r).await;
    }
    // Another organisation's rule of the same name never runs here.
    put_rule(
        &js,
        "other",
        &rule(
            "temp_1s",
            r##"SELECT count(*) FROM "#" GROUP BY topic, TUMBLE(1s)"##,
        ),
    )
    .await;
    let first = readings(0, 300);
    let second = readings(300, 600);

    let (trigger, running) = start(&js, no_idle()).await;
    let seqs = publish(&js, SITE, &first).await;
    drained(&js, streams::TELEMETRY, DURABLE, WAIT).await;
    drop(running);
    trigger.shutdown().await;

    let (trigger, running) = start(&js, no_idle()).await;
    let seqs2 = publish(&js, SITE, &second).await;
    drained(&js, streams::TELEMETRY, DURABLE, WAIT).await;

    let all: Vec<(Reading, u64)> = first
        .into_iter()
        .chain(second)
        .zip(seqs.into_iter().chain(seqs2))
        .collect();
    let want = reference(&rules(), &all);
    assert!(want.len() > 250, "the run makes results ({})", want.len());
    assert!(
        want.values().any(|o| o.revision > 0),
        "late readings make revisions"
    );
    let got = stored(&js, SITE).await;
    assert_eq!(got.len(), want.len(), "as many results as the reference");
    assert_eq!(got, want);
    let m = running
        .analytics
        .metrics()
        .figures(SITE, "temp_1s")
        .expect("figures");
    assert_eq!(m.keys, 3);
    assert!(
        running
            .analytics
            .metrics()
            .prometheus()
            .contains("plantd_analytics_keys{site=\"plant1\",rule=\"temp_1s\"} 3")
    );
    drop(running);
    trigger.shutdown().await;
}

#[tokio::test]
async fn a_changed_or_deleted_rule_applies_without_a_restart() {
    let (_nats, js) = setup().await;
    let v1 = rule(
        "count",
        r#"SELECT count(*) FROM "line1/+/temp" GROUP BY '*', TUMBLE(1s)"#,
    );
    put_rule(&js, ORG, &v1).await;
    let (trigger, _running) = start(&js, no_idle()).await;
    publish(&js, SITE, &readings(0, 50)).await;
    drained(&js, streams::TELEMETRY, DURABLE, WAIT).await;
    let before = stored(&js, SITE).await;
    assert!(before.values().all(|o| o.values.contains_key("count")));
    assert!(!before.is_empty());

    // Changed: 2 s windows and a new output, from the next readings on.
    let v2 = rule(
        "count",
        r#"SELECT count(*) AS n FROM "line1/+/temp" GROUP BY '*', TUMBLE(2s)"#,
    );
    put_rule(&js, ORG, &v2).await;
    // The function learns of the change through its rule watch, so the
    // old definition may still take the first readings sent after it.
    // Each attempt sends the next 3 s of readings, as a live device would:
    // the new definition's windows then close however many readings the
    // old one took (repeating the same instants would leave its first
    // window, opened by a reading past the last instant sent, never closed).
    let attempt = std::sync::atomic::AtomicUsize::new(0);
    eventually(WAIT, "the changed rule to produce results", || {
        let js = js.clone();
        let from = 1000 + 30 * attempt.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        async move {
            let more = readings(from, from + 30);
            publish(&js, SITE, &more).await;
            let now = stored(&js, SITE).await;
            now.values()
                .any(|o| o.values.contains_key("n") && o.window_end - o.window_start == 2_000)
                .then_some(())
        }
    })
    .await;

    // Deleted: no more results, its checkpoints are gone.
    js.get_key_value(streams::ANALYTICS_RULES_BUCKET)
        .await
        .expect("bucket")
        .delete(format!("{ORG}.count"))
        .await
        .expect("delete");
    let state = js
        .get_key_value(streams::ANALYTICS_STATE_BUCKET)
        .await
        .expect("state bucket");
    eventually(WAIT, "the deleted rule's checkpoints to be removed", || {
        let js = js.clone();
        let state = state.clone();
        async move {
            publish(&js, SITE, &readings(2000, 2003)).await;
            drained(&js, streams::TELEMETRY, DURABLE, WAIT).await;
            state
                .entry(format!("{SITE}.count.h"))
                .await
                .expect("read")
                .is_none_or(|e| e.operation != async_nats::jetstream::kv::Operation::Put)
                .then_some(())
        }
    })
    .await;
    let settled = stored(&js, SITE).await.len();
    publish(&js, SITE, &readings(3000, 3050)).await;
    drained(&js, streams::TELEMETRY, DURABLE, WAIT).await;
    assert_eq!(
        stored(&js, SITE).await.len(),
        settled,
        "a deleted rule emits nothing"
    );
    trigger.shutdown().await;
}

#[tokio::test]
async fn the_idle_clock_closes_the_last_window_without_new_readings() {
    let (_nats, js) = setup().await;
    put_rule(
        &js,
        ORG,
        &rule(
            "per_second",
            r#"SELECT count(*) FROM "line1/+/temp" GROUP BY topic, TUMBLE(1s)"#,
        ),
    )
    .await;
    let settings = Settings {
        idle_close: Some(Duration::from_millis(300)),
        tick: Duration::from_millis(50),
        ..Settings::default()
    };
    let (trigger, _running) = start(&js, settings).await;
    let now = headers::now_ms() as i64;
    // Three readings in one second of event time, then silence.
    let second = now - now.rem_euclid(1_000);
    let readings: Vec<Reading> = (0..3)
        .map(|i| ("line1/m1/temp".to_owned(), "1".to_owned(), second + i * 10))
        .collect();
    publish(&js, SITE, &readings).await;
    drained(&js, streams::TELEMETRY, DURABLE, WAIT).await;
    let result = eventually(WAIT, "the idle clock to close the window", || {
        let js = js.clone();
        async move { stored(&js, SITE).await.into_values().next() }
    })
    .await;
    assert_eq!(result.window_start, second);
    assert_eq!(result.values["count"], 3.0);
    trigger.shutdown().await;
}
