//! The log filter language: a LogQL-like text that selects log records.
//!
//! ```text
//! {site="plant1", source="line1/*", level>="warn"} |= "overheat" != "test" | json | temp > 80 and unit = "C"
//! ```
//!
//! A filter is an optional **stream selector** followed by **stages**; a
//! record matches when the selector and every stage match.
//!
//! - **Selector** `{label op value, …}` on the labels `site`, `source` and
//!   `level`. `=`/`!=` compare exactly — for `site` and `source` a value
//!   with `*` (any run of characters, `/` included) or `?` (one character)
//!   is a glob; `=~`/`!~` match a regex against the whole value. `level`
//!   also takes `>=`, `>`, `<=`, `<` (`level>="warn"` is a minimum level).
//! - **Line filters** `|= "text"` (contains), `!= "text"` (does not
//!   contain), `|~ "regex"`, `!~ "regex"`, case-sensitive (`(?i)` in a
//!   regex for case-insensitive). They look at the message and at the text
//!   of every field value (a JSON or logfmt line's other keys).
//! - **Parsers** `| json`, `| logfmt`: accepted for LogQL habits and do
//!   nothing — every record's fields are already parsed.
//! - **Predicates** `| <field> <op> <value>` joined by `and` / `or`
//!   (`and` binds tighter; parentheses group), with `=` (`==`), `!=`, `>`,
//!   `>=`, `<`, `<=`, `=~`, `!~`. A number compares numerically (a field
//!   holding numeric text counts); a string or bare word compares as text;
//!   `true`/`false` compare with booleans. The fields `level`, `message`
//!   (`msg`), `site`, `source` and `format` are the record's own; any other
//!   name is a key of the line's fields, `a.b` reaching into a JSON
//!   object when no key `a.b` exists. A missing field matches only `!=`
//!   and `!~`.
//!
//! Strings are double-quoted (`\"`, `\\`, `\n`, `\t`; other escapes are kept
//! as written, so `"\d+"` is the regex `\d+`) or back-quoted (raw).
//! Regexes use the `regex` crate's syntax, at most [`MAX_REGEX_BYTES`]
//! compiled; a filter is at most [`MAX_FILTER_BYTES`] long, its
//! parentheses nested at most [`MAX_NESTING`] deep. An error names
//! the byte position and the token ([`FilterError`]).
//!
//! [`parse_filter`] is the entry point; [`Filter::matches`] evaluates. A
//! [`Filter`] serialises as its text.

mod eval;
mod lex;
mod parse;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::record::LogRecord;
use crate::row::View;

/// Longest filter text accepted, in bytes.
pub const MAX_FILTER_BYTES: usize = 4096;
/// Largest compiled regex (the `regex` crate's size limit), in bytes.
pub const MAX_REGEX_BYTES: usize = 1 << 20;
/// Most stages (line filters, parsers and predicates) in one filter.
pub const MAX_STAGES: usize = 64;
/// Deepest nesting of parentheses in a predicate.
pub const MAX_NESTING: usize = 32;

/// Why a filter text is not valid: where, what and why.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("filter error at position {position} near `{token}`: {reason}")]
pub struct FilterError {
    /// Byte offset in the filter text where the problem starts (the text's
    /// length when it ended too early).
    pub position: usize,
    /// The token found there (empty at the end of the text).
    pub token: String,
    /// What was wrong or expected.
    pub reason: String,
}

impl FilterError {
    pub(crate) fn new(
        position: usize,
        token: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            position,
            token: token.into(),
            reason: reason.into(),
        }
    }
}

/// A parsed filter. Cheap to clone (the parsed form is shared); equal when
/// written the same; serialises as its text.
#[derive(Clone)]
pub struct Filter {
    text: Arc<str>,
    ast: Arc<parse::Ast>,
}

/// Parses a filter text (see the module docs). The empty text (or only
/// spaces) is the filter matching everything.
pub fn parse_filter(text: &str) -> Result<Filter, FilterError> {
    if text.len() > MAX_FILTER_BYTES {
        return Err(FilterError::new(
            MAX_FILTER_BYTES,
            "",
            format!("the filter is longer than {MAX_FILTER_BYTES} bytes"),
        ));
    }
    let ast = parse::parse(text)?;
    Ok(Filter {
        text: Arc::from(text.trim()),
        ast: Arc::new(ast),
    })
}

impl Filter {
    /// The filter matching every record.
    pub fn all() -> Self {
        Self {
            text: Arc::from(""),
            ast: Arc::new(parse::Ast::default()),
        }
    }

    /// Whether `record` passes the selector and every stage.
    pub fn matches(&self, record: &LogRecord) -> bool {
        eval::matches(&self.ast, &View::of(record))
    }

    /// [`Self::matches`] on a borrowed view (a stored row of the index).
    pub(crate) fn matches_view(&self, record: &View<'_>) -> bool {
        eval::matches(&self.ast, record)
    }

    /// The text it was parsed from (trimmed).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether it matches everything (no selector, no stage that tests).
    pub fn is_all(&self) -> bool {
        self.ast.is_all()
    }

    /// The one site its selector requires exactly (`{site="a"}`), if any —
    /// lets a store look at that site only.
    pub fn exact_site(&self) -> Option<&str> {
        self.ast.exact_label(parse::Label::Site)
    }

    /// The one source its selector requires exactly, if any.
    pub fn exact_source(&self) -> Option<&str> {
        self.ast.exact_label(parse::Label::Source)
    }
}

impl Default for Filter {
    fn default() -> Self {
        Self::all()
    }
}

impl fmt::Debug for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Filter").field(&self.text).finish()
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PartialEq for Filter {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Filter {}

impl FromStr for Filter {
    type Err = FilterError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_filter(s)
    }
}

impl Serialize for Filter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Filter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_filter(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
