//! Dead letters end to end through the `projector` binary: a payload that does not fit
//! parks its aggregate, `/metrics` and `/health` say so, and `dlq` repairs it.

mod support;

use std::time::Duration;

use support::{free_port, get, show, test_config, Pg, Workspace};

const A: &str = "00000000-0000-4000-8000-00000000000a";
const B: &str = "00000000-0000-4000-8000-00000000000b";

/// The value of one sample line `name{labels} value` of a Prometheus text page.
fn sample(page: &str, name_and_labels: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name_and_labels).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no sample {name_and_labels} in\n{page}"))
}

#[test]
fn a_poison_event_parks_its_aggregate_shows_in_metrics_and_dlq_skip_repairs_it() {
    let pg = Pg::new();
    pg.execute(&format!(
        "INSERT INTO events (event_id, aggregate_id, aggregate_type, event_type, event_data, version) VALUES
           (gen_random_uuid(), '{A}', 'user', 'UserRegistered', '{{\"email\":\"a@x.io\",\"name\":\"A\",\"plan\":\"free\"}}', 1),
           (gen_random_uuid(), '{B}', 'user', 'UserRegistered', '{{\"email\":\"b@x.io\",\"name\":\"B\",\"plan\":\"free\"}}', 1),
           ('11111111-1111-4111-8111-111111111111', '{A}', 'user', 'UserEmailChanged', '{{\"email\":42}}', 2),
           (gen_random_uuid(), '{B}', 'user', 'UserRenamed', '{{\"name\":\"B2\"}}', 2),
           (gen_random_uuid(), '{A}', 'user', 'UserRenamed', '{{\"name\":\"A3\"}}', 3)"
    ));
    let port = free_port();
    let config = test_config(1).replace("  listen: off", &format!("  listen: 127.0.0.1:{port}\n  health_interval: 2s"));
    let ws = Workspace::with_config(Some(pg.url()), &config);
    let mut runner = ws.spawn_runner(&[]);
    let states = ws.wait_status(
        "daily-activity caught up and user-profile parked",
        Duration::from_secs(30),
        |s| s.len() == 2 && s.iter().all(|s| s.lag_events == 0) && s.iter().any(|s| s.parked_aggregates == 1),
        || runner.logs(),
    );
    let up = states.iter().find(|s| s.projection == "user-profile").expect("user-profile");
    assert_eq!((up.dead_letters, up.parked_aggregates, up.parked_events), (1, 1, 2), "{}", show(&states));

    let (code, page) = get(port, "/metrics");
    assert_eq!(code, 200, "{page}");
    let labels = |p: &str| format!("{{projection=\"{p}\",partition=\"0\"}}");
    assert_eq!(sample(&page, &format!("projector_events_processed_total{}", labels("user-profile"))), 3.0);
    assert_eq!(sample(&page, &format!("projector_events_processed_total{}", labels("daily-activity"))), 5.0);
    assert_eq!(sample(&page, &format!("projector_dead_letters_open{}", labels("user-profile"))), 1.0);
    assert_eq!(sample(&page, &format!("projector_dead_letters_total{}", labels("user-profile"))), 1.0);
    let (code, health) = get(port, "/health");
    assert_eq!(code, 200, "parked events do not make a projection unhealthy: {health}");

    let list = ws.run(&["dlq", "list", "--json"], Duration::from_secs(30));
    list.assert_success("dlq list");
    let letters: serde_json::Value = serde_json::from_str(&list.stdout).expect("dlq list --json");
    assert_eq!(letters.as_array().map(Vec::len), Some(1), "{}", list.describe());
    let id = letters[0]["id"].as_i64().expect("id").to_string();

    let shown = ws.run(&["dlq", "show", &id], Duration::from_secs(30));
    shown.assert_success("dlq show");
    assert!(shown.stdout.contains("11111111-1111-4111-8111-111111111111"), "{}", shown.describe());
    assert!(shown.stdout.contains("payload does not fit"), "{}", shown.describe());

    // The handler still refuses the event: a retry stops at it and says so.
    let retried = ws.run(&["dlq", "retry", &id, "--actor", "alice"], Duration::from_secs(30));
    retried.assert_failure_mentioning("dlq retry of a still-poisoned event", "failed");
    let skipped = ws.run(&["dlq", "skip", &id, "--actor", "bob"], Duration::from_secs(30));
    skipped.assert_success("dlq skip");
    assert!(skipped.stdout.contains("unparked"), "{}", skipped.describe());
    let again = ws.run(&["dlq", "retry", &id], Duration::from_secs(30));
    again.assert_failure_mentioning("dlq retry of a closed letter", "already skipped");
    let unknown = ws.run(&["dlq", "show", "999999"], Duration::from_secs(30));
    unknown.assert_failure_mentioning("dlq show of an unknown letter", "no dead letter 999999");

    let audit = ws.run(&["dlq", "show", &id], Duration::from_secs(30));
    assert!(audit.stdout.contains("retry by alice") && audit.stdout.contains("skip by bob"), "{}", audit.describe());
    let row = pg.scalar(&format!(
        "SELECT count(*) FROM user_profile
         WHERE user_id = '{A}' AND email = 'a@x.io' AND name = 'A3' AND version = 3"
    ));
    assert_eq!(row, 1, "A applied v3 after the skipped v2");
    let states = ws.status();
    assert!(states.iter().all(|s| s.dead_letters == 0 && s.parked_aggregates == 0), "{}", show(&states));
    runner.stop_cleanly(Duration::from_secs(10));
}
