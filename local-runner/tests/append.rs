//! `projector append` input rules, end to end on the embedded store: every line says
//! which version it expects, a byte-order mark is not an error, and events are stamped
//! with the store's clock unless history is imported with `--keep-timestamps`.

mod support;

use std::time::Duration;

use support::{test_config, Workspace};
use uuid::Uuid;

const QUICK: Duration = Duration::from_secs(30);

fn line(id: Uuid, expected: Option<serde_json::Value>) -> String {
    let mut line = serde_json::json!({
        "aggregate_id": id,
        "aggregate_type": "user",
        "event_type": "UserRegistered",
        "event_data": {"email": "a@x.io", "name": "A", "plan": "free"},
    });
    if let Some(expected) = expected {
        line["expected_version"] = expected;
    }
    line.to_string()
}

fn appended(ws: &Workspace, file: &str, contents: &str) -> support::Output {
    ws.write(file, contents);
    ws.run(&["append", file], QUICK)
}

#[test]
fn a_line_without_expected_version_is_refused_naming_the_line() {
    let ws = Workspace::with_config(None, &test_config(1));
    let text = [line(Uuid::new_v4(), Some(0.into())), line(Uuid::new_v4(), None)].join("\n");
    let out = appended(&ws, "events.jsonl", &text);
    out.assert_failure_mentioning("a line without expected_version", "events.jsonl:2:");
    assert!(out.stderr.contains("missing `expected_version`"), "{}", out.describe());
    assert!(out.stderr.contains("\"any\""), "the message says how to append unchecked\n{}", out.describe());

    let id = Uuid::new_v4();
    let text = [
        line(id, Some("no_stream".into())),
        line(id, Some("any".into())),
        line(id, Some(2.into())),
        line(Uuid::new_v4(), Some("any".into())),
    ]
    .join("\n");
    let out = appended(&ws, "explicit.jsonl", &text);
    out.assert_success("no_stream, any and a number");
    assert!(out.stdout.contains("appended 4 event(s)"), "{}", out.describe());

    let out = appended(&ws, "word.jsonl", &line(Uuid::new_v4(), Some("latest".into())));
    out.assert_failure_mentioning("an unknown word", "word.jsonl:1:");
    assert!(out.stderr.contains("\"latest\" is not a version"), "{}", out.describe());
}

#[test]
fn expected_version_minus_one_is_invalid_not_a_conflict() {
    let ws = Workspace::with_config(None, &test_config(1));
    let out = appended(&ws, "events.jsonl", &line(Uuid::new_v4(), Some((-1).into())));
    out.assert_failure_mentioning("expected_version -1", "events.jsonl:1:");
    assert!(out.stderr.contains("invalid"), "{}", out.describe());
    assert!(!out.stderr.to_lowercase().contains("conflict"), "{}", out.describe());
}

#[test]
fn a_byte_order_mark_at_the_start_of_the_file_is_accepted() {
    let ws = Workspace::with_config(None, &test_config(1));
    let text = format!("\u{feff}{}\n{}\n", line(Uuid::new_v4(), Some(0.into())), line(Uuid::new_v4(), Some(0.into())));
    let out = appended(&ws, "bom.jsonl", &text);
    out.assert_success("a file starting with a byte-order mark");
    assert!(out.stdout.contains("appended 2 event(s)"), "{}", out.describe());
}

#[test]
fn a_timestamp_is_kept_only_when_importing_and_lag_follows_the_store_clock() {
    let ws = Workspace::with_config(None, &test_config(1));
    ws.run(&["init"], QUICK).assert_success("projector init");
    let id = Uuid::new_v4();
    let mut imported: serde_json::Value = serde_json::from_str(&line(id, Some(0.into()))).expect("json");
    imported["timestamp"] = "1970-01-02T00:00:00Z".into();
    let out = appended(&ws, "history.jsonl", &imported.to_string());
    out.assert_failure_mentioning("a timestamp without --keep-timestamps", "history.jsonl:1:");
    assert!(out.stderr.contains("--keep-timestamps"), "{}", out.describe());

    let out = ws.run(&["append", "--keep-timestamps", "history.jsonl"], QUICK);
    out.assert_success("importing history");
    // The event keeps its date: the profile exists as of 1970-01-03.
    let out = ws.run(&["state", "user-profile", &id.to_string(), "--at", "1970-01-03T00:00:00Z"], QUICK);
    out.assert_success("state as of the imported date");

    // Recorded moments ago: lag is seconds, not decades, and never negative.
    let states = ws.status();
    let profile = states.iter().find(|s| s.projection == "user-profile").expect("user-profile is registered");
    assert_eq!(profile.lag_events, 1, "{states:?}");
    assert!((0.0..60.0).contains(&profile.lag_seconds), "lag_seconds {}", profile.lag_seconds);
}
