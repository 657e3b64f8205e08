//! The lifecycle without NATS: transitions, no-data, applied sequences.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::record::{AlertRecord, AlertState, RecordKind};
use crate::rule::Rule;

fn rule(json: &str) -> Rule {
    Rule::from_json(json.as_bytes()).expect("rule")
}

fn t0() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("time")
}

fn states(s: &InstanceState) -> Vec<(AlertState, AlertState)> {
    s.outbox
        .iter()
        .filter(|r| r.kind == RecordKind::Transition)
        .map(|r| (r.from, r.to))
        .collect()
}

#[test]
fn threshold_goes_pending_then_firing_after_for_then_resolves() {
    let r = rule(
        r#"{"id":"hot","for":"10s","condition":{"kind":"threshold","topic":"t","op":">","value":80}}"#,
    );
    let mut s = InstanceState::new("o", &r, "a", "", &BTreeMap::new(), t0());
    let hot = Observation::Reading {
        value: Some(90.0),
        holds: true,
    };
    assert!(s.observe(&r, 1, &hot, None, t0()));
    assert!(!s.observe(&r, 1, &hot, None, t0()), "applied once");
    s.evaluate(&r, &[], t0());
    assert_eq!(s.state, AlertState::Pending);
    s.evaluate(&r, &[], t0() + Duration::from_secs(9));
    assert_eq!(s.state, AlertState::Pending);
    s.evaluate(&r, &[], t0() + Duration::from_secs(10));
    assert_eq!(s.state, AlertState::Firing);
    let cool = Observation::Reading {
        value: Some(20.0),
        holds: false,
    };
    s.observe(&r, 2, &cool, None, t0() + Duration::from_secs(11));
    s.evaluate(&r, &[], t0() + Duration::from_secs(11));
    assert_eq!(
        states(&s),
        vec![
            (AlertState::Inactive, AlertState::Pending),
            (AlertState::Pending, AlertState::Firing),
            (AlertState::Firing, AlertState::Inactive)
        ]
    );
    assert!(s.outbox[2].is_resolution());
    let ids: Vec<_> = s.outbox.iter().map(|r| r.id.clone()).collect();
    assert!(ids[0].ends_with(":1") && ids[2].ends_with(":3"), "{ids:?}");
}

#[test]
fn no_data_is_its_own_state() {
    let r = rule(
        r#"{"id":"hot","no_data":{"after":"30s"},"condition":{"kind":"threshold","topic":"t","op":">","value":80}}"#,
    );
    let mut s = InstanceState::new("o", &r, "a", "", &BTreeMap::new(), t0());
    s.observe(
        &r,
        1,
        &Observation::Reading {
            value: Some(90.0),
            holds: true,
        },
        None,
        t0(),
    );
    s.evaluate(&r, &[], t0());
    assert_eq!(s.state, AlertState::Firing);
    s.evaluate(&r, &[], t0() + Duration::from_secs(30));
    assert_eq!(s.state, AlertState::NoData);
    assert!(!s.outbox.iter().any(AlertRecord::is_resolution));
}

#[test]
fn applied_folds_into_its_floor() {
    let mut a = Applied::default();
    for seq in 1..=(MAX_APPLIED as u64 + 10) {
        a.insert(seq);
    }
    assert_eq!(a.above.len(), MAX_APPLIED);
    assert!(a.contains(1) && a.contains(10) && !a.contains(MAX_APPLIED as u64 + 11));
}

fn seen(s: &mut InstanceState, r: &Rule, seq: u64, at: OffsetDateTime) {
    s.observe(r, seq, &Observation::Seen { matched: true }, None, at);
}

#[test]
fn m_of_n_windows_and_rates() {
    // At least 2 of the last 3 one-minute windows with more than 1 line.
    let r = rule(
        r#"{"id":"flaky","condition":{"kind":"log_count","match":"","window":"1m","threshold":1,"windows":{"m":2,"n":3}}}"#,
    );
    let mut s = InstanceState::new("o", &r, "a", "", &BTreeMap::new(), t0());
    seen(&mut s, &r, 1, t0());
    seen(&mut s, &r, 2, t0() + Duration::from_secs(1));
    s.evaluate(&r, &[], t0() + Duration::from_secs(2));
    assert_eq!(s.state, AlertState::Inactive, "one window of three");
    let later = t0() + Duration::from_secs(70);
    seen(&mut s, &r, 3, later);
    seen(&mut s, &r, 4, later);
    s.evaluate(&r, &[], later);
    assert_eq!(s.state, AlertState::Firing, "two windows of three");
    // Both busy windows slide out after three minutes.
    s.evaluate(&r, &[], t0() + Duration::from_secs(200));
    assert_eq!(s.state, AlertState::Inactive);

    // A rate: more than 0.1 lines/s over 10 s.
    let r = rule(
        r#"{"id":"rate","condition":{"kind":"log_count","match":"","window":"10s","measure":"rate","threshold":0.1}}"#,
    );
    let mut s = InstanceState::new("o", &r, "a", "", &BTreeMap::new(), t0());
    seen(&mut s, &r, 1, t0());
    s.evaluate(&r, &[], t0());
    assert_eq!(
        s.state,
        AlertState::Inactive,
        "0.1/s is not more than 0.1/s"
    );
    seen(&mut s, &r, 2, t0());
    s.evaluate(&r, &[], t0());
    assert_eq!(s.state, AlertState::Firing);
    assert_eq!(s.outbox[0].value, Some(0.2));
}

#[test]
fn keys_fit_the_grouping_they_were_made_by() {
    let by_topic = rule(
        r#"{"id":"a","group_by":["site","topic"],"condition":{"kind":"threshold","topic":"t","op":">","value":1}}"#,
    );
    let per_site =
        rule(r#"{"id":"a","condition":{"kind":"threshold","topic":"t","op":">","value":1}}"#);
    assert!(key_fits(&by_topic, "topic=line1/temp"));
    assert!(!key_fits(&by_topic, ""));
    assert!(key_fits(&per_site, ""));
    assert!(!key_fits(&per_site, "topic=x"));
    // A topic holding ',' and '=' is still one topic.
    let odd = group_key(&BTreeMap::from([(
        "topic".to_owned(),
        "line1/a=b,c".to_owned(),
    )]));
    assert_eq!(odd, "topic=line1/a=b,c");
    assert!(key_fits(&by_topic, &odd));
    assert!(!key_fits(&per_site, &odd));
    let by_source = rule(
        r#"{"id":"a","group_by":["source"],"condition":{"kind":"log_count","match":"","window":"1m","threshold":1}}"#,
    );
    assert!(key_fits(&by_source, "source=pump,unit=3"));
    assert!(!key_fits(&by_source, &odd));
}

fn reading(v: f64, holds: bool) -> Observation {
    Observation::Reading {
        value: Some(v),
        holds,
    }
}

fn signal(fire: bool, at: i64, revision: u32) -> Observation {
    Observation::Signal {
        fire,
        value: Some(1.0),
        at,
        episode: (0, revision),
    }
}

/// Milliseconds since the epoch of `t0() + secs`.
fn ms(secs: i64) -> i64 {
    (t0().unix_timestamp() + secs) * 1000
}

#[test]
fn a_trip_and_a_clear_in_one_batch_fire_and_resolve() {
    let r =
        rule(r#"{"id":"hot","condition":{"kind":"threshold","topic":"t","op":">","value":80}}"#);
    let mut s = InstanceState::new("o", &r, "a", "", &BTreeMap::new(), t0());
    let batch = [
        (1, reading(90.0, true), None),
        (2, reading(95.0, true), None),
        (3, reading(20.0, false), None),
    ];
    assert!(s.apply(&r, &batch, &[], t0()));
    assert_eq!(
        states(&s),
        vec![
            (AlertState::Inactive, AlertState::Firing),
            (AlertState::Firing, AlertState::Inactive)
        ]
    );
    assert_eq!(s.outbox[0].value, Some(90.0), "the reading that tripped");
    assert_eq!(s.outbox[1].value, Some(20.0), "the reading that cleared");
    assert_eq!(s.state, AlertState::Inactive);
    assert!(
        !s.apply(&r, &batch, &[], t0()),
        "a redelivery changes nothing"
    );
    assert_eq!(s.outbox.len(), 2);

    // With a `for`, readings are judged at the batch's time: a trip
    // cleared in the same batch never held, so it never fires.
    let slow = rule(
        r#"{"id":"hot","for":"10s","condition":{"kind":"threshold","topic":"t","op":">","value":80}}"#,
    );
    let mut s = InstanceState::new("o", &slow, "a", "", &BTreeMap::new(), t0());
    s.apply(&slow, &batch, &[], t0());
    assert_eq!(
        states(&s),
        vec![
            (AlertState::Inactive, AlertState::Pending),
            (AlertState::Pending, AlertState::Inactive)
        ]
    );
}

#[test]
fn a_fire_and_its_clear_in_one_batch_fire_and_resolve() {
    let r = rule(r#"{"id":"a","condition":{"kind":"analytics","rule":"seq"}}"#);
    let mut s = InstanceState::new("o", &r, "a", "key=k", &BTreeMap::new(), t0());
    // A `followed_by` match: fire and clear detected at the same instant.
    let batch = [
        (1, signal(true, ms(0), 0), None),
        (2, signal(false, ms(0), 1), None),
    ];
    assert!(s.apply(&r, &batch, &[], t0() + Duration::from_secs(5)));
    assert_eq!(
        states(&s),
        vec![
            (AlertState::Inactive, AlertState::Firing),
            (AlertState::Firing, AlertState::Inactive)
        ]
    );
    assert!(!s.apply(&r, &batch, &[], t0() + Duration::from_secs(6)));
    // The fire retried after its clear (same instant, lower revision)
    // does not fire again.
    s.apply(
        &r,
        &[(3, signal(true, ms(0), 0), None)],
        &[],
        t0() + Duration::from_secs(7),
    );
    assert_eq!(s.state, AlertState::Inactive);
    assert_eq!(s.outbox.len(), 2);
}

#[test]
fn an_analytics_for_is_measured_in_the_signals_event_time() {
    let r = rule(r#"{"id":"a","for":"10s","condition":{"kind":"analytics","rule":"seq"}}"#);
    // Cleared 5 s after the fire (both delivered a minute later): never
    // held for 10 s, so pending → inactive and no firing.
    let mut s = InstanceState::new("o", &r, "a", "key=k", &BTreeMap::new(), t0());
    let late = t0() + Duration::from_secs(60);
    let short = [
        (1, signal(true, ms(0), 0), None),
        (2, signal(false, ms(5), 1), None),
    ];
    s.apply(&r, &short, &[], late);
    assert_eq!(
        states(&s),
        vec![
            (AlertState::Inactive, AlertState::Pending),
            (AlertState::Pending, AlertState::Inactive)
        ]
    );
    // Cleared 20 s after the fire: it held for 10 s, so it fired, then
    // resolved.
    let mut s = InstanceState::new("o", &r, "a", "key=k", &BTreeMap::new(), t0());
    let long = [
        (1, signal(true, ms(0), 0), None),
        (2, signal(false, ms(20), 1), None),
    ];
    s.apply(&r, &long, &[], late);
    assert_eq!(
        states(&s),
        vec![
            (AlertState::Inactive, AlertState::Pending),
            (AlertState::Pending, AlertState::Firing),
            (AlertState::Firing, AlertState::Inactive)
        ]
    );
    // A fire alone, delivered after `for` has passed in event time, fires
    // at once; one delivered on time waits for the clock.
    let mut s = InstanceState::new("o", &r, "a", "key=k", &BTreeMap::new(), t0());
    s.apply(&r, &[(1, signal(true, ms(0), 0), None)], &[], late);
    assert_eq!(s.state, AlertState::Firing);
    let mut s = InstanceState::new("o", &r, "a", "key=k", &BTreeMap::new(), t0());
    s.apply(&r, &[(1, signal(true, ms(0), 0), None)], &[], t0());
    assert_eq!(s.state, AlertState::Pending);
    s.evaluate(&r, &[], t0() + Duration::from_secs(10));
    assert_eq!(s.state, AlertState::Firing);
}

#[test]
fn a_changed_threshold_applies_to_the_stored_reading() {
    let r =
        rule(r#"{"id":"hot","condition":{"kind":"threshold","topic":"t","op":">","value":80}}"#);
    let mut s = InstanceState::new("o", &r, "a", "", &BTreeMap::new(), t0());
    s.observe(
        &r,
        1,
        &Observation::Reading {
            value: Some(70.0),
            holds: false,
        },
        None,
        t0(),
    );
    s.evaluate(&r, &[], t0());
    assert_eq!(s.state, AlertState::Inactive);
    let lower =
        rule(r#"{"id":"hot","condition":{"kind":"threshold","topic":"t","op":">","value":60}}"#);
    s.evaluate(&lower, &[], t0() + Duration::from_secs(1));
    assert_eq!(s.state, AlertState::Firing);
}

#[test]
fn a_firing_announced_under_a_silence_is_announced_again_when_the_silence_ends() {
    let r =
        rule(r#"{"id":"hot","condition":{"kind":"threshold","topic":"t","op":">","value":80}}"#);
    let mut s = InstanceState::new("o", &r, "a", "", &BTreeMap::new(), t0());
    let silence = crate::silence::Silence {
        id: "m1".into(),
        matchers: vec!["site=a".parse().expect("matcher")],
        starts: t0(),
        ends: t0() + Duration::from_secs(60),
        comment: "maintenance".into(),
        created_by: "op".into(),
    };
    let silences = [silence];
    let hot = Observation::Reading {
        value: Some(90.0),
        holds: true,
    };
    s.observe(&r, 1, &hot, None, t0());
    s.evaluate(&r, &silences, t0());
    assert_eq!(s.state, AlertState::Firing);
    assert!(s.outbox.last().expect("firing record").silenced);
    // Still silenced: nothing new.
    s.evaluate(&r, &silences, t0() + Duration::from_secs(30));
    assert_eq!(s.outbox.len(), 1);
    // The silence ended, the alert still fires: one repeat, not silenced.
    s.evaluate(&r, &silences, t0() + Duration::from_secs(61));
    assert_eq!(s.outbox.len(), 2);
    let again = s.outbox.last().expect("repeat");
    assert_eq!(again.kind, RecordKind::Repeat);
    assert!(!again.silenced);
    // Only once (the rule has no repeat interval).
    s.evaluate(&r, &silences, t0() + Duration::from_secs(120));
    assert_eq!(s.outbox.len(), 2);
}
