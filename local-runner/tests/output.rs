//! What the commands print and leave behind: no colour codes into files and pipes,
//! `status` that creates nothing, and projections for another provider skipped by
//! `projector run` with a note.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use support::{test_config, Workspace};

const QUICK: Duration = Duration::from_secs(30);

/// Waits until `path` holds `needle`; returns its text.
fn wait_for_text(path: &std::path::Path, needle: &str) -> String {
    let deadline = Instant::now() + QUICK;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(Instant::now() < deadline, "{} never said {needle:?}:\n{text}", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn logs_into_a_file_carry_no_colour_codes() {
    let ws = Workspace::with_config(None, &test_config(1));
    let log = ws.path().join("run.log");
    let mut child = ws
        .command(&["run"])
        .env("PROJECTOR_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn projector run");
    let text = wait_for_text(&log, "partition claimed");
    let _ = child.kill();
    let _ = child.wait();
    assert!(!text.contains('\u{1b}'), "escape codes in a log file:\n{text}");
}

#[test]
fn status_in_an_empty_directory_creates_no_store() {
    let ws = Workspace::empty(None);
    let out = ws.run(&["status"], QUICK);
    out.assert_success("status with no store");
    assert!(out.stdout.contains("run `projector init`"), "{}", out.describe());
    let out = ws.run(&["status", "--json"], QUICK);
    out.assert_success("status --json with no store");
    assert_eq!(out.stdout.trim(), "[]", "{}", out.describe());
    let left: Vec<_> = std::fs::read_dir(ws.path()).expect("read dir").map(|e| e.expect("entry").file_name()).collect();
    assert!(left.is_empty(), "status left files behind: {left:?}");
}

#[test]
fn run_skips_cloudflare_projections_with_a_note() {
    // A Worker keeps the cron's period and its own leases: the runner's quick poll and
    // short lease are not for it.
    let yaml = test_config(1).replacen(
        "  daily-activity:\n    handler: daily-activity\n    provider: local\n    \
         config: { memory: 64MB, timeout: 30s, concurrency: 1 }\n    batch_size: 500\n    partitions: 1\n    \
         poll_interval: 50ms\n    lease_ttl: 1s\n",
        "  daily-activity:\n    handler: daily-activity\n    provider: cloudflare\n    \
         config: { memory: 64MB, timeout: 30s, concurrency: 1 }\n    batch_size: 500\n    partitions: 1\n",
        1,
    );
    assert!(yaml.contains("provider: cloudflare"), "the test configuration has daily-activity to move");
    let ws = Workspace::with_config(None, &yaml);
    let mut runner = ws.spawn_runner(&[]);
    let states = ws.wait_status(
        "user-profile leased",
        QUICK,
        |s| s.iter().any(|s| s.projection == "user-profile" && s.lease_owner.is_some()),
        || runner.logs(),
    );
    let stderr = runner.stderr();
    assert!(stderr.contains("skipping daily-activity: `provider: cloudflare`"), "{}", runner.logs());
    assert!(!stderr.contains("running daily-activity"), "{}", runner.logs());
    assert!(
        states.iter().filter(|s| s.projection == "daily-activity").all(|s| s.lease_owner.is_none()),
        "nothing runs daily-activity here: {states:?}"
    );
    runner.stop_cleanly(QUICK);

    let out = ws.run(&["run", "-p", "daily-activity"], QUICK);
    out.assert_failure_mentioning("run with only a cloudflare projection", "no projection to run here");
}
