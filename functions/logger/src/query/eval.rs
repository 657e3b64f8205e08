//! Evaluating a parsed filter against a record.

use std::cmp::Ordering;

use serde_json::Value;

use super::parse::{Ast, Cmp, Expr, Field, Label, LineTest, Lit, Matcher, Stage};
use crate::record::LogRecord;

pub(crate) fn matches(ast: &Ast, r: &LogRecord) -> bool {
    ast.matchers.iter().all(|m| matcher(m, r)) && ast.stages.iter().all(|s| stage(s, r))
}

fn matcher(m: &Matcher, r: &LogRecord) -> bool {
    match m {
        Matcher::Text {
            label,
            text,
            negate,
        } => {
            let v = match label {
                Label::Site => r.site.as_str(),
                Label::Source => r.source.as_str(),
                Label::Level => r.level.as_str(),
            };
            text.is_match(v) != *negate
        }
        Matcher::Level { cmp, level } => ordered(*cmp, r.level.cmp(level)),
    }
}

fn ordered(cmp: Cmp, o: Ordering) -> bool {
    match cmp {
        Cmp::Eq => o == Ordering::Equal,
        Cmp::Ne => o != Ordering::Equal,
        Cmp::Gt => o == Ordering::Greater,
        Cmp::Ge => o != Ordering::Less,
        Cmp::Lt => o == Ordering::Less,
        Cmp::Le => o != Ordering::Greater,
        Cmp::Re | Cmp::NotRe => false,
    }
}

fn stage(s: &Stage, r: &LogRecord) -> bool {
    match s {
        Stage::Line { test, negate } => line(test, r) != *negate,
        Stage::Predicate(e) => expr(e, r),
    }
}

/// Whether the message or any field value's text passes the test.
fn line(test: &LineTest, r: &LogRecord) -> bool {
    let hit = |s: &str| match test {
        LineTest::Contains(t) => s.contains(t.as_str()),
        LineTest::Regex(re) => re.is_match(s),
    };
    hit(&r.message) || r.fields.values().any(|v| value_hits(v, &hit))
}

fn value_hits(v: &Value, hit: &impl Fn(&str) -> bool) -> bool {
    match v {
        Value::String(s) => hit(s),
        Value::Number(n) => hit(&n.to_string()),
        Value::Bool(b) => hit(if *b { "true" } else { "false" }),
        Value::Null => false,
        Value::Array(a) => a.iter().any(|x| value_hits(x, hit)),
        Value::Object(o) => o.values().any(|x| value_hits(x, hit)),
    }
}

fn expr(e: &Expr, r: &LogRecord) -> bool {
    match e {
        Expr::And(a, b) => expr(a, r) && expr(b, r),
        Expr::Or(a, b) => expr(a, r) || expr(b, r),
        Expr::Test { field, cmp, lit } => test(field, *cmp, lit, r),
    }
}

/// A field's value, borrowed from the record.
enum Got<'a> {
    Text(&'a str),
    Json(&'a Value),
    Missing,
}

fn lookup<'a>(field: &'a Field, r: &'a LogRecord) -> Got<'a> {
    match field {
        Field::Level => Got::Text(r.level.as_str()),
        Field::Message => Got::Text(&r.message),
        Field::Site => Got::Text(&r.site),
        Field::Source => Got::Text(&r.source),
        Field::Format => Got::Text(match r.format {
            crate::record::Format::Json => "json",
            crate::record::Format::Logfmt => "logfmt",
            crate::record::Format::Text => "text",
        }),
        Field::Key(k) => {
            if let Some(v) = r.fields.get(k) {
                return Got::Json(v);
            }
            let mut parts = k.split('.');
            let Some(first) = parts.next() else {
                return Got::Missing;
            };
            let mut cur = r.fields.get(first);
            for p in parts {
                cur = cur.and_then(|v| v.get(p));
            }
            cur.map_or(Got::Missing, Got::Json)
        }
    }
}

fn test(field: &Field, cmp: Cmp, lit: &Lit, r: &LogRecord) -> bool {
    if let (Field::Level, Lit::Level(l)) = (field, lit) {
        return ordered(cmp, r.level.cmp(l));
    }
    let got = lookup(field, r);
    let negative = matches!(cmp, Cmp::Ne | Cmp::NotRe);
    let text: Option<std::borrow::Cow<'_, str>> = match &got {
        Got::Text(s) => Some((*s).into()),
        Got::Json(Value::String(s)) => Some(s.as_str().into()),
        Got::Json(Value::Number(n)) => Some(n.to_string().into()),
        Got::Json(Value::Bool(b)) => Some(if *b { "true" } else { "false" }.into()),
        Got::Json(_) | Got::Missing => None,
    };
    let Some(text) = text else {
        return negative;
    };
    match lit {
        Lit::Regex(re) => re.is_match(&text) != (cmp == Cmp::NotRe),
        Lit::Num(n) => {
            let v = match &got {
                Got::Json(Value::Number(x)) => x.as_f64(),
                _ => text.trim().parse::<f64>().ok(),
            };
            match v.and_then(|v| v.partial_cmp(n)) {
                Some(o) => ordered(cmp, o),
                None => negative,
            }
        }
        Lit::Bool(b) => ordered(cmp, text.as_ref().cmp(if *b { "true" } else { "false" })),
        Lit::Str(s) => ordered(cmp, text.as_ref().cmp(s.as_str())),
        Lit::Level(_) => negative,
    }
}
