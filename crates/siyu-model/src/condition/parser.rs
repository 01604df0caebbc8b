//! A recursive-descent parser from tokens to the syntax tree. It knows the grammar only (see
//! docs/conditions.md); names and types are the checker's business, so that a syntax error always
//! says what was expected at that point and nothing more.

use super::ast::{
    AggFunc, Aggregate, DurationLit, Expr, ExprKind, Name, PathRoot, Term, TermKind, Test, TestKind, TimePoint,
    TimePointKind, Value, ValueKind, Window, WindowLit,
};
use super::lexer::{describe, is_keyword, lex, Tok, Token};
use super::{ConditionError, ErrorCode, Span};

/// Parentheses, `not`s and `where`s may nest this deep; deeper is refused rather than risking the
/// stack on hostile input.
const MAX_DEPTH: usize = 64;

/// Parses a condition's text into its syntax tree; the error points at the first mistake.
pub fn parse(src: &str) -> std::result::Result<Expr, ConditionError> {
    let tokens = lex(src)?;
    let mut parser = Parser { src, tokens, at: 0, depth: 0 };
    let expr = parser.or_expr()?;
    match &parser.peek().tok {
        Tok::Eof => Ok(expr),
        Tok::RParen => Err(parser.error_here("unbalanced \")\": there is no \"(\" to close")),
        Tok::Str(_) | Tok::Num(_) | Tok::Duration(_) | Tok::Date(_) | Tok::Ident(_)
            if matches!(expr.kind, ExprKind::Predicate(_, None)) =>
        {
            Err(parser.expected("an operator (=, !=, <, <=, >, >=, in, not in, contains, before, after, within)"))
        }
        _ => Err(parser.expected("\"and\", \"or\" or the end of the condition")),
    }
}

struct Parser<'a> {
    src: &'a str,
    tokens: Vec<Token>,
    at: usize,
    depth: usize,
}

type Result<T> = std::result::Result<T, ConditionError>;

impl Parser<'_> {
    fn peek(&self) -> &Token {
        &self.tokens[self.at]
    }

    fn peek_at(&self, ahead: usize) -> &Tok {
        &self.tokens[(self.at + ahead).min(self.tokens.len() - 1)].tok
    }

    fn bump(&mut self) -> Token {
        let token = self.tokens[self.at].clone();
        if self.at + 1 < self.tokens.len() {
            self.at += 1;
        }
        token
    }

    fn at_keyword(&self, keyword: &str) -> bool {
        matches!(&self.peek().tok, Tok::Ident(word) if word.eq_ignore_ascii_case(keyword))
    }

    fn error_here(&self, message: impl Into<String>) -> ConditionError {
        ConditionError::new(ErrorCode::Syntax, self.peek().span, message)
    }

    /// `expected X after "prev", found Y`, at the current token.
    fn expected(&self, what: &str) -> ConditionError {
        self.expected_for(what, "")
    }

    /// `expected X after "prev"<purpose>, found Y`, at the current token.
    fn expected_for(&self, what: &str, purpose: &str) -> ConditionError {
        let found = describe(&self.peek().tok);
        let message = match self.at.checked_sub(1).map(|i| &self.tokens[i]) {
            Some(prev) => {
                let text = &self.src[prev.span.start.offset..prev.span.end.offset];
                format!("expected {what} after \"{text}\"{purpose}, found {found}")
            }
            None => format!("expected {what}{purpose}, found {found}"),
        };
        self.error_here(message)
    }

    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error_here(format!("the condition nests deeper than {MAX_DEPTH} levels")));
        }
        Ok(())
    }

    fn close_paren(&mut self, opened: Span, what: &str) -> Result<Span> {
        if self.peek().tok == Tok::RParen {
            return Ok(self.bump().span);
        }
        let at = opened.start;
        Err(self.expected_for("\")\"", &format!(" to close {what} at line {}, column {}", at.line, at.column)))
    }

    fn or_expr(&mut self) -> Result<Expr> {
        self.chain("or", Self::and_expr, ExprKind::Or)
    }

    fn and_expr(&mut self) -> Result<Expr> {
        self.chain("and", Self::unary, ExprKind::And)
    }

    fn chain(
        &mut self,
        keyword: &str,
        operand: fn(&mut Self) -> Result<Expr>,
        build: fn(Vec<Expr>) -> ExprKind,
    ) -> Result<Expr> {
        let first = operand(self)?;
        if !self.at_keyword(keyword) {
            return Ok(first);
        }
        let mut items = vec![first];
        while self.at_keyword(keyword) {
            self.bump();
            items.push(operand(self)?);
        }
        let span = items[0].span.to(items[items.len() - 1].span);
        Ok(Expr { kind: build(items), span })
    }

    fn unary(&mut self) -> Result<Expr> {
        if !self.at_keyword("not") {
            return self.primary();
        }
        let not = self.bump().span;
        self.enter()?;
        let inner = self.unary()?;
        self.depth -= 1;
        let span = not.to(inner.span);
        Ok(Expr { kind: ExprKind::Not(Box::new(inner)), span })
    }

    fn primary(&mut self) -> Result<Expr> {
        let token = self.peek().clone();
        match &token.tok {
            Tok::LParen => {
                self.bump();
                self.enter()?;
                let mut inner = self.or_expr()?;
                self.depth -= 1;
                let close = self.close_paren(token.span, "the \"(\"")?;
                inner.span = token.span.to(close);
                Ok(inner)
            }
            Tok::Ident(word) if matches!(word.as_str(), "tagged" | "has") && *self.peek_at(1) == Tok::LParen => {
                let is_tag = word == "tagged";
                self.bump();
                let open = self.bump().span;
                let name = self.name(if is_tag { "a tag name" } else { "an identity kind, e.g. phone" })?;
                let close = self.close_paren(open, &format!("\"{}(\"", if is_tag { "tagged" } else { "has" }))?;
                let kind = if is_tag { ExprKind::Tagged(name) } else { ExprKind::Has(name) };
                Ok(Expr { kind, span: token.span.to(close) })
            }
            _ => {
                let term = self.term()?;
                let test = self.test()?;
                let span = match &test {
                    Some(test) => term.span.to(test.span),
                    None => term.span,
                };
                Ok(Expr { kind: ExprKind::Predicate(term, test), span })
            }
        }
    }

    /// A tag or identity kind: a string or a single word.
    fn name(&mut self, what: &str) -> Result<Name> {
        match &self.peek().tok {
            Tok::Str(text) | Tok::Ident(text) => {
                let text = text.clone();
                Ok(Name { text, span: self.bump().span })
            }
            _ => Err(self.expected(what)),
        }
    }

    fn term(&mut self) -> Result<Term> {
        const WHAT: &str = "a condition (a field, traits.…, count(…), tagged(…), has(…), \"not\" or \"(\")";
        let token = self.peek().clone();
        let Tok::Ident(word) = &token.tok else { return Err(self.expected(WHAT)) };
        if is_keyword(word) {
            return Err(self.expected(WHAT));
        }
        if let Some(func) = AggFunc::parse(word).filter(|_| *self.peek_at(1) == Tok::LParen) {
            return self.aggregate(func);
        }
        let root = match word.as_str() {
            "traits" => Some(PathRoot::Traits),
            "properties" => Some(PathRoot::Properties),
            _ => None,
        };
        self.bump();
        let Some(root) = root.filter(|_| self.peek().tok == Tok::Dot) else {
            return Ok(Term { kind: TermKind::Field(word.clone()), span: token.span });
        };
        let mut keys = Vec::new();
        let mut span = token.span;
        while self.peek().tok == Tok::Dot {
            self.bump();
            match &self.peek().tok {
                Tok::Ident(key) | Tok::Str(key) => {
                    keys.push(key.clone());
                    span = span.to(self.bump().span);
                }
                _ => return Err(self.expected("a key name")),
            }
        }
        Ok(Term { kind: TermKind::Path(root, keys), span })
    }

    fn aggregate(&mut self, func: AggFunc) -> Result<Term> {
        let start = self.bump().span;
        let open = self.bump().span;
        let event = self.event_name()?;
        let mut filter = None;
        if self.at_keyword("where") {
            self.bump();
            self.enter()?;
            filter = Some(Box::new(self.or_expr()?));
            self.depth -= 1;
        }
        let mut window = None;
        if self.peek().tok == Tok::Comma {
            self.bump();
            let token = self.peek().clone();
            let kind = match &token.tok {
                Tok::Duration(d) => Window::Last(*d),
                Tok::Ident(word) if word.eq_ignore_ascii_case("all") => Window::All,
                _ => return Err(self.expected("a window (e.g. 30d, 12h, 1y, or all)")),
            };
            self.bump();
            window = Some(WindowLit { window: kind, span: token.span });
        }
        if self.peek().tok != Tok::RParen && filter.is_none() && window.is_none() {
            return Err(self.expected("\"where\", \",\" and a window, or \")\""));
        }
        let close = self.close_paren(open, &format!("\"{}(\"", func.as_str()))?;
        Ok(Term { kind: TermKind::Aggregate(Aggregate { func, event, filter, window }), span: start.to(close) })
    }

    /// `order_paid`, `shop.visit` or `"shop.visit"`.
    fn event_name(&mut self) -> Result<Name> {
        const WHAT: &str = "an event type, e.g. order_paid";
        match &self.peek().tok {
            Tok::Str(text) => {
                let text = text.clone();
                Ok(Name { text, span: self.bump().span })
            }
            Tok::Ident(first) => {
                let mut text = first.clone();
                let mut span = self.bump().span;
                while self.peek().tok == Tok::Dot {
                    self.bump();
                    let Tok::Ident(part) = &self.peek().tok else { return Err(self.expected(WHAT)) };
                    text.push('.');
                    text.push_str(part);
                    span = span.to(self.bump().span);
                }
                Ok(Name { text, span })
            }
            _ => Err(self.expected(WHAT)),
        }
    }

    /// What follows a term, if anything.
    fn test(&mut self) -> Result<Option<Test>> {
        let token = self.peek().clone();
        let kind = match &token.tok {
            Tok::Cmp(op) => {
                self.bump();
                TestKind::Compare(*op, self.value()?)
            }
            Tok::Ident(word) => match word.to_ascii_lowercase().as_str() {
                "in" => {
                    self.bump();
                    TestKind::In(self.list()?)
                }
                "not" if matches!(self.peek_at(1), Tok::Ident(w) if w.eq_ignore_ascii_case("in")) => {
                    self.bump();
                    self.bump();
                    TestKind::NotIn(self.list()?)
                }
                "contains" => {
                    self.bump();
                    TestKind::Contains(self.value()?)
                }
                "before" => {
                    self.bump();
                    TestKind::Before(self.time_point()?)
                }
                "after" => {
                    self.bump();
                    TestKind::After(self.time_point()?)
                }
                "within" => {
                    self.bump();
                    let token = self.peek().clone();
                    let Tok::Duration(duration) = token.tok else {
                        return Err(self.expected("a duration (e.g. 7d)"));
                    };
                    self.bump();
                    TestKind::Within(DurationLit { duration, span: token.span })
                }
                _ => return Ok(None),
            },
            _ => return Ok(None),
        };
        let end = self.tokens[self.at.saturating_sub(1)].span;
        Ok(Some(Test { kind, span: token.span.to(end) }))
    }

    fn value(&mut self) -> Result<Value> {
        let token = self.peek().clone();
        let kind = match &token.tok {
            Tok::Num(n) => ValueKind::Number(*n),
            Tok::Str(text) => ValueKind::Text(text.clone()),
            Tok::Ident(word) if word.eq_ignore_ascii_case("true") => ValueKind::Bool(true),
            Tok::Ident(word) if word.eq_ignore_ascii_case("false") => ValueKind::Bool(false),
            Tok::Ident(word) if !is_keyword(word) => ValueKind::Word(word.clone()),
            Tok::Date(_) => {
                return Err(self.expected("a value (dates go after \"before\" or \"after\")"));
            }
            _ => return Err(self.expected("a value")),
        };
        self.bump();
        Ok(Value { kind, span: token.span })
    }

    fn list(&mut self) -> Result<Vec<Value>> {
        if self.peek().tok != Tok::LParen {
            return Err(self.expected("\"(\" and a list of values"));
        }
        let open = self.bump().span;
        let mut values = vec![self.value()?];
        while self.peek().tok == Tok::Comma {
            self.bump();
            values.push(self.value()?);
        }
        if self.peek().tok != Tok::RParen {
            let at = open.start;
            let purpose = format!(" to close the list opened at line {}, column {}", at.line, at.column);
            return Err(self.expected_for("\",\" or \")\"", &purpose));
        }
        self.bump();
        Ok(values)
    }

    fn time_point(&mut self) -> Result<TimePoint> {
        let token = self.peek().clone();
        match token.tok {
            Tok::Date(t) => {
                self.bump();
                Ok(TimePoint { kind: TimePointKind::At(t), span: token.span })
            }
            Tok::Duration(d) => {
                self.bump();
                if !self.at_keyword("ago") {
                    return Err(self.expected("\"ago\" (e.g. 30d ago)"));
                }
                let ago = self.bump().span;
                Ok(TimePoint { kind: TimePointKind::Ago(d), span: token.span.to(ago) })
            }
            _ => Err(self.expected("a time: a date like 2026-11-01 or a duration like 30d ago")),
        }
    }
}
