//! [`Dur`]: a duration written the way people write it in a rule —
//! `"500ms"`, `"30s"`, `"5m"`, `"2h"`, `"1d"`, or several run together
//! (`"1h30m"`). A leading `-` is read (so validation can say "must be ≥ 0s"
//! naming the field) instead of failing somewhere inside the parser.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// A signed duration in milliseconds, written as text (`"90s"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Dur(pub i64);

/// Text that is not a duration.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{0:?} is not a duration (use e.g. 500ms, 30s, 5m, 2h, 1d, 1h30m)")]
pub struct DurError(pub String);

impl Dur {
    /// `secs` seconds.
    pub const fn secs(secs: i64) -> Self {
        Self(secs * 1000)
    }

    /// `ms` milliseconds.
    pub const fn millis(ms: i64) -> Self {
        Self(ms)
    }

    /// Milliseconds (negative when written so).
    pub fn as_millis(self) -> i64 {
        self.0
    }

    /// As a [`time::Duration`] (for arithmetic on instants).
    pub fn to_time(self) -> time::Duration {
        time::Duration::milliseconds(self.0)
    }

    /// As a [`std::time::Duration`] (zero when negative).
    pub fn to_std(self) -> Duration {
        Duration::from_millis(u64::try_from(self.0).unwrap_or(0))
    }

    /// True when written with a `-`.
    pub fn is_negative(self) -> bool {
        self.0 < 0
    }
}

impl FromStr for Dur {
    type Err = DurError;

    fn from_str(s: &str) -> Result<Self, DurError> {
        let bad = || DurError(s.to_owned());
        let text = s.trim();
        let (negative, mut rest) = match text.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, text),
        };
        if rest.is_empty() {
            return Err(bad());
        }
        if rest == "0" {
            return Ok(Self(0));
        }
        let mut total: i64 = 0;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(bad());
            }
            let n: i64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            let unit = match &rest[..unit_len] {
                "ms" => 1,
                "s" => 1000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => return Err(bad()),
            };
            rest = &rest[unit_len..];
            total = n
                .checked_mul(unit)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(bad)?;
        }
        Ok(Self(if negative { -total } else { total }))
    }
}

impl fmt::Display for Dur {
    /// The shortest exact form: `90s`, `5m`, `2h`, `1500ms`, `0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        if ms == 0 {
            return f.write_str("0s");
        }
        if ms % 1000 != 0 {
            return write!(f, "{ms}ms");
        }
        let s = ms / 1000;
        if s % 86_400 == 0 {
            write!(f, "{}d", s / 86_400)
        } else if s % 3600 == 0 {
            write!(f, "{}h", s / 3600)
        } else if s % 60 == 0 {
            write!(f, "{}m", s / 60)
        } else {
            write!(f, "{s}s")
        }
    }
}

/// In the OpenAPI document (feature `utoipa`): a string, as written.
#[cfg(feature = "utoipa")]
impl utoipa::PartialSchema for Dur {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "A duration: `500ms`, `30s`, `5m`, `2h`, `1d`, or several run together (`1h30m`).",
            ))
            .into()
    }
}

#[cfg(feature = "utoipa")]
impl utoipa::ToSchema for Dur {}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_what_people_write() {
        for (text, ms, back) in [
            ("500ms", 500, "500ms"),
            ("30s", 30_000, "30s"),
            ("90s", 90_000, "90s"),
            ("5m", 300_000, "5m"),
            ("1h30m", 5_400_000, "90m"),
            ("2h", 7_200_000, "2h"),
            ("1d", 86_400_000, "1d"),
            ("0", 0, "0s"),
            ("-5s", -5000, "-5s"),
        ] {
            let d: Dur = text.parse().expect(text);
            assert_eq!(d.as_millis(), ms, "{text}");
            assert_eq!(d.to_string(), back, "{text}");
        }
        for bad in ["", "5", "s", "5x", "1.5s", "-", "5 s"] {
            assert!(bad.parse::<Dur>().is_err(), "{bad:?}");
        }
    }
}
