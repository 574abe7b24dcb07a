//! `--json` on every command that reports: one JSON document on stdout, with the fields
//! the README's table promises, and nothing else (no progress bar, no prose).

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{test_config, Output, Workspace};

const QUICK: Duration = Duration::from_secs(60);
const A: &str = "00000000-0000-4000-8000-00000000000a";
const POISON: &str = "11111111-1111-4111-8111-11111111111a";

fn json(out: &Output, what: &str) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{what}: stdout is not JSON: {e}\n{}", out.describe()))
}

/// Runs the command, which must succeed, and parses its stdout.
fn ok(ws: &Workspace, args: &[&str]) -> Value {
    let out = ws.run(args, QUICK);
    out.assert_success(&args.join(" "));
    json(&out, &args.join(" "))
}

/// Panics unless `value` is an object with exactly these fields.
fn assert_fields(value: &Value, fields: &[&str], what: &str) {
    let mut got: Vec<&str> = value
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect();
    got.sort_unstable();
    let mut want = fields.to_vec();
    want.sort_unstable();
    assert_eq!(got, want, "{what}: fields of {value}");
}

#[test]
fn every_reporting_command_prints_its_documented_json() {
    let ws = Workspace::with_config(None, &test_config(1));
    let init = ok(&ws, &["init", "--json"]);
    assert_fields(&init, &["store", "migrations_applied", "projections"], "init");
    // The embedded store migrates as it opens, so there is nothing left for init to apply.
    assert!(init["migrations_applied"].is_array(), "{init}");
    assert_eq!(init["projections"], serde_json::json!(["daily-activity", "user-profile"]), "{init}");
    let again = ok(&ws, &["init", "--json"]);
    assert_eq!(again["migrations_applied"], serde_json::json!([]), "a second init applies nothing: {again}");

    let lines = [
        serde_json::json!({"aggregate_id": A, "aggregate_type": "user", "expected_version": 0,
            "event_type": "UserRegistered", "event_data": {"email": "a@x.io", "name": "A", "plan": "free"}}),
        serde_json::json!({"aggregate_id": A, "aggregate_type": "user", "expected_version": 1, "event_id": POISON,
            "event_type": "UserEmailChanged", "event_data": {"email": 42}, "idempotency_key": "k1"}),
    ];
    // The second line again: its idempotency key makes it write nothing.
    let lines = [lines[0].clone(), lines[1].clone(), lines[1].clone()];
    let file = ws.write("events.jsonl", &lines.iter().map(|l| l.to_string() + "\n").collect::<String>());
    let append = ok(&ws, &["append", "--json", file.to_str().expect("utf-8 path")]);
    assert_fields(&append, &["source", "appends", "events", "repeated"], "append");
    assert_eq!(
        (append["appends"].as_u64(), append["events"].as_u64(), append["repeated"].as_u64()),
        (Some(2), Some(2), Some(1))
    );

    let out = ws.run(&["rebuild", "user-profile", "--json"], QUICK);
    out.assert_success("rebuild --json");
    assert!(out.stderr.trim().is_empty(), "no progress bar with --json\n{}", out.describe());
    let rebuild = json(&out, "rebuild --json");
    assert_fields(
        &rebuild,
        &[
            "projection",
            "from_position",
            "events_read",
            "events_applied",
            "rows_written",
            "checkpoint",
            "dead_lettered",
            "seconds",
        ],
        "rebuild",
    );
    assert_eq!((rebuild["events_read"].as_u64(), rebuild["dead_lettered"].as_u64()), (Some(2), Some(1)), "{rebuild}");
    assert_fields(&rebuild["checkpoint"], &["transaction_id", "position"], "rebuild checkpoint");
    let partial = ok(&ws, &["rebuild", "user-profile", "--from-position", "1", "--json"]);
    assert_eq!(partial["from_position"], 1, "{partial}");

    let state = ok(&ws, &["state", "user-profile", A, "--json"]);
    assert_fields(&state, &["user_id", "email", "name", "plan", "active", "version"], "state");
    assert_eq!((state["email"].as_str(), state["version"].as_i64()), (Some("a@x.io"), Some(1)), "{state}");
    let table = ws.run(&["state", "user-profile", A], QUICK);
    table.assert_success("state");
    assert!(table.stdout.contains("column") && table.stdout.contains("a@x.io"), "{}", table.describe());

    let status = ok(&ws, &["status", "--json"]);
    assert_eq!(status.as_array().map(Vec::len), Some(2), "{status}");
    assert_fields(
        &status[0],
        &[
            "projection",
            "partition",
            "partitions",
            "checkpoint",
            "last_event_at",
            "lag_events",
            "lag_estimated",
            "lag_seconds",
            "status",
            "events_applied",
            "error_count",
            "last_error",
            "lease_owner",
            "lease_expires_at",
            "updated_at",
            "dead_letters",
            "oldest_dead_letter_at",
            "parked_aggregates",
            "parked_events",
        ],
        "status",
    );
    let list = ok(&ws, &["dlq", "list", "--json"]);
    let letter = &list.as_array().expect("a list")[0];
    assert_fields(
        letter,
        &[
            "id",
            "projection",
            "event_id",
            "position",
            "transaction_id",
            "aggregate_id",
            "aggregate_type",
            "event_type",
            "version",
            "error",
            "error_class",
            "attempts",
            "first_failed_at",
            "last_failed_at",
            "status",
        ],
        "dlq list",
    );
    let id = letter["id"].as_i64().expect("id").to_string();
    let show = ok(&ws, &["dlq", "show", &id, "--json"]);
    assert_fields(&show, &["dead_letter", "event", "actions"], "dlq show");
    assert_eq!(&show["dead_letter"], letter);

    let repair_fields = [
        "dead_letter_id",
        "event_id",
        "projection",
        "aggregate_id",
        "action",
        "actor",
        "events_applied",
        "events_dropped",
        "unparked",
        "stopped_at",
    ];
    let out = ws.run(&["dlq", "retry", POISON, "--actor", "ops", "--json"], QUICK);
    out.assert_failure_mentioning("a retry that stops", "failed");
    let retry = json(&out, "dlq retry --json");
    assert_fields(&retry, &repair_fields, "dlq retry");
    assert_eq!((retry["action"].as_str(), retry["unparked"].as_bool()), (Some("retry"), Some(false)), "{retry}");
    assert_fields(&retry["stopped_at"], &["dead_letter_id", "event_id", "version", "error"], "stopped_at");
    let skip = ok(&ws, &["dlq", "skip", POISON, "--actor", "ops", "--json"]);
    assert_fields(&skip, &repair_fields, "dlq skip");
    assert_eq!(
        (skip["action"].as_str(), skip["unparked"].as_bool(), skip["events_dropped"].as_u64(), &skip["stopped_at"]),
        (Some("skip"), Some(true), Some(1), &Value::Null),
        "{skip}"
    );
    assert_eq!(skip["dead_letter_id"].as_i64().map(|i| i.to_string()), Some(id), "{skip}");

    let scale = ok(&ws, &["scale", "user-profile", "2", "--json"]);
    assert_fields(
        &scale,
        &["projection", "partitions_before", "partitions", "checkpoint", "configured_partitions"],
        "scale",
    );
    assert_eq!(
        (scale["partitions_before"].as_u64(), scale["partitions"].as_u64(), scale["configured_partitions"].as_u64()),
        (Some(1), Some(2), Some(1)),
        "{scale}"
    );
}
