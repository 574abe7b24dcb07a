//! `projector migrate` end to end through the binary: plan, apply, list and rollback on
//! the embedded store; a plan that names an event the upcaster cannot rewrite, and an
//! apply that refuses to start; and on PostgreSQL a migration SIGKILLed between chunks
//! and run again while a runner keeps applying events, which ends verified, with every
//! event rewritten once and the read models equal to a replay.
//!
//! The chain is the one `user-profile` ships: `UserRegistered` v1 may leave out `plan`
//! (the free plan), v2 names it.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{json, Value};
use support::{test_config, Output, Pg, Workspace};

const QUICK: Duration = Duration::from_secs(60);

/// The test configuration with `UserRegistered` upcast.
fn config() -> String {
    format!("{}upcasting:\n  event_types: [UserRegistered]\n", test_config(1))
}

fn json_of(out: &Output, what: &str) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{what}: stdout is not JSON: {e}\n{}", out.describe()))
}

fn ok(ws: &Workspace, args: &[&str]) -> Value {
    let out = ws.run(args, QUICK);
    out.assert_success(&args.join(" "));
    json_of(&out, &args.join(" "))
}

fn registration(id: &str, data: Value) -> String {
    json!({"aggregate_id": id, "aggregate_type": "user", "expected_version": 0, "event_type": "UserRegistered",
           "event_data": data})
    .to_string()
}

const U1: &str = "00000000-0000-4000-8000-0000000000a1";
const U2: &str = "00000000-0000-4000-8000-0000000000a2";
const U3: &str = "00000000-0000-4000-8000-0000000000a3";

#[test]
fn plan_apply_list_and_rollback_on_the_embedded_store() {
    let ws = Workspace::with_config(None, &config());
    let lines = [
        registration(U1, json!({"email": "a@x.io", "name": "A"})),
        registration(U2, json!({"email": "b@x.io", "name": "B"})),
        registration(U3, json!({"email": "c@x.io", "name": "C", "plan": "pro"})),
    ];
    ws.write("events.jsonl", &(lines.join("\n") + "\n"));
    ws.run(&["append", "events.jsonl"], QUICK).assert_success("append");
    let lazily = ok(&ws, &["state", "user-profile", U1, "--json"]);
    assert_eq!(lazily["plan"], json!("free"), "lazy upcasting fills the plan in: {lazily}");

    let plan = ok(&ws, &["migrate", "--plan", "--json"]);
    assert_eq!(plan["events_scanned"], json!(3), "{plan:#}");
    assert_eq!(plan["events_to_change"], json!(3));
    assert_eq!(plan["failures"], json!([]));
    let change = &plan["changes"][0];
    assert_eq!((change["event_type"].as_str(), change["event_version"].as_i64()), (Some("UserRegistered"), Some(1)));
    assert_eq!(change["target_version"], json!(2));
    assert_eq!(change["sample"]["before"]["event_data"], json!({"email": "a@x.io", "name": "A"}));
    assert_eq!(change["sample"]["after"]["event_data"], json!({"email": "a@x.io", "name": "A", "plan": "free"}));
    let told: Vec<&str> =
        plan["projections"].as_array().expect("projections").iter().filter_map(|p| p["projection"].as_str()).collect();
    assert_eq!(told, ["daily-activity", "user-profile"], "the projections reading the type are named");
    assert_eq!(plan["projections"][0]["rebuild_needed"], json!(false));
    assert_eq!(ok(&ws, &["migrate", "--list", "--json"]), json!([]), "a plan records nothing");

    let applied = ok(&ws, &["migrate", "--apply", "--json", "--chunk", "1", "--actor", "ada"]);
    let migration = &applied["migration"];
    assert_eq!((applied["verified"].as_bool(), applied["resumed"].as_bool()), (Some(true), Some(false)), "{applied:#}");
    assert_eq!(migration["status"], json!("applied"));
    assert_eq!((migration["events_planned"].as_i64(), migration["events_rewritten"].as_i64()), (Some(3), Some(3)));
    assert_eq!(migration["before_checksum"], plan["before_checksum"]);
    assert_eq!(migration["after_checksum"], plan["after_checksum"]);
    assert_eq!(migration["actor"], json!("ada"));
    let id = migration["id"].as_i64().expect("an id").to_string();
    assert_eq!(ok(&ws, &["state", "user-profile", U1, "--json"]), lazily, "the same row, now from the stored v2 event");
    let again = ok(&ws, &["migrate", "--apply", "--json"]);
    assert_eq!((again["nothing_to_do"].as_bool(), again["migration"].is_null()), (Some(true), true));

    let listed = ok(&ws, &["migrate", "--list", "--json"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    let text = ws.run(&["migrate", "--list"], QUICK);
    text.assert_success("migrate --list");
    assert!(text.stdout.contains("applied") && text.stdout.contains("UserRegistered"), "{}", text.describe());

    let undone = ok(&ws, &["migrate", "--rollback", &id, "--json"]);
    assert_eq!(undone["migration"]["status"], json!("rolled_back"));
    assert_eq!(undone["migration"]["events_restored"], json!(3));
    assert_eq!(ok(&ws, &["migrate", "--plan", "--json"])["events_to_change"], json!(3), "the v1 events are back");
    assert_eq!(ok(&ws, &["state", "user-profile", U1, "--json"]), lazily);
    let unknown = ws.run(&["migrate", "--rollback", "99"], QUICK);
    unknown.assert_failure_mentioning("rollback of an unknown migration", "no migration 99");
}

#[test]
fn a_plan_names_an_event_the_upcaster_cannot_rewrite_and_apply_refuses_to_start() {
    let ws = Workspace::with_config(None, &config());
    let bad = "11111111-1111-4111-8111-111111111111";
    let lines = [
        registration(U1, json!({"email": "a@x.io", "name": "A"})),
        json!({"aggregate_id": U2, "aggregate_type": "user", "expected_version": 0,
               "events": [{"event_id": bad, "event_type": "UserRegistered", "event_data": {"email": "b@x.io", "plan": 42}}]})
        .to_string(),
    ];
    ws.write("events.jsonl", &(lines.join("\n") + "\n"));
    ws.run(&["append", "events.jsonl"], QUICK).assert_success("append");

    let plan = ws.run(&["migrate", "--plan", "--json"], QUICK);
    plan.assert_failure_mentioning("a plan with a failure", "1 event(s) cannot be rewritten");
    let report = json_of(&plan, "migrate --plan --json");
    let failures = report["failures"].as_array().expect("failures");
    assert_eq!(failures.len(), 1, "{report:#}");
    assert_eq!((failures[0]["event_id"].as_str(), failures[0]["aggregate_id"].as_str()), (Some(bad), Some(U2)));
    assert!(failures[0]["error"].as_str().unwrap_or_default().contains("`plan` is 42, not a plan name"), "{report:#}");
    let text = ws.run(&["migrate", "--plan"], QUICK);
    assert!(text.stdout.contains(bad), "the text plan names the event\n{}", text.describe());

    let apply = ws.run(&["migrate", "--apply"], QUICK);
    apply.assert_failure_mentioning("apply with a failing plan", "nothing was written");
    assert!(apply.stderr.contains(bad), "the refusal names the event\n{}", apply.describe());
    assert_eq!(ok(&ws, &["migrate", "--list", "--json"]), json!([]));

    // Lazily the event is dead-lettered, in each projection that reads it, and parks only
    // its aggregate.
    let mut runner = ws.spawn_runner(&[]);
    let states = ws.wait_status(
        "caught up with a letter in each projection",
        QUICK,
        |s| s.len() == 2 && s.iter().all(|s| s.lag_events == 0 && s.dead_letters == 1),
        || runner.logs(),
    );
    assert!(states.iter().all(|s| s.parked_aggregates == 1), "{}", support::show(&states));
    let letters = ok(&ws, &["dlq", "list", "--json"]);
    let letters = letters.as_array().expect("letters");
    assert_eq!(letters.len(), 2, "{letters:#?}");
    assert!(letters.iter().all(|l| l["event_id"] == json!(bad) && l["aggregate_id"] == json!(U2)), "{letters:#?}");
    assert_eq!(ok(&ws, &["state", "user-profile", U1, "--json"])["plan"], json!("free"), "the other user moves on");
    runner.stop_cleanly(Duration::from_secs(10));
}

#[test]
fn a_migration_killed_between_chunks_completes_when_run_again_while_a_runner_applies_events() {
    const USERS: i64 = 4_000;
    let pg = Pg::new();
    pg.seed("migrate-", USERS, 0, 4 * USERS);
    // Half the registrations from before the plan was named.
    pg.execute(
        "UPDATE events SET event_data = event_data - 'plan' WHERE event_type = 'UserRegistered' AND position % 2 = 0",
    );
    let to_change = pg.scalar("SELECT count(*) FROM events WHERE event_type = 'UserRegistered'");
    assert_eq!(to_change, USERS);
    let ws = Workspace::with_config(Some(pg.url()), &config());
    ws.run(&["init"], QUICK).assert_success("init");
    let mut runner = ws.spawn_runner(&[]);

    let mut first = ws
        .command(&["migrate", "--apply", "--chunk", "100"])
        .env("PROJECTOR_MIGRATE_CHUNK_PAUSE_MS", "40")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn migrate");
    let rewritten = || pg.scalar("SELECT coalesce(max(events_rewritten), 0) FROM event_migrations");
    let deadline = Instant::now() + Duration::from_secs(60);
    while rewritten() == 0 {
        assert!(first.try_wait().expect("try_wait").is_none(), "the migration ended before it could be killed");
        assert!(Instant::now() < deadline, "no chunk committed within a minute");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(rand::rng().random_range(0..400)));
    first.kill().expect("SIGKILL");
    first.wait().expect("reap");
    let (done, status) = (rewritten(), pg.scalar("SELECT count(*) FROM event_migrations WHERE status = 'applying'"));
    assert!(done > 0 && done < USERS, "killed half way: {done} of {USERS} rewritten");
    assert_eq!(status, 1, "the killed run left its migration open");
    assert_eq!(
        pg.scalar("SELECT count(*) FROM event_migration_backups"),
        done,
        "each committed chunk backed up its events"
    );
    assert_eq!(
        pg.scalar(
            "SELECT count(*) FROM events WHERE event_type = 'UserRegistered' AND metadata->>'event_version' = '2'"
        ),
        done,
        "the rewritten events are exactly the backed-up ones"
    );

    let again = ws.run(&["migrate", "--apply", "--json", "--chunk", "500"], Duration::from_secs(180));
    again.assert_success("the second run");
    let report = json_of(&again, "migrate --apply --json");
    let migration = &report["migration"];
    assert_eq!((report["resumed"].as_bool(), report["verified"].as_bool()), (Some(true), Some(true)), "{report:#}");
    assert_eq!(
        (migration["events_planned"].as_i64(), migration["events_rewritten"].as_i64()),
        (Some(USERS), Some(USERS))
    );
    assert_eq!(
        pg.scalar("SELECT count(*) FROM event_migration_backups"),
        USERS,
        "one backup per event: none rewritten twice"
    );
    assert_eq!(
        pg.scalar(
            "SELECT count(*) FROM event_migration_backups WHERE coalesce(metadata->>'event_version', '1') <> '1'"
        ),
        0,
        "every backup holds an original"
    );
    assert_eq!(
        pg.scalar("SELECT count(*) FROM events WHERE event_type = 'UserRegistered' AND (metadata->>'event_version' <> '2' OR NOT event_data ? 'plan')"),
        0,
        "every registration is stored at v2 with its plan"
    );

    ws.wait_caught_up(2, Duration::from_secs(120), || runner.logs());
    pg.assert_read_models_match_oracle("a runner applying events across a killed and resumed migration");
    runner.stop_cleanly(Duration::from_secs(10));
}
