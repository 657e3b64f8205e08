//! Property tests for the contracts every part relies on: the topic ⇄
//! subject mapping is reversible and yields valid NATS subjects, and MQTT
//! filter matching agrees with NATS matching of the mapped subjects.

use plantd_shared::claims::{MqttGrant, Permissions};
use plantd_shared::subject::{
    Channel, Site, filter_to_subjects, subject_matches, subject_to_topic, topic_to_subject,
};
use plantd_shared::topic::{Filter, Topic};
use proptest::prelude::*;

/// Any valid MQTT topic: levels of arbitrary characters (including `.`,
/// `*`, `>`, `%`, white space, control and non-ASCII), never `+`, `#`, NUL.
fn any_topic() -> impl Strategy<Value = Topic> {
    let level = "[^+#/\u{0}]{0,6}";
    prop::collection::vec(level, 1..6)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("MQTT topics are non-empty", |t| !t.is_empty())
        .prop_map(|t| Topic::new(t).expect("generated topics are valid"))
}

/// Levels from a small alphabet so that filters and topics often match.
const LEVELS: [&str; 6] = ["a", "b", "", "x.y", "$s", "sp ace"];

fn small_topic() -> impl Strategy<Value = Topic> {
    prop::collection::vec(prop::sample::select(&LEVELS[..]), 1..5)
        .prop_map(|l| l.join("/"))
        .prop_filter("non-empty", |t| !t.is_empty())
        .prop_map(|t| Topic::new(t).expect("valid"))
}

fn small_filter() -> impl Strategy<Value = Filter> {
    let level = prop_oneof![
        3 => prop::sample::select(&LEVELS[..]).prop_map(str::to_owned),
        2 => Just("+".to_owned()),
    ];
    (prop::collection::vec(level, 0..5), any::<bool>())
        .prop_map(|(mut l, hash)| {
            if hash {
                l.push("#".into());
            }
            l.join("/")
        })
        .prop_filter("non-empty", |f| !f.is_empty())
        .prop_map(|f| Filter::new(f).expect("valid"))
}

fn site() -> Site {
    Site::new("site-1").expect("site")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn topic_subject_round_trip(topic in any_topic()) {
        for channel in Channel::ALL {
            let subject = topic_to_subject(&site(), channel, &topic);
            let parsed = subject_to_topic(&subject).expect("our own subjects parse");
            prop_assert_eq!(&parsed.topic, &topic);
            prop_assert_eq!(parsed.channel, channel);
            prop_assert_eq!(parsed.site, site());
        }
    }

    #[test]
    fn mapped_subjects_are_valid_nats_subjects(topic in any_topic()) {
        let subject = topic_to_subject(&site(), Channel::Up, &topic);
        let tokens: Vec<&str> = subject.split('.').collect();
        // One token per MQTT level, after plantd.<site>.up
        prop_assert_eq!(tokens.len(), 3 + topic.levels().count());
        for t in tokens {
            prop_assert!(!t.is_empty(), "empty token in {}", subject);
            prop_assert!(!t.contains(['*', '>']), "wildcard in {}", subject);
            prop_assert!(!t.chars().any(char::is_whitespace), "space in {}", subject);
            prop_assert!(!t.chars().any(char::is_control), "control char in {}", subject);
        }
    }

    #[test]
    fn distinct_topics_map_to_distinct_subjects(a in any_topic(), b in any_topic()) {
        let sa = topic_to_subject(&site(), Channel::Up, &a);
        let sb = topic_to_subject(&site(), Channel::Up, &b);
        prop_assert_eq!(a == b, sa == sb);
    }

    #[test]
    fn filter_matching_agrees_with_nats(filter in small_filter(), topic in small_topic()) {
        let mqtt = filter.matches(&topic);
        let subject = topic_to_subject(&site(), Channel::Up, &topic);
        let nats = filter_to_subjects(&site(), Channel::Up, &filter)
            .iter()
            .any(|p| subject_matches(p, &subject));
        let leading_wildcard = filter.as_str().starts_with(['+', '#']);
        if topic.is_system() && leading_wildcard {
            // MQTT's $-rule has no NATS counterpart: NATS may match more.
            prop_assert!(!mqtt);
        } else {
            prop_assert_eq!(mqtt, nats, "filter {} topic {} subject {}", filter, topic, subject);
        }
    }

    #[test]
    fn coverage_is_sound(narrow in small_filter(), wide in small_filter(), topic in small_topic()) {
        if narrow.is_covered_by(&wide) && narrow.matches(&topic) {
            prop_assert!(wide.matches(&topic), "{} covered by {} but {} escapes", narrow, wide, topic);
        }
    }

    #[test]
    fn every_filter_covers_itself(f in small_filter()) {
        prop_assert!(f.is_covered_by(&f));
    }

    #[test]
    fn publish_permission_is_filter_matching(filter in small_filter(), topic in small_topic()) {
        let grants = [(
            "site-1".to_owned(),
            MqttGrant { publish: vec![filter.to_string()], subscribe: vec![] },
        )].into_iter().collect();
        let p = Permissions::new(&[], &grants);
        prop_assert_eq!(p.can_publish(&site(), &topic), filter.matches(&topic));
        prop_assert!(!p.can_publish(&Site::new("other").expect("site"), &topic));
    }
}
