//! The `projector` commands end to end: time travel with `state`, the demo on the
//! embedded store, and how bad input is reported (exit code, message, no panic).

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use projector::Status;
use support::{show, test_config, Pg, Workspace};
use uuid::Uuid;

const QUICK: Duration = Duration::from_secs(30);

fn append_line(id: Uuid, event_type: &str, data: serde_json::Value, timestamp: &str) -> String {
    serde_json::json!({
        "aggregate_id": id,
        "aggregate_type": "user",
        "expected_version": "any",
        "event_type": event_type,
        "event_data": data,
        "timestamp": timestamp,
    })
    .to_string()
}

fn json(out: &support::Output, what: &str) -> serde_json::Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{what}: stdout is not JSON: {e}\n{}", out.describe()))
}

// ---------------------------------------------------------------------------------------
// state --at
// ---------------------------------------------------------------------------------------

#[test]
fn state_time_travel() {
    let pg = Pg::new();
    let ws = Workspace::with_config(Some(pg.url()), &test_config(1));
    let id = Uuid::new_v4();
    let lines = [
        append_line(
            id,
            "UserRegistered",
            serde_json::json!({"email": "ada@old.example", "name": "Ada", "plan": "free"}),
            "2026-01-01T00:00:00Z",
        ),
        append_line(id, "UserEmailChanged", serde_json::json!({"email": "ada@new.example"}), "2026-01-02T00:00:00Z"),
        append_line(id, "UserRenamed", serde_json::json!({"name": "Ada Lovelace"}), "2026-01-03T00:00:00Z"),
    ];
    let file = ws.write("events.jsonl", &(lines.join("\n") + "\n"));
    let out = ws.run(&["append", "--keep-timestamps", file.to_str().expect("utf-8 path")], QUICK);
    out.assert_success("projector append");
    assert!(out.stdout.contains("appended 3 event(s)"), "{}", out.describe());

    let key = id.to_string();
    let state = |at: Option<&str>| {
        let mut args = vec!["state", "user-profile", key.as_str(), "--json"];
        if let Some(at) = at {
            args.extend(["--at", at]);
        }
        let out = ws.run(&args, QUICK);
        out.assert_success(&format!("projector {}", args.join(" ")));
        json(&out, "state")
    };

    let between = state(Some("2026-01-01T12:00:00Z"));
    assert_eq!(between["email"], "ada@old.example", "before the email change: {between}");
    assert_eq!(between["name"], "Ada", "{between}");
    assert_eq!(between["version"], 1, "{between}");
    assert_eq!(between["user_id"], key.as_str(), "{between}");

    let second = state(Some("2026-01-02T12:00:00Z"));
    assert_eq!(second["email"], "ada@new.example", "after the email change: {second}");
    assert_eq!(second["name"], "Ada", "before the rename: {second}");
    assert_eq!(second["version"], 2, "{second}");

    // An instant exactly at an event includes it.
    let exact = state(Some("2026-01-02T00:00:00Z"));
    assert_eq!(exact["email"], "ada@new.example", "{exact}");

    let latest = state(None);
    assert_eq!(latest["email"], "ada@new.example", "latest: {latest}");
    assert_eq!(latest["name"], "Ada Lovelace", "latest: {latest}");
    assert_eq!(latest["plan"], "free", "latest: {latest}");
    assert_eq!(latest["active"], true, "latest: {latest}");
    assert_eq!(latest["version"], 3, "latest: {latest}");

    // Before the user existed there is no row; a bad instant is named.
    let out = ws.run(&["state", "user-profile", &key, "--at", "2025-12-31T23:59:59Z"], QUICK);
    out.assert_failure_mentioning("state before registration", "has no row");
    let out = ws.run(&["state", "user-profile", &key, "--at", "yesterday"], QUICK);
    out.assert_failure_mentioning("state --at yesterday", "RFC 3339");
}

#[test]
fn state_of_daily_activity_sees_every_committed_event() {
    let pg = Pg::new();
    let ws = Workspace::with_config(Some(pg.url()), &test_config(1));
    // Another session has a transaction open with an id, as any long write would, here
    // or in another database of the same server (transaction ids are server-wide).
    let other = pg.block_on(pg.db.client());
    pg.block_on(other.batch_execute("BEGIN; SELECT pg_current_xact_id();")).expect("open a transaction");
    let id = Uuid::new_v4();
    let lines = [
        append_line(
            id,
            "UserRegistered",
            serde_json::json!({"email": "a@x.io", "name": "A", "plan": "free"}),
            "2026-01-01T00:00:00Z",
        ),
        append_line(id, "UserEmailChanged", serde_json::json!({"email": "b@x.io"}), "2026-01-02T00:00:00Z"),
    ];
    ws.write("events.jsonl", &(lines.join("\n") + "\n"));
    ws.run(&["append", "--keep-timestamps", "events.jsonl"], QUICK).assert_success("projector append");

    // The per-aggregate view sees both committed events...
    let out = ws.run(&["state", "user-profile", &id.to_string(), "--json"], QUICK);
    out.assert_success("state user-profile");
    assert_eq!(json(&out, "state user-profile")["email"], "b@x.io");
    // ...and so should the per-day counters: the events are committed.
    let out = ws.run(&["state", "daily-activity", "2026-01-02/UserEmailChanged", "--json"], QUICK);
    out.assert_success("state daily-activity while another transaction is open");
    assert_eq!(json(&out, "state daily-activity")["events"], 1, "{}", out.describe());
    pg.block_on(other.batch_execute("ROLLBACK")).expect("rollback");
}

// ---------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------

/// `file:line:col:` at the start of a line of `stderr` (after `error: `).
fn position_of<'a>(stderr: &'a str, file: &str) -> Option<(u64, u64, &'a str)> {
    stderr.lines().find_map(|l| {
        let rest = l.strip_prefix("error: ").unwrap_or(l).strip_prefix(file)?.strip_prefix(':')?;
        let mut parts = rest.splitn(3, ':');
        let line = parts.next()?.parse().ok()?;
        let col = parts.next()?.parse().ok()?;
        Some((line, col, parts.next()?.trim()))
    })
}

#[test]
fn malformed_yaml_is_reported_with_file_line_and_column() {
    let ws = Workspace::with_config(
        None,
        "projections:\n  user-profile:\n    handler: user-profile\n      provider: local\n",
    );
    let out = ws.run(&["status"], QUICK);
    out.assert_failure_mentioning("malformed projections.yaml", "projections.yaml:");
    let (line, col, message) = position_of(&out.stderr, "projections.yaml")
        .unwrap_or_else(|| panic!("no `projections.yaml:line:col:` in the error\n{}", out.describe()));
    assert_eq!(line, 4, "the mis-indented key is on line 4\n{}", out.describe());
    assert!(col > 0, "{}", out.describe());
    assert!(message.contains("indentation"), "the message should say what to fix\n{}", out.describe());
    assert!(!ws.path().join(".projector").exists(), "a bad configuration must not create a store");
}

#[test]
fn unknown_handler_in_yaml_is_named() {
    let ws = Workspace::with_config(
        None,
        "projections:
  user-profile:
    handler: user-profile
    provider: local
    config: { memory: 128MB, timeout: 30s, concurrency: 1 }
  orders:
    handler: order-totals
    provider: local
    config: { memory: 128MB, timeout: 30s, concurrency: 1 }
",
    );
    let out = ws.run(&["status"], QUICK);
    out.assert_failure_mentioning("unknown handler", "unknown handler `order-totals`");
    let (line, _, message) = position_of(&out.stderr, "projections.yaml")
        .unwrap_or_else(|| panic!("no `projections.yaml:line:col:` in the error\n{}", out.describe()));
    assert_eq!(line, 7, "{}", out.describe());
    assert!(
        message.contains("user-profile") && message.contains("daily-activity"),
        "the known handlers should be listed\n{}",
        out.describe()
    );
}

#[test]
fn unreachable_database_is_reported_without_panic() {
    let ws = Workspace::empty(None);
    let url = "postgres://postgres@127.0.0.1:1/nope";
    let out = ws.run(&["--database-url", url, "status"], QUICK);
    out.assert_failure_mentioning("status on an unreachable database", "connection refused");
    assert!(out.stderr.contains("127.0.0.1:1"), "the message should name the server\n{}", out.describe());
    for args in [
        vec!["init"],
        vec!["state", "user-profile", "00000000-0000-0000-0000-000000000001"],
        vec!["rebuild", "daily-activity"],
        vec!["append", "-"],
    ] {
        let mut all = vec!["--database-url", url];
        all.extend(args);
        let out = ws.run(&all, QUICK);
        out.assert_failure_mentioning(&format!("projector {}", all.join(" ")), "127.0.0.1:1");
    }
}

#[test]
fn unknown_projection_lists_the_configured_ones() {
    let pg = Pg::new();
    let ws = Workspace::with_config(Some(pg.url()), &test_config(1));
    for args in [vec!["rebuild", "orders"], vec!["state", "orders", "x"], vec!["run", "--projection", "orders"]] {
        let out = ws.run(&args, QUICK);
        out.assert_failure_mentioning(&format!("projector {}", args.join(" ")), "unknown projection \"orders\"");
        assert!(out.stderr.contains("daily-activity, user-profile"), "{}", out.describe());
    }
}

#[test]
fn append_line_with_bad_json_names_the_line_number() {
    let pg = Pg::new();
    let ws = Workspace::with_config(Some(pg.url()), &test_config(1));
    let id = Uuid::new_v4();
    let good = |t: &str, data: serde_json::Value| append_line(id, t, data, "2026-01-01T00:00:00Z");
    let text = [
        good("UserRegistered", serde_json::json!({"email": "a@x.io", "name": "A", "plan": "free"})),
        String::new(),
        good("UserRenamed", serde_json::json!({"name": "B"})),
        "{\"aggregate_id\": \"not json".to_owned(),
        good("UserRenamed", serde_json::json!({"name": "C"})),
    ]
    .join("\n");
    ws.write("events.jsonl", &text);
    let out = ws.run(&["append", "--keep-timestamps", "events.jsonl"], QUICK);
    out.assert_failure_mentioning("append with a bad line", "events.jsonl:4:");
    assert!(out.stderr.contains("not a valid append line"), "{}", out.describe());
    // Lines before the bad one were appended, as the message says; none after it.
    assert!(out.stderr.contains("2 earlier line(s) were appended"), "{}", out.describe());
    assert_eq!(pg.scalar("SELECT count(*) FROM events"), 2);

    // A valid JSON line that is not an append is named too.
    ws.write(
        "other.jsonl",
        "{\"aggregate_id\": \"00000000-0000-0000-0000-000000000001\", \"aggregate_type\": \"user\", \
         \"expected_version\": 0}\n",
    );
    let out = ws.run(&["append", "other.jsonl"], QUICK);
    out.assert_failure_mentioning("append without an event", "other.jsonl:1:");
    assert!(out.stderr.contains("event_type"), "{}", out.describe());
}

/// A user whose second event (`UserEmailChanged` with `{"email": 42}`) the user-profile
/// handler cannot read, and a third event behind it; appended with `projector append`
/// between two batches of ordinary events. Returns (user, bad event id, its position).
fn seed_with_bad_event(pg: &Pg, ws: &Workspace) -> (Uuid, Uuid, i64) {
    pg.seed("pf-", 100, 0, 1_000);
    let id = Uuid::new_v4();
    let bad_event = Uuid::new_v4();
    let bad = serde_json::json!({
        "aggregate_id": id, "aggregate_type": "user", "event_id": bad_event,
        "event_type": "UserEmailChanged", "event_data": {"email": 42},
        "timestamp": "2026-02-01T00:00:01Z", "expected_version": "any",
    });
    let lines = [
        append_line(
            id,
            "UserRegistered",
            serde_json::json!({"email": "e@x.io", "name": "E", "plan": "free"}),
            "2026-02-01T00:00:00Z",
        ),
        bad.to_string(),
        append_line(id, "UserRenamed", serde_json::json!({"name": "F"}), "2026-02-01T00:00:02Z"),
    ];
    ws.write("bad.jsonl", &(lines.join("\n") + "\n"));
    ws.run(&["append", "--keep-timestamps", "bad.jsonl"], QUICK)
        .assert_success("append an event the handler cannot read");
    pg.seed("pf-", 100, 1_000, 2_000);
    let position = pg.scalar(&format!("SELECT position FROM events WHERE event_id = '{bad_event}'"));
    (id, bad_event, position)
}

fn daily_caught_up(states: &[projector::ProjectionState]) -> bool {
    states.iter().any(|s| s.projection == "daily-activity" && s.status == Status::CaughtUp && s.lag_events == 0)
}

#[test]
fn handler_payload_error_parks_only_the_failing_aggregate() {
    let pg = Pg::new();
    let ws = Workspace::with_config(Some(pg.url()), &test_config(1));
    let (user, bad_event, _) = seed_with_bad_event(&pg, &ws);

    let mut runner = ws.spawn_runner(&[]);
    let parked = |s: &projector::ProjectionState| {
        s.projection == "user-profile" && s.dead_letters == 1 && s.parked_aggregates == 1
    };
    let states = ws.wait_status(
        "both projections caught up, with one parked user-profile aggregate",
        Duration::from_secs(30),
        |states| support::all_caught_up(states, 2) && states.iter().any(parked),
        || runner.logs(),
    );
    let up = states.iter().find(|s| parked(s)).expect("user-profile state");
    assert_eq!(up.parked_events, 2, "the dead-lettered event and the one behind it are held back\n{}", show(&states));
    assert!(runner.try_status().is_none(), "the runner keeps running\n{}", runner.logs());

    // The dead letter names the event, its aggregate and why.
    let out = ws.run(&["dlq", "list", "--json"], QUICK);
    out.assert_success("dlq list --json");
    let letters = json(&out, "dlq list --json");
    let letters = letters.as_array().unwrap_or_else(|| panic!("a list of dead letters\n{}", out.describe()));
    assert_eq!(letters.len(), 1, "{}", out.describe());
    let letter = &letters[0];
    assert_eq!(letter["event_id"], bad_event.to_string(), "{letter}");
    assert_eq!(letter["aggregate_id"], user.to_string(), "{letter}");
    assert_eq!(letter["projection"], "user-profile", "{letter}");
    assert_eq!(letter["version"], 2, "{letter}");
    assert_eq!(letter["status"], "open", "{letter}");

    // Every other user is exact; the parked one stays at its last good version.
    let others = format!("user_id <> '{user}'");
    pg.assert_same_rows(
        "user_profile vs oracle, apart from the parked user",
        &format!("SELECT * FROM ({}) o WHERE {others}", support::USER_PROFILE_ORACLE),
        &format!("{} WHERE {others}", support::USER_PROFILE_MODEL),
    );
    let (email, version): (String, i64) = pg.block_on(async {
        let row = pg
            .client
            .query_one("SELECT email, version FROM user_profile WHERE user_id = $1", &[&user])
            .await
            .expect("the parked user's row");
        (row.get(0), row.get(1))
    });
    assert_eq!((email.as_str(), version), ("e@x.io", 1), "the parked user's row stops before the dead letter");
    // daily-activity reads the same event without trouble.
    pg.assert_same_rows("daily_activity vs oracle", support::DAILY_ACTIVITY_ORACLE, support::DAILY_ACTIVITY_MODEL);
    assert!(!runner.stderr().contains("panicked"), "{}", runner.logs());
    runner.stop_cleanly(Duration::from_secs(10));
}

#[test]
fn handler_payload_error_with_on_failure_stop_stops_the_user_profile_partition() {
    let pg = Pg::new();
    let config = test_config(1).replacen("    lease_ttl: 1s\n", "    lease_ttl: 1s\n    on_failure: stop\n", 1);
    assert!(config.contains("on_failure: stop\n  daily-activity:"), "on_failure applies to user-profile only");
    let ws = Workspace::with_config(Some(pg.url()), &config);
    let (_, bad_event, bad_position) = seed_with_bad_event(&pg, &ws);

    let mut runner = ws.spawn_runner(&[]);
    let stopped = |s: &projector::ProjectionState| s.projection == "user-profile" && s.status == Status::Stopped;
    let states = ws.wait_status(
        "user-profile stopped and daily-activity caught up",
        Duration::from_secs(30),
        |states| states.len() == 2 && states.iter().any(stopped) && daily_caught_up(states),
        || runner.logs(),
    );
    let up = states.iter().find(|s| stopped(s)).expect("user-profile state");
    let error = up.last_error.clone().unwrap_or_default();
    assert!(error.contains(&bad_event.to_string()), "last_error should name event {bad_event}\n{}", show(&states));
    assert!(up.error_count >= 1, "{}", show(&states));
    assert!(up.lag_events > 0, "the failed partition stops before the bad event\n{}", show(&states));
    assert!(up.checkpoint.position < bad_position, "{}", show(&states));
    assert!(runner.try_status().is_none(), "the runner keeps running the healthy projection\n{}", runner.logs());

    // daily-activity keeps going; user-profile stays where it stopped.
    pg.seed("pf-", 100, 2_000, 2_500);
    let states =
        ws.wait_status("daily-activity to catch up with new events", Duration::from_secs(30), daily_caught_up, || {
            runner.logs()
        });
    assert!(states.iter().any(|s| stopped(s) && s.checkpoint == up.checkpoint), "{}", show(&states));
    pg.assert_same_rows(
        "daily_activity vs oracle while user-profile is failed",
        support::DAILY_ACTIVITY_ORACLE,
        support::DAILY_ACTIVITY_MODEL,
    );

    // SIGTERM: the runner stops without panicking and reports the stopped projection.
    runner.sigterm();
    let status = runner.wait_exit(Duration::from_secs(10));
    let stderr = runner.stderr();
    assert!(!stderr.contains("panicked"), "{}", runner.logs());
    assert_eq!(status.code(), Some(1), "a runner with a failed projection exits 1\n{}", runner.logs());
    assert!(stderr.contains(&bad_event.to_string()), "the exit message should name the event\n{}", runner.logs());
}

// ---------------------------------------------------------------------------------------
// demo
// ---------------------------------------------------------------------------------------

#[test]
fn demo_on_a_fresh_directory() {
    let ws = Workspace::empty(None);
    let out = ws.run(&["demo"], Duration::from_secs(60));
    out.assert_success("projector demo");
    let o = &out.stdout;
    assert!(
        o.contains("seeded ") && o.contains("sample events for 500 users into the embedded store"),
        "{}",
        out.describe()
    );
    assert!(o.contains("daily-activity: caught up") && o.contains("user-profile: caught up"), "{}", out.describe());
    for projection in ["daily-activity", "user-profile"] {
        let row = o
            .lines()
            .find(|l| l.starts_with(projection) && l.contains(" 0/1 "))
            .unwrap_or_else(|| panic!("no status row for {projection}\n{}", out.describe()));
        assert!(row.contains("caught-up"), "{projection} should be caught-up: {row}");
    }
    assert!(o.contains("daily-activity (table daily_activity), sample rows:"), "{}", out.describe());
    assert!(o.contains("user-profile (table user_profile), sample rows:"), "{}", out.describe());
    assert!(o.contains("@example.com") || o.contains("@example.org"), "sample profiles should show emails\n{o}");
    assert!(ws.path().join(".projector/projector.db").exists(), "the embedded store lives under .projector/");
    assert!(o.contains("email and name are sealed under a keyring made for this demo"), "{}", out.describe());
    let shredded = o
        .lines()
        .find_map(|l| l.strip_prefix("shredding user "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("the demo shreds a user\n{o}"));
    let rows: Vec<&str> = o.lines().filter(|l| l.starts_with(shredded)).collect();
    assert_eq!(rows.len(), 2, "the shredded user's row before and after\n{o}");
    assert!(rows[0].contains("@example."), "decrypted before the shred: {}", rows[0]);
    assert_eq!(rows[1].split_whitespace().nth(1), Some("null"), "no email after the shred: {}", rows[1]);
    assert_eq!(rows[1].split_whitespace().nth(2), Some("null"), "no name after the shred: {}", rows[1]);

    // The store answers the other commands too.
    let states = ws.status();
    assert!(support::all_caught_up(&states, 2), "{}", show(&states));
    let user = o
        .lines()
        .skip_while(|l| !l.starts_with("user-profile (table user_profile)"))
        .find_map(|l| l.split_whitespace().next().and_then(|w| Uuid::parse_str(w).ok()))
        .unwrap_or_else(|| panic!("no user id among the sample rows\n{o}"));
    let state = ws.run(&["state", "user-profile", &user.to_string(), "--json"], QUICK);
    state.assert_success("state of a sample user");
    assert_eq!(json(&state, "state")["user_id"], user.to_string());

    let again = ws.run(&["demo"], Duration::from_secs(60));
    again.assert_success("second projector demo");
    assert!(again.stdout.contains("already holds events; not seeding"), "{}", again.describe());
    assert!(!again.stdout.contains("seeded "), "{}", again.describe());
    assert!(again.stdout.contains("user-profile: caught up (0 event(s) applied now)"), "{}", again.describe());
}

#[test]
fn closed_stdout_is_not_a_panic() {
    let ws = Workspace::empty(None);
    let mut cmd = ws.command(&["demo", "--users", "20"]);
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn demo");
    drop(child.stdout.take()); // the reader goes away, like `| head` after its lines
    let deadline = Instant::now() + QUICK;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("demo did not finish with a closed stdout");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("demo output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "a closed stdout is not a reason to panic (exit {})\n{stderr}", out.status);
}

/// Ctrl-C (SIGINT) drains like SIGTERM: the runner releases its leases and exits 0.
#[test]
fn sigint_drains_and_exits_cleanly_releasing_the_leases() {
    let pg = Pg::new();
    pg.seed("int-", 50, 0, 2_000);
    let ws = Workspace::with_config(Some(pg.url()), &test_config(1));
    let mut runner = ws.spawn_runner(&[]);
    ws.wait_caught_up(2, QUICK, || runner.logs());
    runner.signal("INT");
    let status = runner.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "SIGINT exits 0\n{}", runner.logs());
    let states = ws.status();
    assert!(states.iter().all(|s| s.lease_owner.is_none()), "leases released on the way out\n{}", show(&states));
}

/// The CLI reads the configuration file itself; a path it cannot read is named, with
/// the reason, before any store is touched.
#[test]
fn unreadable_configuration_file_is_named() {
    let ws = Workspace::empty(None);
    let out = ws.run(&["--config", "missing.yaml", "status"], QUICK);
    out.assert_failure_mentioning(
        "status with a missing --config file",
        "missing.yaml: cannot read configuration file",
    );
    assert!(!ws.path().join(".projector").exists(), "an unreadable configuration must not create a store");
}
