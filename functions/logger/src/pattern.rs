//! Message patterns: a message with its variable parts replaced by
//! placeholders, so "pump 2 tripped at 81.5C" and "pump 7 tripped at 90C"
//! count as one pattern, `pump <num> tripped at <num>C`.
//!
//! Replaced, in this order: quoted strings (`"…"`, `'…'`) → `<str>`, UUIDs
//! → `<uuid>`, `0x…` and hex words of 8+ characters with a digit →
//! `<hex>`, and every other run of digits (with the `.`, `:`, `,`, `-`
//! between them, so times and decimals are one) → `<num>`. A pattern is at
//! most [`MAX_PATTERN_CHARS`] characters.

/// Longest pattern kept, in characters (longer ones are cut, with `…`).
pub const MAX_PATTERN_CHARS: usize = 200;

/// The pattern of a message.
pub fn pattern(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(MAX_PATTERN_CHARS + 8));
    pattern_into(message, &mut out);
    out
}

/// [`pattern`] written into `out` (cleared first), so a caller counting
/// many messages reuses one buffer.
pub fn pattern_into(message: &str, out: &mut String) {
    out.clear();
    // Every character the rules look at is ASCII, so the scan walks bytes;
    // other characters are copied whole.
    let bytes = message.as_bytes();
    let mut i = 0;
    let mut written = 0;
    while i < bytes.len() {
        if written >= MAX_PATTERN_CHARS {
            out.push('…');
            break;
        }
        // A run of ASCII no rule starts at (no quote, no hex digit — digits
        // are hex digits) is copied at once, as the character-by-character
        // copy below would.
        let plain = bytes[i..]
            .iter()
            .take(MAX_PATTERN_CHARS - written)
            .take_while(|&&x| x.is_ascii() && !x.is_ascii_hexdigit() && !matches!(x, b'"' | b'\''))
            .count();
        if plain > 0 {
            out.push_str(&message[i..i + plain]);
            written += plain;
            i += plain;
            continue;
        }
        let b = bytes[i];
        // Looked at only before a hex digit (most bytes are not).
        let word_start = || {
            message[..i]
                .chars()
                .next_back()
                .is_none_or(|p| !p.is_alphanumeric())
        };
        if matches!(b, b'"' | b'\'')
            && let Some(close) = bytes[i + 1..].iter().position(|&x| x == b)
        {
            out.push_str("<str>");
            written += 5;
            i += close + 2;
            continue;
        }
        if b.is_ascii_hexdigit() && word_start() {
            let end = bytes[i..]
                .iter()
                .position(|x| !(x.is_ascii_alphanumeric() || *x == b'-'))
                .map_or(bytes.len(), |p| i + p);
            let word = &message[i..end];
            if is_uuid(word) {
                out.push_str("<uuid>");
                written += 6;
                i = end;
                continue;
            }
            if is_hex(word) {
                out.push_str("<hex>");
                written += 5;
                i = end;
                continue;
            }
        }
        if b.is_ascii_digit() {
            let mut j = i + 1;
            while j < bytes.len()
                && (bytes[j].is_ascii_digit()
                    || (matches!(bytes[j], b'.' | b':' | b',' | b'-')
                        && bytes.get(j + 1).is_some_and(u8::is_ascii_digit)))
            {
                j += 1;
            }
            out.push_str("<num>");
            written += 5;
            i = j;
            continue;
        }
        // A whole character (1–4 bytes).
        let c = message[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(c);
        written += 1;
        i += c.len_utf8();
    }
}

fn is_uuid(w: &str) -> bool {
    w.len() == 36
        && w.split('-').map(str::len).eq([8, 4, 4, 4, 12])
        && w.bytes().all(|c| c == b'-' || c.is_ascii_hexdigit())
}

fn is_hex(w: &str) -> bool {
    if let Some(rest) = w.strip_prefix("0x").or_else(|| w.strip_prefix("0X")) {
        return !rest.is_empty() && rest.bytes().all(|c| c.is_ascii_hexdigit());
    }
    w.len() >= 8
        && w.bytes().all(|c| c.is_ascii_hexdigit())
        && w.bytes().any(|c| c.is_ascii_digit())
        && w.bytes().any(|c| c.is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::pattern;

    #[test]
    fn variable_parts_become_placeholders() {
        assert_eq!(
            pattern("pump 2 tripped at 81.5C"),
            "pump <num> tripped at <num>C"
        );
        assert_eq!(
            pattern("pump 17 tripped at 90C"),
            "pump <num> tripped at <num>C"
        );
        assert_eq!(
            pattern("request 3f2b8c1e-9d4a-4f6b-8e2a-1c3d5e7f9a0b failed"),
            "request <uuid> failed"
        );
        assert_eq!(pattern("wrote 0x1F at deadbeef42"), "wrote <hex> at <hex>");
        assert_eq!(
            pattern(r#"user "bob" denied 'x y'"#),
            "user <str> denied <str>"
        );
        assert_eq!(pattern("at 12:30:01 on 2026-12-06"), "at <num> on <num>");
        assert_eq!(pattern("line1/plc ok"), "line<num>/plc ok");
        assert_eq!(pattern("deadline reached"), "deadline reached");
        assert_eq!(pattern("unclosed \"quote"), "unclosed \"quote");
        assert_eq!(pattern(""), "");
        assert!(pattern(&"x".repeat(1000)).chars().count() <= super::MAX_PATTERN_CHARS + 1);
        let cut = "x".repeat(super::MAX_PATTERN_CHARS) + "…";
        assert_eq!(pattern(&"x".repeat(1000)), cut);
        assert_eq!(
            pattern(&"x".repeat(super::MAX_PATTERN_CHARS)),
            cut[..cut.len() - 3]
        );
        assert_eq!(
            pattern(&format!(
                "{} 42 zz",
                "y".repeat(super::MAX_PATTERN_CHARS - 3)
            )),
            "y".repeat(super::MAX_PATTERN_CHARS - 3) + " <num>…"
        );
        assert_eq!(
            pattern("ERROR pump 3 tripped at 95C after 12 cycles xxxx"),
            "ERROR pump <num> tripped at <num>C after <num> cycles xxxx"
        );
        assert_eq!(pattern("key=abcdef12 zz=x1f"), "key=<hex> zz=x<num>f");
        // Characters beyond ASCII are copied whole and count as one; a
        // letter beyond ASCII ends no word.
        assert_eq!(pattern("température 81°C über"), "température <num>°C über");
        assert_eq!(pattern("éabc12345678 x"), "éabc<num> x");
        assert_eq!(pattern("é abc12345678"), "é <hex>");
        assert_eq!(
            pattern(&"ü".repeat(300)).chars().count(),
            super::MAX_PATTERN_CHARS + 1
        );
    }
}
