//! A runner SIGKILLed again and again during catch-up loses nothing and applies
//! nothing twice: rows and checkpoint commit together. A runner started after a SIGKILL
//! takes the dead one's partitions over at once, not when their leases expire.

mod support;

use std::time::{Duration, Instant};

use rand::Rng;
use support::{show, test_config, Pg, Workspace};

const EVENTS: i64 = 100_000;
const USERS: i64 = 5_000;
const KILLS: usize = 5;

#[test]
fn crash_safety_sigkill_during_catch_up() {
    let pg = Pg::new();
    pg.seed("crash-", USERS, 0, EVENTS);
    assert_eq!(pg.scalar("SELECT count(*) FROM events"), EVENTS);
    let ws = Workspace::with_config(Some(pg.url()), &test_config(1));
    let started = Instant::now();
    let mut rng = rand::rng();
    let applied = || pg.scalar("SELECT coalesce(sum(events_applied), 0)::bigint FROM projection_state");
    let mut progress = Vec::new();
    for kill in 1..=KILLS {
        let mut runner = ws.spawn_runner(&[]);
        // Kill while batches are committing: wait until this runner has applied some
        // (after the dead one's lease expires), then a random moment later.
        let before = applied();
        let deadline = Instant::now() + Duration::from_secs(20);
        while applied() <= before {
            if let Some(status) = runner.try_status() {
                panic!("the runner exited on its own ({status}) before kill {kill}\n{}", runner.logs());
            }
            assert!(Instant::now() < deadline, "runner {kill} applied nothing within 20s\n{}", runner.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(150..=600)));
        if let Some(status) = runner.try_status() {
            panic!("the runner exited on its own ({status}) before kill {kill}\n{}", runner.logs());
        }
        runner.sigkill();
        progress.push(applied());
    }
    // The kills must have landed during catch-up, not after it.
    let states = ws.status();
    assert!(
        states.iter().any(|s| s.lag_events > 0),
        "the runner had already caught up before the last kill; the test proves nothing\n{}",
        show(&states)
    );
    eprintln!("killed {KILLS} times; events applied after each kill: {progress:?}");

    let mut runner = ws.spawn_runner(&[]);
    ws.wait_caught_up(2, Duration::from_secs(90), || runner.logs());
    eprintln!("caught up {:.1}s after the first start", started.elapsed().as_secs_f64());
    pg.assert_read_models_match_oracle("after 5 SIGKILLs and a final catch-up");
    assert!(!runner.stderr().contains("panicked"), "the runner panicked\n{}", runner.logs());
    runner.stop_cleanly(Duration::from_secs(10));
}

/// Far longer than the takeover may take: a restart that waited for it would fail.
const LONG_LEASE: &str = "lease_ttl: 30s";

#[test]
fn a_runner_restarted_after_sigkill_takes_over_before_the_dead_lease_expires() {
    let pg = Pg::new();
    pg.seed("takeover-", 2_000, 0, 20_000);
    let ws = Workspace::with_config(Some(pg.url()), &test_config(1).replace("lease_ttl: 1s", LONG_LEASE));
    let mut first = ws.spawn_runner(&[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while pg.scalar("SELECT count(*) FROM projection_state WHERE events_applied > 0 AND lease_owner IS NOT NULL") < 2 {
        if let Some(status) = first.try_status() {
            panic!("the runner exited on its own ({status})\n{}", first.logs());
        }
        assert!(Instant::now() < deadline, "the first runner committed nothing within 30s\n{}", first.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    first.sigkill();
    pg.execute(
        "CREATE TABLE at_kill AS SELECT projection, partition, events_applied, lease_expires_at FROM projection_state",
    );
    assert_eq!(
        pg.scalar("SELECT count(*) FROM at_kill WHERE lease_expires_at > now() + interval '20 seconds'"),
        2,
        "the dead runner's leases are live for most of their 30 s"
    );
    // Work for the new runner whether or not the first one had caught up.
    pg.seed("takeover-", 2_000, 20_000, 21_000);

    let started = Instant::now();
    let mut second = ws.spawn_runner(&[]);
    let committed = format!(
        "SELECT count(*) FROM projection_state s JOIN at_kill k USING (projection, partition)
         WHERE s.lease_owner LIKE '%-{}-%' AND s.events_applied > k.events_applied",
        second.pid()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while pg.scalar(&committed) < 2 {
        if let Some(status) = second.try_status() {
            panic!("the new runner exited on its own ({status})\n{}", second.logs());
        }
        assert!(Instant::now() < deadline, "the new runner committed nothing within 20s\n{}", second.logs());
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = started.elapsed();
    eprintln!("first commits of the new runner {:.0} ms after it started", took.as_secs_f64() * 1000.0);
    assert_eq!(
        pg.scalar("SELECT count(*) FROM at_kill WHERE lease_expires_at > now()"),
        2,
        "the new runner committed while the dead runner's leases were still live: it took them over"
    );
    assert!(took < Duration::from_secs(5), "the takeover took {took:?}; the leases last 30s");
    second.stop_cleanly(Duration::from_secs(10));
}
