//! Tokens → the filter's parsed form ([`Ast`]).

use regex::{Regex, RegexBuilder};

use super::lex::{Tok, tokens};
use super::{FilterError, MAX_NESTING, MAX_REGEX_BYTES, MAX_STAGES};
use crate::record::Level;

/// A label of the stream selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Label {
    Site,
    Source,
    Level,
}

/// How a selector matcher compares a site or source.
#[derive(Debug)]
pub(crate) enum Text {
    /// Exactly this value.
    Exact(String),
    /// A glob or regex, compiled (anchored).
    Pattern(Regex),
}

impl Text {
    pub(crate) fn is_match(&self, v: &str) -> bool {
        match self {
            Self::Exact(e) => e == v,
            Self::Pattern(r) => r.is_match(v),
        }
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cmp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Re,
    NotRe,
}

/// One matcher of the selector.
#[derive(Debug)]
pub(crate) enum Matcher {
    /// `site`/`source` `=`, `!=` (exact or glob), `=~`, `!~`; `negate` for
    /// `!=` and `!~`.
    Text {
        label: Label,
        text: Text,
        negate: bool,
    },
    /// `level <op> <name>`.
    Level { cmp: Cmp, level: Level },
}

/// A line filter's test.
#[derive(Debug)]
pub(crate) enum LineTest {
    Contains(String),
    Regex(Regex),
}

/// A field a predicate reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Field {
    Level,
    Message,
    Site,
    Source,
    Format,
    /// A key of the record's fields.
    Key(String),
}

/// A predicate's literal.
#[derive(Debug)]
pub(crate) enum Lit {
    Num(f64),
    Str(String),
    Bool(bool),
    Level(Level),
    Regex(Regex),
}

/// A predicate expression.
#[derive(Debug)]
pub(crate) enum Expr {
    Test { field: Field, cmp: Cmp, lit: Lit },
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

/// One stage after the selector.
#[derive(Debug)]
pub(crate) enum Stage {
    /// A line filter; `negate` for `!=` / `!~`.
    Line { test: LineTest, negate: bool },
    /// `| <predicate>`.
    Predicate(Expr),
}

/// A parsed filter.
#[derive(Debug, Default)]
pub(crate) struct Ast {
    pub(crate) matchers: Vec<Matcher>,
    pub(crate) stages: Vec<Stage>,
}

impl Ast {
    pub(crate) fn is_all(&self) -> bool {
        self.matchers.is_empty() && self.stages.is_empty()
    }

    pub(crate) fn exact_label(&self, want: Label) -> Option<&str> {
        self.matchers.iter().find_map(|m| match m {
            Matcher::Text {
                label,
                text: Text::Exact(v),
                negate: false,
            } if *label == want => Some(v.as_str()),
            _ => None,
        })
    }
}

/// Compiles a regex with the size limit; `anchored` for label matchers.
fn regex(pattern: &str, anchored: bool, pos: usize) -> Result<Regex, FilterError> {
    let full = if anchored {
        format!("^(?:{pattern})$")
    } else {
        pattern.to_owned()
    };
    RegexBuilder::new(&full)
        .size_limit(MAX_REGEX_BYTES)
        .dfa_size_limit(MAX_REGEX_BYTES)
        .build()
        .map_err(|e| FilterError::new(pos, format!("{pattern:?}"), format!("invalid regex: {e}")))
}

/// A glob (`*`, `?`) as an anchored regex.
fn glob(pattern: &str, pos: usize) -> Result<Regex, FilterError> {
    let mut re = String::new();
    for c in pattern.chars() {
        match c {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            c => re.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
        }
    }
    regex(&re, true, pos)
}

struct Parser<'a> {
    toks: Vec<(usize, Tok)>,
    at: usize,
    end: usize,
    _text: &'a str,
    /// Parentheses open at this point ([`MAX_NESTING`] at most: the parser
    /// recurses once per level, and a 4 KiB filter of `(` overflowed the
    /// stack of the process serving it).
    depth: usize,
}

/// Parses a whole filter text.
pub(crate) fn parse(text: &str) -> Result<Ast, FilterError> {
    let mut p = Parser {
        toks: tokens(text)?,
        at: 0,
        end: text.len(),
        _text: text,
        depth: 0,
    };
    let mut ast = Ast::default();
    if p.peek() == Some(&Tok::LBrace) {
        p.next();
        ast.matchers = p.selector()?;
    }
    while p.peek().is_some() {
        if ast.stages.len() >= MAX_STAGES {
            return Err(p.error_here(format!("more than {MAX_STAGES} stages")));
        }
        if let Some(stage) = p.stage()? {
            ast.stages.push(stage);
        }
    }
    Ok(ast)
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at).map(|(_, t)| t)
    }

    fn pos(&self) -> usize {
        self.toks.get(self.at).map_or(self.end, |(p, _)| *p)
    }

    fn next(&mut self) -> Option<(usize, Tok)> {
        let t = self.toks.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn error_here(&self, reason: impl Into<String>) -> FilterError {
        let token = self.peek().map(Tok::show).unwrap_or_default();
        FilterError::new(self.pos(), token, reason)
    }

    fn expect_string(&mut self, what: &str) -> Result<(usize, String), FilterError> {
        match self.peek() {
            Some(Tok::Str(s)) => {
                let s = s.clone();
                let pos = self.pos();
                self.next();
                Ok((pos, s))
            }
            _ => Err(self.error_here(format!("expected a quoted string ({what})"))),
        }
    }

    /// After `{`: matchers up to `}`.
    fn selector(&mut self) -> Result<Vec<Matcher>, FilterError> {
        let mut out = Vec::new();
        if self.peek() == Some(&Tok::RBrace) {
            self.next();
            return Ok(out);
        }
        loop {
            out.push(self.matcher()?);
            match self.next() {
                Some((_, Tok::Comma)) => continue,
                Some((_, Tok::RBrace)) => return Ok(out),
                _ => {
                    self.at -= 1;
                    return Err(self.error_here("expected `,` or `}` in the selector"));
                }
            }
        }
    }

    fn matcher(&mut self) -> Result<Matcher, FilterError> {
        let label = match self.peek() {
            Some(Tok::Ident(name)) => match name.as_str() {
                "site" => Label::Site,
                "source" => Label::Source,
                "level" => Label::Level,
                _ => {
                    return Err(
                        self.error_here("unknown label: the selector takes site, source and level")
                    );
                }
            },
            _ => return Err(self.error_here("expected a label (site, source or level)")),
        };
        self.next();
        let cmp = self.cmp()?;
        let (pos, value) = self.expect_string("the label's value")?;
        if label == Label::Level {
            let level = Level::from_name(&value)
                .ok_or_else(|| FilterError::new(pos, format!("{value:?}"), "unknown level"))?;
            if matches!(cmp, Cmp::Re | Cmp::NotRe) {
                return Err(FilterError::new(
                    pos,
                    format!("{value:?}"),
                    "level takes = != > >= < <=",
                ));
            }
            return Ok(Matcher::Level { cmp, level });
        }
        let (text, negate) = match cmp {
            Cmp::Eq | Cmp::Ne if value.contains(['*', '?']) => {
                (Text::Pattern(glob(&value, pos)?), cmp == Cmp::Ne)
            }
            Cmp::Eq | Cmp::Ne => (Text::Exact(value), cmp == Cmp::Ne),
            Cmp::Re | Cmp::NotRe => (Text::Pattern(regex(&value, true, pos)?), cmp == Cmp::NotRe),
            _ => {
                return Err(FilterError::new(
                    pos,
                    format!("{value:?}"),
                    "site and source take = != =~ !~",
                ));
            }
        };
        Ok(Matcher::Text {
            label,
            text,
            negate,
        })
    }

    fn cmp(&mut self) -> Result<Cmp, FilterError> {
        let c = match self.peek() {
            Some(Tok::Eq) => Cmp::Eq,
            Some(Tok::BangEq) => Cmp::Ne,
            Some(Tok::Gt) => Cmp::Gt,
            Some(Tok::Ge) => Cmp::Ge,
            Some(Tok::Lt) => Cmp::Lt,
            Some(Tok::Le) => Cmp::Le,
            Some(Tok::EqTilde) => Cmp::Re,
            Some(Tok::BangTilde) => Cmp::NotRe,
            _ => return Err(self.error_here("expected an operator (= != > >= < <= =~ !~)")),
        };
        self.next();
        Ok(c)
    }

    /// One stage; `None` for a parser stage (`| json`), which does nothing.
    fn stage(&mut self) -> Result<Option<Stage>, FilterError> {
        let (negate, is_regex) = match self.peek() {
            Some(Tok::PipeEq) => (false, false),
            Some(Tok::BangEq) => (true, false),
            Some(Tok::PipeTilde) => (false, true),
            Some(Tok::BangTilde) => (true, true),
            Some(Tok::Pipe) => {
                self.next();
                if let Some(Tok::Ident(w)) = self.peek()
                    && matches!(w.as_str(), "json" | "logfmt")
                    && !matches!(self.toks.get(self.at + 1).map(|(_, t)| t), Some(t) if is_cmp(t))
                {
                    self.next();
                    return Ok(None);
                }
                return Ok(Some(Stage::Predicate(self.or()?)));
            }
            _ => return Err(self.error_here("expected a stage: |= != |~ !~ or | <predicate>")),
        };
        self.next();
        let (pos, text) = self.expect_string("the line filter's text")?;
        let test = if is_regex {
            LineTest::Regex(regex(&text, false, pos)?)
        } else {
            LineTest::Contains(text)
        };
        Ok(Some(Stage::Line { test, negate }))
    }

    fn or(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.and()?;
        while matches!(self.peek(), Some(Tok::Ident(w)) if w == "or") {
            self.next();
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.term()?;
        loop {
            match self.peek() {
                Some(Tok::Ident(w)) if w == "and" => {
                    self.next();
                }
                // LogQL's `, ` between predicates means and.
                Some(Tok::Comma) => {
                    self.next();
                }
                _ => return Ok(left),
            }
            left = Expr::And(Box::new(left), Box::new(self.term()?));
        }
    }

    fn term(&mut self) -> Result<Expr, FilterError> {
        if self.peek() == Some(&Tok::LParen) {
            if self.depth == MAX_NESTING {
                return Err(
                    self.error_here(format!("parentheses nested deeper than {MAX_NESTING}"))
                );
            }
            self.next();
            self.depth += 1;
            let e = self.or()?;
            self.depth -= 1;
            if self.peek() != Some(&Tok::RParen) {
                return Err(self.error_here("expected `)`"));
            }
            self.next();
            return Ok(e);
        }
        let field = match self.peek() {
            Some(Tok::Ident(name)) if !matches!(name.as_str(), "and" | "or") => match name.as_str()
            {
                "level" => Field::Level,
                "message" | "msg" => Field::Message,
                "site" => Field::Site,
                "source" => Field::Source,
                "format" => Field::Format,
                _ => Field::Key(name.clone()),
            },
            Some(Tok::Str(name)) => Field::Key(name.clone()),
            _ => return Err(self.error_here("expected a field name")),
        };
        self.next();
        let cmp = self.cmp()?;
        let pos = self.pos();
        let shown = self.peek().map(Tok::show).unwrap_or_default();
        let lit = match self.next().map(|(_, t)| t) {
            Some(Tok::Num(n)) => Lit::Num(n),
            Some(Tok::Str(s)) => Lit::Str(s),
            Some(Tok::Ident(w)) if w == "true" => Lit::Bool(true),
            Some(Tok::Ident(w)) if w == "false" => Lit::Bool(false),
            Some(Tok::Ident(w)) => Lit::Str(w),
            _ => {
                self.at -= 1;
                return Err(self.error_here("expected a value (number, string or word)"));
            }
        };
        let lit = match (&field, cmp, lit) {
            (_, Cmp::Re | Cmp::NotRe, Lit::Str(s)) => Lit::Regex(regex(&s, true, pos)?),
            (_, Cmp::Re | Cmp::NotRe, _) => {
                return Err(FilterError::new(
                    pos,
                    shown,
                    "=~ and !~ take a quoted regex",
                ));
            }
            (Field::Level, _, Lit::Str(s)) => Lit::Level(
                Level::from_name(&s)
                    .ok_or_else(|| FilterError::new(pos, shown.clone(), "unknown level"))?,
            ),
            (Field::Level, _, _) => return Err(FilterError::new(pos, shown, "unknown level")),
            (_, _, lit) => lit,
        };
        Ok(Expr::Test { field, cmp, lit })
    }
}

fn is_cmp(t: &Tok) -> bool {
    matches!(
        t,
        Tok::Eq
            | Tok::BangEq
            | Tok::Gt
            | Tok::Ge
            | Tok::Lt
            | Tok::Le
            | Tok::EqTilde
            | Tok::BangTilde
    )
}
