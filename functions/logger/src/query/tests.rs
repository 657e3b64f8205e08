use serde_json::json;
use time::OffsetDateTime;

use super::*;
use crate::record::{Format, Level};

fn rec(
    site: &str,
    source: &str,
    level: Level,
    message: &str,
    fields: serde_json::Value,
) -> LogRecord {
    LogRecord {
        stream: "PLANTD_LOGS".into(),
        sequence: 1,
        time: OffsetDateTime::UNIX_EPOCH,
        site: site.into(),
        source: source.into(),
        level,
        message: message.into(),
        fields: fields.as_object().cloned().unwrap_or_default(),
        format: Format::Json,
        parse_error: None,
    }
}

fn m(filter: &str, r: &LogRecord) -> bool {
    parse_filter(filter)
        .unwrap_or_else(|e| panic!("{filter}: {e}"))
        .matches(r)
}

#[test]
fn selector_site_source_glob_and_minimum_level() {
    let r = rec("plant1", "line1/plc", Level::Warn, "overheat", json!({}));
    assert!(m("", &r));
    assert!(m("{}", &r));
    assert!(m(r#"{site="plant1"}"#, &r));
    assert!(!m(r#"{site="plant2"}"#, &r));
    assert!(m(r#"{site="plant1", source="line1/*"}"#, &r));
    assert!(m(r#"{source="line?/plc"}"#, &r));
    assert!(!m(r#"{source="line2/*"}"#, &r));
    assert!(m(r#"{source!="line2/*"}"#, &r));
    assert!(m(r#"{source=~"line[0-9]/.*"}"#, &r));
    assert!(!m(r#"{source=~"line"}"#, &r), "label regexes are anchored");
    assert!(m(r#"{source!~"gw.*"}"#, &r));
    assert!(m(r#"{level>="warn"}"#, &r));
    assert!(m(r#"{level>="warning"}"#, &r));
    assert!(!m(r#"{level>="error"}"#, &r));
    assert!(m(r#"{level="warn"}"#, &r));
    let f = parse_filter(r#"{site="plant1", source="line1/plc"}"#).expect("parse");
    assert_eq!(
        (f.exact_site(), f.exact_source()),
        (Some("plant1"), Some("line1/plc"))
    );
    assert_eq!(
        parse_filter(r#"{source="a*"}"#).expect("p").exact_source(),
        None
    );
}

#[test]
fn line_filters_look_at_message_and_field_values() {
    let r = rec(
        "s",
        "a",
        Level::Error,
        "pump 2 overheat at 81C",
        json!({"zone": "north", "n": 42}),
    );
    assert!(m(r#"|= "overheat""#, &r));
    assert!(!m(r#"|= "Overheat""#, &r), "case-sensitive");
    assert!(m(r#"|~ "(?i)OVERHEAT""#, &r));
    assert!(m(r#"|= "north""#, &r), "field values count");
    assert!(m(r#"|= "42""#, &r));
    assert!(m(r#"!= "test""#, &r));
    assert!(!m(r#"!= "pump""#, &r));
    assert!(m(r#"|~ "pump \d+""#, &r));
    assert!(m(r#"!~ "valve \d+""#, &r));
    assert!(m(r#"|= "pump" |= "81C" != "valve""#, &r));
    assert!(m(r#"|= `at 81C`"#, &r));
}

#[test]
fn predicates_on_fields_numbers_strings_and_or() {
    let r = rec(
        "s",
        "a",
        Level::Warn,
        "hot",
        json!({"temp": 81.5, "unit": "C", "count": "7", "ok": false, "motor": {"rpm": 1500}}),
    );
    assert!(m("| json | temp > 80", &r));
    assert!(m("| logfmt | temp > 80", &r));
    assert!(!m("| temp > 90", &r));
    assert!(m("| temp >= 81.5 and temp <= 81.5", &r));
    assert!(m(r#"| unit = "C""#, &r));
    assert!(m(r#"| unit == C"#, &r));
    assert!(m(r#"| unit != "F""#, &r));
    assert!(m("| count > 5", &r), "numeric text compares as a number");
    assert!(m("| ok = false", &r));
    assert!(
        m("| motor.rpm > 1000", &r),
        "dotted names reach into objects"
    );
    assert!(m(r#"| unit =~ "[CF]""#, &r));
    assert!(m(r#"| unit !~ "K""#, &r));
    assert!(m(r#"| temp > 90 or unit = "C""#, &r));
    assert!(!m(r#"| temp > 90 or unit = "F""#, &r));
    assert!(m(
        r#"| temp > 90 or unit = "F" or (temp > 80 and unit = "C")"#,
        &r
    ));
    assert!(m(r#"| temp > 80, unit = "C""#, &r));
    assert!(m("| level >= warn", &r));
    assert!(!m("| level > warn", &r));
    assert!(m(r#"| msg = "hot""#, &r));
    assert!(m(r#"| format = json"#, &r));
    // A missing field only matches the negative operators.
    assert!(!m("| pressure > 1", &r));
    assert!(!m(r#"| pressure = "x""#, &r));
    assert!(m(r#"| pressure != "x""#, &r));
    // A non-numeric value never compares as a number.
    assert!(!m("| unit > 1", &r));
}

#[test]
fn errors_name_the_position_and_token() {
    for (text, position, token) in [
        (r#"|= "never closed"#, 3, "\"never closed"),
        (r#"{site="a" source="b"}"#, 10, "source"),
        (r#"{colour="red"}"#, 1, "colour"),
        (r#"{level>="loud"}"#, 8, "\"loud\""),
        (r#"|~ "(unclosed""#, 3, "\"(unclosed\""),
        ("| temp >", 8, ""),
        ("| temp 80", 7, "80"),
        ("|= overheat", 3, "overheat"),
        ("| temp > 1 and", 14, ""),
        ("#", 0, "#"),
        (r#"| (temp > 1"#, 11, ""),
        ("| level >= loud", 11, "loud"),
    ] {
        let e = parse_filter(text).expect_err(text);
        assert_eq!(
            (e.position, e.token.as_str()),
            (position, token),
            "{text}: {e}"
        );
        assert!(
            e.to_string().contains(&format!("position {position}")),
            "{e}"
        );
    }
    let long = "|= \"a\" ".repeat(MAX_FILTER_BYTES);
    assert!(
        parse_filter(&long)
            .expect_err("long")
            .reason
            .contains("longer")
    );
    let many = "|= \"a\" ".repeat(MAX_STAGES + 1);
    assert!(
        parse_filter(&many)
            .expect_err("many")
            .reason
            .contains("stages")
    );
    let huge = format!("|~ \"{}\"", "a{1000}{1000}");
    assert!(
        parse_filter(&huge)
            .expect_err("huge")
            .reason
            .contains("regex")
    );
}

#[test]
fn serialises_as_its_text_and_back() {
    let f = parse_filter(r#" {site="a"} |= "x" | temp > 80 "#).expect("parse");
    let s = serde_json::to_string(&f).expect("ser");
    assert_eq!(s, r#""{site=\"a\"} |= \"x\" | temp > 80""#);
    let back: Filter = serde_json::from_str(&s).expect("de");
    assert_eq!(back, f);
    assert!(serde_json::from_str::<Filter>(r#""|= ""#).is_err());
    fn assert_traits<T: Clone + Send + Sync + 'static>() {}
    assert_traits::<Filter>();
    assert!(Filter::all().is_all());
    assert!(parse_filter("| json").expect("json").is_all());
}

#[test]
fn parentheses_nest_only_so_deep() {
    let r = rec("p", "gw", Level::Warn, "x", json!({"a": 1}));
    let nested = |n: usize| format!("| {}a = 1{}", "(".repeat(n), ")".repeat(n));
    assert!(
        m(&nested(MAX_NESTING), &r),
        "as deep as allowed still works"
    );
    let e = parse_filter(&nested(MAX_NESTING + 1)).expect_err("too deep");
    assert!(e.to_string().contains("nested deeper"), "{e}");
    // A whole filter of `(` is an error, not a stack overflow.
    let opened = format!("| {}", "(".repeat(MAX_FILTER_BYTES - 2));
    assert!(parse_filter(&opened).is_err());
}
