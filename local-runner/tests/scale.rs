//! `projector scale` re-partitions a projection whose partitions stand at different
//! checkpoints: nothing is applied twice and nothing is skipped across the change.

mod support;

use std::time::Duration;

use support::{show, test_config, Pg, Workspace};

#[test]
fn scaling_from_two_to_three_partitions_applies_every_event_exactly_once() {
    let pg = Pg::new();
    pg.seed("sc-", 400, 0, 8_000);
    let ws = Workspace::with_config(Some(pg.url()), &test_config(2));
    let mut runner = ws.spawn_runner(&[]);
    ws.wait_caught_up(4, Duration::from_secs(60), || runner.logs());
    runner.stop_cleanly(Duration::from_secs(10));
    drop(runner);
    let states = ws.status();
    let user_checkpoints: Vec<_> =
        states.iter().filter(|s| s.projection == "user-profile").map(|s| s.checkpoint).collect();
    assert_ne!(
        user_checkpoints[0],
        user_checkpoints[1],
        "partitions stand at different checkpoints\n{}",
        show(&states)
    );

    // Events appended while nothing runs: some before the alignment point of one partition.
    pg.seed("sc-late-", 100, 0, 1_000);
    for projection in ["user-profile", "daily-activity"] {
        let out = ws.run(&["scale", projection, "3"], Duration::from_secs(60));
        out.assert_success(&format!("scale {projection}"));
        assert!(out.stdout.contains("2 -> 3 partition(s)"), "{}", out.describe());
    }
    let states = ws.status();
    assert_eq!(states.len(), 6, "three partitions each\n{}", show(&states));
    for projection in ["user-profile", "daily-activity"] {
        let mine: Vec<_> = states.iter().filter(|s| s.projection == projection).collect();
        assert!(mine.windows(2).all(|w| w[0].checkpoint == w[1].checkpoint), "aligned\n{}", show(&states));
    }

    let ws3 = Workspace::with_config(Some(pg.url()), &test_config(3));
    let mut runner = ws3.spawn_runner(&[]);
    ws3.wait_caught_up(6, Duration::from_secs(60), || runner.logs());
    runner.stop_cleanly(Duration::from_secs(10));
    pg.assert_read_models_match_oracle("after scaling to 3 partitions");
}

#[test]
fn scaling_with_a_runner_holding_the_leases_is_refused_clearly() {
    let pg = Pg::new();
    pg.seed("sl-", 50, 0, 500);
    let ws = Workspace::with_config(Some(pg.url()), &test_config(2));
    let mut runner = ws.spawn_runner(&[]);
    ws.wait_caught_up(4, Duration::from_secs(60), || runner.logs());
    let out = ws.run(&["scale", "user-profile", "4"], Duration::from_secs(60));
    out.assert_failure_mentioning("scale while a runner holds the leases", "stop its runners first");
    runner.stop_cleanly(Duration::from_secs(10));
    assert_eq!(ws.status().len(), 4, "nothing was re-partitioned");
}
