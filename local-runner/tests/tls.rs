//! Every command over TLS (`sslmode=require`) against the local server, and passwords
//! that never reach the output, whatever form the connection string takes.

mod support;

use std::time::Duration;

use support::{test_config, Pg, Workspace};
use uuid::Uuid;

const QUICK: Duration = Duration::from_secs(30);
const PASSWORD: &str = "Pr0jectorS3cret";

/// `url` with a password in its user info and `params` in its query. The test server
/// trusts local connections, so the password is accepted and never checked.
fn with_password(url: &str, params: &str) -> String {
    let url = url.replacen("postgres://postgres@", &format!("postgres://postgres:{PASSWORD}@"), 1);
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{params}")
}

fn assert_no_password(what: &str, text: &str) {
    assert!(!text.contains(PASSWORD), "{what} printed the password:\n{text}");
}

/// PostgreSQL's own view of the connections to `db`: how many use SSL.
fn ssl_connections(pg: &Pg, db: &str) -> i64 {
    pg.scalar(&format!(
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.datname = '{db}' AND s.ssl AND a.pid <> pg_backend_pid()"
    ))
}

#[test]
fn every_command_works_over_tls_and_prints_no_password() {
    let pg = Pg::new();
    if !pg.url().starts_with("postgres://postgres@") {
        eprintln!("skipped: PROJECTOR_TEST_DATABASE_URL has a form this test cannot add a password to");
        return;
    }
    let url = with_password(pg.url(), "sslmode=require");
    let ws = Workspace::with_config(Some(&url), &test_config(1));

    let init = ws.run(&["init"], QUICK);
    init.assert_success("init over TLS");
    assert_no_password("init", &(init.stdout.clone() + &init.stderr));

    let id = Uuid::new_v4();
    let line = serde_json::json!({
        "aggregate_id": id,
        "aggregate_type": "user",
        "event_type": "UserRegistered",
        "event_data": {"email": "ada@example.com", "name": "Ada", "plan": "free"},
        "expected_version": 0,
    });
    let file = ws.write("events.jsonl", &format!("{line}\n"));
    let append = ws.run(&["append", file.to_str().expect("utf-8 path")], QUICK);
    append.assert_success("append over TLS");
    assert_no_password("append", &(append.stdout.clone() + &append.stderr));

    let mut runner = ws.spawn_runner(&[]);
    ws.wait_caught_up(2, Duration::from_secs(60), || runner.logs());
    assert!(ssl_connections(&pg, &pg.db.name) > 0, "the runner's connections should use TLS\n{}", runner.logs());
    let status = ws.run(&["status"], QUICK);
    status.assert_success("status over TLS");
    assert_no_password("status", &(status.stdout.clone() + &status.stderr));
    runner.stop_cleanly(Duration::from_secs(30));
    assert_no_password("run", &runner.logs());

    let profile = pg.scalar(&format!("SELECT count(*) FROM user_profile WHERE user_id = '{id}'"));
    assert_eq!(profile, 1, "the event appended over TLS reaches the read model");
}

#[test]
fn a_failing_connection_names_the_cause_in_every_form_without_the_password() {
    let pg = Pg::new();
    if !pg.url().starts_with("postgres://postgres@") {
        eprintln!("skipped: PROJECTOR_TEST_DATABASE_URL has a form this test cannot add a password to");
        return;
    }
    let missing = pg.url().replacen(&pg.db.name, "projector_no_such_database", 1);
    let forms = [
        with_password(&missing, "sslmode=require"),
        format!("{missing}?sslmode=require&password={PASSWORD}"),
        format!(
            "host=127.0.0.1 port=5432 user=postgres password={PASSWORD} dbname=projector_no_such_database sslmode=require"
        ),
        format!(
            "host=127.0.0.1 port=5432 user=postgres password='{PASSWORD}' dbname=projector_no_such_database sslmode=require"
        ),
    ];
    for url in forms {
        let ws = Workspace::with_config(Some(&url), &test_config(1));
        for args in [vec!["init"], vec!["status"], vec!["run"]] {
            let out = ws.run(&args, QUICK);
            let what = format!("projector {} with {}", args.join(" "), url.replace(PASSWORD, "<password>"));
            out.assert_failure_mentioning(&what, "projector_no_such_database");
            assert_no_password(&what, &(out.stdout.clone() + &out.stderr));
        }
    }
}
