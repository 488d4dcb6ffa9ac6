//! History summaries read as sentences, naming what they are about.

use super::*;
use crate::identity::MatchStep;
use serde_json::json;

#[test]
fn summaries_read_as_sentences() {
    let e = Entry::matched(
        "helpdesk",
        "17",
        &MatchStep::Variant {
            index: 0,
            description: "without prefix \"WO-\"".into(),
        },
        Some("1234"),
    );
    assert_eq!(
        e.summary,
        "matched helpdesk record 17 by variant 1 (without prefix \"WO-\") \"1234\""
    );
    assert_eq!(e.kind.as_str(), "matched");
    let e = Entry::ambiguous(&MatchStep::Lookup, "55", &["3".into(), "8".into()]);
    assert_eq!(
        e.summary,
        "2 target records match lookup value \"55\" (3, 8); nothing written — a person must choose"
    );
    let e = Entry::payload_disagreed("件名", &json!("lie"), &json!("truth"));
    assert_eq!(
        e.summary,
        "webhook payload carried \"lie\" for 件名, the source says \"truth\" — kept the source's value"
    );
    assert_eq!(
        Entry::stale_skipped(3, 5).summary,
        "revision 3 is older than revision 5, which was already synced; nothing written"
    );
    assert_eq!(
        Entry::stale_skipped(5, 5).summary,
        "revision 5 was already synced; nothing written"
    );
    assert_eq!(
        Entry::retry_scheduled("helpdesk answered 503", 2, 4000).summary,
        "attempt 2 failed (helpdesk answered 503); retrying in 4 s"
    );
    let e = Entry::already_linked("helpdesk", "17", "kt-2", "matched by lookup value");
    assert_eq!(
        e.summary,
        "helpdesk record 17 (matched by lookup value) is already linked to source record kt-2; two source records are never linked to one target record, so nothing was written — a person must choose"
    );
    assert_eq!(e.detail["reason"], "already_linked");
    assert_eq!(e.detail["linked_to"], "kt-2");
    assert_eq!(
        Entry::webhook_received("kintone", "resync", "resync:r:1:3", 2).summary,
        "a resync found this kintone record changed (attempt 2)"
    );
    assert_eq!(
        Entry::webhook_received("operator", "resolution", "res-1", 1).summary,
        "an operator's resolution received"
    );
    assert_eq!(
        Entry::webhook_received("kintone", "UPDATE_RECORD", "e1", 1).summary,
        "kintone webhook UPDATE_RECORD received"
    );
}

#[test]
fn durations() {
    assert_eq!(human_ms(250), "250 ms");
    assert_eq!(human_ms(999), "999 ms");
    assert_eq!(human_ms(1_000), "1 s");
    assert_eq!(human_ms(4_000), "4 s");
    assert_eq!(human_ms(119_999), "119 s");
    assert_eq!(human_ms(120_000), "2 min");
    assert_eq!(human_ms(180_000), "3 min");
}

#[test]
fn commands_that_are_not_webhooks_say_what_they_are() {
    assert_eq!(
        Entry::webhook_received("kintone", "recordsync.rehydrate", "r-1", 1).summary,
        "rehydration of this kintone record asked"
    );
    assert_eq!(
        Entry::repair_asked("helpdesk", "subject differs", "rep-1", 1).summary,
        "a reconcile asked to repair this helpdesk record: subject differs"
    );
    assert_eq!(Kind::WebhookReceived.to_string(), "webhook_received");
    assert_eq!(Kind::Parked.to_string(), Kind::Parked.as_str());
}

#[test]
fn parked_work_says_when_changes_were_coalesced() {
    assert_eq!(
        Entry::parked("rule paused", 1).summary,
        "parked: rule paused"
    );
    assert_eq!(
        Entry::parked("rule paused", 0).summary,
        "parked: rule paused"
    );
    assert_eq!(
        Entry::parked("rule paused", 3).summary,
        "parked: rule paused; 3 changes wait for this record, only the latest state will be written"
    );
}
