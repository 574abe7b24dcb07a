//! Two runners on one database split the partitions through lease rows; when one dies,
//! the other takes its partitions over (at once when its owner lock shows it gone, at
//! the latest once the leases expire), and every event is applied exactly once.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::Utc;
use projector::ProjectionState;
use support::{all_caught_up, show, test_config, Pg, Runner, Workspace};

const PARTITIONS: u32 = 4;
/// Partition rows: two projections of PARTITIONS each.
const ROWS: usize = 2 * PARTITIONS as usize;
const LEASE_TTL: Duration = Duration::from_secs(1);

fn owned_by(s: &ProjectionState, runner: &Runner) -> bool {
    s.lease_owner.as_deref().is_some_and(|o| o.contains(&format!("-{}-", runner.pid())))
}

fn live_lease(s: &ProjectionState) -> bool {
    s.lease_owner.is_some() && s.lease_expires_at.is_some_and(|t| t > Utc::now())
}

/// A live lease taken or renewed by a runner (not a 60 s placeholder), with work done.
fn working(s: &ProjectionState) -> bool {
    live_lease(s) && s.lease_expires_at.is_some_and(|t| t < Utc::now() + LEASE_TTL * 5) && s.events_applied > 0
}

/// The runner's owner id, from its "running <projection> ... as <owner>" lines.
fn wait_owner_id(runner: &mut Runner) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = runner.try_status() {
            panic!("the runner exited ({status}) instead of starting\n{}", runner.logs());
        }
        let stderr = runner.stderr();
        let owners: BTreeSet<&str> =
            stderr.lines().filter(|l| l.starts_with("running ")).filter_map(|l| l.rsplit(" as ").next()).collect();
        if stderr.lines().filter(|l| l.starts_with("running ")).count() == 2 {
            assert_eq!(owners.len(), 1, "one owner id per runner process\n{}", runner.logs());
            return owners.into_iter().next().unwrap_or_default().to_owned();
        }
        assert!(Instant::now() < deadline, "the runner did not start both projections within 20s\n{}", runner.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn two_runners_share_partitions_and_take_over_after_lease_expiry() {
    let pg = Pg::new();
    pg.seed("two-", 1_000, 0, 20_000);
    let ws = Workspace::with_config(Some(pg.url()), &test_config(PARTITIONS));
    ws.run(&["init"], Duration::from_secs(30)).assert_success("projector init");

    // Leases are first come, first served: two runners started together may well end
    // up with one of them owning every partition (the other is then a standby). To
    // make the split certain, hold partitions 0-1 for runner A and 2-3 for runner B
    // with placeholder leases, and hand each placeholder to its runner once its owner
    // id is known; each runner then claims its half through its own lease renewal.
    pg.execute(
        "UPDATE projection_state
         SET lease_owner = CASE WHEN partition < 2 THEN 'held-for-a' ELSE 'held-for-b' END,
             lease_expires_at = now() + interval '60 seconds'",
    );
    let mut a = ws.spawn_runner(&[]);
    let mut b = ws.spawn_runner(&[]);
    let logs = |a: &Runner, b: &Runner| format!("{}\n{}", a.logs(), b.logs());
    for (runner, placeholder) in [(&mut a, "held-for-a"), (&mut b, "held-for-b")] {
        let owner = wait_owner_id(runner);
        assert!(owner.contains(&format!("-{}-", runner.pid())), "owner id {owner:?} should name pid {}", runner.pid());
        pg.execute(&format!("UPDATE projection_state SET lease_owner = '{owner}' WHERE lease_owner = '{placeholder}'"));
    }

    let states = ws.wait_status(
        "all 8 partition rows to hold a live lease renewed by a working runner",
        Duration::from_secs(30),
        |s| s.len() == ROWS && s.iter().all(working),
        || logs(&a, &b),
    );
    for s in &states {
        let expected = if s.partition < 2 { &a } else { &b };
        assert!(
            owned_by(s, expected) && !owned_by(s, if s.partition < 2 { &b } else { &a }),
            "partition {} {} must be owned by exactly the runner it was handed to (pid {})\n{}",
            s.projection,
            s.partition,
            expected.pid(),
            show(&states)
        );
    }
    assert!(
        states.iter().any(|s| owned_by(s, &a)) && states.iter().any(|s| owned_by(s, &b)),
        "both runners (pids {} and {}) should own partitions\n{}\n{}",
        a.pid(),
        b.pid(),
        show(&states),
        logs(&a, &b)
    );

    // More events while both run: later versions of existing users, and new users.
    pg.seed("two-", 1_000, 20_000, 26_000);
    pg.seed("two-new-", 300, 0, 3_000);

    assert!(a.try_status().is_none(), "runner A exited early\n{}", a.logs());
    a.sigkill();
    let killed = Instant::now();
    let deadline = LEASE_TTL + Duration::from_secs(5);
    let states = ws.wait_status(
        "the survivor to own every partition",
        deadline,
        |s| s.len() == ROWS && s.iter().all(|s| owned_by(s, &b) && live_lease(s)),
        || b.logs(),
    );
    eprintln!("take-over complete {:.2}s after the kill", killed.elapsed().as_secs_f64());
    assert!(states.iter().all(|s| owned_by(s, &b)));

    ws.wait_caught_up(ROWS, Duration::from_secs(60), || b.logs());
    let states = ws.status();
    assert!(all_caught_up(&states, ROWS), "{}", show(&states));
    assert_eq!(pg.scalar("SELECT count(*) FROM events"), 29_000);
    pg.assert_read_models_match_oracle("after the take-over");
    b.stop_cleanly(Duration::from_secs(10));
}

#[test]
fn runners_started_together_on_a_fresh_database_all_start() {
    // The race is timing-dependent: a few rounds of three runners each.
    for round in 1..=3 {
        let pg = Pg::new();
        pg.seed("fresh-", 100, 0, 1_000);
        let ws = Workspace::with_config(Some(pg.url()), &test_config(2));
        let mut runners: Vec<Runner> = (0..3).map(|_| ws.spawn_runner(&[])).collect();
        for runner in &mut runners {
            let owner = wait_owner_id(runner);
            assert!(owner.contains(&format!("-{}-", runner.pid())), "round {round}: owner {owner:?}");
        }
        ws.wait_caught_up(4, Duration::from_secs(30), || runners.iter().map(Runner::logs).collect());
        pg.assert_read_models_match_oracle(&format!("round {round}"));
        for runner in &mut runners {
            runner.stop_cleanly(Duration::from_secs(10));
        }
    }
}
