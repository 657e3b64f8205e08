//! The SQL form of a rule, compiled to the JSON form ([`Rule`]) — one
//! source of truth: the JSON is what is stored and run. Parsed with the
//! maintained `sqlparser` crate (a generic dialect that also reads `1m` as
//! one word); every error names the line and column.
//!
//! ```sql
//! SELECT avg(value) AS mean, max(payload.temp.c), percentile(value, 0.95),
//!        count(*), count(DISTINCT payload.device)
//! FROM "line1/+/temp" WITH (event_time = payload.ts, delay = '2s', lateness = '30s')
//! WHERE value > 0 AND payload.unit = 'C'
//! GROUP BY topic, TUMBLE(1m)            -- or HOP(1m, 10s), SESSION(30s)
//! ```
//!
//! - `FROM` takes the MQTT filter, quoted; `WITH (...)` the event-time
//!   field (a [`FieldPath`], bare or quoted), the watermark `delay` and the
//!   allowed `lateness`.
//! - `GROUP BY` takes exactly one window and at most one key: `topic` (the
//!   default), a payload field (`payload.device`), or `'*'` (one key for
//!   everything the filter matches).
//! - Functions: `count(*)`, `count(x)`, `sum`, `avg`, `min`, `max`,
//!   `stddev`, `first`, `last`, `rate` (per second), `percentile(x, q)`,
//!   `median(x)`, `count(DISTINCT x)` or `distinct_count(x)`. Output names
//!   are the alias, else `<fn>_<field>` (`avg_value`, `p95_value`,
//!   `count`). `WITH (stale_after = '30s')` marks windows a silence longer
//!   than that reaches into (`stale: 1`, `gap_ms`).
//! - Patterns and detectors (`signal.rs`): one function alone in the
//!   `SELECT` list and no window — `threshold(value > 8, 30s)`,
//!   `stale(5m)`, `rate_of_change(value, 2, 1s)`, `zscore(value, 0.1, 3)`,
//!   `cusum(value, 0.5, 5)`, `followed_by(a, b, 10s)`,
//!   `not_followed_by(a, b, 10s)`; `GROUP BY topic_level(n)` keys on one
//!   level of the topic.

use std::collections::HashSet;

use sqlparser::ast::{
    BinaryOperator, DuplicateTreatment, Expr, FunctionArg, FunctionArgExpr, FunctionArguments,
    GroupByExpr, ObjectNamePart, SelectItem, SetExpr, Spanned, Statement, TableFactor, Value,
};
use sqlparser::dialect::{Dialect, GenericDialect};
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Location, Span};
use thiserror::Error;

use crate::duration::Millis;
use crate::field::FieldPath;
use crate::rule::{AggFn, Aggregate, GroupBy, Operator, Rule, Select, TimePolicy, Window};
use crate::topic::TopicFilter;

/// A rule's SQL refused, at a position in its text.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("line {line}, column {column}: {message}")]
pub struct SqlError {
    /// Line, from 1.
    pub line: u64,
    /// Column, from 1.
    pub column: u64,
    /// What is wrong.
    pub message: String,
}

impl SqlError {
    fn at(span: Span, message: impl Into<String>) -> Self {
        let Location { line, column } = span.start;
        Self {
            line: line.max(1),
            column: column.max(1),
            message: message.into(),
        }
    }

    fn from_parser(e: ParserError) -> Self {
        let text = match e {
            ParserError::TokenizerError(t) | ParserError::ParserError(t) => t,
            ParserError::RecursionLimitExceeded => "the rule is nested too deeply".to_owned(),
        };
        // sqlparser ends its messages with " at Line: L, Column: C".
        if let Some(i) = text.rfind(" at Line: ") {
            let tail = &text[i + " at Line: ".len()..];
            let mut parts = tail.split(", Column: ");
            let line = parts.next().and_then(|l| l.trim().parse().ok());
            let column = parts.next().and_then(|c| c.trim().parse().ok());
            if let (Some(line), Some(column)) = (line, column) {
                return Self {
                    line,
                    column,
                    message: text[..i].to_owned(),
                };
            }
        }
        Self {
            line: 1,
            column: 1,
            message: text,
        }
    }
}

/// The generic dialect, plus words that start with digits (`1m`, `10s`),
/// so durations are written bare.
#[derive(Debug)]
struct RuleDialect(GenericDialect);

impl Dialect for RuleDialect {
    fn is_identifier_start(&self, ch: char) -> bool {
        self.0.is_identifier_start(ch)
    }
    fn is_identifier_part(&self, ch: char) -> bool {
        self.0.is_identifier_part(ch)
    }
    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        self.0.is_delimited_identifier_start(ch)
    }
    fn supports_numeric_prefix(&self) -> bool {
        true
    }
}

mod expr;
mod signal;
#[cfg(test)]
mod tests;

use expr::{condition, duration, field_path, number};

type Result<T> = std::result::Result<T, SqlError>;

impl Rule {
    /// Compiles a rule's SQL to its JSON form, named `name`.
    ///
    /// # Errors
    /// [`SqlError`] with the line and column of what is wrong.
    pub fn from_sql(name: &str, sql: &str) -> Result<Rule> {
        let dialect = RuleDialect(GenericDialect {});
        let mut statements = Parser::parse_sql(&dialect, sql).map_err(SqlError::from_parser)?;
        let whole = Span::new(Location::new(1, 1), Location::new(1, 1));
        if statements.len() != 1 {
            return Err(SqlError::at(whole, "one SELECT statement"));
        }
        let Statement::Query(query) = statements.remove(0) else {
            return Err(SqlError::at(whole, "a rule is a SELECT statement"));
        };
        let span = query.span();
        let SetExpr::Select(select) = *query.body else {
            return Err(SqlError::at(span, "a rule is a single SELECT"));
        };
        if query.order_by.is_some() || query.limit_clause.is_some() {
            return Err(SqlError::at(
                span,
                "ORDER BY and LIMIT have no meaning on a stream",
            ));
        }
        if let Some(having) = &select.having {
            return Err(SqlError::at(having.span(), "HAVING is not supported"));
        }

        // FROM "filter" [WITH (...)]
        let [from] = select.from.as_slice() else {
            return Err(SqlError::at(select.span(), "FROM names one topic filter"));
        };
        if let Some(join) = from.joins.first() {
            return Err(SqlError::at(
                join.relation.span(),
                "joins are not supported",
            ));
        }
        let TableFactor::Table {
            name: table,
            with_hints,
            ..
        } = &from.relation
        else {
            return Err(SqlError::at(
                from.relation.span(),
                "FROM takes a quoted topic filter",
            ));
        };
        let filter_text = match table.0.as_slice() {
            [ObjectNamePart::Identifier(ident)] => ident,
            _ => {
                return Err(SqlError::at(
                    table.span(),
                    "FROM takes one quoted topic filter, e.g. \"line1/+/temp\"",
                ));
            }
        };
        let from_filter = TopicFilter::new(&filter_text.value)
            .map_err(|e| SqlError::at(filter_text.span, e.to_string()))?;
        let (time, stale_after) = time_policy(with_hints)?;

        let filter = select.selection.as_ref().map(condition).transpose()?;

        // GROUP BY key, window
        let GroupByExpr::Expressions(groups, _) = &select.group_by else {
            return Err(SqlError::at(select.span(), "GROUP BY ALL is not supported"));
        };
        let mut window = None;
        let mut group_by = None;
        for g in groups {
            if let Expr::Function(f) = g {
                let fname = function_name(f)?;
                if fname == "topic_level" {
                    if group_by.is_some() {
                        return Err(SqlError::at(
                            g.span(),
                            "one key per rule: topic, topic_level(n), a payload field, or '*'",
                        ));
                    }
                    group_by = Some(signal::topic_level(f, g.span())?);
                    continue;
                }
                if window.is_some() {
                    return Err(SqlError::at(g.span(), "one window per rule"));
                }
                window = Some((window_of(&fname, f, g.span())?, g.span()));
                continue;
            }
            if group_by.is_some() {
                return Err(SqlError::at(
                    g.span(),
                    "one key per rule: topic, a payload field, or '*'",
                ));
            }
            group_by = Some(match g {
                Expr::Identifier(i) if i.value.eq_ignore_ascii_case("topic") => GroupBy::Topic,
                Expr::Value(v) if matches!(&v.value, Value::SingleQuotedString(s) if s == "*") => {
                    GroupBy::None
                }
                other => GroupBy::Field(field_path(other)?),
            });
        }
        // A pattern or detector: one function, no window.
        if let Some(operator) = signal::operator(&select.projection)? {
            if let Some((_, span)) = window {
                return Err(SqlError::at(
                    span,
                    "a pattern or detector runs per key, without a window",
                ));
            }
            if stale_after.is_some() {
                return Err(SqlError::at(
                    select.span(),
                    "stale_after is for aggregates; a pattern uses stale(after)",
                ));
            }
            let rule = Rule {
                name: name.to_owned(),
                from: from_filter,
                filter,
                group_by: group_by.unwrap_or_default(),
                time,
                operator,
            };
            rule.validate()
                .map_err(|e| SqlError::at(whole, e.to_string()))?;
            return Ok(rule);
        }
        let Some((window, _)) = window else {
            return Err(SqlError::at(
                select.span(),
                "GROUP BY needs a window: TUMBLE(1m), HOP(1m, 10s) or SESSION(30s)",
            ));
        };

        // SELECT list
        let mut selects = Vec::new();
        let mut names = HashSet::new();
        for item in &select.projection {
            let (expr, alias) = match item {
                SelectItem::UnnamedExpr(e) => (e, None),
                SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias)),
                other => {
                    return Err(SqlError::at(
                        other.span(),
                        "select aggregates such as avg(value), not columns or *",
                    ));
                }
            };
            let Expr::Function(f) = expr else {
                // The key may be listed; it is in every result anyway.
                if matches!(expr, Expr::Identifier(i) if i.value.eq_ignore_ascii_case("topic")) {
                    continue;
                }
                return Err(SqlError::at(expr.span(), "an aggregate such as avg(value)"));
            };
            let (func, field) = aggregate_of(f, expr.span())?;
            let name = match alias {
                Some(a) => a.value.clone(),
                None if matches!(func, AggFn::CountAll) => "count".to_owned(),
                None => format!("{}_{}", func.prefix(), field.slug()),
            };
            if !names.insert(name.clone()) {
                return Err(SqlError::at(
                    expr.span(),
                    format!("{name:?} is selected twice: give one an alias (AS ...)"),
                ));
            }
            selects.push(Select { name, func, field });
        }
        if selects.is_empty() {
            return Err(SqlError::at(select.span(), "select at least one aggregate"));
        }

        let rule = Rule {
            name: name.to_owned(),
            from: from_filter,
            filter,
            group_by: group_by.unwrap_or_default(),
            time,
            operator: Operator::Aggregate(Aggregate {
                window,
                select: selects,
                stale_after,
            }),
        };
        rule.validate()
            .map_err(|e| SqlError::at(whole, e.to_string()))?;
        Ok(rule)
    }
}

fn function_name(f: &sqlparser::ast::Function) -> Result<String> {
    match f.name.0.as_slice() {
        [ObjectNamePart::Identifier(i)] => Ok(i.value.to_ascii_lowercase()),
        _ => Err(SqlError::at(f.name.span(), "an unknown function")),
    }
}

/// The plain argument list of a function call.
fn args(f: &sqlparser::ast::Function, span: Span) -> Result<(Vec<&FunctionArgExpr>, bool)> {
    match &f.args {
        FunctionArguments::None => Ok((Vec::new(), false)),
        FunctionArguments::List(list) => {
            let distinct = matches!(list.duplicate_treatment, Some(DuplicateTreatment::Distinct));
            let mut out = Vec::new();
            for a in &list.args {
                match a {
                    FunctionArg::Unnamed(e) => out.push(e),
                    other => return Err(SqlError::at(other.span(), "plain arguments only")),
                }
            }
            Ok((out, distinct))
        }
        FunctionArguments::Subquery(_) => Err(SqlError::at(span, "subqueries are not supported")),
    }
}

fn expr_arg(a: &FunctionArgExpr, span: Span) -> Result<&Expr> {
    match a {
        FunctionArgExpr::Expr(e) => Ok(e),
        _ => Err(SqlError::at(span, "a field such as value or payload.temp")),
    }
}

fn aggregate_of(f: &sqlparser::ast::Function, span: Span) -> Result<(AggFn, FieldPath)> {
    let fname = function_name(f)?;
    let (list, distinct) = args(f, span)?;
    if fname == "count" {
        return match list.as_slice() {
            [FunctionArgExpr::Wildcard] => Ok((AggFn::CountAll, FieldPath::Value)),
            [FunctionArgExpr::Expr(e)] => Ok((
                if distinct {
                    AggFn::DistinctCount
                } else {
                    AggFn::Count
                },
                field_path(e)?,
            )),
            _ => Err(SqlError::at(
                span,
                "count(*), count(field) or count(DISTINCT field)",
            )),
        };
    }
    if distinct {
        return Err(SqlError::at(span, "DISTINCT only in count(DISTINCT field)"));
    }
    let func = match fname.as_str() {
        "sum" => AggFn::Sum,
        "avg" | "mean" => AggFn::Avg,
        "min" => AggFn::Min,
        "max" => AggFn::Max,
        "stddev" => AggFn::Stddev,
        "first" => AggFn::First,
        "last" => AggFn::Last,
        "rate" | "deriv" => AggFn::Rate,
        "distinct_count" => AggFn::DistinctCount,
        "median" => AggFn::Percentile(0.5),
        "percentile" => {
            let [field, q] = list.as_slice() else {
                return Err(SqlError::at(
                    span,
                    "percentile(field, q) with q between 0 and 1",
                ));
            };
            let q_expr = expr_arg(q, span)?;
            let q = number(q_expr)
                .filter(|q| (0.0..=1.0).contains(q))
                .ok_or_else(|| {
                    SqlError::at(q_expr.span(), "a quantile between 0 and 1, e.g. 0.95")
                })?;
            return Ok((AggFn::Percentile(q), field_path(expr_arg(field, span)?)?));
        }
        other => {
            return Err(SqlError::at(
                f.name.span(),
                format!(
                    "unknown aggregate {other:?}: count, sum, avg, min, max, stddev, first, last, rate, percentile, median, distinct_count"
                ),
            ));
        }
    };
    let [field] = list.as_slice() else {
        return Err(SqlError::at(
            span,
            format!("{fname}(field) takes one field"),
        ));
    };
    Ok((func, field_path(expr_arg(field, span)?)?))
}

fn window_of(fname: &str, f: &sqlparser::ast::Function, span: Span) -> Result<Window> {
    let (list, _) = args(f, span)?;
    let durations = list
        .iter()
        .map(|a| duration(expr_arg(a, span)?, false))
        .collect::<Result<Vec<_>>>()?;
    match (fname, durations.as_slice()) {
        ("tumble" | "tumbling", [size]) => Ok(Window::Tumbling { size: *size }),
        ("hop" | "hopping", [size, slide]) => Ok(Window::Hopping {
            size: *size,
            slide: *slide,
        }),
        ("session", [gap]) => Ok(Window::Session { gap: *gap }),
        _ => Err(SqlError::at(
            span,
            "a window is TUMBLE(size), HOP(size, slide) or SESSION(gap), e.g. TUMBLE(1m)",
        )),
    }
}

/// `WITH (event_time = payload.ts, delay = '2s', lateness = '30s',
/// stale_after = '1m')`.
fn time_policy(hints: &[Expr]) -> Result<(TimePolicy, Option<Millis>)> {
    let mut time = TimePolicy::default();
    let mut stale_after = None;
    for h in hints {
        let Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } = h
        else {
            return Err(SqlError::at(h.span(), "WITH (name = value, ...)"));
        };
        let Expr::Identifier(name) = left.as_ref() else {
            return Err(SqlError::at(
                left.span(),
                "event_time, delay, lateness or stale_after",
            ));
        };
        match name.value.to_ascii_lowercase().as_str() {
            "event_time" => {
                time.event_time = Some(match right.as_ref() {
                    Expr::Value(v) => match &v.value {
                        Value::SingleQuotedString(s) => {
                            let dialect = RuleDialect(GenericDialect {});
                            let parsed = Parser::new(&dialect)
                                .try_with_sql(s)
                                .and_then(|mut p| p.parse_expr())
                                .map_err(|_| {
                                    SqlError::at(right.span(), "a field such as payload.ts")
                                })?;
                            field_path(&parsed)
                                .map_err(|e| SqlError::at(right.span(), e.message))?
                        }
                        _ => return Err(SqlError::at(right.span(), "a field such as payload.ts")),
                    },
                    other => field_path(other)?,
                });
            }
            "delay" => time.delay = duration(right, true)?,
            "lateness" => time.lateness = duration(right, true)?,
            "stale_after" => stale_after = Some(duration(right, false)?),
            other => {
                return Err(SqlError::at(
                    name.span,
                    format!("unknown option {other:?}: event_time, delay, lateness or stale_after"),
                ));
            }
        }
    }
    Ok((time, stale_after))
}
