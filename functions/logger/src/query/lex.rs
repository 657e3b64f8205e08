//! The filter language's tokens, with the byte position each starts at.

use super::FilterError;

/// One token of a filter text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// `{`
    LBrace,
    /// `}`
    RBrace,
    /// `(`
    LParen,
    /// `)`
    RParen,
    /// `,`
    Comma,
    /// `|` (a stage: `| json`, `| temp > 80`)
    Pipe,
    /// `|=` (line contains)
    PipeEq,
    /// `|~` (line matches a regex)
    PipeTilde,
    /// `!=` (line does not contain, or a field differs)
    BangEq,
    /// `!~` (line, field or label does not match a regex)
    BangTilde,
    /// `=` or `==`
    Eq,
    /// `=~`
    EqTilde,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// A double-quoted (escapes `\"`, `\\`, `\n`, `\t`) or back-quoted (raw) string.
    Str(String),
    /// A number (`80`, `-1.5`, `2e3`).
    Num(f64),
    /// A name: a field, label, keyword or bare value (`temp`, `and`, `warn`, `a.b`).
    Ident(String),
}

impl Tok {
    /// How the token is written, for error messages.
    pub(crate) fn show(&self) -> String {
        match self {
            Self::LBrace => "{".into(),
            Self::RBrace => "}".into(),
            Self::LParen => "(".into(),
            Self::RParen => ")".into(),
            Self::Comma => ",".into(),
            Self::Pipe => "|".into(),
            Self::PipeEq => "|=".into(),
            Self::PipeTilde => "|~".into(),
            Self::BangEq => "!=".into(),
            Self::BangTilde => "!~".into(),
            Self::Eq => "=".into(),
            Self::EqTilde => "=~".into(),
            Self::Gt => ">".into(),
            Self::Ge => ">=".into(),
            Self::Lt => "<".into(),
            Self::Le => "<=".into(),
            Self::Str(s) => format!("{s:?}"),
            Self::Num(n) => n.to_string(),
            Self::Ident(s) => s.clone(),
        }
    }
}

fn ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_' || c == '@'
}

fn ident_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '@' | '.' | '/' | '-')
}

/// Splits `text` into `(position, token)` pairs.
pub(crate) fn tokens(text: &str) -> Result<Vec<(usize, Tok)>, FilterError> {
    let mut out = Vec::new();
    let mut it = text.char_indices().peekable();
    while let Some(&(pos, c)) = it.peek() {
        if c.is_whitespace() {
            it.next();
            continue;
        }
        it.next();
        let next = it.peek().map(|&(_, n)| n);
        let two = |tok: Tok, it: &mut std::iter::Peekable<std::str::CharIndices>| {
            it.next();
            tok
        };
        let tok = match (c, next) {
            ('{', _) => Tok::LBrace,
            ('}', _) => Tok::RBrace,
            ('(', _) => Tok::LParen,
            (')', _) => Tok::RParen,
            (',', _) => Tok::Comma,
            ('|', Some('=')) => two(Tok::PipeEq, &mut it),
            ('|', Some('~')) => two(Tok::PipeTilde, &mut it),
            ('|', _) => Tok::Pipe,
            ('!', Some('=')) => two(Tok::BangEq, &mut it),
            ('!', Some('~')) => two(Tok::BangTilde, &mut it),
            ('=', Some('=')) => two(Tok::Eq, &mut it),
            ('=', Some('~')) => two(Tok::EqTilde, &mut it),
            ('=', _) => Tok::Eq,
            ('>', Some('=')) => two(Tok::Ge, &mut it),
            ('>', _) => Tok::Gt,
            ('<', Some('=')) => two(Tok::Le, &mut it),
            ('<', _) => Tok::Lt,
            ('"', _) => Tok::Str(quoted(text, pos, &mut it)?),
            ('`', _) => {
                let mut s = String::new();
                loop {
                    match it.next() {
                        Some((_, '`')) => break,
                        Some((_, ch)) => s.push(ch),
                        None => return Err(FilterError::new(pos, "`", "the string is not closed")),
                    }
                }
                Tok::Str(s)
            }
            (c, _)
                if c.is_ascii_digit() || (c == '-' && next.is_some_and(|n| n.is_ascii_digit())) =>
            {
                let mut end = pos + c.len_utf8();
                while let Some(&(p, ch)) = it.peek() {
                    let prev = text[..p].chars().last();
                    let sign_after_exp = matches!(ch, '+' | '-') && matches!(prev, Some('e' | 'E'));
                    if ch.is_ascii_digit() || matches!(ch, '.' | 'e' | 'E') || sign_after_exp {
                        it.next();
                        end = p + ch.len_utf8();
                    } else {
                        break;
                    }
                }
                let s = &text[pos..end];
                Tok::Num(
                    s.parse()
                        .map_err(|_| FilterError::new(pos, s, "not a number"))?,
                )
            }
            (c, _) if ident_start(c) => {
                let mut end = pos + c.len_utf8();
                while let Some(&(p, ch)) = it.peek() {
                    if ident_char(ch) {
                        it.next();
                        end = p + ch.len_utf8();
                    } else {
                        break;
                    }
                }
                Tok::Ident(text[pos..end].to_owned())
            }
            (c, _) => {
                return Err(FilterError::new(pos, c.to_string(), "unexpected character"));
            }
        };
        out.push((pos, tok));
    }
    Ok(out)
}

/// The rest of a double-quoted string (the opening quote at `start`).
fn quoted(
    text: &str,
    start: usize,
    it: &mut std::iter::Peekable<std::str::CharIndices>,
) -> Result<String, FilterError> {
    let mut s = String::new();
    loop {
        match it.next() {
            Some((_, '"')) => return Ok(s),
            Some((p, '\\')) => match it.next() {
                Some((_, 'n')) => s.push('\n'),
                Some((_, 't')) => s.push('\t'),
                Some((_, 'r')) => s.push('\r'),
                Some((_, e @ ('"' | '\\'))) => s.push(e),
                // Unknown escapes stay as written, so regexes like "\d+" work.
                Some((_, e)) => {
                    s.push('\\');
                    s.push(e);
                }
                None => return Err(FilterError::new(p, "\\", "the string is not closed")),
            },
            Some((_, c)) => s.push(c),
            None => {
                let shown: String = text[start..].chars().take(20).collect();
                return Err(FilterError::new(start, shown, "the string is not closed"));
            }
        }
    }
}
