//! `projector rebuild` (full and `--from-position`) produces the read models the live
//! runner produced, and the live runner carries on from the rebuilt checkpoints.

mod support;

use std::time::Duration;

use projector::Status;
use support::{
    free_port, get, show, test_config, Pg, Workspace, DAILY_ACTIVITY_MODEL, DAILY_ACTIVITY_ORACLE, USER_PROFILE_MODEL,
    USER_PROFILE_ORACLE,
};

const PARTITIONS: usize = 2;

fn rebuild(ws: &Workspace, args: &[&str]) {
    let mut all = vec!["rebuild"];
    all.extend_from_slice(args);
    let out = ws.run(&all, Duration::from_secs(60));
    out.assert_success(&format!("projector {}", all.join(" ")));
    assert!(
        out.stdout.contains(&format!("rebuilt {}:", args[0])),
        "rebuild should report what it did\n{}",
        out.describe()
    );
}

fn assert_caught_up_without_runner(ws: &Workspace, when: &str) {
    let states = ws.status();
    assert!(
        support::all_caught_up(&states, 2 * PARTITIONS),
        "{when}: every partition should be caught up at the rebuilt checkpoint\n{}",
        show(&states)
    );
}

#[test]
fn rebuild_and_rebuild_from_position_match_the_live_run() {
    let pg = Pg::new();
    // A few users whose events all come first (untouched by a rebuild from the middle),
    // then 10,000 events of 500 users.
    pg.seed("rb-early-", 5, 0, 50);
    pg.seed("rb-", 500, 0, 10_000);
    let ws = Workspace::with_config(Some(pg.url()), &test_config(PARTITIONS as u32));

    let mut runner = ws.spawn_runner(&[]);
    ws.wait_caught_up(2 * PARTITIONS, Duration::from_secs(60), || runner.logs());
    runner.stop_cleanly(Duration::from_secs(10));
    drop(runner);
    pg.assert_read_models_match_oracle("live run");
    pg.execute(
        "CREATE TABLE live_user_profile AS SELECT * FROM user_profile;
         CREATE TABLE live_daily_activity AS SELECT * FROM daily_activity;",
    );
    let live_user = "SELECT user_id, email, name, plan, active, version FROM live_user_profile";
    let live_daily = "SELECT day, event_type, events FROM live_daily_activity";

    // Full rebuilds, from wrong rows: the rebuild owes nothing to what was there.
    pg.execute(
        "UPDATE user_profile SET email = 'tampered', version = 0; UPDATE daily_activity SET events = events + 1000",
    );
    rebuild(&ws, &["user-profile"]);
    rebuild(&ws, &["daily-activity"]);
    pg.assert_same_rows("full rebuild: user_profile vs live run", live_user, USER_PROFILE_MODEL);
    pg.assert_same_rows("full rebuild: daily_activity vs live run", live_daily, DAILY_ACTIVITY_MODEL);
    pg.assert_read_models_match_oracle("full rebuild");
    assert_caught_up_without_runner(&ws, "after the full rebuilds");

    // From the middle: only rows touched by events at or after that position are
    // recomputed (from their whole history); the others are kept as they are.
    let events = pg.scalar("SELECT count(*) FROM events");
    let middle = pg.scalar(&format!("SELECT position FROM events ORDER BY position OFFSET {} LIMIT 1", events / 2));
    let touched_users =
        format!("SELECT aggregate_id FROM events WHERE position >= {middle} AND aggregate_type = 'user'");
    let touched_days =
        format!("SELECT (timestamp AT TIME ZONE 'UTC')::date, event_type FROM events WHERE position >= {middle}");
    pg.execute("UPDATE user_profile SET email = 'tampered'; UPDATE daily_activity SET events = events + 1000");
    rebuild(&ws, &["user-profile", "--from-position", &middle.to_string()]);
    rebuild(&ws, &["daily-activity", "--from-position", &middle.to_string()]);
    pg.assert_same_rows(
        "rebuild --from-position: touched user_profile rows vs oracle",
        &format!("SELECT * FROM ({USER_PROFILE_ORACLE}) o WHERE user_id IN ({touched_users})"),
        &format!("{USER_PROFILE_MODEL} WHERE user_id IN ({touched_users})"),
    );
    pg.assert_same_rows(
        "rebuild --from-position: touched daily_activity rows vs oracle",
        &format!("SELECT * FROM ({DAILY_ACTIVITY_ORACLE}) o WHERE (day, event_type) IN ({touched_days})"),
        &format!("{DAILY_ACTIVITY_MODEL} WHERE (day, event_type) IN ({touched_days})"),
    );
    let untouched_users =
        pg.scalar(&format!("SELECT count(*) FROM user_profile WHERE user_id NOT IN ({touched_users})"));
    let kept_users = pg.scalar(&format!(
        "SELECT count(*) FROM user_profile WHERE user_id NOT IN ({touched_users}) AND email = 'tampered'"
    ));
    assert!(untouched_users > 0, "the test needs users untouched after position {middle}");
    assert_eq!(kept_users, untouched_users, "rows untouched after position {middle} are kept as they were");
    let untouched_days =
        pg.scalar(&format!("SELECT count(*) FROM daily_activity WHERE (day, event_type) NOT IN ({touched_days})"));
    let kept_days = pg.scalar(&format!(
        "SELECT count(*) FROM ({DAILY_ACTIVITY_MODEL}) m JOIN ({DAILY_ACTIVITY_ORACLE}) o USING (day, event_type)
         WHERE (day, event_type) NOT IN ({touched_days}) AND m.events = o.events + 1000"
    ));
    assert!(untouched_days > 0, "the test needs days untouched after position {middle}");
    assert_eq!(kept_days, untouched_days, "daily rows untouched after position {middle} are kept as they were");
    assert_caught_up_without_runner(&ws, "after the partial rebuilds");

    // On correct rows, a rebuild from the middle changes nothing. `--from-version`, the
    // flag's first name, still works.
    rebuild(&ws, &["user-profile"]);
    rebuild(&ws, &["daily-activity"]);
    rebuild(&ws, &["user-profile", "--from-version", &middle.to_string()]);
    rebuild(&ws, &["daily-activity", "--from-version", &middle.to_string()]);
    pg.assert_same_rows("rebuild --from-version: user_profile vs live run", live_user, USER_PROFILE_MODEL);
    pg.assert_same_rows("rebuild --from-version: daily_activity vs live run", live_daily, DAILY_ACTIVITY_MODEL);
    pg.assert_read_models_match_oracle("rebuild --from-version");

    // The live runner carries on from the rebuilt checkpoints: no event twice, none lost.
    pg.seed("rb-", 500, 10_000, 12_000);
    let mut runner = ws.spawn_runner(&[]);
    ws.wait_caught_up(2 * PARTITIONS, Duration::from_secs(60), || runner.logs());
    pg.assert_read_models_match_oracle("live run after the rebuilds");
    runner.stop_cleanly(Duration::from_secs(10));
}

const A: &str = "00000000-0000-4000-8000-00000000000a";
const B: &str = "00000000-0000-4000-8000-00000000000b";
const C: &str = "00000000-0000-4000-8000-00000000000c";

/// The id of the open dead letter of `aggregate`.
fn letter_of(ws: &Workspace, aggregate: &str) -> String {
    let list = ws.run(&["dlq", "list", "--json", "--aggregate", aggregate], Duration::from_secs(30));
    list.assert_success("dlq list");
    let letters: serde_json::Value = serde_json::from_str(&list.stdout).expect("dlq list --json");
    letters[0]["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("an open letter for {aggregate}\n{}", list.describe()))
        .to_string()
}

/// Poison in the history: a payload the handler refuses parks A, C's is skipped. A
/// rebuild, full or from a position, gives the rows the live run gave; a poison event
/// the runner never saw is dead-lettered by the rebuild; time travel works for C.
#[test]
fn rebuild_with_poison_and_skipped_events_matches_the_live_run() {
    let pg = Pg::new();
    pg.execute(&format!(
        "INSERT INTO events (event_id, aggregate_id, aggregate_type, event_type, event_data, version) VALUES
           (gen_random_uuid(), '{A}', 'user', 'UserRegistered', '{{\"email\":\"a@x.io\",\"name\":\"A\",\"plan\":\"free\"}}', 1),
           (gen_random_uuid(), '{B}', 'user', 'UserRegistered', '{{\"email\":\"b@x.io\",\"name\":\"B\",\"plan\":\"free\"}}', 1),
           (gen_random_uuid(), '{C}', 'user', 'UserRegistered', '{{\"email\":\"c@x.io\",\"name\":\"C\",\"plan\":\"free\"}}', 1),
           (gen_random_uuid(), '{A}', 'user', 'UserEmailChanged', '{{\"email\":42}}', 2),
           (gen_random_uuid(), '{C}', 'user', 'UserEmailChanged', '{{\"email\":43}}', 2),
           (gen_random_uuid(), '{B}', 'user', 'UserRenamed', '{{\"name\":\"B2\"}}', 2),
           (gen_random_uuid(), '{A}', 'user', 'UserRenamed', '{{\"name\":\"A3\"}}', 3),
           (gen_random_uuid(), '{C}', 'user', 'UserRenamed', '{{\"name\":\"C3\"}}', 3)"
    ));
    let ws = Workspace::with_config(Some(pg.url()), &test_config(1));
    let mut runner = ws.spawn_runner(&[]);
    ws.wait_status(
        "A and C parked, nothing lagging",
        Duration::from_secs(30),
        |s| s.len() == 2 && s.iter().all(|s| s.lag_events == 0) && s.iter().any(|s| s.parked_aggregates == 2),
        || runner.logs(),
    );
    runner.stop_cleanly(Duration::from_secs(10));
    drop(runner);
    ws.run(&["dlq", "skip", &letter_of(&ws, C), "--actor", "ops"], Duration::from_secs(30)).assert_success("dlq skip");
    pg.execute("CREATE TABLE live_user_profile AS SELECT * FROM user_profile");
    let live_user = "SELECT user_id, email, name, plan, active, version FROM live_user_profile";
    assert_eq!(pg.scalar(&format!("SELECT version FROM user_profile WHERE user_id = '{C}'")), 3, "C after the skip");

    pg.execute("UPDATE user_profile SET email = 'tampered'");
    rebuild(&ws, &["user-profile"]);
    pg.assert_same_rows("rebuild with poison: user_profile vs live run", live_user, USER_PROFILE_MODEL);
    rebuild(&ws, &["user-profile", "--from-version", "1"]);
    pg.assert_same_rows("rebuild --from-version with poison: user_profile vs live run", live_user, USER_PROFILE_MODEL);
    let states = ws.status();
    let profile = states.iter().find(|s| s.projection == "user-profile").expect("user-profile");
    assert_eq!((profile.dead_letters, profile.parked_aggregates), (1, 1), "A stays parked: {}", show(&states));

    // Time travel for C, whose skipped event is in its history.
    let state = ws.run(&["state", "user-profile", C, "--json"], Duration::from_secs(30));
    state.assert_success("state of C");
    let row: serde_json::Value = serde_json::from_str(&state.stdout).expect("state prints JSON");
    assert_eq!(
        (row["name"].as_str(), row["email"].as_str(), row["version"].as_i64()),
        (Some("C3"), Some("c@x.io"), Some(3))
    );
    let state = ws.run(&["state", "user-profile", A, "--json"], Duration::from_secs(30));
    state.assert_success("state of the parked A");
    let row: serde_json::Value = serde_json::from_str(&state.stdout).expect("state prints JSON");
    assert_eq!(row["version"].as_i64(), Some(1), "A at its last good version\n{}", state.describe());

    // A poison event no runner saw: the rebuild dead-letters it and completes for the rest.
    pg.execute(&format!(
        "INSERT INTO events (event_id, aggregate_id, aggregate_type, event_type, event_data, version) VALUES
           (gen_random_uuid(), '{B}', 'user', 'UserEmailChanged', '{{\"email\":44}}', 3)"
    ));
    pg.settle();
    let out = ws.run(&["rebuild", "user-profile"], Duration::from_secs(60));
    out.assert_success("rebuild with a new poison event");
    assert!(out.stdout.contains("1 event(s) failed and were dead-lettered"), "{}", out.describe());
    pg.assert_same_rows("rebuild with a new poison event", live_user, USER_PROFILE_MODEL);
    let states = ws.status();
    let profile = states.iter().find(|s| s.projection == "user-profile").expect("user-profile");
    assert_eq!((profile.dead_letters, profile.parked_aggregates, profile.lag_events), (2, 2, 0), "{}", show(&states));
}

/// A dropped read-model table is not "caught up": after a restart the projection waits
/// for a rebuild (`status --json`, `/health` 503), no runner recreates the table empty,
/// and `projector rebuild` brings it back equal to a replay.
#[test]
fn a_dropped_read_model_table_waits_for_a_rebuild() {
    let pg = Pg::new();
    pg.seed("dt-", 50, 0, 1_000);
    let port = free_port();
    let config = test_config(2).replace("  listen: off", &format!("  listen: 127.0.0.1:{port}\n  health_interval: 2s"));
    let ws = Workspace::with_config(Some(pg.url()), &config);
    let mut runner = ws.spawn_runner(&[]);
    ws.wait_caught_up(4, Duration::from_secs(60), || runner.logs());
    runner.stop_cleanly(Duration::from_secs(10));
    drop(runner);

    pg.execute("DROP TABLE user_profile");
    let mut runner = ws.spawn_runner(&[]);
    let waiting = |s: &[projector::ProjectionState]| {
        s.iter().filter(|s| s.projection == "user-profile").all(|s| s.status == Status::NeedsRebuild)
    };
    let states = ws.wait_status("user-profile waits for a rebuild", Duration::from_secs(30), waiting, || runner.logs());
    let profile: Vec<_> = states.iter().filter(|s| s.projection == "user-profile").collect();
    assert_eq!(profile.len(), 2, "{}", show(&states));
    assert!(
        profile.iter().all(|s| s.last_error.as_deref().is_some_and(|e| e.contains("user_profile is missing"))),
        "{}",
        show(&states)
    );
    let json = ws.run(&["status", "--json"], Duration::from_secs(30));
    assert!(json.stdout.contains("\"needs-rebuild\""), "{}", json.describe());
    let (code, health) = get(port, "/health");
    assert_eq!(code, 503, "{health}");
    assert!(health.contains("needs-rebuild"), "{health}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(pg.scalar("SELECT count(*) FROM pg_tables WHERE tablename = 'user_profile'"), 0, "not recreated empty");

    rebuild(&ws, &["user-profile"]);
    ws.wait_caught_up(4, Duration::from_secs(60), || runner.logs());
    pg.assert_read_models_match_oracle("after the rebuild of a dropped table");
    let (code, health) = get(port, "/health");
    assert_eq!(code, 200, "{health}");
    runner.stop_cleanly(Duration::from_secs(10));
}
