//! logfmt: space-separated `key=value` pairs; a value may be
//! double-quoted with `\"`, `\\`, `\n`, `\t` escapes; a bare `key` is a
//! flag.

/// Why a line is not logfmt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LogfmtError {
    /// It does not start with `key=` — probably plain text, not an error.
    NotLogfmt,
    /// It looked like logfmt and broke: what broke.
    Broken(String),
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/' | b'@' | b':')
}

/// Splits a logfmt line into pairs (a bare key gets `None`).
pub(crate) fn pairs(line: &str) -> Result<Vec<(String, Option<String>)>, LogfmtError> {
    let bytes = line.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    let skip_spaces = |i: &mut usize| {
        while *i < bytes.len() && bytes[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    skip_spaces(&mut i);
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && is_key_byte(bytes[i]) {
            i += 1;
        }
        let key = &line[start..i];
        let at_end = i >= bytes.len() || bytes[i].is_ascii_whitespace();
        if key.is_empty() || (!at_end && bytes[i] != b'=') {
            // The first token decides: not `key=` → not logfmt at all.
            return Err(if out.is_empty() {
                LogfmtError::NotLogfmt
            } else {
                LogfmtError::Broken(format!("unexpected character at byte {i}"))
            });
        }
        if at_end {
            if out.is_empty() {
                return Err(LogfmtError::NotLogfmt);
            }
            out.push((key.to_owned(), None));
            skip_spaces(&mut i);
            continue;
        }
        i += 1; // '='
        let value = if i < bytes.len() && bytes[i] == b'"' {
            i += 1;
            let mut v = String::new();
            let mut closed = false;
            let mut chars = line[i..].char_indices();
            while let Some((off, c)) = chars.next() {
                match c {
                    '"' => {
                        i += off + 1;
                        closed = true;
                        break;
                    }
                    '\\' => match chars.next() {
                        Some((_, 'n')) => v.push('\n'),
                        Some((_, 't')) => v.push('\t'),
                        Some((_, 'r')) => v.push('\r'),
                        Some((_, e)) => v.push(e),
                        None => break,
                    },
                    c => v.push(c),
                }
            }
            if !closed {
                return Err(LogfmtError::Broken(format!(
                    "the quoted value of {key} is not closed"
                )));
            }
            if i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                return Err(LogfmtError::Broken(format!(
                    "text right after the quoted value of {key}"
                )));
            }
            v
        } else {
            let vstart = i;
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            line[vstart..i].to_owned()
        };
        out.push((key.to_owned(), Some(value)));
        skip_spaces(&mut i);
    }
    if out.is_empty() {
        return Err(LogfmtError::NotLogfmt);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Option<String> {
        Some(v.to_owned())
    }

    #[test]
    fn pairs_quoted_bare_and_escaped() {
        let p = pairs(r#"level=warn msg="valve \"3\" stuck" temp=81.5 retry"#).expect("logfmt");
        assert_eq!(
            p,
            vec![
                ("level".into(), s("warn")),
                ("msg".into(), s("valve \"3\" stuck")),
                ("temp".into(), s("81.5")),
                ("retry".into(), None),
            ]
        );
        assert_eq!(
            pairs("a= b=1").expect("empty value")[0],
            ("a".into(), s(""))
        );
    }

    #[test]
    fn plain_text_is_not_logfmt_and_broken_logfmt_says_why() {
        assert_eq!(pairs("motor started"), Err(LogfmtError::NotLogfmt));
        assert_eq!(pairs("ERROR: x=1"), Err(LogfmtError::NotLogfmt));
        assert_eq!(pairs(""), Err(LogfmtError::NotLogfmt));
        assert!(matches!(
            pairs(r#"msg="never closed"#),
            Err(LogfmtError::Broken(_))
        ));
        assert!(matches!(pairs("a=1 (oops)"), Err(LogfmtError::Broken(_))));
    }
}
