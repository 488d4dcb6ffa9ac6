//! Field mapping with declared transforms. A rule says which source field goes to
//! which target field and which transforms apply, in order; nothing is coded per app.
//! The transforms are declared with the rules ([`Transform`]); what each does is here.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::record::{Fields, is_empty};
use crate::rules::{FieldMapping, Transform};

impl Transform {
    /// Applies the transform.
    pub fn apply(&self, value: Value) -> Result<Value, String> {
        Ok(match (self, value) {
            (Transform::Trim, Value::String(s)) => Value::String(s.trim().to_owned()),
            (Transform::Lowercase, Value::String(s)) => Value::String(s.to_lowercase()),
            (Transform::Uppercase, Value::String(s)) => Value::String(s.to_uppercase()),
            (Transform::ToNumber, Value::String(s)) => {
                let t = s.trim();
                if t.is_empty() {
                    Value::Null
                } else if let Ok(i) = t.parse::<i64>() {
                    Value::from(i)
                } else {
                    let f: f64 = t.parse().map_err(|_| format!("\"{s}\" is not a number"))?;
                    serde_json::Number::from_f64(f)
                        .map(Value::Number)
                        .ok_or_else(|| format!("\"{s}\" is not a finite number"))?
                }
            }
            (Transform::ToText, Value::Number(n)) => Value::String(n.to_string()),
            (Transform::ToText, Value::Bool(b)) => Value::String(b.to_string()),
            (Transform::Prefix(p), Value::String(s)) => Value::String(format!("{p}{s}")),
            (Transform::StripPrefix(p), Value::String(s)) => {
                Value::String(s.strip_prefix(p.as_str()).unwrap_or(&s).to_owned())
            }
            (Transform::Map { table, default }, v) => {
                let key = match &v {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    Value::Bool(b) => Some(b.to_string()),
                    _ => None,
                };
                match key.and_then(|k| table.get(&k)) {
                    Some(mapped) => mapped.clone(),
                    None => default.clone().unwrap_or(v),
                }
            }
            (Transform::Default(d), v) => {
                if is_empty(&v) {
                    d.clone()
                } else {
                    v
                }
            }
            (Transform::Join(sep), Value::Array(items)) => {
                let parts: Vec<String> = items
                    .iter()
                    .map(|i| match i {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect();
                Value::String(parts.join(sep))
            }
            (Transform::Split(sep), Value::String(s)) => Value::Array(
                s.split(sep.as_str())
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(|p| Value::String(p.to_owned()))
                    .collect(),
            ),
            // Null passes through every transform but `default` and `map`.
            (_, Value::Null) => Value::Null,
            // Numbers are already numbers; text is already text.
            (Transform::ToNumber, v @ Value::Number(_)) => v,
            (Transform::ToText, v @ Value::String(_)) => v,
            (t, v) => return Err(format!("{t} does not apply to {}", kind(&v))),
        })
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

impl fmt::Display for Transform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transform::Trim => write!(f, "trim"),
            Transform::Lowercase => write!(f, "lowercase"),
            Transform::Uppercase => write!(f, "uppercase"),
            Transform::ToNumber => write!(f, "to_number"),
            Transform::ToText => write!(f, "to_text"),
            Transform::Prefix(p) => write!(f, "prefix \"{p}\""),
            Transform::StripPrefix(p) => write!(f, "strip_prefix \"{p}\""),
            Transform::Map { .. } => write!(f, "map"),
            Transform::Default(_) => write!(f, "default"),
            Transform::Join(s) => write!(f, "join \"{s}\""),
            Transform::Split(s) => write!(f, "split \"{s}\""),
        }
    }
}

/// Why a source record cannot be mapped: a data-quality problem for a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappingProblem {
    /// The source field.
    pub source_field: String,
    /// What is wrong, in plain words.
    pub problem: String,
}

impl fmt::Display for MappingProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.source_field, self.problem)
    }
}

/// The optional mapped source fields a record does not have at all, in the rule's order:
/// each is left out of every write without a word, which for a system that sends every
/// field (kintone) means a misspelt field code. (A required one is a mapping problem
/// already.)
pub fn absent_source_fields<'a>(mappings: &'a [FieldMapping], source: &Fields) -> Vec<&'a str> {
    let mut out: Vec<&str> = vec![];
    for m in mappings {
        if !m.required && !source.contains_key(&m.source) && !out.contains(&m.source.as_str()) {
            out.push(&m.source);
        }
    }
    out
}

/// Maps source fields to target fields. Every problem is reported, not only the first.
/// A source field the record lacks is left out of the result (a required one is a
/// problem).
pub fn map_fields(
    mappings: &[FieldMapping],
    source: &Fields,
) -> Result<Fields, Vec<MappingProblem>> {
    let mut out = Fields::new();
    let mut problems = vec![];
    for m in mappings {
        // A field the record does not have is left out, never sent as a clearing null.
        let Some(mut value) = source.get(&m.source).cloned() else {
            if m.required {
                problems.push(MappingProblem {
                    source_field: m.source.clone(),
                    problem: "is required but not in the record".to_owned(),
                });
            }
            continue;
        };
        let mut failed = false;
        for t in &m.transforms {
            match t.apply(value) {
                Ok(v) => value = v,
                Err(problem) => {
                    problems.push(MappingProblem {
                        source_field: m.source.clone(),
                        problem,
                    });
                    failed = true;
                    value = Value::Null;
                    break;
                }
            }
        }
        if failed {
            continue;
        }
        if m.required && is_empty(&value) {
            problems.push(MappingProblem {
                source_field: m.source.clone(),
                problem: "is required but empty".to_owned(),
            });
            continue;
        }
        out.insert(m.target.clone(), value);
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    #[test]
    fn absent_optional_source_fields_are_named_once_in_rule_order() {
        let m = |source: &str, required: bool| FieldMapping {
            source: source.into(),
            target: format!("t_{source}"),
            required,
            ..Default::default()
        };
        let rules = vec![
            m("件名", true),
            m("詳細X", false),
            m("詳細", false),
            m("優先度X", false),
            m("詳細X", false),
            m("必須X", true),
        ];
        let record = serde_json::json!({"件名": "Pump", "詳細": ""});
        let record = record.as_object().unwrap();
        // An empty value is present; a required one is a mapping problem instead.
        assert_eq!(
            absent_source_fields(&rules, record),
            vec!["詳細X", "優先度X"]
        );
        assert!(absent_source_fields(&rules[..1], record).is_empty());
    }

    fn fm(source: &str, target: &str, transforms: Vec<Transform>, required: bool) -> FieldMapping {
        FieldMapping {
            source: source.into(),
            target: target.into(),
            transforms,
            required,
            ..Default::default()
        }
    }

    fn fields(v: Value) -> Fields {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn transforms() {
        assert_eq!(Transform::Trim.apply(json!("  a ")).unwrap(), json!("a"));
        assert_eq!(
            Transform::Lowercase.apply(json!("AbC")).unwrap(),
            json!("abc")
        );
        assert_eq!(
            Transform::Uppercase.apply(json!("abc")).unwrap(),
            json!("ABC")
        );
        assert_eq!(Transform::ToNumber.apply(json!("12")).unwrap(), json!(12));
        assert_eq!(Transform::ToNumber.apply(json!("1.5")).unwrap(), json!(1.5));
        assert_eq!(Transform::ToNumber.apply(json!("")).unwrap(), Value::Null);
        assert_eq!(Transform::ToNumber.apply(json!(3)).unwrap(), json!(3));
        assert!(Transform::ToNumber.apply(json!("x1")).is_err());
        assert_eq!(Transform::ToText.apply(json!(3)).unwrap(), json!("3"));
        assert_eq!(Transform::ToText.apply(json!(true)).unwrap(), json!("true"));
        assert_eq!(
            Transform::Prefix("WO-".into()).apply(json!("1")).unwrap(),
            json!("WO-1")
        );
        assert_eq!(
            Transform::StripPrefix("WO-".into())
                .apply(json!("WO-1"))
                .unwrap(),
            json!("1")
        );
        assert_eq!(
            Transform::StripPrefix("WO-".into())
                .apply(json!("1"))
                .unwrap(),
            json!("1")
        );
        let map = Transform::Map {
            table: [
                ("高".to_owned(), json!("high")),
                ("1".to_owned(), json!("one")),
            ]
            .into(),
            default: None,
        };
        assert_eq!(map.apply(json!("高")).unwrap(), json!("high"));
        assert_eq!(map.apply(json!(1)).unwrap(), json!("one"));
        // A checkbox's true or false is looked up as text too.
        let flags = Transform::Map {
            table: [("true".to_owned(), json!("yes"))].into(),
            default: Some(json!("no")),
        };
        assert_eq!(flags.apply(json!(true)).unwrap(), json!("yes"));
        assert_eq!(flags.apply(json!(false)).unwrap(), json!("no"));
        assert_eq!(
            MappingProblem {
                source_field: "件名".into(),
                problem: "required but empty".into()
            }
            .to_string(),
            "件名: required but empty"
        );
        assert_eq!(map.apply(json!("低")).unwrap(), json!("低"));
        let map_default = Transform::Map {
            table: BTreeMap::new(),
            default: Some(json!("normal")),
        };
        assert_eq!(map_default.apply(json!("x")).unwrap(), json!("normal"));
        assert_eq!(
            Transform::Default(json!("n/a")).apply(Value::Null).unwrap(),
            json!("n/a")
        );
        assert_eq!(
            Transform::Default(json!("n/a")).apply(json!("")).unwrap(),
            json!("n/a")
        );
        assert_eq!(
            Transform::Default(json!("n/a")).apply(json!("x")).unwrap(),
            json!("x")
        );
        assert_eq!(
            Transform::Join(", ".into())
                .apply(json!(["a", "b"]))
                .unwrap(),
            json!("a, b")
        );
        assert_eq!(
            Transform::Split(",".into())
                .apply(json!("a, b,,c"))
                .unwrap(),
            json!(["a", "b", "c"])
        );
        assert_eq!(Transform::Trim.apply(Value::Null).unwrap(), Value::Null);
        let err = Transform::Trim.apply(json!(["a"])).unwrap_err();
        assert_eq!(err, "trim does not apply to a list");
    }

    #[test]
    fn maps_with_non_ascii_codes_and_reports_every_problem() {
        let m = vec![
            fm("件名", "subject", vec![Transform::Trim], true),
            fm("数量", "quantity", vec![Transform::ToNumber], false),
            fm("担当", "assignee", vec![], true),
            fm("missing", "note", vec![], false),
        ];
        let ok = map_fields(
            &m,
            &fields(json!({"件名": " 修理 ", "数量": "3", "担当": "sato"})),
        )
        .unwrap();
        assert_eq!(
            Value::Object(ok),
            json!({"subject": "修理", "quantity": 3, "assignee": "sato"})
        );
        let err =
            map_fields(&m, &fields(json!({"件名": "  ", "数量": "x", "担当": "a"}))).unwrap_err();
        assert_eq!(
            err,
            vec![
                MappingProblem {
                    source_field: "件名".into(),
                    problem: "is required but empty".into()
                },
                MappingProblem {
                    source_field: "数量".into(),
                    problem: "\"x\" is not a number".into()
                },
            ]
        );
    }

    proptest! {
        /// Trim, lowercase and uppercase are idempotent, and mapping is deterministic.
        #[test]
        fn text_transforms_are_idempotent(s in "\\PC{0,20}") {
            for t in [Transform::Trim, Transform::Lowercase, Transform::Uppercase] {
                let once = t.apply(json!(s)).unwrap();
                let twice = t.apply(once.clone()).unwrap();
                prop_assert_eq!(once, twice);
            }
        }

        /// Split then join gives back trimmed, non-empty parts joined by the separator.
        #[test]
        fn split_join_round_trip(parts in proptest::collection::vec("[a-z]{1,5}", 0..6)) {
            let joined = parts.join(",");
            let split = Transform::Split(",".into()).apply(json!(joined)).unwrap();
            let back = Transform::Join(",".into()).apply(split).unwrap();
            prop_assert_eq!(back, json!(joined));
        }
    }
}
