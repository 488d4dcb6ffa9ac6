//! A rules file replacing another: the changes that would orphan what the store holds
//! under a rule (its links, state, history, conflicts, cursors), and the migrations an
//! operator names to say how each is handled. `worker check-config NEW --previous OLD`
//! refuses an orphaning change that no named migration covers.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use domain::rules::SyncRules;

/// A change that would orphan what is stored under a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Orphaning {
    /// The rule is gone: its links and history would belong to no rule.
    /// `renamed_to` names a new rule with the same source and target.
    RuleGone {
        /// The rule.
        rule: String,
        /// The likely new name.
        renamed_to: Option<String>,
    },
    /// The rule reads another app: its links point at records of the old one.
    SourceMoved {
        /// The rule.
        rule: String,
        /// `system/app` before.
        from: String,
        /// `system/app` now.
        to: String,
    },
    /// The rule writes another entity: its links point at records of the old one.
    TargetMoved {
        /// The rule.
        rule: String,
        /// `system/entity` before.
        from: String,
        /// `system/entity` now.
        to: String,
    },
    /// The lookup reads or searches another field: records not linked yet, and creates
    /// in doubt, would be matched by the new field, and a record created under the old
    /// one may not be found (a duplicate).
    IdentityChanged {
        /// The rule.
        rule: String,
        /// `source_field` or `target_field`.
        side: &'static str,
        /// The field before.
        from: String,
        /// The field now.
        to: String,
    },
}

impl Orphaning {
    /// The rule it concerns (under its old name).
    pub fn rule(&self) -> &str {
        match self {
            Orphaning::RuleGone { rule, .. }
            | Orphaning::SourceMoved { rule, .. }
            | Orphaning::TargetMoved { rule, .. }
            | Orphaning::IdentityChanged { rule, .. } => rule,
        }
    }

    /// Whether `migrations` cover it.
    pub fn covered_by(&self, migrations: &[Migration]) -> bool {
        migrations.iter().any(|m| match (self, m) {
            (Orphaning::RuleGone { rule, .. }, Migration::RenameRule { from, .. }) => from == rule,
            (Orphaning::RuleGone { rule, .. }, Migration::Retire { rule: r }) => r == rule,
            (
                Orphaning::SourceMoved { rule, .. } | Orphaning::TargetMoved { rule, .. },
                Migration::Relink { rule: r },
            ) => r == rule,
            (Orphaning::IdentityChanged { rule, .. }, Migration::Rematch { rule: r }) => r == rule,
            _ => false,
        })
    }

    /// The migration that would cover it.
    pub fn remedy(&self) -> String {
        match self {
            Orphaning::RuleGone {
                rule,
                renamed_to: Some(to),
            } => format!(
                "name `--migration rename:{rule}={to}` (and run `worker rename-rule {rule} {to}` while the workers are stopped), or `--migration retire:{rule}` to leave its history behind"
            ),
            Orphaning::RuleGone { rule, .. } => format!(
                "name `--migration rename:{rule}=NEW` if it was renamed, or `--migration retire:{rule}` to leave its links and history behind"
            ),
            Orphaning::SourceMoved { rule, .. } | Orphaning::TargetMoved { rule, .. } => format!(
                "name `--migration relink:{rule}` and run `worker forget-links {rule}` while the workers are stopped (each record is matched afresh, by identity, at its next change)"
            ),
            Orphaning::IdentityChanged { rule, .. } => format!(
                "name `--migration rematch:{rule}` once no create of the rule is in doubt (`worker ledger --rule {rule}` shows none in flight)"
            ),
        }
    }
}

impl fmt::Display for Orphaning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Orphaning::RuleGone {
                rule,
                renamed_to: Some(to),
            } => write!(
                f,
                "rule {rule} is gone, and rule {to} has its source and target: renamed? Its links, state and history would belong to no rule"
            ),
            Orphaning::RuleGone { rule, .. } => write!(
                f,
                "rule {rule} is gone: its links, state and history would belong to no rule"
            ),
            Orphaning::SourceMoved { rule, from, to } => write!(
                f,
                "rule {rule} now reads {to} instead of {from}: its links point at records of {from}"
            ),
            Orphaning::TargetMoved { rule, from, to } => write!(
                f,
                "rule {rule} now writes {to} instead of {from}: its links point at records of {from}"
            ),
            Orphaning::IdentityChanged {
                rule,
                side,
                from,
                to,
            } => write!(
                f,
                "rule {rule}'s identity {side} changes from {from} to {to}: records not linked yet, and creates in doubt, would be matched by {to}, and one created under {from} may not be found"
            ),
        }
    }
}

/// What an operator names to say how an orphaning change is handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Migration {
    /// `rename:OLD=NEW`: the rule was renamed; `worker rename-rule` moves what is
    /// stored under the old name to the new one.
    RenameRule {
        /// The old name.
        from: String,
        /// The new name.
        to: String,
    },
    /// `retire:RULE`: the rule is removed on purpose; its history stays under its name.
    Retire {
        /// The rule.
        rule: String,
    },
    /// `relink:RULE`: the rule's source or target moved; its links are forgotten.
    Relink {
        /// The rule.
        rule: String,
    },
    /// `rematch:RULE`: the identity fields change, and no create is in doubt.
    Rematch {
        /// The rule.
        rule: String,
    },
}

impl FromStr for Migration {
    type Err = String;

    fn from_str(s: &str) -> Result<Migration, String> {
        let (kind, arg) = s.split_once(':').ok_or_else(|| {
            format!("\"{s}\" is not KIND:RULE (rename:OLD=NEW, retire:R, relink:R, rematch:R)")
        })?;
        let name = |n: &str| {
            let n = n.trim();
            if n.is_empty() {
                Err(format!("\"{s}\" names no rule"))
            } else {
                Ok(n.to_owned())
            }
        };
        match kind {
            "rename" => {
                let (from, to) = arg
                    .split_once('=')
                    .ok_or_else(|| format!("\"{s}\": a rename is rename:OLD=NEW"))?;
                Ok(Migration::RenameRule {
                    from: name(from)?,
                    to: name(to)?,
                })
            }
            "retire" => Ok(Migration::Retire { rule: name(arg)? }),
            "relink" => Ok(Migration::Relink { rule: name(arg)? }),
            "rematch" => Ok(Migration::Rematch { rule: name(arg)? }),
            other => Err(format!(
                "\"{other}\" is not a migration (rename, retire, relink, rematch)"
            )),
        }
    }
}

/// What replacing `old` by `new` would orphan, rule by rule, in `old`'s order.
pub fn orphaning(old: &SyncRules, new: &SyncRules) -> Vec<Orphaning> {
    let old_names: BTreeSet<&str> = old.rules.iter().map(|r| r.name.as_str()).collect();
    let mut out = vec![];
    for was in &old.rules {
        let Some(now) = new.rule(&was.name) else {
            let renamed_to = new
                .rules
                .iter()
                .filter(|r| !old_names.contains(r.name.as_str()))
                .find(|r| r.source == was.source && r.target == was.target)
                .map(|r| r.name.clone());
            out.push(Orphaning::RuleGone {
                rule: was.name.clone(),
                renamed_to,
            });
            continue;
        };
        if now.source != was.source {
            out.push(Orphaning::SourceMoved {
                rule: was.name.clone(),
                from: format!("{}/{}", was.source.system, was.source.app),
                to: format!("{}/{}", now.source.system, now.source.app),
            });
        }
        if now.target != was.target {
            out.push(Orphaning::TargetMoved {
                rule: was.name.clone(),
                from: format!("{}/{}", was.target.system, was.target.entity),
                to: format!("{}/{}", now.target.system, now.target.entity),
            });
        }
        for (side, a, b) in [
            (
                "source_field",
                &was.identity.source_field,
                &now.identity.source_field,
            ),
            (
                "target_field",
                &was.identity.target_field,
                &now.identity.target_field,
            ),
        ] {
            if a != b {
                out.push(Orphaning::IdentityChanged {
                    rule: was.name.clone(),
                    side,
                    from: a.clone(),
                    to: b.clone(),
                });
            }
        }
    }
    out
}

/// Why `migrations` do not fit `new`: a rename to a rule the new file does not have, or
/// from one it still has.
pub fn migration_problems(new: &SyncRules, migrations: &[Migration]) -> Vec<String> {
    let mut out = vec![];
    for m in migrations {
        if let Migration::RenameRule { from, to } = m {
            if new.rule(to).is_none() {
                out.push(format!("rename:{from}={to}: the new file has no rule {to}"));
            }
            if new.rule(from).is_some() {
                out.push(format!(
                    "rename:{from}={to}: the new file still has rule {from}"
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(v: serde_json::Value) -> SyncRules {
        crate::parse_rules("t.json", &v.to_string()).expect("valid rules")
    }

    fn base() -> serde_json::Value {
        serde_json::from_str(include_str!("../../../sync-rules.json")).expect("json")
    }

    #[test]
    fn the_same_file_orphans_nothing() {
        assert_eq!(orphaning(&rules(base()), &rules(base())), vec![]);
    }

    #[test]
    fn a_renamed_rule_is_recognised_by_its_source_and_target() {
        let mut v = base();
        v["rules"][0]["name"] = json!("orders-to-tickets");
        let found = orphaning(&rules(base()), &rules(v.clone()));
        assert_eq!(
            found,
            vec![Orphaning::RuleGone {
                rule: "work-orders-to-tickets".into(),
                renamed_to: Some("orders-to-tickets".into())
            }]
        );
        assert!(found[0].to_string().contains("renamed?"));
        assert!(
            found[0]
                .remedy()
                .contains("rename:work-orders-to-tickets=orders-to-tickets")
        );
        let rename: Migration = "rename:work-orders-to-tickets=orders-to-tickets"
            .parse()
            .expect("a migration");
        assert!(found[0].covered_by(std::slice::from_ref(&rename)));
        assert!(migration_problems(&rules(v.clone()), &[rename]).is_empty());
        // A rename to a rule that does not exist, or from one that still does.
        let wrong: Migration = "rename:work-orders-to-tickets=nope"
            .parse()
            .expect("parsed");
        assert_eq!(migration_problems(&rules(v), &[wrong]).len(), 1);
        let still: Migration = "rename:work-orders-to-tickets=x".parse().expect("parsed");
        assert_eq!(migration_problems(&rules(base()), &[still]).len(), 2);
    }

    #[test]
    fn a_removed_rule_a_moved_app_and_a_changed_identity_each_need_their_migration() {
        let mut v = base();
        v["rules"][0]["source"]["app"] = json!("102");
        v["rules"][0]["identity"]["target_field"] = json!("ext_ref");
        let found = orphaning(&rules(base()), &rules(v));
        assert_eq!(found.len(), 2, "{found:#?}");
        assert_eq!(
            found[0].to_string(),
            "rule work-orders-to-tickets now reads kintone/102 instead of kintone/101: its links point at records of kintone/101"
        );
        assert!(matches!(
            &found[1],
            Orphaning::IdentityChanged { side: "target_field", from, to, .. } if from == "external_id" && to == "ext_ref"
        ));
        let relink: Migration = "relink:work-orders-to-tickets".parse().expect("parsed");
        let rematch: Migration = "rematch:work-orders-to-tickets".parse().expect("parsed");
        assert!(found[0].covered_by(std::slice::from_ref(&relink)));
        assert!(!found[1].covered_by(&[relink]));
        assert!(found[1].covered_by(&[rematch]));

        let mut v = base();
        v["rules"] = json!([]);
        let found = orphaning(&rules(base()), &rules(v));
        assert_eq!(
            found,
            vec![Orphaning::RuleGone {
                rule: "work-orders-to-tickets".into(),
                renamed_to: None
            }]
        );
        let retire: Migration = "retire:work-orders-to-tickets".parse().expect("parsed");
        assert!(found[0].covered_by(&[retire]));
    }

    #[test]
    fn a_migration_that_cannot_be_read_says_why() {
        for (text, why) in [
            ("rename", "is not KIND:RULE"),
            ("rename:a", "rename:OLD=NEW"),
            ("rename:=b", "names no rule"),
            ("drop:a", "\"drop\" is not a migration"),
            ("retire: ", "names no rule"),
        ] {
            let err = text.parse::<Migration>().expect_err(text);
            assert!(err.contains(why), "{text}: {err}");
        }
    }
}
