use super::*;
use crate::authority::wrote;
use crate::history::Kind;
use serde_json::{Value, json};

/// A two-way rule: the subject is kintone's, the status the helpdesk's, the notes are
/// shared (latest valid change) and the priority is left for a person.
fn rule(direction: &str) -> RuleSpec {
    serde_json::from_value(json!({
        "name": "wo",
        "source": {"system": "kintone", "app": "101"},
        "target": {"system": "helpdesk", "entity": "ticket"},
        "identity": {"source_field": "wo_no", "target_field": "external_id"},
        "fields": [
            {"source": "件名", "target": "subject"},
            {"source": "状態", "target": "status", "owner": "helpdesk"},
            {"source": "メモ", "target": "notes", "owner": "shared"},
            {"source": "優先", "target": "priority", "owner": "shared", "strategy": "manual_review"}
        ],
        "write_back": {"field": "ticket_id"},
        "direction": direction
    }))
    .expect("a valid rule")
}

fn f(v: Value) -> Fields {
    v.as_object().expect("an object").clone()
}

fn obs(system: &str, revision: i64, values: Value) -> Observation {
    Observation {
        system: system.to_owned(),
        revision: Some(revision),
        values: f(values),
        changed_at: None,
    }
}

/// The state after a first sync of `source` to a target holding `target`, with the
/// writes made (as the worker records them) and the target at revision 1.
fn synced(rule: &RuleSpec, source: Value, target: Value) -> SyncState {
    let (source, target) = (f(source), f(target));
    let mut w = plan_initial(InitialInputs {
        rule,
        source: &source,
        source_revision: Some(1),
        target: Some(&target),
        create_with: None,
        rehydrate: false,
    });
    wrote(&mut w.state, "helpdesk", &w.target, Some(1));
    wrote(&mut w.state, "kintone", &w.source, None);
    w.state
}

fn linked<'a>(
    rule: &'a RuleSpec,
    side: Side,
    state: &'a SyncState,
    source: Observation,
    target: Option<Observation>,
    unconfirmed: &'a BTreeMap<String, Unconfirmed>,
) -> LinkedInputs<'a> {
    LinkedInputs {
        rule,
        side,
        state,
        target_id: "T-1",
        source,
        target,
        unconfirmed,
    }
}

fn writes(plan: LinkedPlan) -> Writes {
    match plan {
        LinkedPlan::Writes(w) => *w,
        LinkedPlan::Stale { .. } => panic!("expected writes, got Stale"),
    }
}

fn kinds(entries: &[Entry]) -> Vec<Kind> {
    entries.iter().map(|e| e.kind).collect()
}

#[test]
fn a_new_source_value_is_written_to_the_target_and_nothing_else() {
    let r = rule("one_way");
    let state = synced(&r, json!({"subject": "A"}), json!({}));
    let none = BTreeMap::new();
    let mut entries = vec![];
    let w = writes(plan_linked(
        linked(
            &r,
            Side::Source,
            &state,
            obs("kintone", 2, json!({"subject": "B"})),
            None,
            &none,
        ),
        &mut entries,
    ));
    assert_eq!(w.target, f(json!({"subject": "B"})));
    assert!(w.source.is_empty(), "{:?}", w.source);
    assert_eq!(w.state.canonical.get("subject"), Some(&json!("B")));
    assert_eq!(w.state.revisions.get("kintone"), Some(&2));
    assert!(w.confirmed.is_empty() && w.review.is_none());
    assert_eq!(kinds(&entries), vec![Kind::Decided], "{entries:#?}");
    assert!(entries[0].summary.contains("subject"), "{entries:#?}");
}

#[test]
fn a_revision_already_synced_is_stale_and_said_only_when_the_source_triggered() {
    let r = rule("one_way");
    let state = synced(&r, json!({"subject": "A"}), json!({}));
    let none = BTreeMap::new();
    let mut entries = vec![];
    let plan = plan_linked(
        linked(
            &r,
            Side::Source,
            &state,
            obs("kintone", 1, json!({"subject": "changed but not newer"})),
            None,
            &none,
        ),
        &mut entries,
    );
    assert_eq!(plan, LinkedPlan::Stale { confirmed: vec![] });
    assert_eq!(kinds(&entries), vec![Kind::StaleSkipped], "{entries:#?}");
    assert!(
        entries[0].summary.contains("revision 1 was already synced"),
        "{entries:#?}"
    );

    let mut entries = vec![];
    let plan = plan_linked(
        linked(
            &r,
            Side::Target,
            &state,
            obs("kintone", 1, json!({"subject": "A"})),
            None,
            &none,
        ),
        &mut entries,
    );
    assert_eq!(plan, LinkedPlan::Stale { confirmed: vec![] });
    assert!(entries.is_empty(), "{entries:#?}");
}

/// The echo of the revision last synced confirms the writes sent to the source (our
/// write-back, whose answer gave that revision); an older revision confirms nothing,
/// and writes to another system are not the source's to confirm.
#[test]
fn the_echo_of_the_revision_last_synced_confirms_the_writes_sent_to_the_source() {
    let r = rule("one_way");
    let mut state = synced(&r, json!({"subject": "A"}), json!({}));
    state.revisions.insert("kintone".into(), 3);
    let sent = BTreeMap::from([
        (
            "kintone".to_owned(),
            Unconfirmed {
                ids: vec![7, 9],
                writes: vec![],
            },
        ),
        (
            "helpdesk".to_owned(),
            Unconfirmed {
                ids: vec![8],
                writes: vec![],
            },
        ),
    ]);
    let stale = |revision: i64| {
        let mut entries = vec![];
        plan_linked(
            linked(
                &r,
                Side::Source,
                &state,
                obs("kintone", revision, json!({"subject": "A"})),
                None,
                &sent,
            ),
            &mut entries,
        )
    };
    assert_eq!(
        stale(3),
        LinkedPlan::Stale {
            confirmed: vec![7, 9]
        }
    );
    assert_eq!(stale(2), LinkedPlan::Stale { confirmed: vec![] });
}

#[test]
fn a_newer_revision_with_the_same_values_writes_nothing_and_says_so() {
    let r = rule("one_way");
    let state = synced(&r, json!({"subject": "A"}), json!({}));
    let none = BTreeMap::new();
    let mut entries = vec![];
    let w = writes(plan_linked(
        linked(
            &r,
            Side::Source,
            &state,
            obs("kintone", 5, json!({"subject": "A"})),
            None,
            &none,
        ),
        &mut entries,
    ));
    assert!(w.target.is_empty() && w.source.is_empty(), "{w:?}");
    assert_eq!(kinds(&entries), vec![Kind::NoChange], "{entries:#?}");
    assert!(entries[0].summary.contains("T-1"), "{entries:#?}");
    // The revision is remembered, so the same delivery again is a duplicate.
    assert_eq!(w.state.revisions.get("kintone"), Some(&5));
}

#[test]
fn a_target_owned_change_flows_back_to_the_source_and_a_source_edit_of_it_does_not_win() {
    let r = rule("both");
    let state = synced(
        &r,
        json!({"subject": "A", "status": "ignored"}),
        json!({"status": "open"}),
    );
    assert_eq!(state.canonical.get("status"), Some(&json!("open")));
    let none = BTreeMap::new();
    let mut entries = vec![];
    // The helpdesk closed the ticket; kintone meanwhile wrote its own status.
    let w = writes(plan_linked(
        linked(
            &r,
            Side::Target,
            &state,
            obs("kintone", 2, json!({"subject": "A", "status": "done?"})),
            Some(obs(
                "helpdesk",
                2,
                json!({"subject": "A", "status": "closed"}),
            )),
            &none,
        ),
        &mut entries,
    ));
    assert_eq!(w.state.canonical.get("status"), Some(&json!("closed")));
    assert_eq!(w.source, f(json!({"status": "closed"})), "{entries:#?}");
    assert!(!w.target.contains_key("status"), "{w:?}");
    assert!(
        entries
            .iter()
            .any(|e| e.summary.contains("status") && e.summary.contains("helpdesk")),
        "{entries:#?}"
    );
}

#[test]
fn a_later_observation_drops_a_write_an_earlier_one_planned_for_the_same_field() {
    let r = rule("both");
    let state = synced(
        &r,
        json!({"subject": "A", "notes": "n0"}),
        json!({"notes": "n0"}),
    );
    let none = BTreeMap::new();
    let mut entries = vec![];
    // Both changed the shared notes since the last sync: whichever is decided last
    // must not leave a write of the loser's value to the winner's system.
    let w = writes(plan_linked(
        linked(
            &r,
            Side::Source,
            &state,
            obs(
                "kintone",
                2,
                json!({"subject": "A", "notes": "from kintone"}),
            ),
            Some(obs("helpdesk", 2, json!({"notes": "from helpdesk"}))),
            &none,
        ),
        &mut entries,
    ));
    let winner = w.state.canonical.get("notes").cloned();
    assert!(
        winner == Some(json!("from kintone")) || winner == Some(json!("from helpdesk")),
        "{winner:?}"
    );
    // Each system ends up holding the winner: nothing writes it a value that is not.
    for side in [&w.source, &w.target] {
        if let Some(v) = side.get("notes") {
            assert_eq!(Some(v), winner.as_ref(), "{w:?}");
        }
    }
    let kintone_holds = if w.source.contains_key("notes") {
        w.source.get("notes").cloned()
    } else {
        Some(json!("from kintone"))
    };
    let helpdesk_holds = if w.target.contains_key("notes") {
        w.target.get("notes").cloned()
    } else {
        Some(json!("from helpdesk"))
    };
    assert_eq!(kintone_holds, winner, "{w:?}");
    assert_eq!(helpdesk_holds, winner, "{w:?}");
}

#[test]
fn our_own_write_coming_back_confirms_every_unconfirmed_write_to_that_system() {
    let r = rule("both");
    let state = synced(&r, json!({"subject": "A"}), json!({"status": "open"}));
    // The step wrote subject B to the helpdesk, which answered with no revision, and
    // has not seen it since.
    let mut after = state.clone();
    after.canonical.insert("subject".into(), json!("B"));
    after.vv.bump("kintone");
    wrote(&mut after, "helpdesk", &f(json!({"subject": "B"})), None);
    let unconfirmed = BTreeMap::from([(
        "helpdesk".to_owned(),
        Unconfirmed {
            ids: vec![41, 42],
            writes: vec![PendingWrite {
                system: "helpdesk".into(),
                values: f(json!({"subject": "B"})),
                vv: after.vv.clone(),
            }],
        },
    )]);
    let mut entries = vec![];
    let w = writes(plan_linked(
        linked(
            &r,
            Side::Target,
            &after,
            obs("kintone", 1, json!({"subject": "B"})),
            Some(obs(
                "helpdesk",
                3,
                json!({"subject": "B", "status": "open"}),
            )),
            &unconfirmed,
        ),
        &mut entries,
    ));
    assert_eq!(w.confirmed, vec![41, 42]);
    assert!(w.target.is_empty() && w.source.is_empty(), "{w:?}");
    assert_eq!(kinds(&entries), vec![Kind::Classified], "{entries:#?}");
}

#[test]
fn a_field_for_manual_review_is_written_nowhere_and_named_for_the_conflict() {
    let r = rule("both");
    let state = synced(
        &r,
        json!({"subject": "A", "priority": "low"}),
        json!({"priority": "low"}),
    );
    let none = BTreeMap::new();
    let mut entries = vec![];
    // Both changed the field since the last sync: the strategy leaves it to a person.
    let w = writes(plan_linked(
        linked(
            &r,
            Side::Source,
            &state,
            obs("kintone", 2, json!({"subject": "A", "priority": "high"})),
            Some(obs("helpdesk", 2, json!({"priority": "urgent"}))),
            &none,
        ),
        &mut entries,
    ));
    let review = w.review.clone().expect("a review entry");
    assert!(review.summary.contains("priority"), "{review:?}");
    assert!(!w.target.contains_key("priority"), "{w:?}");
    assert!(!w.source.contains_key("priority"), "{w:?}");
    // Without the other side's change it is an ordinary accepted change.
    let mut entries = vec![];
    let w = writes(plan_linked(
        linked(
            &r,
            Side::Source,
            &state,
            obs("kintone", 2, json!({"subject": "A", "priority": "high"})),
            Some(obs("helpdesk", 1, json!({"priority": "low"}))),
            &none,
        ),
        &mut entries,
    ));
    assert!(w.review.is_none(), "{entries:#?}");
    assert_eq!(w.target.get("priority"), Some(&json!("high")));
}

#[test]
fn a_create_carries_the_lookup_value_and_every_source_field() {
    let r = rule("one_way");
    let source = f(json!({"subject": "A", "notes": "n"}));
    let w = plan_initial(InitialInputs {
        rule: &r,
        source: &source,
        source_revision: Some(3),
        target: None,
        create_with: Some("WO-7"),
        rehydrate: false,
    });
    assert_eq!(
        w.target,
        f(json!({"subject": "A", "notes": "n", "external_id": "WO-7"}))
    );
    assert!(w.source.is_empty(), "{w:?}");
    assert_eq!(w.state.revisions.get("kintone"), Some(&3));
}

#[test]
fn a_create_keeps_a_mapped_identity_value_over_the_lookup() {
    let mut r = rule("one_way");
    r.identity.target_field = "subject".into();
    let source = f(json!({"subject": "mapped"}));
    let w = plan_initial(InitialInputs {
        rule: &r,
        source: &source,
        source_revision: None,
        target: None,
        create_with: Some("lookup"),
        rehydrate: false,
    });
    assert_eq!(w.target.get("subject"), Some(&json!("mapped")));
}

#[test]
fn a_first_link_takes_the_targets_own_fields_and_writes_them_back_to_the_source() {
    let r = rule("both");
    let source = f(json!({"subject": "A", "status": "new"}));
    let target = f(json!({"subject": "old", "status": "open"}));
    let w = plan_initial(InitialInputs {
        rule: &r,
        source: &source,
        source_revision: Some(1),
        target: Some(&target),
        create_with: None,
        rehydrate: false,
    });
    assert_eq!(w.target.get("subject"), Some(&json!("A")));
    assert!(!w.target.contains_key("status"), "{w:?}");
    assert_eq!(w.source, f(json!({"status": "open"})));
    assert!(!w.target.contains_key("external_id"), "{w:?}");
}

#[test]
fn a_rehydration_writes_every_field_the_target_does_not_own_even_if_equal() {
    let r = rule("both");
    let source = f(json!({"subject": "A", "notes": "n", "status": "x"}));
    let target = f(json!({"subject": "A", "notes": "n", "status": "open"}));
    let plain = plan_initial(InitialInputs {
        rule: &r,
        source: &source,
        source_revision: Some(1),
        target: Some(&target),
        create_with: None,
        rehydrate: false,
    });
    assert!(!plain.target.contains_key("subject"), "{plain:?}");
    let w = plan_initial(InitialInputs {
        rehydrate: true,
        ..InitialInputs {
            rule: &r,
            source: &source,
            source_revision: Some(1),
            target: Some(&target),
            create_with: None,
            rehydrate: false,
        }
    });
    assert_eq!(w.target.get("subject"), Some(&json!("A")));
    assert_eq!(w.target.get("notes"), Some(&json!("n")));
    assert!(!w.target.contains_key("status"), "{w:?}");
}

#[test]
fn target_values_keep_only_the_mapped_fields() {
    let r = rule("one_way");
    let got = target_values(&r, &f(json!({"subject": "A", "other": 1, "status": "s"})));
    assert_eq!(got, f(json!({"subject": "A", "status": "s"})));
}

#[test]
fn an_unchanged_observation_is_said_once_by_whoever_triggered_the_step() {
    let r = rule("both");
    let state = synced(
        &r,
        json!({"subject": "A", "status": "x"}),
        json!({"status": "open"}),
    );
    let none = BTreeMap::new();
    // The helpdesk's webhook, nothing mapped changed on either side: the helpdesk's
    // observation is classified, kintone's (not the trigger) says nothing.
    let mut entries = vec![];
    let w = writes(plan_linked(
        linked(
            &r,
            Side::Target,
            &state,
            obs("kintone", 5, json!({"subject": "A", "status": "open"})),
            Some(obs(
                "helpdesk",
                5,
                json!({"subject": "A", "status": "open"}),
            )),
            &none,
        ),
        &mut entries,
    ));
    assert!(w.target.is_empty() && w.source.is_empty(), "{w:?}");
    let said: Vec<&str> = entries.iter().map(|e| e.summary.as_str()).collect();
    assert_eq!(
        said,
        ["helpdesk revision 5 changed no mapped field; nothing to do"],
        "{entries:#?}"
    );
}

#[test]
fn an_accepted_change_says_which_other_systems_it_is_written_to() {
    let r = rule("both");
    let state = synced(
        &r,
        json!({"subject": "A", "status": "x"}),
        json!({"status": "open"}),
    );
    let none = BTreeMap::new();
    let mut entries = vec![];
    let w = writes(plan_linked(
        linked(
            &r,
            Side::Source,
            &state,
            obs("kintone", 2, json!({"subject": "B", "status": "open"})),
            None,
            &none,
        ),
        &mut entries,
    ));
    assert_eq!(w.target, f(json!({"subject": "B"})));
    let decided: Vec<&str> = entries
        .iter()
        .filter(|e| e.kind == Kind::Decided)
        .map(|e| e.summary.as_str())
        .collect();
    assert_eq!(
        decided,
        [
            "kintone carried \"B\" for subject — accepted (subject is owned by kintone, local_wins); written to helpdesk"
        ],
        "{entries:#?}"
    );
}
