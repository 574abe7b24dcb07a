//! `dlq show|retry|skip|discard` take a dead letter's id or its event's id (a UUID, as
//! logs and alerts give it), on the embedded store: dead letters come from a rebuild
//! over events the handler refuses.

mod support;

use std::time::Duration;

use projector::{DeadLetter, DeadLetterQueue};
use support::{test_config, Output, Workspace};

const QUICK: Duration = Duration::from_secs(60);
const A: &str = "00000000-0000-4000-8000-00000000000a";
const B: &str = "00000000-0000-4000-8000-00000000000b";
const POISON_A: &str = "11111111-1111-4111-8111-11111111111a";
const POISON_B: &str = "11111111-1111-4111-8111-11111111111b";

/// Registered, then an email change the handler refuses (a number), then a rename.
fn history(aggregate: &str, poison: &str, name: &str) -> String {
    let line = |v: serde_json::Value| v.to_string() + "\n";
    line(serde_json::json!({"aggregate_id": aggregate, "aggregate_type": "user", "expected_version": 0,
        "event_type": "UserRegistered", "event_data": {"email": "x@example.com", "name": name, "plan": "free"}}))
        + &line(serde_json::json!({"aggregate_id": aggregate, "aggregate_type": "user", "expected_version": 1,
            "event_id": poison, "event_type": "UserEmailChanged", "event_data": {"email": 42}}))
        + &line(serde_json::json!({"aggregate_id": aggregate, "aggregate_type": "user", "expected_version": 2,
            "event_type": "UserRenamed", "event_data": {"name": format!("{name}3")}}))
}

fn json(out: &Output, what: &str) -> serde_json::Value {
    out.assert_success(what);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{what}: stdout is not JSON: {e}\n{}", out.describe()))
}

/// An embedded store holding two parked aggregates, A and B, each behind one letter.
fn two_parked() -> (Workspace, Vec<DeadLetter>) {
    let ws = Workspace::with_config(None, &test_config(1));
    ws.run(&["init"], QUICK).assert_success("init");
    let file = ws.write("events.jsonl", &(history(A, POISON_A, "A") + &history(B, POISON_B, "B")));
    ws.run(&["append", file.to_str().expect("utf-8 path")], QUICK).assert_success("append");
    let rebuilt = ws.run(&["rebuild", "user-profile"], QUICK);
    rebuilt.assert_success("rebuild");
    assert!(rebuilt.stdout.contains("2 event(s) failed"), "{}", rebuilt.describe());
    let list = ws.run(&["dlq", "list", "--json"], QUICK);
    let letters: Vec<DeadLetter> = serde_json::from_value(json(&list, "dlq list --json")).expect("dead letters");
    assert_eq!(letters.len(), 2, "{}", list.describe());
    (ws, letters)
}

fn letter_for<'l>(letters: &'l [DeadLetter], event: &str) -> &'l DeadLetter {
    letters.iter().find(|l| l.event_id.to_string() == event).unwrap_or_else(|| panic!("no letter for {event}"))
}

#[test]
fn skip_by_event_id_does_what_skip_by_letter_id_does() {
    let (ws, letters) = two_parked();
    let (a, b) = (letter_for(&letters, POISON_A), letter_for(&letters, POISON_B));

    let by_letter = ws.run(&["dlq", "skip", &a.id.to_string(), "--actor", "ops"], QUICK);
    by_letter.assert_success("dlq skip <letter id>");
    let by_event = ws.run(&["dlq", "skip", POISON_B, "--actor", "ops"], QUICK);
    by_event.assert_success("dlq skip <event id>");
    // The same report, about each one's own letter and aggregate.
    let as_a = by_event.stdout.replace(&b.id.to_string(), &a.id.to_string()).replace(B, A);
    assert_eq!(as_a, by_letter.stdout, "by event:\n{}\nby letter:\n{}", by_event.stdout, by_letter.stdout);
    assert!(by_letter.stdout.contains("1 dropped") && by_letter.stdout.contains("unparked"), "{}", by_letter.stdout);

    for (letter, key, name) in [(a, A, "A3"), (b, B, "B3")] {
        let shown = json(&ws.run(&["dlq", "show", &letter.id.to_string(), "--json"], QUICK), "dlq show --json");
        assert_eq!(shown["dead_letter"]["status"], "skipped", "{shown}");
        let actions = shown["actions"].as_array().expect("actions");
        assert_eq!(actions.len(), 1, "{shown}");
        assert_eq!((actions[0]["action"].as_str(), actions[0]["actor"].as_str()), (Some("skip"), Some("ops")));
        let row = json(&ws.run(&["state", "user-profile", key, "--json"], QUICK), "state --json");
        assert_eq!((row["name"].as_str(), row["email"].as_str()), (Some(name), Some("x@example.com")), "{row}");
    }
    let states = ws.status();
    assert!(states.iter().all(|s| s.dead_letters == 0 && s.parked_aggregates == 0), "{}", support::show(&states));
}

#[test]
fn show_finds_a_letter_by_its_event_and_names_what_it_accepts() {
    let (ws, letters) = two_parked();
    let a = letter_for(&letters, POISON_A);
    let by_id = json(&ws.run(&["dlq", "show", &a.id.to_string(), "--json"], QUICK), "dlq show <letter id>");
    let by_event = json(&ws.run(&["dlq", "show", POISON_A, "--json"], QUICK), "dlq show <event id>");
    assert_eq!(by_id, by_event);
    assert_eq!(by_event["dead_letter"]["id"], a.id, "{by_event}");

    ws.run(&["dlq", "show", "twelve"], QUICK).assert_failure_mentioning("a bad id", "neither a dead letter's id");
    ws.run(&["dlq", "retry", "twelve"], QUICK).assert_failure_mentioning("a bad id", "or an event id");
    let unknown = "22222222-2222-4222-8222-222222222222";
    ws.run(&["dlq", "discard", unknown], QUICK)
        .assert_failure_mentioning("an event without letters", &format!("no dead letter for event {unknown}"));
    ws.run(&["dlq", "show", &a.id.to_string(), "--projection", "daily-activity"], QUICK)
        .assert_failure_mentioning("a letter of another projection", "belongs to projection user-profile");
}

#[test]
fn an_event_with_letters_in_several_projections_asks_which() {
    let (ws, letters) = two_parked();
    let a = letter_for(&letters, POISON_A);
    // The same event failing in a second projection too.
    let store = projector_embedded::EmbeddedStore::open(ws.path().join(".projector/projector.db")).expect("store");
    let other = DeadLetter { id: 0, projection: "daily-activity".into(), ..a.clone() };
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let other_id = rt.block_on(store.send(&[other])).expect("send")[0];
    drop(store);

    ws.run(&["dlq", "skip", POISON_A], QUICK).assert_failure_mentioning("an event in two projections", "--projection");
    let out = ws.run(&["dlq", "show", POISON_A], QUICK);
    out.assert_failure_mentioning("an event in two projections", &format!("daily-activity (dead letter {other_id})"));
    assert!(out.stderr.contains(&format!("user-profile (dead letter {})", a.id)), "{}", out.describe());
    let picked = ws.run(&["dlq", "show", POISON_A, "--projection", "daily-activity", "--json"], QUICK);
    let picked = json(&picked, "dlq show <event id> --projection");
    assert_eq!(picked["dead_letter"]["id"], other_id, "{picked}");
    assert_eq!(picked["dead_letter"]["projection"], "daily-activity", "{picked}");
}
