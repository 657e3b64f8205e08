//! The SQL form of patterns and detectors: one function in the `SELECT`
//! list, no window in `GROUP BY`.
//!
//! ```sql
//! SELECT threshold(value > 8, 30s)            FROM "line1/+/pressure" GROUP BY topic
//! SELECT stale(5m)                            FROM "line1/#"          GROUP BY topic
//! SELECT rate_of_change(value, 2, 1s, 'up')   FROM "line1/+/temp"     GROUP BY topic
//! SELECT zscore(value, 0.1, 3, 20, 'both', 2) FROM "line1/+/temp"     GROUP BY topic
//! SELECT cusum(value, 0.5, 5, 30, 'down')     FROM "line1/+/temp"     GROUP BY topic
//! SELECT not_followed_by(topic = 'cmd/+/start',
//!                        topic = 'status/+' AND payload.state = 'running', 10s)
//!   FROM "#" GROUP BY topic_level(1)
//! ```
//!
//! Arguments after the required ones are optional, in order:
//! `rate_of_change(field, above [, per = 1s [, direction = 'both']])`,
//! `zscore(field, alpha, threshold [, min_samples = 10 [, direction [, clear]]])`,
//! `cusum(field, drift, threshold [, min_samples = 10 [, direction]])`.
//! A sequence step is a condition; a `topic = '<filter>'` among its
//! `AND`ed terms is the step's topic filter.

use sqlparser::ast::{BinaryOperator, Expr, SelectItem, Spanned, Value};
use sqlparser::tokenizer::Span;

use super::expr::{condition, duration, field_path, number};
use super::{Result, SqlError, args, expr_arg, function_name};
use crate::pattern::{
    Anomaly, Cusum, Direction, Pattern, RateOfChange, Sequence, SequenceMode, Stale, Step,
    Threshold, Zscore,
};
use crate::rule::{Condition, GroupBy, Operator};
use crate::topic::TopicFilter;

/// The names that make a rule a pattern or detector.
const SIGNALS: [&str; 7] = [
    "threshold",
    "stale",
    "rate_of_change",
    "zscore",
    "cusum",
    "followed_by",
    "not_followed_by",
];

/// `topic_level(n)` in `GROUP BY`.
pub(super) fn topic_level(f: &sqlparser::ast::Function, span: Span) -> Result<GroupBy> {
    let (list, _) = args(f, span)?;
    let [n] = list.as_slice() else {
        return Err(SqlError::at(span, "topic_level(n): one level, from 0"));
    };
    let e = expr_arg(n, span)?;
    let n = number(e)
        .filter(|n| n.fract() == 0.0 && (0.0..=64.0).contains(n))
        .ok_or_else(|| SqlError::at(e.span(), "a topic level from 0 to 64"))?;
    Ok(GroupBy::Level(n as u32))
}

/// The operator when the `SELECT` list is a pattern or detector; `None`
/// when it lists aggregates.
pub(super) fn operator(projection: &[SelectItem]) -> Result<Option<Operator>> {
    let mut found = None;
    let mut others = None;
    for item in projection {
        let expr = match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
            _ => continue,
        };
        if matches!(expr, Expr::Identifier(i) if i.value.eq_ignore_ascii_case("topic")) {
            continue;
        }
        match expr {
            Expr::Function(f) if SIGNALS.contains(&function_name(f)?.as_str()) => {
                if found.is_some() {
                    return Err(SqlError::at(
                        expr.span(),
                        "one pattern or detector per rule",
                    ));
                }
                found = Some((f, expr.span()));
            }
            other => others = others.or(Some(other.span())),
        }
    }
    let Some((f, span)) = found else {
        return Ok(None);
    };
    if let Some(other) = others {
        return Err(SqlError::at(
            other,
            "a pattern or detector is selected alone (aggregates need a rule of their own)",
        ));
    }
    signal(f, span).map(Some)
}

fn signal(f: &sqlparser::ast::Function, span: Span) -> Result<Operator> {
    let fname = function_name(f)?;
    let (list, _) = args(f, span)?;
    let list = list
        .iter()
        .map(|a| expr_arg(a, span))
        .collect::<Result<Vec<&Expr>>>()?;
    let usage = |text: &str| SqlError::at(span, text.to_owned());
    let op = match (fname.as_str(), list.as_slice()) {
        ("threshold", [cond, held_for]) => Operator::Pattern(Pattern::Threshold(Threshold {
            when: condition(cond)?,
            held_for: duration(held_for, false)?,
        })),
        ("threshold", _) => {
            return Err(usage(
                "threshold(condition, for), e.g. threshold(value > 8, 30s)",
            ));
        }
        ("stale", [after]) => Operator::Pattern(Pattern::Stale(Stale {
            after: duration(after, false)?,
        })),
        ("stale", _) => return Err(usage("stale(after), e.g. stale(5m)")),
        ("rate_of_change", [field, above, rest @ ..]) if rest.len() <= 2 => {
            Operator::Pattern(Pattern::RateOfChange(RateOfChange {
                field: field_path(field)?,
                above: num(above, "the bound, a number ≥ 0")?,
                per: match rest.first() {
                    Some(per) => duration(per, false)?,
                    None => crate::duration::Millis(1_000),
                },
                direction: rest.get(1).map_or(Ok(Direction::Both), |d| direction(d))?,
            }))
        }
        ("rate_of_change", _) => {
            return Err(usage(
                "rate_of_change(field, above [, per [, 'up'|'down'|'both']]), e.g. rate_of_change(value, 2, 1s)",
            ));
        }
        ("zscore", [field, alpha, threshold, rest @ ..]) if rest.len() <= 3 => {
            Operator::Anomaly(Anomaly::Zscore(Zscore {
                field: field_path(field)?,
                alpha: num(alpha, "a weight in (0, 1], e.g. 0.1")?,
                threshold: num(threshold, "a score > 0, e.g. 3")?,
                min_samples: rest.first().map_or(Ok(10), |n| count(n))?,
                direction: rest.get(1).map_or(Ok(Direction::Both), |d| direction(d))?,
                clear: rest
                    .get(2)
                    .map(|c| num(c, "a score between 0 and the threshold"))
                    .transpose()?,
            }))
        }
        ("zscore", _) => {
            return Err(usage(
                "zscore(field, alpha, threshold [, min_samples [, direction [, clear]]]), e.g. zscore(value, 0.1, 3)",
            ));
        }
        ("cusum", [field, drift, threshold, rest @ ..]) if rest.len() <= 2 => {
            Operator::Anomaly(Anomaly::Cusum(Cusum {
                field: field_path(field)?,
                drift: num(drift, "standard deviations ≥ 0, e.g. 0.5")?,
                threshold: num(threshold, "standard deviations > 0, e.g. 5")?,
                min_samples: rest.first().map_or(Ok(10), |n| count(n))?,
                direction: rest.get(1).map_or(Ok(Direction::Both), |d| direction(d))?,
            }))
        }
        ("cusum", _) => {
            return Err(usage(
                "cusum(field, drift, threshold [, min_samples [, direction]]), e.g. cusum(value, 0.5, 5)",
            ));
        }
        (mode @ ("followed_by" | "not_followed_by"), [first, then, within]) => {
            Operator::Pattern(Pattern::Sequence(Sequence {
                mode: if mode == "followed_by" {
                    SequenceMode::FollowedBy
                } else {
                    SequenceMode::NotFollowedBy
                },
                first: step(first)?,
                then: step(then)?,
                within: duration(within, false)?,
            }))
        }
        (mode, _) => {
            return Err(usage(&format!(
                "{mode}(first, then, within), e.g. {mode}(topic = 'cmd/+/start', payload.state = 'running', 10s)"
            )));
        }
    };
    Ok(op)
}

fn num(e: &Expr, what: &str) -> Result<f64> {
    number(e).ok_or_else(|| SqlError::at(e.span(), what))
}

fn count(e: &Expr) -> Result<u32> {
    number(e)
        .filter(|n| n.fract() == 0.0 && *n >= 2.0 && *n <= f64::from(u32::MAX))
        .map(|n| n as u32)
        .ok_or_else(|| SqlError::at(e.span(), "min_samples: a whole number ≥ 2"))
}

fn direction(e: &Expr) -> Result<Direction> {
    let text = match e {
        Expr::Identifier(i) => Some(i.value.as_str()),
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => Some(s.as_str()),
            _ => None,
        },
        _ => None,
    };
    match text.map(str::to_ascii_lowercase).as_deref() {
        Some("both") => Ok(Direction::Both),
        Some("up") => Ok(Direction::Up),
        Some("down") => Ok(Direction::Down),
        _ => Err(SqlError::at(
            e.span(),
            "a direction: 'up', 'down' or 'both'",
        )),
    }
}

/// A sequence step: `AND`ed terms, one of which may be `topic = '<filter>'`.
fn step(e: &Expr) -> Result<Step> {
    let mut terms = Vec::new();
    conjuncts(e, &mut terms);
    let mut from = None;
    let mut when = Vec::new();
    for term in terms {
        if let Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } = term
            && matches!(left.as_ref(), Expr::Identifier(i) if i.value.eq_ignore_ascii_case("topic"))
        {
            let filter = match right.as_ref() {
                Expr::Value(v) => match &v.value {
                    Value::SingleQuotedString(s) => TopicFilter::new(s)
                        .map_err(|err| SqlError::at(right.span(), err.to_string()))?,
                    _ => return Err(SqlError::at(right.span(), "a quoted topic filter")),
                },
                _ => return Err(SqlError::at(right.span(), "a quoted topic filter")),
            };
            if from.replace(filter).is_some() {
                return Err(SqlError::at(term.span(), "one topic filter per step"));
            }
            continue;
        }
        when.push(condition(term)?);
    }
    let when = match when.len() {
        0 => None,
        1 => when.pop(),
        _ => Some(Condition::All { all: when }),
    };
    Ok(Step { from, when })
}

fn conjuncts<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
    match e {
        Expr::Nested(inner) => conjuncts(inner, out),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            conjuncts(left, out);
            conjuncts(right, out);
        }
        other => out.push(other),
    }
}
