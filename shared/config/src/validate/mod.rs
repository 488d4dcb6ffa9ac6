//! `validate`: what the types of `sync-rules.json` cannot check — references between
//! systems and rules, names, URLs, pointers — one module per part of the file: the
//! systems (`systems`, a rest system's entities in `entities`), and each rule
//! (`rules`: its name, source and target, identity; its schedules in `schedules`, its
//! fields in `fields`, its delete and write-back policies in `policies`).

mod entities;
mod fields;
mod policies;
mod rules;
mod schedules;
mod systems;

use std::collections::BTreeSet;

use domain::rules::SyncRules;

use crate::Problem;

/// The problems found so far, in the order they were found.
struct Problems(Vec<Problem>);

impl Problems {
    fn bad(&mut self, path: String, message: String) {
        self.0.push(Problem { path, message });
    }
}

fn valid_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_uppercase() || c == '_')
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

fn valid_system_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn valid_pointer(s: &str) -> bool {
    s.is_empty() || s.starts_with('/')
}

/// Checks what the types cannot: references between systems and rules, names, URLs,
/// pointers. Returns every problem found, each at its path.
pub fn validate(rules: &SyncRules) -> Vec<Problem> {
    let mut out = Problems(vec![]);

    if rules.version != 1 {
        out.bad(
            "version".into(),
            format!("version {} is unknown; use 1", rules.version),
        );
    }
    let known: Vec<&str> = rules.systems.keys().map(String::as_str).collect();
    for (name, sys) in &rules.systems {
        systems::system(&mut out, name, sys);
    }
    let mut names = BTreeSet::new();
    for (i, rule) in rules.rules.iter().enumerate() {
        rules::rule(
            &mut out,
            rules,
            &known,
            &mut names,
            &format!("rules[{i}]"),
            rule,
        );
    }
    out.0
}
