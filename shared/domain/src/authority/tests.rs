use super::Strategy;
use super::*;
use proptest::prelude::{Just, prop_assert, prop_assert_eq, prop_oneof, proptest};
use proptest::strategy::Strategy as Gen;
use serde_json::json;

const K: &str = "kintone";
const H: &str = "helpdesk";

fn f(v: Value) -> Fields {
    v.as_object().unwrap().clone()
}

fn policy(field: &str, owner: Owner, strategy: Strategy) -> FieldPolicy {
    FieldPolicy {
        field: field.into(),
        owner,
        strategy,
        validation: Validation::default(),
        merge: MergeKind::Union,
    }
}

fn policies() -> Vec<FieldPolicy> {
    vec![
        policy(
            "contact_email",
            Owner::System(K.into()),
            Strategy::LocalWins,
        ),
        policy("subject", Owner::System(K.into()), Strategy::LocalWins),
        policy("status", Owner::System(H.into()), Strategy::ExternalWins),
        policy("phone", Owner::Shared, Strategy::LatestValidChange),
        FieldPolicy {
            merge: MergeKind::Union,
            ..policy("tags", Owner::Shared, Strategy::Merge)
        },
        FieldPolicy {
            merge: MergeKind::Delta,
            ..policy("hours", Owner::Shared, Strategy::Merge)
        },
        policy("approval", Owner::Shared, Strategy::ManualReview),
    ]
}

/// A record both systems hold in the same state, at `{kintone: 11, helpdesk: 5}`.
fn synced(values: Value) -> SyncState {
    let values = f(values);
    let vv = VersionVector::from_pairs([(K, 11), (H, 5)]);
    let mut st = SyncState {
        canonical: values.clone(),
        vv: vv.clone(),
        ..Default::default()
    };
    for s in [K, H] {
        st.held.insert(s.into(), values.clone());
        st.seen.insert(s.into(), vv.clone());
    }
    for k in values.keys() {
        st.field_versions.insert(
            k.clone(),
            FieldVersion {
                vv: vv.clone(),
                by: K.into(),
                at: None,
            },
        );
    }
    st
}

fn obs(system: &str, revision: Option<i64>, values: Value) -> Observation {
    Observation {
        system: system.into(),
        revision,
        values: f(values),
        changed_at: None,
    }
}

fn run(st: &SyncState, o: &Observation) -> Decision {
    observe(&policies(), &[K, H], st, o, &[])
}

#[test]
fn the_seed_email_story() {
    let st = synced(json!({"contact_email": "old@example.com"}));
    // 10:01 the customer's email changes in kintone.
    let d = run(
        &st,
        &obs(K, Some(12), json!({"contact_email": "new@example.com"})),
    );
    assert_eq!(d.classification, Classification::NewChange);
    assert_eq!(d.fields[0].verdict, Verdict::Accepted);
    assert_eq!(d.state.vv, VersionVector::from_pairs([(K, 12), (H, 5)]));
    assert_eq!(d.writes[H], f(json!({"contact_email": "new@example.com"})));
    // 10:08 the helpdesk, which had not seen that change, carries its own value.
    let d2 = run(
        &d.state,
        &obs(H, Some(6), json!({"contact_email": "agent@example.com"})),
    );
    assert_eq!(d2.classification, Classification::Concurrent);
    let o = &d2.fields[0];
    assert_eq!(o.relation, Relation::Concurrent);
    assert_eq!(o.verdict, Verdict::Refused { owner: K.into() });
    assert_eq!(o.after, json!("new@example.com"));
    assert_eq!(
        o.last_change.as_ref().unwrap().vv,
        VersionVector::from_pairs([(K, 12), (H, 5)])
    );
    // The correction: the owner's value is restored on the helpdesk.
    assert_eq!(d2.writes[H], f(json!({"contact_email": "new@example.com"})));
    assert!(!d2.writes.contains_key(K));
    assert_eq!(d2.state.canonical["contact_email"], "new@example.com");
}

#[test]
fn changes_to_different_fields_both_stand() {
    let st = synced(json!({"subject": "Pump", "status": "open"}));
    let d = run(
        &st,
        &obs(
            K,
            Some(12),
            json!({"subject": "Pump replaced", "status": "open"}),
        ),
    );
    assert_eq!(d.writes[H], f(json!({"subject": "Pump replaced"})));
    // The helpdesk closed the ticket without having seen the new subject.
    let d2 = run(
        &d.state,
        &obs(H, Some(6), json!({"subject": "Pump", "status": "closed"})),
    );
    // Its stale subject is not a change of its own (it still holds what we believed),
    // and its status change is its own field.
    assert_eq!(d2.fields.len(), 1);
    assert_eq!(d2.fields[0].field, "status");
    assert_eq!(d2.fields[0].verdict, Verdict::Accepted);
    assert_eq!(
        d2.state.canonical,
        f(json!({"subject": "Pump replaced", "status": "closed"}))
    );
    assert_eq!(d2.writes[K], f(json!({"status": "closed"})));
}

#[test]
fn a_non_owner_change_is_refused_and_restored() {
    let st = synced(json!({"subject": "Pump", "status": "open"}));
    let d = run(
        &st,
        &obs(
            H,
            Some(6),
            json!({"subject": "Changed in the helpdesk", "status": "open"}),
        ),
    );
    assert_eq!(d.classification, Classification::NewChange);
    assert_eq!(d.fields[0].verdict, Verdict::Refused { owner: K.into() });
    assert_eq!(d.fields[0].relation, Relation::After);
    assert_eq!(d.writes[H], f(json!({"subject": "Pump"})));
    assert_eq!(d.state.canonical["subject"], "Pump");
    assert_eq!(d.state.vv, st.vv, "a refused change advances nothing");
    // Kintone may not change the helpdesk's status either.
    let d = run(&st, &obs(K, Some(12), json!({"status": "closed"})));
    assert_eq!(d.fields[0].verdict, Verdict::Refused { owner: H.into() });
    assert_eq!(d.writes[K], f(json!({"status": "open"})));
}

#[test]
fn latest_valid_change_between_concurrent_changes() {
    let mut st = synced(json!({"phone": "111"}));
    let t = |s: &str| Some(DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc));
    let mut k = obs(K, Some(12), json!({"phone": "222"}));
    k.changed_at = t("2026-11-22T10:00:00Z");
    st = run(&st, &k).state;
    // The helpdesk changed it later, without seeing kintone's change: it wins.
    let mut h = obs(H, Some(6), json!({"phone": "333"}));
    h.changed_at = t("2026-11-22T10:05:00Z");
    let d = run(&st, &h);
    assert_eq!(d.fields[0].verdict, Verdict::ConcurrentWon);
    assert_eq!(d.writes[K], f(json!({"phone": "333"})));
    // Had it changed it earlier, it would lose and get kintone's value back.
    h.changed_at = t("2026-11-22T09:55:00Z");
    let d = run(&st, &h);
    assert_eq!(d.fields[0].verdict, Verdict::ConcurrentLost);
    assert_eq!(d.writes[H], f(json!({"phone": "222"})));
    // An invalid value never wins.
    let mut p = policies();
    p[3].validation = Validation {
        required: true,
        pattern: Some("[0-9-]+".into()),
        one_of: vec![],
    };
    let d = observe(
        &p,
        &[K, H],
        &st,
        &obs(H, Some(6), json!({"phone": "call me"})),
        &[],
    );
    assert!(
        matches!(&d.fields[0].verdict, Verdict::Invalid { reason } if reason == "\"call me\" does not match [0-9-]+")
    );
    assert_eq!(d.writes[H], f(json!({"phone": "222"})));
}

#[test]
fn merge_unions_lists_and_adds_deltas() {
    let st = synced(json!({"tags": ["a", "b"], "hours": 10}));
    let d = run(
        &st,
        &obs(K, Some(12), json!({"tags": ["a", "b", "k"], "hours": 12})),
    );
    // The helpdesk, concurrently, removed "a", added "h", and logged 5 more hours.
    let d2 = run(
        &d.state,
        &obs(H, Some(6), json!({"tags": ["b", "h"], "hours": 15})),
    );
    assert_eq!(d2.classification, Classification::Concurrent);
    assert_eq!(d2.state.canonical["tags"], json!(["b", "h", "k"]));
    assert_eq!(d2.state.canonical["hours"], json!(17));
    assert_eq!(
        d2.writes[K],
        f(json!({"tags": ["b", "h", "k"], "hours": 17}))
    );
    assert_eq!(
        d2.writes[H],
        f(json!({"tags": ["b", "h", "k"], "hours": 17})),
        "the sender gets the merge too"
    );
}

#[test]
fn manual_review_changes_nothing() {
    let st = synced(json!({"approval": "pending"}));
    let d = run(&st, &obs(K, Some(12), json!({"approval": "approved"})));
    let d2 = run(&d.state, &obs(H, Some(6), json!({"approval": "rejected"})));
    assert_eq!(d2.fields[0].verdict, Verdict::ManualReview);
    assert_eq!(d2.state.canonical["approval"], "approved");
    assert!(d2.writes.is_empty());
}

#[test]
fn echoes_duplicates_and_stale_revisions() {
    let st = synced(json!({"subject": "Pump"}));
    let d = run(&st, &obs(K, Some(12), json!({"subject": "Pump 2"})));
    let mut st = d.state.clone();
    let pending = PendingWrite {
        system: H.into(),
        values: d.writes[H].clone(),
        vv: st.vv.clone(),
    };
    wrote(&mut st, H, &d.writes[H], None);
    // The helpdesk's webhook for our own write.
    let echo = observe(
        &policies(),
        &[K, H],
        &st,
        &obs(H, Some(6), json!({"subject": "Pump 2"})),
        &[pending],
    );
    assert_eq!(echo.classification, Classification::Confirmation);
    assert!(echo.writes.is_empty());
    assert_eq!(echo.state.seen[H], st.vv);
    // The same revision again, and an older one.
    assert_eq!(
        run(&echo.state, &obs(H, Some(6), json!({"subject": "x"}))).classification,
        Classification::Duplicate
    );
    assert_eq!(
        run(&echo.state, &obs(H, Some(4), json!({"subject": "x"}))).classification,
        Classification::Stale
    );
    // A newer revision holding what we believed: no change.
    assert_eq!(
        run(&echo.state, &obs(H, Some(7), json!({"subject": "Pump 2"}))).classification,
        Classification::NoChange
    );
}

#[test]
fn validation() {
    let v = Validation {
        required: true,
        pattern: Some("[a-z]+@[a-z.]+".into()),
        one_of: vec![],
    };
    assert_eq!(v.check(&json!("")), Some("is required".into()));
    assert_eq!(v.check(&json!("a@b.c")), None);
    assert!(v.check(&json!("A@B")).is_some());
    let e = Validation {
        one_of: vec![json!("open"), json!("closed")],
        ..Default::default()
    };
    assert_eq!(e.check(&json!("open")), None);
    assert!(e.check(&json!("lost")).is_some());
    assert_eq!(
        e.check(&Value::Null),
        None,
        "empty is valid unless required"
    );
}

fn arb_list() -> impl Gen<Value = Value> {
    proptest::collection::btree_set("[a-d]", 0..4)
        .prop_map(|s| Value::Array(s.into_iter().map(Value::String).collect()))
}

fn arb_value() -> impl Gen<Value = Value> {
    prop_oneof![
        Just(json!("x")),
        Just(json!("y")),
        Just(json!("z")),
        Just(Value::Null)
    ]
}

fn arb_fields() -> impl Gen<Value = Fields> {
    (arb_value(), arb_value(), arb_value(), arb_value())
        .prop_map(|(a, b, c, d)| f(json!({"subject": a, "status": b, "phone": c, "approval": d})))
}

/// The fields of [`arb_fields`] and the two merged ones: `tags` (a union of lists) and
/// `hours` (a number whose changes add up).
fn arb_fields_with_merges() -> impl Gen<Value = Fields> {
    (arb_fields(), arb_list(), 0i64..20).prop_map(|(mut fields, tags, hours)| {
        fields.insert("tags".into(), tags);
        fields.insert("hours".into(), json!(hours));
        fields
    })
}

proptest! {
    /// Union is commutative, associative and idempotent.
    #[test]
    fn union_is_a_semilattice(a in arb_list(), b in arb_list(), c in arb_list()) {
        prop_assert_eq!(union(&a, &b), union(&b, &a));
        prop_assert_eq!(union(&union(&a, &b), &c), union(&a, &union(&b, &c)));
        prop_assert_eq!(union(&a, &a), union(&a, &json!([])));
    }

    /// Three-way list merge: two sides' changes from one base commute, and merging a
    /// side that changed nothing is the identity.
    #[test]
    fn list_merge_commutes(base in arb_list(), x in arb_list(), y in arb_list()) {
        prop_assert_eq!(merge_lists(&base, &x, &y), merge_lists(&base, &y, &x));
        prop_assert_eq!(merge_lists(&base, &x, &base), union(&x, &json!([])));
    }

    /// Classification is total and consistent: every observation gets exactly one
    /// class; stale and duplicate ones change nothing; writes only follow changes.
    #[test]
    fn classification_is_total(start in arb_fields(), k in arb_fields(), h in arb_fields(), rk in 0i64..3, rh in 0i64..3) {
        let mut st = synced(Value::Object(start));
        st.revisions.insert(K.into(), 1);
        st.revisions.insert(H.into(), 1);
        let d = run(&st, &obs(K, Some(rk), Value::Object(k)));
        let d2 = run(&d.state, &obs(H, Some(rh), Value::Object(h)));
        for x in [&d, &d2] {
            match x.classification {
                Classification::Stale | Classification::Duplicate => prop_assert!(x.writes.is_empty() && x.fields.is_empty()),
                Classification::NoChange | Classification::Confirmation => prop_assert!(x.writes.is_empty()),
                Classification::NewChange | Classification::Concurrent => prop_assert!(!x.fields.is_empty()),
            }
        }
    }

    /// No ping-pong: after the writes a decision asks for are made and each system
    /// reports back what it was sent, nothing more is written, and every system holds
    /// the canonical values.
    #[test]
    fn writes_converge(
        start in arb_fields_with_merges(),
        k in arb_fields_with_merges(),
        h in arb_fields_with_merges(),
    ) {
        let mut st = synced(Value::Object(start));
        let mut rev = BTreeMap::from([(K, 12i64), (H, 6i64)]);
        let mut queue = vec![obs(K, Some(12), Value::Object(k)), obs(H, Some(6), Value::Object(h))];
        let mut rounds = 0;
        while let Some(o) = queue.pop() {
            rounds += 1;
            prop_assert!(rounds < 20, "ping-pong");
            let d = run(&st, &o);
            st = d.state;
            for (system, values) in d.writes {
                let r = rev.get_mut(system.as_str()).unwrap();
                *r += 1;
                wrote(&mut st, &system, &values, Some(*r));
                let mut now = st.held[&system].clone();
                now.extend(values);
                queue.insert(0, Observation { system: system.clone(), revision: Some(*r), values: now, changed_at: None });
            }
        }
        for s in [K, H] {
            for (field, v) in &st.canonical {
                if field != "approval" {
                    prop_assert_eq!(st.held[s].get(field), Some(v), "{} on {}", field, s);
                }
            }
        }
    }
}

#[test]
fn a_first_link_takes_each_field_from_its_owner() {
    let p = vec![
        policy("subject", Owner::System(K.into()), Strategy::LocalWins),
        policy("status", Owner::System(H.into()), Strategy::ExternalWins),
    ];
    let source = f(json!({"subject": "Pump", "status": "open"}));
    let target = f(json!({"subject": "Old", "status": "closed"}));
    let (st, writes) = initial(&p, K, H, &source, Some(&target), Some(3));
    assert_eq!(
        st.canonical,
        f(json!({"subject": "Pump", "status": "closed"}))
    );
    assert_eq!(writes[H], f(json!({"subject": "Pump"})));
    assert_eq!(writes[K], f(json!({"status": "closed"})));
    assert_eq!(st.revisions[K], 3);
    assert_eq!(st.field_versions["status"].by, H);
    // A record created in the target gets only what the source may write.
    let (st, writes) = initial(&p, K, H, &source, None, None);
    assert_eq!(writes[H], f(json!({"subject": "Pump"})));
    assert!(!st.canonical.contains_key("status"));
}

#[test]
fn the_timeline_line_reads_as_the_seed() {
    let st = synced(json!({"contact_email": "old@example.com"}));
    let d = run(
        &st,
        &obs(K, Some(12), json!({"contact_email": "new@example.com"})),
    );
    let d2 = run(
        &d.state,
        &obs(H, Some(6), json!({"contact_email": "agent@example.com"})),
    );
    let e = crate::history::Entry::field_outcome(H, &d2.fields[0], &[]);
    assert_eq!(
        e.summary,
        "helpdesk carried \"agent@example.com\" for contact_email — concurrent with kintone's change {helpdesk: 5, kintone: 12} — refused, kept \"new@example.com\" (contact_email is owned by kintone, local_wins) — correction queued"
    );
}

#[test]
fn a_pattern_that_is_no_regular_expression_is_named_both_when_declared_and_when_checked() {
    let bad = Validation {
        pattern: Some("(".into()),
        ..Validation::default()
    };
    let problem = bad.problem().expect("a problem with the declaration");
    assert!(
        problem.starts_with("the pattern is not a regular expression: "),
        "{problem}"
    );
    let checked = bad
        .check(&json!("x"))
        .expect("a value cannot pass a broken pattern");
    assert!(
        checked.starts_with("the pattern ( is not a regular expression: "),
        "{checked}"
    );
    let good = Validation {
        pattern: Some("[A-Z]+".into()),
        ..Validation::default()
    };
    assert_eq!(good.problem(), None);
    assert_eq!(Validation::default().problem(), None);
}

#[test]
fn classifications_are_stored_by_these_names() {
    let names: Vec<&str> = [
        Classification::Duplicate,
        Classification::Stale,
        Classification::Confirmation,
        Classification::NewChange,
        Classification::Concurrent,
        Classification::NoChange,
    ]
    .into_iter()
    .map(Classification::as_str)
    .collect();
    assert_eq!(
        names,
        [
            "duplicate",
            "stale",
            "confirmation",
            "new_change",
            "concurrent",
            "no_change"
        ]
    );
}

#[test]
fn an_empty_text_is_an_empty_list_and_any_other_text_one_item() {
    assert_eq!(union(&json!(""), &json!(["a"])), json!(["a"]));
    assert_eq!(union(&json!("x"), &json!([])), json!(["x"]));
    assert_eq!(union(&json!(null), &json!(7)), json!(["7"]));
}

#[test]
fn deltas_add_up_numbers_given_as_text_and_keep_fractions() {
    // kintone sends numbers as text.
    assert_eq!(
        merge_delta(&json!("10"), &json!("12"), &json!(" 15 ")),
        json!(17)
    );
    assert_eq!(merge_delta(&json!(1), &json!(2), &json!(1.5)), json!(2.5));
    assert_eq!(
        merge_delta(&json!(0), &json!(0.25), &json!(0.25)),
        json!(0.5)
    );
}

#[test]
fn a_concurrent_change_with_a_time_wins_over_one_without() {
    let mut st = synced(json!({"phone": "111"}));
    // kintone's change carries no time (a system that does not say).
    st = run(&st, &obs(K, Some(12), json!({"phone": "222"}))).state;
    let mut h = obs(H, Some(6), json!({"phone": "333"}));
    h.changed_at = Some(
        DateTime::parse_from_rfc3339("2026-11-22T10:05:00Z")
            .unwrap()
            .with_timezone(&Utc),
    );
    let d = run(&st, &h);
    assert_eq!(d.fields[0].verdict, Verdict::ConcurrentWon);
    assert_eq!(d.writes[K], f(json!({"phone": "333"})));
}

#[test]
fn only_the_rule_s_fields_are_held_for_a_system() {
    let st = synced(json!({"subject": "A"}));
    let d = run(
        &st,
        &obs(K, Some(12), json!({"subject": "B", "not_mapped": "x"})),
    );
    assert_eq!(d.state.held[K].get("subject"), Some(&json!("B")));
    assert!(
        !d.state.held[K].contains_key("not_mapped"),
        "{:?}",
        d.state.held
    );
}

#[test]
fn a_tie_in_time_keeps_the_change_already_taken() {
    let t = Some(
        DateTime::parse_from_rfc3339("2026-11-22T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc),
    );
    let mut st = synced(json!({"phone": "111"}));
    let mut k = obs(K, Some(12), json!({"phone": "222"}));
    k.changed_at = t;
    st = run(&st, &k).state;
    let mut h = obs(H, Some(6), json!({"phone": "333"}));
    h.changed_at = t;
    let d = run(&st, &h);
    assert_eq!(d.fields[0].verdict, Verdict::ConcurrentLost);
    assert_eq!(d.writes[H], f(json!({"phone": "222"})));
}

#[test]
fn sums_stay_whole_numbers_only_where_a_float_holds_them_exactly() {
    assert_eq!(
        merge_delta(&json!(0), &json!(8.0e15), &json!(0)),
        json!(8_000_000_000_000_000_i64)
    );
    // From 9e15 on (f64 holds integers exactly only up to 2^53 ≈ 9.007e15), the sum
    // stays a float.
    assert_eq!(
        merge_delta(&json!(0), &json!(9.0e15), &json!(0)),
        json!(9.0e15)
    );
}
