//! Expressions inside a rule's SQL: durations, field paths, constants and
//! `WHERE` conditions.

use sqlparser::ast::{BinaryOperator, Expr, Spanned, UnaryOperator, Value};

use super::{Result, SqlError};
use crate::duration::Millis;
use crate::field::FieldPath;
use crate::rule::{CmpOp, Condition, Literal};

/// `1m` (a word thanks to the dialect) or `'1m'`; positive unless
/// `zero_ok` (a delay or lateness may be `0s`).
pub(super) fn duration(e: &Expr, zero_ok: bool) -> Result<Millis> {
    let text = match e {
        Expr::Identifier(i) => Some(i.value.as_str()),
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => Some(s.as_str()),
            Value::Number(n, _) if n == "0" => Some("0s"),
            _ => None,
        },
        _ => None,
    };
    let ms: Millis = text.and_then(|t| t.parse().ok()).ok_or_else(|| {
        SqlError::at(
            e.span(),
            format!("a duration such as 10s, 1m or 1h30m (got `{e}`)"),
        )
    })?;
    if ms.0 < 0 || (ms.0 == 0 && !zero_ok) {
        return Err(SqlError::at(e.span(), "a duration must be positive"));
    }
    Ok(ms)
}

/// `value`, `payload.a.b`, `payload."a.b"`.
pub(super) fn field_path(e: &Expr) -> Result<FieldPath> {
    let bad = || {
        SqlError::at(
            e.span(),
            format!("a field is `value` or `payload.<name>[.<name>...]` (got `{e}`)"),
        )
    };
    match e {
        Expr::Identifier(i) if i.value.eq_ignore_ascii_case("value") && i.quote_style.is_none() => {
            Ok(FieldPath::Value)
        }
        Expr::CompoundIdentifier(parts)
            if parts.len() >= 2 && parts[0].value.eq_ignore_ascii_case("payload") =>
        {
            Ok(FieldPath::Json(
                parts[1..].iter().map(|p| p.value.clone()).collect(),
            ))
        }
        _ => Err(bad()),
    }
}

pub(super) fn number(e: &Expr) -> Option<f64> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n.parse().ok(),
            _ => None,
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => number(expr).map(|n| -n),
        Expr::Nested(inner) => number(inner),
        _ => None,
    }
}

pub(super) fn literal(e: &Expr) -> Result<Literal> {
    if let Some(n) = number(e) {
        return Ok(Literal::Num(n));
    }
    match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => Ok(Literal::Str(s.clone())),
            Value::Boolean(b) => Ok(Literal::Num(if *b { 1.0 } else { 0.0 })),
            _ => Err(SqlError::at(e.span(), "a number, 'text', true or false")),
        },
        _ => Err(SqlError::at(e.span(), "a number, 'text', true or false")),
    }
}

/// `WHERE`: comparisons of a field with a constant, `AND`, `OR`, `NOT`.
pub(super) fn condition(e: &Expr) -> Result<Condition> {
    match e {
        Expr::Nested(inner) => condition(inner),
        Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr,
        } => Ok(Condition::Not {
            not: Box::new(condition(expr)?),
        }),
        Expr::BinaryOp { left, op, right } => {
            let cmp = match op {
                BinaryOperator::And => {
                    return Ok(Condition::All {
                        all: vec![condition(left)?, condition(right)?],
                    });
                }
                BinaryOperator::Or => {
                    return Ok(Condition::Any {
                        any: vec![condition(left)?, condition(right)?],
                    });
                }
                BinaryOperator::Eq => CmpOp::Eq,
                BinaryOperator::NotEq => CmpOp::Ne,
                BinaryOperator::Gt => CmpOp::Gt,
                BinaryOperator::GtEq => CmpOp::Ge,
                BinaryOperator::Lt => CmpOp::Lt,
                BinaryOperator::LtEq => CmpOp::Le,
                _ => {
                    return Err(SqlError::at(
                        e.span(),
                        format!("`{op}` is not supported here"),
                    ));
                }
            };
            Ok(Condition::Compare {
                field: field_path(left)?,
                op: cmp,
                value: literal(right)?,
            })
        }
        _ => Err(SqlError::at(
            e.span(),
            "a condition such as value > 0 AND payload.unit = 'C'",
        )),
    }
}
