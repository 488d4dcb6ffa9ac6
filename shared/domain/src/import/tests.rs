use super::*;
use serde_json::{Value, json};

fn rule() -> RuleSpec {
    serde_json::from_value(json!({
        "name": "partner-orders",
        "source": {"system": "partner", "app": "orders"},
        "target": {"system": "helpdesk", "entity": "ticket"},
        "identity": {"source_field": "order_no", "target_field": "external_id"},
        "fields": [
            {"source": "subject", "target": "subject", "transforms": ["trim"], "required": true},
            {"source": "qty", "target": "quantity", "transforms": ["to_number"]},
            {"source": "email", "target": "contact_email",
             "validate": {"pattern": "[^@ ]+@[^@ ]+"}}
        ]
    }))
    .expect("a rule")
}

fn row(line: u64, v: Value) -> Row {
    Row {
        line,
        values: v.as_object().cloned().expect("an object"),
    }
}

#[test]
fn the_columns_are_the_mapped_fields_and_the_lookup_field() {
    let cols: Vec<String> = columns(&rule()).into_iter().collect();
    assert_eq!(cols, ["email", "order_no", "qty", "subject"]);
    let found = ["order_no".to_owned(), "subjct".to_owned(), "qty".to_owned()];
    let problems = unknown_columns(&rule(), &found);
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].column, "subjct");
    assert_eq!(
        problems[0].to_string(),
        "column subjct: is not a field of rule partner-orders (its columns: email, order_no, qty, subject)"
    );
}

#[test]
fn a_good_row_is_the_record_named_by_its_lookup_value() {
    let r = row(
        2,
        json!({"order_no": " PO-1 ", "subject": "Pump", "qty": "3"}),
    );
    assert_eq!(check_row(&rule(), &r), Ok("PO-1".to_owned()));
    // A number is a lookup value too.
    let r = row(3, json!({"order_no": 17, "subject": "Pump"}));
    assert_eq!(check_row(&rule(), &r), Ok("17".to_owned()));
}

#[test]
fn every_problem_of_a_row_is_named_with_its_line_and_column() {
    let r = row(
        5,
        json!({"order_no": "", "subject": "  ", "qty": "three", "email": "nobody"}),
    );
    let problems = check_row(&rule(), &r).expect_err("invalid");
    let named: Vec<(u64, &str)> = problems
        .iter()
        .map(|p| (p.line, p.column.as_str()))
        .collect();
    assert_eq!(
        named,
        vec![(5, "order_no"), (5, "subject"), (5, "qty")],
        "{problems:#?}"
    );
    assert_eq!(
        problems[0].to_string(),
        "line 5, column order_no: is empty: the lookup value identifies the record"
    );
    // The mapping failed, so validation was not reached; on its own it is named.
    let r = row(
        6,
        json!({"order_no": "PO-2", "subject": "x", "email": "nobody"}),
    );
    let problems = check_row(&rule(), &r).expect_err("invalid");
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].column, "email");
    assert!(
        problems[0].reason.contains("does not match"),
        "{problems:?}"
    );
    // A missing required field.
    let r = row(7, json!({"order_no": "PO-3"}));
    let problems = check_row(&rule(), &r).expect_err("invalid");
    assert_eq!(problems[0].column, "subject");
    // A lookup value that is not text.
    let r = row(8, json!({"order_no": ["a"], "subject": "x"}));
    let problems = check_row(&rule(), &r).expect_err("invalid");
    assert!(
        problems[0]
            .reason
            .starts_with("the lookup value must be text")
    );
}

#[test]
fn the_last_valid_row_of_a_record_wins_and_the_earlier_ones_are_named() {
    let rows = vec![
        row(2, json!({"order_no": "PO-1", "subject": "first"})),
        row(3, json!({"order_no": "PO-2", "subject": "other"})),
        row(4, json!({"order_no": "PO-1", "subject": ""})),
        row(5, json!({"order_no": "PO-1", "subject": "second"})),
        row(6, json!({"order_no": "PO-3", "subject": "third"})),
    ];
    let p = plan(&rule(), &rows);
    let kept: Vec<(u64, &str)> = p
        .records
        .iter()
        .map(|(l, id, _)| (*l, id.as_str()))
        .collect();
    assert_eq!(kept, vec![(3, "PO-2"), (5, "PO-1"), (6, "PO-3")]);
    assert_eq!(p.records[1].2["subject"], "second");
    assert_eq!(p.superseded, vec![(2, 5)]);
    // The invalid row supersedes nothing.
    assert_eq!(p.invalid.len(), 1);
    assert_eq!(p.invalid[0].line, 4);
}

#[test]
fn an_empty_file_plans_nothing() {
    assert_eq!(plan(&rule(), &[]), Plan::default());
}
