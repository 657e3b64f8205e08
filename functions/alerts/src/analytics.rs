//! Analytics conditions: what a result in `PLANTD_AGGREGATES` tells the
//! alert instances of rules with `{"kind": "analytics", "rule": "<name>"}`.
//!
//! A result is a [`plantd_analytics::Output`] as JSON on
//! `plantd.<site>.agg.<rule>.<key>` (decision 0027; stored once per id by
//! the analytics function, or by the edge's journal for rules placed at
//! the edge). Only results with a `signal` — pattern and anomaly
//! operators' — concern alerts: `fire` makes the condition of the (alert
//! rule, site, key) instance hold, `clear` ends it; windowed aggregates
//! (no signal) are passed over. The site comes from the subject (the
//! engine checks its organisation against the alert rule's), the rule and
//! the key from the body. Everything after — `for`, silences, acks,
//! repeats, the exactly-once record in `PLANTD_ALERTS` — is the instance
//! lifecycle every condition shares.

use plantd_analytics::{Output, Signal};
use plantd_shared::subject::{Channel, subject_to_topic};
use plantd_trigger::Item;
use time::OffsetDateTime;

use crate::instance::{Observation, evidence};
use crate::record::Evidence;

/// The label (and group key part) an analytics result's key is kept
/// under: analytics instances are always split by it.
pub const KEY_LABEL: &str = "key";

/// The output value shown as an alert's value when a result has it (the
/// anomaly detectors' score); otherwise its first value by name.
pub const SCORE: &str = "score";

/// True for a name an analytics rule may have (as
/// `plantd_analytics::Rule::validate` checks it): 1–64 ASCII letters,
/// digits, `_` or `-`.
pub fn valid_rule_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A signalled analytics result read from a `PLANTD_AGGREGATES` item.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalResult {
    /// The site (from the subject).
    pub site: String,
    /// The result.
    pub output: Output,
    /// Whether it fires (else it clears).
    pub fire: bool,
}

/// The signalled result in `item`, or `None` for a result without a
/// signal (a windowed aggregate) or an item that is not a result (logged:
/// a malformed result would be refused on every redelivery, so it is
/// passed over rather than failed).
pub fn read(item: &Item) -> Option<SignalResult> {
    let parsed = match subject_to_topic(&item.subject) {
        Ok(p) if p.channel == Channel::Agg => p,
        Ok(_) | Err(_) => {
            tracing::debug!(subject = %item.subject, "not an analytics result subject");
            return None;
        }
    };
    let output: Output = match serde_json::from_slice(&item.payload) {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(subject = %item.subject, sequence = item.sequence, error = %e, "an analytics result that is not an Output; passed over");
            return None;
        }
    };
    let fire = match output.signal? {
        Signal::Fire => true,
        Signal::Clear => false,
    };
    Some(SignalResult {
        site: parsed.site.as_str().to_owned(),
        output,
        fire,
    })
}

/// The value an alert shows for `output`: its `score`, else its first.
pub fn main_value(output: &Output) -> Option<f64> {
    output
        .values
        .get(SCORE)
        .or_else(|| output.values.values().next())
        .copied()
        .filter(|v| v.is_finite())
}

/// What `result` (item `item`) tells an instance, and its evidence: the
/// result's values as text (`{"score":4.2}`), its main value, its key as
/// the topic and its detection time (`window_end`).
pub fn observe(item: &Item, result: &SignalResult) -> (Observation, Evidence) {
    let o = &result.output;
    let value = main_value(o);
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(o.window_end) * 1_000_000)
        .unwrap_or(item.published);
    let text = serde_json::to_string(&o.values).unwrap_or_default();
    let ev = evidence(&item.stream, item.sequence, at, &o.key, value, Some(text));
    (
        Observation::Signal {
            fire: result.fire,
            value,
            at: o.window_end,
            episode: (o.window_start, o.revision),
        },
        ev,
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn item(subject: &str, output: &Output) -> Item {
        Item {
            stream: plantd_shared::streams::AGGREGATES.into(),
            sequence: 7,
            subject: subject.into(),
            headers: Default::default(),
            payload: serde_json::to_vec(output).expect("json").into(),
            published: OffsetDateTime::UNIX_EPOCH,
            delivered: 1,
            replay: None,
        }
    }

    fn output(signal: Option<Signal>) -> Output {
        Output {
            rule: "press_held".into(),
            key: "line1/press".into(),
            window_start: 1_000,
            window_end: 31_000,
            revision: 0,
            values: BTreeMap::from([("max_value".into(), 8.4), (SCORE.into(), 3.5)]),
            dropped_late: 0,
            signal,
        }
    }

    #[test]
    fn signalled_results_are_read_and_aggregates_passed_over() {
        let subject = "plantd.plant1.agg.press_held.line1.press";
        let fired = read(&item(subject, &output(Some(Signal::Fire)))).expect("a signal");
        assert_eq!(fired.site, "plant1");
        assert!(fired.fire);
        let (obs, ev) = observe(&item(subject, &fired.output), &fired);
        assert_eq!(
            obs,
            Observation::Signal {
                fire: true,
                value: Some(3.5),
                at: 31_000,
                episode: (1_000, 0),
            }
        );
        assert_eq!(ev.topic, "line1/press");
        assert_eq!(ev.time.unix_timestamp(), 31);
        assert!(
            read(&item(subject, &output(None))).is_none(),
            "an aggregate"
        );
        assert!(
            read(&item(
                "plantd.plant1.up.line1.press",
                &output(Some(Signal::Fire))
            ))
            .is_none(),
            "not a result subject"
        );
        let mut junk = item(subject, &output(None));
        junk.payload = "42".into();
        assert!(read(&junk).is_none());
    }

    #[test]
    fn an_analytics_instance_key_fits_whatever_the_result_key_holds() {
        let rule = crate::Rule::from_json(
            br#"{"id":"a","condition":{"kind":"analytics","rule":"press_held"}}"#,
        )
        .expect("valid");
        let group = BTreeMap::from([(KEY_LABEL.to_owned(), "dev=3,line=1".to_owned())]);
        assert!(crate::instance::key_fits(
            &rule,
            &crate::instance::group_key(&group)
        ));
        assert!(!crate::instance::key_fits(&rule, ""));
        assert!(!crate::instance::key_fits(&rule, "topic=a/b"));
    }

    #[test]
    fn rule_names_follow_the_analytics_rules() {
        assert!(valid_rule_name("Line1_temp-avg"));
        assert!(!valid_rule_name(""));
        assert!(!valid_rule_name("a.b"));
        assert!(!valid_rule_name(&"x".repeat(65)));
    }
}
