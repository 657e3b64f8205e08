//! [`Millis`]: a duration in whole milliseconds, written `500ms`, `10s`,
//! `1m`, `1h30m`, `2d` in rules (SQL and JSON alike).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// A duration in milliseconds: window sizes, slides, gaps, watermark delay
/// and allowed lateness. Serialised as its text form (`"1m"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millis(pub i64);

/// Why a duration's text was refused.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{0:?} is not a duration: write a number and a unit, e.g. 500ms, 10s, 1m, 1h30m, 1d")]
pub struct DurationError(pub String);

const UNITS: [(&str, i64); 5] = [
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
];

impl FromStr for Millis {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || DurationError(text.to_owned());
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err(bad());
        }
        let mut total: i64 = 0;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(bad());
            }
            let number: i64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            let unit = &rest[..unit_len];
            let factor = UNITS
                .iter()
                .find(|(name, _)| *name == unit)
                .map(|(_, f)| *f)
                .ok_or_else(bad)?;
            total = number
                .checked_mul(factor)
                .and_then(|ms| total.checked_add(ms))
                .ok_or_else(bad)?;
            rest = &rest[unit_len..];
        }
        Ok(Millis(total))
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        if ms == 0 {
            return f.write_str("0s");
        }
        // The largest unit that divides it exactly, so `parse(display(x)) == x`.
        for (name, factor) in UNITS.iter().rev() {
            if ms % factor == 0 {
                return write!(f, "{}{name}", ms / factor);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl Serialize for Millis {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_sums() {
        assert_eq!("500ms".parse(), Ok(Millis(500)));
        assert_eq!("10s".parse(), Ok(Millis(10_000)));
        assert_eq!("1h30m".parse(), Ok(Millis(5_400_000)));
        assert!("10".parse::<Millis>().is_err());
        assert!("1y".parse::<Millis>().is_err());
        assert!("".parse::<Millis>().is_err());
        assert_eq!(Millis(90_000).to_string(), "90s");
        assert_eq!(Millis(60_000).to_string(), "1m");
    }
}
