//! Evaluating a parsed filter against a record.

use std::cmp::Ordering;

use super::parse::{Ast, Cmp, Expr, Field, Label, LineTest, Lit, Matcher, Stage};
use crate::row::{Got, View};

pub(crate) fn matches(ast: &Ast, r: &View<'_>) -> bool {
    ast.matchers.iter().all(|m| matcher(m, r)) && ast.stages.iter().all(|s| stage(s, r))
}

fn matcher(m: &Matcher, r: &View<'_>) -> bool {
    match m {
        Matcher::Text {
            label,
            text,
            negate,
        } => {
            let v = match label {
                Label::Site => r.site,
                Label::Source => r.source,
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

fn stage(s: &Stage, r: &View<'_>) -> bool {
    match s {
        Stage::Line { test, negate } => line(test, r) != *negate,
        Stage::Predicate(e) => expr(e, r),
    }
}

/// Whether the message or any field value's text passes the test.
fn line(test: &LineTest, r: &View<'_>) -> bool {
    let hit = |s: &str| match test {
        LineTest::Contains(t) => s.contains(t.as_str()),
        LineTest::Regex(re) => re.is_match(s),
    };
    hit(r.message) || r.fields.any_hits(&hit)
}

fn expr(e: &Expr, r: &View<'_>) -> bool {
    match e {
        Expr::And(a, b) => expr(a, r) && expr(b, r),
        Expr::Or(a, b) => expr(a, r) || expr(b, r),
        Expr::Test { field, cmp, lit } => test(field, *cmp, lit, r),
    }
}

fn lookup<'a>(field: &Field, r: &View<'a>) -> Got<'a> {
    match field {
        Field::Level => Got::Str(r.level.as_str()),
        Field::Message => Got::Str(r.message),
        Field::Site => Got::Str(r.site),
        Field::Source => Got::Str(r.source),
        Field::Format => Got::Str(match r.format {
            crate::record::Format::Json => "json",
            crate::record::Format::Logfmt => "logfmt",
            crate::record::Format::Text => "text",
        }),
        Field::Key(k) => r.fields.lookup(k),
    }
}

fn test(field: &Field, cmp: Cmp, lit: &Lit, r: &View<'_>) -> bool {
    if let (Field::Level, Lit::Level(l)) = (field, lit) {
        return ordered(cmp, r.level.cmp(l));
    }
    let got = lookup(field, r);
    let negative = matches!(cmp, Cmp::Ne | Cmp::NotRe);
    let text: Option<std::borrow::Cow<'_, str>> = match &got {
        Got::Str(s) => Some((*s).into()),
        Got::Num(n) => Some(n.to_string().into()),
        Got::Bool(b) => Some(if *b { "true" } else { "false" }.into()),
        Got::Other | Got::Missing => None,
    };
    let Some(text) = text else {
        return negative;
    };
    match lit {
        Lit::Regex(re) => re.is_match(&text) != (cmp == Cmp::NotRe),
        Lit::Num(n) => {
            let v = match &got {
                Got::Num(x) => x.as_f64(),
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
