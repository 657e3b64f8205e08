//! `plantd-logger`: the logger function. It consumes `PLANTD_LOGS` through
//! the trigger and turns every line — plain text, JSON or logfmt — into a
//! [`LogRecord`]: time, site, source, level, message, fields. A line that
//! cannot be parsed is never dropped: it is kept as text with
//! [`LogRecord::parse_error`] set.
//!
//! | module | what it holds |
//! |---|---|
//! | [`record`] | [`LogRecord`], [`Level`], [`Format`] — the normalised shape |
//! | [`parse`](mod@parse) | subject, headers and payload → [`LogRecord`] (format detection, JSON, plain text) |
//! | `logfmt` | the logfmt tokenizer (`key=value key2="quoted value"`) |
//! | [`query`] | the filter language: [`parse_filter`] → [`Filter`], [`Filter::matches`] |
//! | [`handler`] | [`Logger`], the [`plantd_trigger::Handler`]: parse, then per-minute aggregates exactly once |
//! | [`pattern`] | message → pattern (numbers, hex, UUIDs, quoted strings as placeholders) |
//! | [`aggregate`] | per-minute counts by (source, level) and top patterns in KV `plantd_log_aggregates`, with CAS and applied-sequence ranges |
//! | [`index`] | [`LogIndex`]: the newest records in memory, bounded, per site; paged queries |
//! | `row` | the index's compact row (labels held once, message and fields packed in one allocation) and the borrowed view filters read |
//! | [`stats`] | `count_over_time` / `rate` by labels over the index |
//! | [`follow`](mod@follow) | fills a [`LogIndex`] from `PLANTD_LOGS` (hydration, then live) |
//! | [`feed`] | the logger feeding the [`LogIndex`] of its process (one parse per line); the follower then only hydrates and fills gaps |

pub mod aggregate;
#[cfg(feature = "aws")]
pub mod cloudwatch;
pub mod feed;
pub mod follow;
pub mod handler;
pub mod index;
mod logfmt;
pub mod parse;
pub mod pattern;
pub mod query;
pub mod record;
mod row;
pub mod stats;

pub use aggregate::{AggregateSettings, Aggregates, MinuteAggregate};
pub use follow::follow;
pub use handler::{Logger, consumer_settings};
pub use index::{Cursor, Direction, IndexSettings, LogIndex, LogPage, LogQuery};
pub use parse::parse;
pub use query::{Filter, FilterError, parse_filter};
pub use record::{Format, Level, LogRecord};
pub use stats::{GroupLabel, Series, StatsFunction, StatsQuery};

/// The function name the logger binds to the trigger with.
pub const FUNCTION: &str = "logger";
