//! A runner SIGKILLed again and again during catch-up loses nothing and applies
//! nothing twice: rows and checkpoint commit together.

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
