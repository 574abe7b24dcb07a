//! Where `projector run` LISTENs for appends: never through a transaction-mode pooler
//! (`database.pooled: true`), and on `database.listen_url_env`'s direct URL when given.
//! Each connection of the runner is told apart on the server by the `application_name`
//! in its URL.

mod support;

use std::time::{Duration, Instant};

use support::{Pg, Runner, Workspace};

const QUICK: Duration = Duration::from_secs(30);

/// The `projections.yaml` of these tests: one partition of one projection on a pooled
/// database, with `database_extra` added to the `database:` section.
fn config(database_extra: &str, poll_interval: &str, lease_ttl: &str) -> String {
    format!(
        "observability:
  listen: off
database:
  pooled: true
{database_extra}projections:
  user-profile:
    handler: user-profile
    provider: local
    config: {{ memory: 128MB, timeout: 30s, concurrency: 1 }}
    events:
      aggregate_types: [user]
    partitions: 1
    poll_interval: {poll_interval}
    lease_ttl: {lease_ttl}
"
    )
}

/// `url` with `application_name` set, so its server sessions can be found.
fn named(url: &str, application: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}application_name={application}")
}

/// Sessions on the test database whose last statement was a LISTEN, by application name.
fn listening(pg: &Pg, application: &str) -> i64 {
    pg.scalar(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND application_name = '{application}' AND ltrim(query) ILIKE 'listen%'"
    ))
}

/// Sessions on the test database with `application`'s name.
fn sessions(pg: &Pg, application: &str) -> i64 {
    pg.scalar(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = '{application}'"
    ))
}

fn wait_for(what: &str, runner: &Runner, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + QUICK;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}\n{}", runner.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_pooled_database_without_a_direct_url_is_polled_and_never_listened_on() {
    let pg = Pg::new();
    let pooled = named(pg.url(), "projector-pooled");
    let ws = Workspace::with_config(Some(&pooled), &config("", "50ms", "1s"));
    ws.run(&["init"], QUICK).assert_success("projector init");
    pg.seed("a", 5, 0, 50);
    let runner = ws.spawn_runner(&[]);
    ws.wait_caught_up(1, QUICK, || runner.logs());
    assert!(sessions(&pg, "projector-pooled") > 0, "the runner's sessions are seen\n{}", runner.logs());
    assert_eq!(listening(&pg, "projector-pooled"), 0, "no LISTEN through the pooler\n{}", runner.logs());

    pg.seed("a", 5, 50, 100);
    ws.wait_caught_up(1, QUICK, || runner.logs());
    let any_listen = pg.scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND ltrim(query) ILIKE 'listen%'",
    );
    assert_eq!(any_listen, 0, "no session of the test database ever listened\n{}", runner.logs());
    assert!(
        runner.stderr().contains("no LISTEN through the pooler"),
        "the runner says it polls only\n{}",
        runner.logs()
    );
}

#[test]
fn a_direct_url_carries_the_listen_and_wakes_the_runner_on_append() {
    let pg = Pg::new();
    let pooled = named(pg.url(), "projector-pooled");
    let direct = named(pg.url(), "projector-direct");
    // An hour between polls: only a notification can make the runner see an append soon.
    let ws = Workspace::with_config(Some(&pooled), &config("  listen_url_env: DIRECT_URL\n", "1h", "3h"));
    ws.run(&["init"], QUICK).assert_success("projector init");
    let mut runner = ws.spawn_runner_with(&[], &[("DIRECT_URL", &direct)]);
    wait_for("a LISTEN on the direct URL", &runner, || listening(&pg, "projector-direct") == 1);
    ws.wait_caught_up(1, QUICK, || runner.logs());
    assert_eq!(listening(&pg, "projector-pooled"), 0, "no LISTEN through the pooler\n{}", runner.logs());

    // A notification sent while another transaction on the server holds the read horizon
    // finds nothing yet to read; every append notifies again.
    let deadline = Instant::now() + QUICK;
    let mut appended = 0;
    loop {
        pg.seed("b", 5, appended, appended + 5);
        appended += 5;
        let soon = Instant::now() + Duration::from_secs(3);
        let caught_up = loop {
            if support::all_caught_up(&ws.status(), 1) {
                break true;
            }
            if Instant::now() > soon {
                break false;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        if caught_up {
            break;
        }
        assert!(Instant::now() < deadline, "the runner never woke for {appended} appended events\n{}", runner.logs());
    }
    let read = pg.scalar("SELECT count(*) FROM user_profile");
    assert_eq!(read, 5, "every appended user is in the read model\n{}", runner.logs());
    runner.stop_cleanly(QUICK);
}

#[test]
fn an_unset_listen_variable_stops_the_runner_naming_it_without_showing_a_url() {
    let ws = Workspace::with_config(
        Some("postgres://projector:hunter2@127.0.0.1:1/db"),
        &config("  listen_url_env: DIRECT_URL\n", "50ms", "1s"),
    );
    for value in [None, Some("")] {
        let out = ws.run_with(&["run"], &[("DIRECT_URL", value)], QUICK);
        out.assert_failure_mentioning("run with DIRECT_URL unset or empty", "DIRECT_URL");
        assert!(out.stderr.contains("listen_url_env"), "{}", out.describe());
        assert!(!out.stderr.contains("hunter2") && !out.stderr.contains("postgres://"), "{}", out.describe());
    }
}
