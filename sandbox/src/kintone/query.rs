//! A parser and evaluator for the subset of kintone's record query language that the sandbox
//! supports.
//!
//! Grammar (keywords are case-insensitive):
//!
//! ```text
//! query     := [expr] clause*
//! clause    := "order" "by" field ["asc"|"desc"] ("," field ["asc"|"desc"])*
//!            | "limit" integer
//!            | "offset" integer
//! expr      := and_expr ("or" and_expr)*
//! and_expr  := primary ("and" primary)*
//! primary   := "(" expr ")" | condition
//! condition := field op value
//!            | field ("in" | "not" "in") "(" value ("," value)* ")"
//! op        := "=" | "!=" | ">" | ">=" | "<" | "<=" | "like" | "not" "like"
//! value     := double-quoted string (with \" and \\ escapes) | number
//! ```
//!
//! A field code is any run of characters other than whitespace and `( ) , = ! < > "`, so
//! Japanese field codes such as `顧客名` work as they do in kintone. Each clause may appear
//! at most once.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::fmt;

use serde_json::{Map, Value};

/// A parsed query.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Query {
    pub(crate) condition: Option<Expr>,
    pub(crate) order_by: Vec<OrderBy>,
    pub(crate) limit: Option<u64>,
    pub(crate) offset: Option<u64>,
}

/// A boolean condition over a record.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Cond(Condition),
}

/// One `field op value` comparison.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Condition {
    pub(crate) field: String,
    pub(crate) op: Op,
    /// The single operand, or the list of operands of `in` and `not in`.
    pub(crate) values: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Like,
    NotLike,
    In,
    NotIn,
}

/// One sort key of `order by`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OrderBy {
    pub(crate) field: String,
    pub(crate) descending: bool,
}

/// Why a query could not be parsed; the message says what is wrong and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct QueryError(pub(crate) String);

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for QueryError {}

fn error<T>(message: impl Into<String>) -> Result<T, QueryError> {
    Err(QueryError(message.into()))
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Word(String),
    Str(String),
    LParen,
    RParen,
    Comma,
    Op(Op),
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Word(word) => format!("`{word}`"),
            Token::Str(text) => format!("the string \"{text}\""),
            Token::LParen => "`(`".to_owned(),
            Token::RParen => "`)`".to_owned(),
            Token::Comma => "`,`".to_owned(),
            Token::Op(op) => format!("`{}`", op_text(*op)),
        }
    }
}

fn op_text(op: Op) -> &'static str {
    match op {
        Op::Eq => "=",
        Op::Ne => "!=",
        Op::Gt => ">",
        Op::Ge => ">=",
        Op::Lt => "<",
        Op::Le => "<=",
        Op::Like => "like",
        Op::NotLike => "not like",
        Op::In => "in",
        Op::NotIn => "not in",
    }
}

/// A token with its 1-based character position in the query.
#[derive(Clone, Debug)]
struct Lexed {
    token: Token,
    position: usize,
}

fn is_delimiter(c: char) -> bool {
    c.is_whitespace() || matches!(c, '(' | ')' | ',' | '=' | '!' | '<' | '>' | '"')
}

fn lex(input: &str) -> Result<Vec<Lexed>, QueryError> {
    let chars: Vec<char> = input.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let next_is_eq = chars.get(i + 1) == Some(&'=');
        let token = match c {
            '(' => {
                i += 1;
                Token::LParen
            }
            ')' => {
                i += 1;
                Token::RParen
            }
            ',' => {
                i += 1;
                Token::Comma
            }
            '=' => {
                i += 1;
                Token::Op(Op::Eq)
            }
            '!' if next_is_eq => {
                i += 2;
                Token::Op(Op::Ne)
            }
            '!' => {
                return error(format!(
                    "unexpected `!` at character {}; the not-equal operator is `!=`",
                    start + 1
                ));
            }
            '<' | '>' => {
                let op = match (c, next_is_eq) {
                    ('<', true) => Op::Le,
                    ('<', false) => Op::Lt,
                    (_, true) => Op::Ge,
                    (_, false) => Op::Gt,
                };
                i += if next_is_eq { 2 } else { 1 };
                Token::Op(op)
            }
            '"' => {
                i += 1;
                let mut text = String::new();
                loop {
                    match chars.get(i) {
                        None => {
                            return error(format!(
                                "the string that starts at character {} is not closed with `\"`",
                                start + 1
                            ));
                        }
                        Some('\\') => match chars.get(i + 1) {
                            Some(&escaped) => {
                                text.push(escaped);
                                i += 2;
                            }
                            None => {
                                return error(format!(
                                    "the string that starts at character {} ends with a lone `\\`",
                                    start + 1
                                ));
                            }
                        },
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some(&other) => {
                            text.push(other);
                            i += 1;
                        }
                    }
                }
                Token::Str(text)
            }
            _ => {
                while i < chars.len() && !is_delimiter(chars[i]) {
                    i += 1;
                }
                Token::Word(chars[start..i].iter().collect())
            }
        };
        tokens.push(Lexed {
            token,
            position: start + 1,
        });
    }
    Ok(tokens)
}

/// Returns true for a plain decimal number such as `12`, `-3` or `4.50`.
pub(crate) fn is_number(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = match digits.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (digits, None),
    };
    !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
}

/// Parses a query. An empty or blank query selects every record.
pub(crate) fn parse(input: &str) -> Result<Query, QueryError> {
    let mut parser = Parser {
        tokens: lex(input)?,
        pos: 0,
    };
    let mut query = Query::default();
    if !parser.at_end() && !parser.at_clause() {
        query.condition = Some(parser.expr()?);
    }
    let mut seen_order = false;
    while !parser.at_end() {
        if parser.at_keyword("order") {
            if seen_order {
                return error("`order by` appears more than once");
            }
            seen_order = true;
            parser.advance();
            parser.expect_keyword("by", "after `order`")?;
            query.order_by = parser.order_list()?;
        } else if parser.at_keyword("limit") {
            if query.limit.is_some() {
                return error("`limit` appears more than once");
            }
            parser.advance();
            query.limit = Some(parser.integer("limit")?);
        } else if parser.at_keyword("offset") {
            if query.offset.is_some() {
                return error("`offset` appears more than once");
            }
            parser.advance();
            query.offset = Some(parser.integer("offset")?);
        } else if query.condition.is_some() || seen_order {
            return error(format!(
                "unexpected {}; expected `and`, `or`, `order by`, `limit` or `offset`",
                parser.describe_current()
            ));
        } else {
            return error(format!(
                "unexpected {}; expected `order by`, `limit` or `offset`",
                parser.describe_current()
            ));
        }
    }
    Ok(query)
}

struct Parser {
    tokens: Vec<Lexed>,
    pos: usize,
}

impl Parser {
    fn at_end(&self) -> bool {
        self.pos >= self.tokens.len()
    }

    fn peek(&self) -> Option<&Token> {
        self.peek_at(0)
    }

    fn peek_at(&self, offset: usize) -> Option<&Token> {
        self.tokens.get(self.pos + offset).map(|lexed| &lexed.token)
    }

    fn advance(&mut self) -> Option<Token> {
        let lexed = self.tokens.get(self.pos)?.clone();
        self.pos += 1;
        Some(lexed.token)
    }

    fn is_keyword(token: Option<&Token>, keyword: &str) -> bool {
        matches!(token, Some(Token::Word(word)) if word.eq_ignore_ascii_case(keyword))
    }

    fn at_keyword(&self, keyword: &str) -> bool {
        Self::is_keyword(self.peek(), keyword)
    }

    /// Whether the next tokens start a clause rather than a condition. A field may be named
    /// `limit`, so `limit` counts as a clause only when a number follows it.
    fn at_clause(&self) -> bool {
        let followed_by_number =
            matches!(self.peek_at(1), Some(Token::Word(word)) if is_number(word));
        (self.at_keyword("order") && Self::is_keyword(self.peek_at(1), "by"))
            || ((self.at_keyword("limit") || self.at_keyword("offset")) && followed_by_number)
    }

    fn describe_current(&self) -> String {
        match self.tokens.get(self.pos) {
            Some(lexed) => format!("{} at character {}", lexed.token.describe(), lexed.position),
            None => "end of query".to_owned(),
        }
    }

    fn expect_keyword(&mut self, keyword: &str, context: &str) -> Result<(), QueryError> {
        if self.at_keyword(keyword) {
            self.advance();
            Ok(())
        } else {
            error(format!(
                "expected `{keyword}` {context} but found {}",
                self.describe_current()
            ))
        }
    }

    fn expr(&mut self) -> Result<Expr, QueryError> {
        let mut parts = vec![self.and_expr()?];
        while self.at_keyword("or") {
            self.advance();
            parts.push(self.and_expr()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expr::Or(parts)
        })
    }

    fn and_expr(&mut self) -> Result<Expr, QueryError> {
        let mut parts = vec![self.primary()?];
        while self.at_keyword("and") {
            self.advance();
            parts.push(self.primary()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expr::And(parts)
        })
    }

    fn primary(&mut self) -> Result<Expr, QueryError> {
        if self.peek() == Some(&Token::LParen) {
            let open = self.describe_current();
            self.advance();
            let inner = self.expr()?;
            if self.peek() == Some(&Token::RParen) {
                self.advance();
                Ok(inner)
            } else {
                error(format!(
                    "the parenthesis {open} is not closed; found {} instead of `)`",
                    self.describe_current()
                ))
            }
        } else {
            self.condition().map(Expr::Cond)
        }
    }

    fn field(&mut self, context: &str) -> Result<String, QueryError> {
        match self.peek() {
            Some(Token::Word(word)) => {
                let word = word.clone();
                self.advance();
                Ok(word)
            }
            _ => error(format!(
                "expected a field code {context} but found {}",
                self.describe_current()
            )),
        }
    }

    fn condition(&mut self) -> Result<Condition, QueryError> {
        let field = self.field("at the start of a condition")?;
        let op = match self.peek() {
            Some(Token::Op(op)) => *op,
            Some(Token::Word(word)) if word.eq_ignore_ascii_case("like") => Op::Like,
            Some(Token::Word(word)) if word.eq_ignore_ascii_case("in") => Op::In,
            Some(Token::Word(word)) if word.eq_ignore_ascii_case("not") => {
                if Self::is_keyword(self.peek_at(1), "in") {
                    self.advance();
                    Op::NotIn
                } else if Self::is_keyword(self.peek_at(1), "like") {
                    self.advance();
                    Op::NotLike
                } else {
                    self.advance();
                    return error(format!(
                        "expected `in` or `like` after `not` but found {}",
                        self.describe_current()
                    ));
                }
            }
            _ => {
                return error(format!(
                    "expected an operator (=, !=, >, >=, <, <=, like, not like, in, not in) after \
                     the field `{field}` but found {}",
                    self.describe_current()
                ));
            }
        };
        self.advance();
        let values = match op {
            Op::In | Op::NotIn => self.value_list(op)?,
            _ => vec![self.value(op)?],
        };
        Ok(Condition { field, op, values })
    }

    fn value(&mut self, op: Op) -> Result<String, QueryError> {
        let found = self.describe_current();
        match self.advance() {
            Some(Token::Str(text)) => Ok(text),
            Some(Token::Word(word)) if is_number(&word) => Ok(word),
            Some(Token::Word(word)) if self.peek() == Some(&Token::LParen) => error(format!(
                "functions such as `{word}()` are not supported by the sandbox (at {found})"
            )),
            Some(Token::Word(_)) => error(format!(
                "expected a value after `{}` but found {found}; strings must be double-quoted",
                op_text(op)
            )),
            _ => error(format!(
                "expected a value after `{}` but found {found}",
                op_text(op)
            )),
        }
    }

    fn value_list(&mut self, op: Op) -> Result<Vec<String>, QueryError> {
        if self.peek() != Some(&Token::LParen) {
            return error(format!(
                "expected `(` after `{}` but found {}",
                op_text(op),
                self.describe_current()
            ));
        }
        self.advance();
        if self.peek() == Some(&Token::RParen) {
            return error(format!("the list after `{}` is empty", op_text(op)));
        }
        let mut values = Vec::new();
        loop {
            values.push(self.value(op)?);
            match self.peek() {
                Some(Token::Comma) => {
                    self.advance();
                }
                Some(Token::RParen) => {
                    self.advance();
                    return Ok(values);
                }
                _ => {
                    return error(format!(
                        "expected `,` or `)` in the list after `{}` but found {}",
                        op_text(op),
                        self.describe_current()
                    ));
                }
            }
        }
    }

    fn order_list(&mut self) -> Result<Vec<OrderBy>, QueryError> {
        let mut order = Vec::new();
        loop {
            let field = self.field("in `order by`")?;
            let descending = if self.at_keyword("desc") {
                self.advance();
                true
            } else {
                if self.at_keyword("asc") {
                    self.advance();
                }
                false
            };
            order.push(OrderBy { field, descending });
            if self.peek() == Some(&Token::Comma) {
                self.advance();
            } else {
                return Ok(order);
            }
        }
    }

    fn integer(&mut self, clause: &str) -> Result<u64, QueryError> {
        let found = self.describe_current();
        match self.advance() {
            Some(Token::Word(word)) => word.parse().or_else(|_| {
                error(format!(
                    "`{clause}` expects a non-negative integer but found {found}"
                ))
            }),
            _ => error(format!(
                "`{clause}` expects a non-negative integer but found {found}"
            )),
        }
    }
}

/// Which record ids can match a query at all, read from its `$id` conditions: a
/// superset of the matches, so that a query over a large app renders only these (the
/// whole condition still decides).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum IdFilter {
    /// Only these ids (`$id in (…)`, `$id = n`).
    Among(BTreeSet<u64>),
    /// Only ids above this (`$id > n`, `$id >= n + 1`).
    Above(u64),
}

impl Query {
    /// The ids the query can match, when a top-level `$id` condition (or one of a
    /// top-level `and`) says; `None` when any record may match.
    pub(crate) fn id_filter(&self) -> Option<IdFilter> {
        fn of(c: &Condition) -> Option<IdFilter> {
            if c.field != "$id" {
                return None;
            }
            let ids = || {
                c.values
                    .iter()
                    .map(|v| v.parse::<u64>().ok())
                    .collect::<Option<BTreeSet<u64>>>()
            };
            match c.op {
                Op::In | Op::Eq => ids().map(IdFilter::Among),
                Op::Gt => c.values.first()?.parse().ok().map(IdFilter::Above),
                Op::Ge => c
                    .values
                    .first()?
                    .parse::<u64>()
                    .ok()
                    .map(|n| IdFilter::Above(n.saturating_sub(1))),
                _ => None,
            }
        }
        match self.condition.as_ref()? {
            Expr::Cond(c) => of(c),
            Expr::And(all) => all.iter().find_map(|e| match e {
                Expr::Cond(c) => of(c),
                _ => None,
            }),
            Expr::Or(_) => None,
        }
    }

    /// Every field code that the query refers to, in order of appearance, without repeats.
    pub(crate) fn referenced_fields(&self) -> Vec<&str> {
        let mut fields = Vec::new();
        if let Some(condition) = &self.condition {
            condition.collect_fields(&mut fields);
        }
        for order in &self.order_by {
            if !fields.contains(&order.field.as_str()) {
                fields.push(&order.field);
            }
        }
        fields
    }
}

impl Expr {
    fn collect_fields<'a>(&'a self, fields: &mut Vec<&'a str>) {
        match self {
            Expr::And(parts) | Expr::Or(parts) => {
                for part in parts {
                    part.collect_fields(fields);
                }
            }
            Expr::Cond(condition) => {
                if !fields.contains(&condition.field.as_str()) {
                    fields.push(&condition.field);
                }
            }
        }
    }

    /// Evaluates the condition against a record in kintone's shape (code to `{type, value}`).
    pub(crate) fn matches(&self, record: &Map<String, Value>) -> bool {
        match self {
            Expr::And(parts) => parts.iter().all(|part| part.matches(record)),
            Expr::Or(parts) => parts.iter().any(|part| part.matches(record)),
            Expr::Cond(condition) => condition.matches(record),
        }
    }
}

impl Condition {
    fn matches(&self, record: &Map<String, Value>) -> bool {
        match field_value(record, &self.field) {
            Value::Array(items) => {
                let items: Vec<String> = items.iter().map(value_text).collect();
                self.matches_list(&items)
            }
            other => self.matches_scalar(&value_text(other)),
        }
    }

    fn matches_scalar(&self, actual: &str) -> bool {
        let first = self.values.first().map(String::as_str).unwrap_or_default();
        let ordered = |wanted: fn(Ordering) -> bool| {
            !actual.is_empty() && wanted(compare_values(actual, first))
        };
        match self.op {
            Op::Eq => compare_values(actual, first) == Ordering::Equal,
            Op::Ne => compare_values(actual, first) != Ordering::Equal,
            Op::Gt => ordered(Ordering::is_gt),
            Op::Ge => ordered(Ordering::is_ge),
            Op::Lt => ordered(Ordering::is_lt),
            Op::Le => ordered(Ordering::is_le),
            Op::Like => contains_ignoring_case(actual, first),
            Op::NotLike => !contains_ignoring_case(actual, first),
            Op::In => self.any_equal(actual),
            Op::NotIn => !self.any_equal(actual),
        }
    }

    fn matches_list(&self, items: &[String]) -> bool {
        let first = self.values.first().map(String::as_str).unwrap_or_default();
        let any = |test: &dyn Fn(&str) -> bool| items.iter().any(|item| test(item));
        match self.op {
            Op::Eq | Op::In => any(&|item| self.any_equal(item)),
            Op::Ne | Op::NotIn => !any(&|item| self.any_equal(item)),
            Op::Like => any(&|item| contains_ignoring_case(item, first)),
            Op::NotLike => !any(&|item| contains_ignoring_case(item, first)),
            Op::Gt => any(&|item| compare_values(item, first).is_gt()),
            Op::Ge => any(&|item| compare_values(item, first).is_ge()),
            Op::Lt => any(&|item| compare_values(item, first).is_lt()),
            Op::Le => any(&|item| compare_values(item, first).is_le()),
        }
    }

    fn any_equal(&self, actual: &str) -> bool {
        self.values
            .iter()
            .any(|value| compare_values(actual, value) == Ordering::Equal)
    }
}

fn field_value<'a>(record: &'a Map<String, Value>, code: &str) -> &'a Value {
    record
        .get(code)
        .and_then(|field| field.get("value"))
        .unwrap_or(&Value::Null)
}

/// The text that a field value compares as; user-like objects compare by their `code`.
fn value_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        Value::Object(object) => match object.get("code") {
            Some(Value::String(code)) => code.clone(),
            _ => value.to_string(),
        },
        other => other.to_string(),
    }
}

/// Compares numerically when both sides are numbers and as strings otherwise.
pub(crate) fn compare_values(a: &str, b: &str) -> Ordering {
    if is_number(a) && is_number(b) {
        let (Ok(x), Ok(y)) = (a.parse::<f64>(), b.parse::<f64>()) else {
            return a.cmp(b);
        };
        x.partial_cmp(&y).unwrap_or(Ordering::Equal)
    } else {
        a.cmp(b)
    }
}

fn contains_ignoring_case(haystack: &str, needle: &str) -> bool {
    haystack.to_lowercase().contains(&needle.to_lowercase())
}

/// Sorts records by the given keys; the sort is stable, so ties keep their incoming order.
pub(crate) fn sort_records(records: &mut [Map<String, Value>], order: &[OrderBy]) {
    records.sort_by(|a, b| {
        for key in order {
            let left = value_text(field_value(a, &key.field));
            let right = value_text(field_value(b, &key.field));
            let ordering = compare_values(&left, &right);
            let ordering = if key.descending {
                ordering.reverse()
            } else {
                ordering
            };
            if ordering != Ordering::Equal {
                return ordering;
            }
        }
        Ordering::Equal
    });
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn cond(field: &str, op: Op, values: &[&str]) -> Expr {
        Expr::Cond(Condition {
            field: field.to_owned(),
            op,
            values: values.iter().map(|value| (*value).to_owned()).collect(),
        })
    }

    fn parse_ok(input: &str) -> Query {
        parse(input).unwrap_or_else(|error| panic!("{input:?} should parse: {error}"))
    }

    fn parse_err(input: &str) -> String {
        match parse(input) {
            Ok(query) => panic!("{input:?} should not parse but gave {query:?}"),
            Err(error) => error.0,
        }
    }

    fn record(fields: Value) -> Map<String, Value> {
        let Value::Object(fields) = fields else {
            panic!("a record must be an object");
        };
        fields
            .into_iter()
            .map(|(code, value)| (code, json!({"type": "X", "value": value})))
            .collect()
    }

    #[test]
    fn id_conditions_narrow_the_candidates() {
        let ids = |q: &str| parse_ok(q).id_filter();
        let among = |v: &[u64]| Some(IdFilter::Among(v.iter().copied().collect()));
        assert_eq!(ids("$id in (3, 1, 2)"), among(&[1, 2, 3]));
        assert_eq!(ids("$id = 7"), among(&[7]));
        assert_eq!(
            ids("$id > 40 order by $id asc limit 500"),
            Some(IdFilter::Above(40))
        );
        assert_eq!(ids("$id >= 40"), Some(IdFilter::Above(39)));
        assert_eq!(
            ids(r#"更新日時 >= "2026-01-01T00:00:00Z" and $id > 9"#),
            Some(IdFilter::Above(9))
        );
        // Anything that could let another id match gives no filter.
        assert_eq!(ids("$id > 9 or 件名 = \"x\""), None);
        assert_eq!(ids("$id not in (1)"), None);
        assert_eq!(ids("$id < 5"), None);
        assert_eq!(ids("件名 = \"x\""), None);
        assert_eq!(ids(""), None);
    }

    #[test]
    fn empty_queries_select_everything() {
        assert_eq!(parse_ok(""), Query::default());
        assert_eq!(parse_ok("   \n "), Query::default());
    }

    #[test]
    fn parses_every_comparison_operator() {
        let cases = [
            ("a = \"x\"", Op::Eq),
            ("a != \"x\"", Op::Ne),
            ("a > \"x\"", Op::Gt),
            ("a >= \"x\"", Op::Ge),
            ("a < \"x\"", Op::Lt),
            ("a <= \"x\"", Op::Le),
            ("a like \"x\"", Op::Like),
            ("a not like \"x\"", Op::NotLike),
            ("a=\"x\"", Op::Eq),
            ("a>=\"x\"", Op::Ge),
            ("a LIKE \"x\"", Op::Like),
        ];
        for (input, op) in cases {
            assert_eq!(
                parse_ok(input).condition,
                Some(cond("a", op, &["x"])),
                "{input}"
            );
        }
    }

    #[test]
    fn parses_numbers_and_escaped_strings() {
        assert_eq!(
            parse_ok("amount >= -12.50").condition,
            Some(cond("amount", Op::Ge, &["-12.50"]))
        );
        assert_eq!(
            parse_ok(r#"title = "say \"hi\" \\ bye""#).condition,
            Some(cond("title", Op::Eq, &[r#"say "hi" \ bye"#]))
        );
        assert_eq!(
            parse_ok(r#"title = """#).condition,
            Some(cond("title", Op::Eq, &[""]))
        );
    }

    #[test]
    fn parses_in_and_not_in_lists() {
        assert_eq!(
            parse_ok(r#"status in ("open", "closed")"#).condition,
            Some(cond("status", Op::In, &["open", "closed"]))
        );
        assert_eq!(
            parse_ok(r#"status not in ("open",1)"#).condition,
            Some(cond("status", Op::NotIn, &["open", "1"]))
        );
    }

    #[test]
    fn and_binds_tighter_than_or() {
        let query = parse_ok(r#"a = "1" or b = "2" and c = "3""#);
        assert_eq!(
            query.condition,
            Some(Expr::Or(vec![
                cond("a", Op::Eq, &["1"]),
                Expr::And(vec![cond("b", Op::Eq, &["2"]), cond("c", Op::Eq, &["3"])]),
            ]))
        );
    }

    #[test]
    fn parentheses_override_precedence() {
        let query = parse_ok(r#"(a = "1" or b = "2") and c = "3""#);
        assert_eq!(
            query.condition,
            Some(Expr::And(vec![
                Expr::Or(vec![cond("a", Op::Eq, &["1"]), cond("b", Op::Eq, &["2"])]),
                cond("c", Op::Eq, &["3"]),
            ]))
        );
        assert_eq!(
            parse_ok(r#"((a = "1"))"#).condition,
            Some(cond("a", Op::Eq, &["1"]))
        );
    }

    #[test]
    fn parses_clauses() {
        let query = parse_ok(r#"a = "1" order by b desc, c asc, d limit 10 offset 20"#);
        assert_eq!(
            query.order_by,
            vec![
                OrderBy {
                    field: "b".to_owned(),
                    descending: true
                },
                OrderBy {
                    field: "c".to_owned(),
                    descending: false
                },
                OrderBy {
                    field: "d".to_owned(),
                    descending: false
                },
            ]
        );
        assert_eq!(query.limit, Some(10));
        assert_eq!(query.offset, Some(20));

        let only_clauses = parse_ok("ORDER BY $id ASC LIMIT 5");
        assert_eq!(only_clauses.condition, None);
        assert_eq!(only_clauses.limit, Some(5));

        let offset_first = parse_ok("offset 3 limit 2");
        assert_eq!(
            (offset_first.limit, offset_first.offset),
            (Some(2), Some(3))
        );
    }

    #[test]
    fn a_field_may_be_named_like_a_keyword() {
        assert_eq!(
            parse_ok(r#"limit = "5" limit 1"#),
            Query {
                condition: Some(cond("limit", Op::Eq, &["5"])),
                limit: Some(1),
                ..Query::default()
            }
        );
    }

    #[test]
    fn parses_japanese_field_codes() {
        let query = parse_ok(
            r#"顧客名 like "山田" and 金額 >= 1000 and ステータス in ("対応中","完了") order by 更新日時 desc limit 10"#,
        );
        assert_eq!(
            query.condition,
            Some(Expr::And(vec![
                cond("顧客名", Op::Like, &["山田"]),
                cond("金額", Op::Ge, &["1000"]),
                cond("ステータス", Op::In, &["対応中", "完了"]),
            ]))
        );
        assert_eq!(query.order_by[0].field, "更新日時");
        assert_eq!(
            query.referenced_fields(),
            vec!["顧客名", "金額", "ステータス", "更新日時"]
        );
        // A full-width space separates tokens as an ASCII space does.
        assert_eq!(
            parse_ok("レコード番号\u{3000}=\u{3000}5").condition,
            Some(cond("レコード番号", Op::Eq, &["5"]))
        );
    }

    #[test]
    fn parses_system_fields() {
        assert_eq!(
            parse_ok("$id > 10 and $revision = \"2\"").condition,
            Some(Expr::And(vec![
                cond("$id", Op::Gt, &["10"]),
                cond("$revision", Op::Eq, &["2"]),
            ]))
        );
    }

    #[test]
    fn reports_malformed_queries() {
        let cases = [
            (r#"a = "open"#, "not closed"),
            (r#"a = "x\"#, "lone"),
            ("a ! \"x\"", "`!=`"),
            ("a \"x\"", "expected an operator"),
            ("a", "expected an operator"),
            ("a = open", "double-quoted"),
            ("a = ", "expected a value"),
            ("a = TODAY()", "not supported"),
            ("a in \"x\"", "expected `(`"),
            ("a in ()", "empty"),
            ("a in (\"x\" \"y\")", "expected `,` or `)`"),
            ("a not = \"x\"", "after `not`"),
            ("(a = \"x\"", "not closed"),
            ("a = \"x\")", "unexpected `)`"),
            ("a = \"x\" b = \"y\"", "unexpected `b`"),
            ("a = \"x\" and", "expected a field code"),
            ("limit ten", "expected an operator"),
            ("a = \"x\" limit ten", "non-negative integer"),
            ("limit -1", "non-negative integer"),
            ("a = \"x\" limit 1 limit 2", "more than once"),
            ("order $id", "expected an operator"),
            ("a = \"x\" order $id", "expected `by`"),
            ("a = \"x\" order by", "expected a field code"),
            ("= \"x\"", "expected a field code"),
        ];
        for (input, fragment) in cases {
            let message = parse_err(input);
            assert!(
                message.contains(fragment),
                "{input:?} gave {message:?}, which lacks {fragment:?}"
            );
        }
    }

    #[test]
    fn error_messages_point_at_the_character() {
        assert_eq!(
            parse_err("状態 = \"a\" 余分"),
            "unexpected `余分` at character 10; expected `and`, `or`, `order by`, `limit` or `offset`"
        );
    }

    #[test]
    fn compares_numbers_numerically_and_text_as_text() {
        assert_eq!(compare_values("10", "9"), Ordering::Greater);
        assert_eq!(compare_values("1.0", "1"), Ordering::Equal);
        assert_eq!(compare_values("-2", "1"), Ordering::Less);
        assert_eq!(compare_values("b", "a"), Ordering::Greater);
        assert_eq!(compare_values("10", "9a"), Ordering::Less);
        assert_eq!(
            compare_values("2026-11-22T10:08:00Z", "2026-11-22T09:59:00Z"),
            Ordering::Greater
        );
    }

    #[test]
    fn evaluates_conditions() {
        let rec = record(json!({
            "件名": "Pump repair",
            "金額": "1500",
            "空": "",
            "タグ": ["urgent", "onsite"],
        }));
        let matches = |query: &str| {
            parse_ok(query)
                .condition
                .is_none_or(|condition| condition.matches(&rec))
        };
        assert!(matches(r#"件名 = "Pump repair""#));
        assert!(matches(r#"件名 like "PUMP""#));
        assert!(matches(r#"件名 not like "valve""#));
        assert!(matches("金額 > 999"));
        assert!(matches("金額 = 1500.0"));
        assert!(!matches("金額 < 200"));
        assert!(matches(r#"金額 in ("1", "1500")"#));
        assert!(matches(r#"金額 not in ("1", "2")"#));
        assert!(matches(r#"空 = """#));
        assert!(!matches("空 < 5"));
        assert!(!matches("空 > 5"));
        assert!(matches(r#"タグ in ("urgent")"#));
        assert!(!matches(r#"タグ not in ("onsite", "x")"#));
        assert!(matches(r#"タグ not in ("remote")"#));
        assert!(matches(r#"missing = """#));
        assert!(matches(r#"件名 = "x" or 金額 = 1500 and 空 = """#));
        assert!(!matches(r#"(件名 = "x" or 金額 = 1500) and 空 = "y""#));
    }

    #[test]
    fn sorts_numerically_and_stably() {
        let mut records = vec![
            record(json!({"n": "10", "s": "b", "id": "1"})),
            record(json!({"n": "9", "s": "a", "id": "2"})),
            record(json!({"n": "10", "s": "a", "id": "3"})),
        ];
        sort_records(&mut records, &parse_ok("order by n desc, s asc").order_by);
        let ids: Vec<String> = records
            .iter()
            .map(|record| value_text(field_value(record, "id")))
            .collect();
        assert_eq!(ids, vec!["3", "1", "2"]);
    }

    #[test]
    fn recognises_plain_numbers_only() {
        for text in ["0", "12", "-3", "4.50"] {
            assert!(is_number(text), "{text}");
        }
        for text in [
            "", "-", "1.", ".5", "1e3", "NaN", "inf", " 1", "1,000", "+1",
        ] {
            assert!(!is_number(text), "{text}");
        }
    }
}
