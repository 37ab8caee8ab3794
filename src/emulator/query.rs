//! Answers `GET /services/data/vNN.N/query?q=` for the session's user: parse ([`super::soql`]),
//! find the object and check the user may see it ([`super::records`]), check every named field,
//! then filter, sort, limit and render in Salesforce's JSON shape. Errors are Salesforce's
//! `400 [{"message","errorCode"}]`. Injected [`QueryFault`]s stand in for the answers the
//! world's state cannot produce (a refused session, a broken or slow answer). Must never:
//! answer with a token value, or with a row of another org.

use std::cmp::Ordering;
use std::time::Duration;

use serde::Deserialize;

use super::records::{self, Kind, Object, Row, Value};
use super::soql::{self, Condition, Literal, Op, Query};
use super::world::World;

/// A refused query: `errorCode` and `message` of Salesforce's error body (always status 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError {
    pub code: &'static str,
    pub message: String,
}

impl QueryError {
    fn malformed(message: impl Into<String>) -> Self {
        Self {
            code: "MALFORMED_QUERY",
            message: message.into(),
        }
    }

    /// Salesforce answers an object the user may not see exactly like one that does not exist.
    fn invalid_type(name: &str) -> Self {
        Self {
            code: "INVALID_TYPE",
            message: format!(
                "sObject type '{name}' is not supported. If you are attempting to use a custom object, be sure to append the '__c' after the entity name. Please reference your WSDL or the describe call for the appropriate names."
            ),
        }
    }

    fn invalid_field(message: String) -> Self {
        Self {
            code: "INVALID_FIELD",
            message,
        }
    }

    /// `message` before `errorCode`, as Salesforce writes them (serde_json would sort them).
    pub fn body(&self) -> String {
        format!(
            r#"[{{"message":{},"errorCode":{}}}]"#,
            serde_json::Value::from(self.message.as_str()),
            serde_json::Value::from(self.code)
        )
    }
}

/// A failure of the next authenticated query, queued by `POST /_emulator/query-faults`: what an
/// org connection must survive although no state of the world leads to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryFault {
    /// `401 INVALID_SESSION_ID` for a live session, as when an admin ends it server-side.
    Unauthorized,
    /// `403 INSUFFICIENT_ACCESS`, as when the user's profile loses API access.
    Forbidden,
    /// `200` with a JSON answer cut short, as from a middlebox that breaks the body off.
    Malformed,
    /// The true answer, held back this long (real time, like `refresh_latency_ms`).
    Slow(Duration),
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum FaultKind {
    Unauthorized,
    Forbidden,
    Malformed,
    Slow,
}

/// The control API's body: `{"fault", "delay_ms" (slow only), "count"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryFaults {
    fault: FaultKind,
    #[serde(default)]
    delay_ms: u64,
    #[serde(default = "one")]
    count: usize,
}

fn one() -> usize {
    1
}

impl QueryFaults {
    /// The faults to queue, one per query.
    pub fn queue(&self) -> impl Iterator<Item = QueryFault> + use<> {
        let fault = match self.fault {
            FaultKind::Unauthorized => QueryFault::Unauthorized,
            FaultKind::Forbidden => QueryFault::Forbidden,
            FaultKind::Malformed => QueryFault::Malformed,
            FaultKind::Slow => QueryFault::Slow(Duration::from_millis(self.delay_ms)),
        };
        std::iter::repeat_n(fault, self.count)
    }
}

impl QueryFault {
    /// The status and body answered instead of the query's, or `None` when the true answer
    /// follows (after the delay of a slow one).
    pub fn answer(self) -> Option<(u16, String)> {
        let refused = |code: &str, message: &str| {
            format!(r#"[{{"message":"{message}","errorCode":"{code}"}}]"#)
        };
        match self {
            Self::Unauthorized => Some((
                401,
                refused("INVALID_SESSION_ID", "Session expired or invalid"),
            )),
            Self::Forbidden => Some((
                403,
                refused("INSUFFICIENT_ACCESS", "Insufficient Privileges"),
            )),
            Self::Malformed => Some((
                200,
                r#"{"totalSize":1,"done":true,"records":[{"attributes":"#.into(),
            )),
            Self::Slow(_) => None,
        }
    }
}

/// The answer to `text` for `username`'s session; `version` is the path's `vNN.N`.
pub fn answer(
    world: &World,
    username: &str,
    version: &str,
    text: Option<&str>,
) -> Result<String, QueryError> {
    let text = text.ok_or_else(|| QueryError::malformed("A query string has to be specified"))?;
    if is_account_query(text) {
        return Ok(account_page());
    }
    let query = soql::parse(text).map_err(|e| QueryError::malformed(e.0))?;
    let user = world
        .users
        .get(&username.to_ascii_lowercase())
        .ok_or_else(|| QueryError::invalid_type(&query.object))?;
    let object = records::object(&query.object)
        .filter(|o| permitted(o, &user.spec.permissions))
        .ok_or_else(|| QueryError::invalid_type(&query.object))?;
    let plan = Plan::new(object, &query)?;
    let rows = plan.run((object.rows)(world, &user.spec.org));
    Ok(render(object, &plan.select, version, &rows))
}

fn permitted(object: &Object, permissions: &[String]) -> bool {
    object.permissions.is_empty()
        || object
            .permissions
            .iter()
            .any(|needed| permissions.iter().any(|p| p.eq_ignore_ascii_case(needed)))
}

/// A query checked against its object: fields resolved to column indexes, literals to types.
struct Plan<'q> {
    select: Vec<usize>,
    filters: Vec<(usize, &'q Op)>,
    order: Option<(usize, bool)>,
    limit: Option<usize>,
}

impl<'q> Plan<'q> {
    fn new(object: &Object, query: &'q Query) -> Result<Self, QueryError> {
        let mut select = Vec::new();
        for name in &query.fields {
            let column = column(object, name)?;
            if select.contains(&column) {
                return Err(QueryError::malformed(format!(
                    "duplicate field selected: {}",
                    object.fields[column].name
                )));
            }
            select.push(column);
        }
        let mut filters = Vec::new();
        for Condition { field, op } in &query.conditions {
            let column = column(object, field)?;
            check_literal(&object.fields[column], op)?;
            filters.push((column, op));
        }
        let order = match &query.order {
            Some(o) => Some((column(object, &o.field)?, o.descending)),
            None => None,
        };
        Ok(Self {
            select,
            filters,
            order,
            limit: query.limit,
        })
    }

    fn run(&self, mut rows: Vec<Row>) -> Vec<Row> {
        rows.retain(|row| {
            self.filters
                .iter()
                .all(|(column, op)| matches(&row.values[*column], op))
        });
        if let Some((column, descending)) = self.order {
            // Stable, so equal keys keep the table's order; nulls first ascending, last
            // descending, as Salesforce orders them by default.
            rows.sort_by(|a, b| {
                let ordering = compare(&a.values[column], &b.values[column]);
                if descending {
                    ordering.reverse()
                } else {
                    ordering
                }
            });
        }
        if let Some(limit) = self.limit {
            rows.truncate(limit);
        }
        rows
    }
}

/// The column of a field named in a query; token fields and unknown names are refused.
fn column(object: &Object, name: &str) -> Result<usize, QueryError> {
    if let Some(withheld) = object
        .withheld
        .iter()
        .find(|w| w.eq_ignore_ascii_case(name))
    {
        return Err(QueryError::invalid_field(format!(
            "Field '{withheld}' on entity '{}' holds a token value; the emulator does not return token values.",
            object.name
        )));
    }
    object
        .fields
        .iter()
        .position(|f| f.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| {
            QueryError::invalid_field(format!(
                "No such column '{name}' on entity '{}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names.",
                object.name
            ))
        })
}

/// Whether `op`'s literals fit the field's type (Salesforce's wording for a mismatch).
fn check_literal(field: &records::Field, op: &Op) -> Result<(), QueryError> {
    let fits = |literal: &Literal, ordered: bool| match (field.kind, literal) {
        (_, Literal::Null) => !ordered,
        (Kind::Id | Kind::Text, Literal::Text(_)) => !ordered,
        (Kind::Bool, Literal::Bool(_)) => !ordered,
        (Kind::DateTime, Literal::DateTime(_)) => true,
        _ => false,
    };
    let ok = match op {
        Op::Eq(literal) => fits(literal, false),
        Op::In(literals) => literals.iter().all(|l| fits(l, false)),
        Op::Gt(literal) | Op::Lt(literal) => fits(literal, true),
    };
    if ok {
        return Ok(());
    }
    let expected = match field.kind {
        Kind::Id | Kind::Text => "text in quotes, compared with = or IN",
        Kind::Bool => "boolean (true or false, not in quotes), compared with = or IN",
        Kind::DateTime => "datetime (like 2026-11-30T00:00:00Z, not in quotes)",
        Kind::Int => "number, which this emulator does not filter on",
    };
    Err(QueryError::malformed(format!(
        "value of filter criterion for field '{}' must be of type {expected}",
        field.name
    )))
}

fn matches(value: &Value, op: &Op) -> bool {
    match op {
        Op::Eq(literal) => equals(value, literal),
        Op::In(literals) => literals.iter().any(|l| equals(value, l)),
        Op::Gt(Literal::DateTime(t)) => matches!(value, Value::DateTime(v) if v > t),
        Op::Lt(Literal::DateTime(t)) => matches!(value, Value::DateTime(v) if v < t),
        Op::Gt(_) | Op::Lt(_) => false,
    }
}

/// SOQL's equality: text case-insensitively, a 15-character id against the 18-character one.
fn equals(value: &Value, literal: &Literal) -> bool {
    match (value, literal) {
        (Value::Null, Literal::Null) => true,
        (Value::Text(v), Literal::Text(l)) if l.len() == 15 && v.len() == 18 => {
            v.starts_with(l.as_str()) || v.eq_ignore_ascii_case(l)
        }
        (Value::Text(v), Literal::Text(l)) => v.eq_ignore_ascii_case(l),
        (Value::Bool(v), Literal::Bool(l)) => v == l,
        (Value::DateTime(v), Literal::DateTime(l)) => v == l,
        _ => false,
    }
}

fn compare(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        (Value::Text(a), Value::Text(b)) => a.to_lowercase().cmp(&b.to_lowercase()),
        (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
        (Value::Int(a), Value::Int(b)) | (Value::DateTime(a), Value::DateTime(b)) => a.cmp(b),
        _ => Ordering::Equal,
    }
}

/// The answer's JSON text. Written by hand because Salesforce lists fields in SELECT order and
/// serde_json's maps sort their keys.
fn render(object: &Object, select: &[usize], version: &str, rows: &[Row]) -> String {
    let string = |s: &str| serde_json::Value::from(s).to_string();
    let records: Vec<String> = rows
        .iter()
        .map(|row| {
            let url = format!(
                "/services/data/{version}/sobjects/{}/{}",
                object.name,
                row.id()
            );
            let mut members = vec![format!(
                r#""attributes":{{"type":{},"url":{}}}"#,
                string(object.name),
                string(&url)
            )];
            for &column in select {
                members.push(format!(
                    "{}:{}",
                    string(object.fields[column].name),
                    value_json(&row.values[column])
                ));
            }
            format!("{{{}}}", members.join(","))
        })
        .collect();
    format!(
        r#"{{"totalSize":{},"done":true,"records":[{}]}}"#,
        rows.len(),
        records.join(",")
    )
}

fn value_json(value: &Value) -> String {
    match value {
        Value::Text(s) => serde_json::Value::from(s.as_str()).to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Int(n) => n.to_string(),
        Value::DateTime(ms) => format!("\"{}\"", soql::format_datetime(*ms)),
        Value::Null => "null".into(),
    }
}

/// `FROM Account` in any spelling: the fixed page client tests load, whatever else the query says.
fn is_account_query(text: &str) -> bool {
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .windows(2)
        .any(|w| w[0].eq_ignore_ascii_case("FROM") && w[1].eq_ignore_ascii_case("Account"))
}

/// A sizeable query answer: 200 Account records, for client and proxy load tests.
fn account_page() -> String {
    let records: Vec<_> = (0..200)
        .map(|i| {
            serde_json::json!({
                "attributes": {"type": "Account", "url": format!("/services/data/v66.0/sobjects/Account/001{i:012}AAA")},
                "Id": format!("001{i:012}AAA"),
                "Name": format!("Account {i}"),
                "Industry": "Technology",
                "BillingCity": "San Francisco",
            })
        })
        .collect();
    serde_json::json!({"totalSize": records.len(), "done": true, "records": records}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Literal {
        Literal::Text(s.into())
    }

    #[test]
    fn text_equality_ignores_case_and_accepts_a_15_character_id() {
        let id = Value::Text("005000000000001AAA".into());
        assert!(equals(&id, &text("005000000000001")));
        assert!(equals(&id, &text("005000000000001aaa")));
        assert!(!equals(&id, &text("005000000000002AAA")));
        assert!(!equals(&Value::Null, &text("")));
    }

    #[test]
    fn nulls_sort_first_ascending() {
        let mut values = [Value::DateTime(5), Value::Null, Value::DateTime(1)];
        values.sort_by(compare);
        assert_eq!(
            values,
            [Value::Null, Value::DateTime(1), Value::DateTime(5)]
        );
    }

    #[test]
    fn token_fields_and_unknown_fields_are_invalid_fields() {
        let tokens = records::object("OauthToken").unwrap();
        let error = column(tokens, "accesstoken").unwrap_err();
        assert_eq!(error.code, "INVALID_FIELD");
        assert!(error.message.contains("does not return token values"));
        let user = records::object("User").unwrap();
        let error = column(user, "Foo").unwrap_err();
        assert!(
            error
                .message
                .starts_with("No such column 'Foo' on entity 'User'.")
        );
    }

    #[test]
    fn a_boolean_in_quotes_is_malformed() {
        let user = records::object("User").unwrap();
        let error = check_literal(&user.fields[2], &Op::Eq(text("true"))).unwrap_err();
        assert_eq!(error.code, "MALFORMED_QUERY");
        assert!(error.message.contains("'IsActive'"));
    }

    #[test]
    fn the_account_page_answers_any_from_account_query() {
        assert!(is_account_query("SELECT Id FROM Account"));
        assert!(is_account_query("select Name from account limit 5"));
        assert!(!is_account_query("SELECT Id FROM AccountHistory"));
    }

    #[test]
    fn a_queued_fault_is_one_per_query_and_a_slow_one_keeps_the_true_answer() {
        let body = r#"{"fault": "slow", "delay_ms": 250, "count": 2}"#;
        let faults: QueryFaults = serde_json::from_str(body).unwrap();
        let queued: Vec<QueryFault> = faults.queue().collect();
        assert_eq!(queued, [QueryFault::Slow(Duration::from_millis(250)); 2]);
        assert_eq!(queued[0].answer(), None);
        let (status, body) = QueryFault::Forbidden.answer().unwrap();
        assert_eq!(status, 403);
        let errors: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(errors[0]["errorCode"], "INSUFFICIENT_ACCESS");
        let (status, body) = QueryFault::Malformed.answer().unwrap();
        assert_eq!(status, 200);
        assert!(serde_json::from_str::<serde_json::Value>(&body).is_err());
    }
}
