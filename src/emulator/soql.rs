//! The SOQL subset grantdoctor sends, parsed into a [`Query`]:
//! `SELECT f, ... FROM Object [WHERE c [AND c]...] [ORDER BY f [ASC|DESC]] [LIMIT n]` with
//! conditions `f = 'text' | true | false | null | <datetime>`, `f IN ('a', ...)`,
//! `f > <datetime>`, `f < <datetime>`; and Salesforce's datetime text both ways. Keywords are
//! case-insensitive; names are kept as written (the object tables match them). Must never:
//! accept more than it can answer — whatever is not understood is a [`SyntaxError`], which the
//! endpoint answers as `MALFORMED_QUERY`.

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

/// A parsed query. Field and object names as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub fields: Vec<String>,
    pub object: String,
    pub conditions: Vec<Condition>,
    pub order: Option<Order>,
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub field: String,
    pub op: Op,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Eq(Literal),
    In(Vec<Literal>),
    Gt(Literal),
    Lt(Literal),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Literal {
    Text(String),
    Bool(bool),
    Null,
    /// Milliseconds since the epoch.
    DateTime(i64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub field: String,
    pub descending: bool,
}

/// What the parser did not understand, worded for the `MALFORMED_QUERY` message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SyntaxError(pub String);

fn fail<T>(message: impl Into<String>) -> Result<T, SyntaxError> {
    Err(SyntaxError(message.into()))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Text(String),
    Punct(char),
}

/// Splits a query into words, quoted strings and the punctuation `, ( ) = < >`.
fn tokenize(text: &str) -> Result<Vec<Token>, SyntaxError> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if ",()=<>".contains(c) {
            tokens.push(Token::Punct(c));
            chars.next();
        } else if c == '\'' {
            chars.next();
            tokens.push(Token::Text(quoted(&mut chars)?));
        } else if c.is_ascii_alphanumeric() || "_.:+-".contains(c) {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if !(c.is_ascii_alphanumeric() || "_.:+-".contains(c)) {
                    break;
                }
                word.push(c);
                chars.next();
            }
            tokens.push(Token::Word(word));
        } else {
            return fail(format!("unexpected character '{c}'"));
        }
    }
    Ok(tokens)
}

/// The rest of a quoted string, after its opening quote; `\'` and `\\` are escapes.
fn quoted(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<String, SyntaxError> {
    let mut text = String::new();
    loop {
        match chars.next() {
            None => return fail("unterminated string literal"),
            Some('\'') => return Ok(text),
            Some('\\') => match chars.next() {
                Some(c @ ('\'' | '\\' | '"')) => text.push(c),
                Some('n') => text.push('\n'),
                _ => return fail("invalid escape sequence in a string literal"),
            },
            Some(c) => text.push(c),
        }
    }
}

/// A cursor over the tokens, with the small helpers the grammar needs.
struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token
    }

    /// Consumes `keyword` (any case) if it is next.
    fn keyword(&mut self, keyword: &str) -> bool {
        let found = matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(keyword));
        if found {
            self.at += 1;
        }
        found
    }

    fn expect_keyword(&mut self, keyword: &str) -> Result<(), SyntaxError> {
        if self.keyword(keyword) {
            Ok(())
        } else {
            fail(format!("expected {keyword} {}", self.found()))
        }
    }

    fn punct(&mut self, c: char) -> bool {
        let found = self.peek() == Some(&Token::Punct(c));
        if found {
            self.at += 1;
        }
        found
    }

    /// A field or object name: letters, digits and `_`; relationship paths are not supported.
    fn name(&mut self, what: &str) -> Result<String, SyntaxError> {
        match self.next() {
            Some(Token::Word(w))
                if w.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                    && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
            {
                Ok(w)
            }
            Some(Token::Word(w)) if w.contains('.') => {
                fail(format!("relationship fields are not supported: {w}"))
            }
            _ => {
                self.at -= 1;
                fail(format!("expected {what} {}", self.found()))
            }
        }
    }

    /// "but found ..." for an error message.
    fn found(&self) -> String {
        match self.peek() {
            None => "but the query ended".into(),
            Some(Token::Word(w)) => format!("but found '{w}'"),
            // Not echoed: a quoted value may be anything, a secret included.
            Some(Token::Text(_)) => "but found a quoted string".into(),
            Some(Token::Punct(c)) => format!("but found '{c}'"),
        }
    }
}

/// Parses one query of the supported subset.
pub fn parse(text: &str) -> Result<Query, SyntaxError> {
    let mut p = Parser {
        tokens: tokenize(text)?,
        at: 0,
    };
    p.expect_keyword("SELECT")?;
    let fields = field_list(&mut p)?;
    p.expect_keyword("FROM")?;
    let object = p.name("an object name")?;
    let mut conditions = Vec::new();
    if p.keyword("WHERE") {
        conditions.push(condition(&mut p)?);
        while p.keyword("AND") {
            conditions.push(condition(&mut p)?);
        }
        if matches!(p.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case("OR")) {
            return fail("OR is not supported; only AND joins conditions");
        }
    }
    let order = order_by(&mut p)?;
    let limit = limit(&mut p)?;
    if p.peek().is_some() {
        return fail(format!(
            "unexpected text at the end of the query, {}",
            p.found()
        ));
    }
    Ok(Query {
        fields,
        object,
        conditions,
        order,
        limit,
    })
}

fn field_list(p: &mut Parser) -> Result<Vec<String>, SyntaxError> {
    let mut fields = vec![p.name("a field name")?];
    while p.punct(',') {
        fields.push(p.name("a field name")?);
    }
    if p.punct('(') {
        return fail("functions and subqueries are not supported");
    }
    Ok(fields)
}

fn condition(p: &mut Parser) -> Result<Condition, SyntaxError> {
    let field = p.name("a field name")?;
    let op = if p.punct('=') {
        Op::Eq(literal(p)?)
    } else if p.punct('>') {
        Op::Gt(literal(p)?)
    } else if p.punct('<') {
        Op::Lt(literal(p)?)
    } else if p.keyword("IN") {
        Op::In(literal_list(p)?)
    } else {
        return fail(format!(
            "expected =, <, >, or IN after {field} {}",
            p.found()
        ));
    };
    Ok(Condition { field, op })
}

fn literal_list(p: &mut Parser) -> Result<Vec<Literal>, SyntaxError> {
    if !p.punct('(') {
        return fail(format!("expected ( after IN {}", p.found()));
    }
    let mut values = vec![literal(p)?];
    while p.punct(',') {
        values.push(literal(p)?);
    }
    if !p.punct(')') {
        return fail(format!("expected ) to close IN {}", p.found()));
    }
    Ok(values)
}

fn literal(p: &mut Parser) -> Result<Literal, SyntaxError> {
    match p.next() {
        Some(Token::Text(t)) => Ok(Literal::Text(t)),
        Some(Token::Word(w)) if w.eq_ignore_ascii_case("true") => Ok(Literal::Bool(true)),
        Some(Token::Word(w)) if w.eq_ignore_ascii_case("false") => Ok(Literal::Bool(false)),
        Some(Token::Word(w)) if w.eq_ignore_ascii_case("null") => Ok(Literal::Null),
        Some(Token::Word(w)) => match parse_datetime(&w) {
            Some(ms) => Ok(Literal::DateTime(ms)),
            None => fail(format!(
                "unsupported value '{w}': use 'text', true, false, null or a datetime like 2026-11-30T00:00:00Z"
            )),
        },
        _ => {
            p.at -= 1;
            fail(format!("expected a value {}", p.found()))
        }
    }
}

fn order_by(p: &mut Parser) -> Result<Option<Order>, SyntaxError> {
    if !p.keyword("ORDER") {
        return Ok(None);
    }
    p.expect_keyword("BY")?;
    let field = p.name("a field name")?;
    let descending = if p.keyword("DESC") {
        true
    } else {
        p.keyword("ASC");
        false
    };
    if p.keyword("NULLS") || p.punct(',') {
        return fail("ORDER BY takes one field with ASC or DESC");
    }
    Ok(Some(Order { field, descending }))
}

fn limit(p: &mut Parser) -> Result<Option<usize>, SyntaxError> {
    if !p.keyword("LIMIT") {
        return Ok(None);
    }
    match p.next() {
        Some(Token::Word(w)) => match w.parse::<usize>() {
            Ok(n) => Ok(Some(n)),
            Err(_) => fail(format!("LIMIT takes a whole number, not '{w}'")),
        },
        _ => {
            p.at -= 1;
            fail(format!("expected a number after LIMIT {}", p.found()))
        }
    }
}

/// A SOQL datetime literal: `YYYY-MM-DDThh:mm:ss` with optional `.sss`, then `Z` or `±hh:mm`.
pub fn parse_datetime(text: &str) -> Option<i64> {
    let (date, rest) = text.split_once('T')?;
    let mut ymd = date.splitn(3, '-').map(|p| p.parse::<i32>().ok());
    let (year, month, day) = (ymd.next()??, ymd.next()??, ymd.next()??);
    let (clock, offset) = split_offset(rest)?;
    let (hms, millis) = match clock.split_once('.') {
        Some((hms, frac)) if frac.len() == 3 => (hms, frac.parse::<u16>().ok()?),
        Some(_) => return None,
        None => (clock, 0),
    };
    let mut parts = hms.splitn(3, ':').map(|p| p.parse::<u8>().ok());
    let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
    let month = Month::try_from(u8::try_from(month).ok()?).ok()?;
    let date = Date::from_calendar_date(year, month, u8::try_from(day).ok()?).ok()?;
    let time = Time::from_hms_milli(h, m, s, millis).ok()?;
    let at = PrimitiveDateTime::new(date, time).assume_offset(offset);
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()
}

fn split_offset(rest: &str) -> Option<(&str, UtcOffset)> {
    if let Some(clock) = rest.strip_suffix('Z') {
        return Some((clock, UtcOffset::UTC));
    }
    let at = rest.rfind(['+', '-'])?;
    let (clock, offset) = rest.split_at(at);
    let sign: i8 = if offset.starts_with('-') { -1 } else { 1 };
    let (h, m) = offset[1..].split_once(':')?;
    let (h, m) = (h.parse::<i8>().ok()?, m.parse::<i8>().ok()?);
    Some((clock, UtcOffset::from_hms(sign * h, sign * m, 0).ok()?))
}

/// Salesforce's datetime text in query answers: UTC, milliseconds, `+0000`.
pub fn format_datetime(ms: i64) -> String {
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}+0000",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Literal {
        Literal::Text(s.into())
    }

    #[test]
    fn the_oauth_token_query_parses_with_its_conditions_order_and_limit() {
        let q = parse(
            "SELECT Id, UserId, AppName FROM OauthToken WHERE UserId = '005x' AND AppName = 'My \\'App\\'' ORDER BY CreatedDate DESC LIMIT 200",
        )
        .unwrap();
        assert_eq!(q.fields, ["Id", "UserId", "AppName"]);
        assert_eq!(q.object, "OauthToken");
        assert_eq!(
            q.conditions,
            [
                Condition {
                    field: "UserId".into(),
                    op: Op::Eq(text("005x"))
                },
                Condition {
                    field: "AppName".into(),
                    op: Op::Eq(text("My 'App'"))
                },
            ]
        );
        assert_eq!(
            q.order,
            Some(Order {
                field: "CreatedDate".into(),
                descending: true
            })
        );
        assert_eq!(q.limit, Some(200));
    }

    #[test]
    fn keywords_are_case_insensitive_and_names_are_kept_as_written() {
        let q = parse("select id from user where isactive = TRUE order by username asc").unwrap();
        assert_eq!(q.fields, ["id"]);
        assert_eq!(q.object, "user");
        assert_eq!(q.conditions[0].op, Op::Eq(Literal::Bool(true)));
        assert!(!q.order.unwrap().descending);
    }

    #[test]
    fn in_lists_and_datetime_comparisons_parse() {
        let q = parse("SELECT Id FROM LoginHistory WHERE Application IN ('a', 'b') AND LoginTime > 2026-11-30T00:00:00Z AND LoginTime < 2026-12-01T01:00:00+01:00").unwrap();
        assert_eq!(q.conditions[0].op, Op::In(vec![text("a"), text("b")]));
        let start = parse_datetime("2026-11-30T00:00:00Z").unwrap();
        assert_eq!(q.conditions[1].op, Op::Gt(Literal::DateTime(start)));
        assert_eq!(
            q.conditions[2].op,
            Op::Lt(Literal::DateTime(start + 24 * 3_600_000))
        );
    }

    #[test]
    fn what_the_subset_lacks_is_a_syntax_error_naming_it() {
        let cases = [
            ("SELECT COUNT() FROM OauthToken", "functions"),
            ("SELECT Id FROM User WHERE Id = 'a' OR Id = 'b'", "OR"),
            ("SELECT CreatedBy.Username FROM User", "relationship"),
            (
                "SELECT Id FROM User WHERE LastLoginDate = LAST_N_DAYS:1",
                "LAST_N_DAYS:1",
            ),
            ("SELECT Id FROM User LIMIT ten", "LIMIT"),
            ("SELECT Id FROM User GROUP BY Id", "GROUP"),
            ("SELECT Id FROM User WHERE Username = 'open", "unterminated"),
            ("SELECT Id, FROM User", "FROM"),
            ("DELETE FROM User", "SELECT"),
            ("", "SELECT"),
        ];
        for (query, needle) in cases {
            let error = parse(query).unwrap_err();
            assert!(error.0.contains(needle), "{query}: {error}");
        }
    }

    #[test]
    fn datetimes_print_as_salesforce_does_and_parse_back() {
        let ms = parse_datetime("2026-11-25T09:12:03.042Z").unwrap();
        assert_eq!(format_datetime(ms), "2026-11-25T09:12:03.042+0000");
        assert_eq!(format_datetime(0), "1970-01-01T00:00:00.000+0000");
        assert_eq!(
            parse_datetime("2026-11-25T10:12:03+01:00"),
            parse_datetime("2026-11-25T09:12:03Z")
        );
        assert_eq!(parse_datetime("2026-13-01T00:00:00Z"), None);
        assert_eq!(parse_datetime("2026-11-30"), None);
    }
}
