//! `snapshots:` through the binary: `projector state --at` gives the same row with and
//! without them, starting from one where it may; and a counting projection that asks
//! for them is refused at its place in the file.

mod support;

use std::time::Duration;

use serde_json::json;
use support::Workspace;

const QUICK: Duration = Duration::from_secs(60);
const USER: &str = "00000000-0000-4000-8000-0000000000c1";

fn config(snapshots: &str) -> String {
    format!(
        "observability:
  listen: off
projections:
  user-profile:
    handler: user-profile
    provider: local
    config: {{ memory: 128MB, timeout: 30s, concurrency: 1 }}
    poll_interval: 50ms
    lease_ttl: 1s
{snapshots}"
    )
}

#[test]
fn state_at_an_instant_is_the_same_from_a_snapshot() {
    let ws = Workspace::with_config(None, &config("    snapshots: { every: 3 }\n"));
    ws.write("plain.yaml", &config(""));
    let mut lines = vec![json!({"aggregate_id": USER, "aggregate_type": "user", "expected_version": 0,
        "events": [{"event_type": "UserRegistered", "event_data": {"email": "a@x.io", "name": "A"},
                    "timestamp": "2026-01-01T00:00:00Z"}]})
    .to_string()];
    for n in 1..=9 {
        lines.push(
            json!({"aggregate_id": USER, "aggregate_type": "user", "expected_version": n,
                "events": [{"event_type": "UserRenamed", "event_data": {"name": format!("A{n}")},
                            "timestamp": format!("2026-01-01T00:{n:02}:00Z")}]})
            .to_string(),
        );
    }
    ws.write("history.jsonl", &(lines.join("\n") + "\n"));
    ws.run(&["append", "--keep-timestamps", "history.jsonl"], QUICK).assert_success("append");
    let mut runner = ws.spawn_runner(&[]);
    ws.wait_caught_up(1, QUICK, || runner.logs());
    runner.stop_cleanly(Duration::from_secs(10));

    for minute in [0, 2, 3, 5, 7, 9] {
        let at = format!("2026-01-01T00:{minute:02}:30Z");
        let args = ["-v", "state", "user-profile", USER, "--at", &at, "--json"];
        let fast = ws.run(&args, QUICK);
        fast.assert_success("state from snapshots");
        let mut plain_args = vec!["--config", "plain.yaml"];
        plain_args.extend_from_slice(&args);
        let full = ws.run(&plain_args, QUICK);
        full.assert_success("state without snapshots");
        assert_eq!(fast.stdout, full.stdout, "the same row at {at}");
        let row: serde_json::Value = serde_json::from_str(&fast.stdout).expect("a row");
        assert_eq!(row["version"], json!(minute + 1), "{row}");
        let expected = if minute >= 2 {
            format!("from_snapshot=Some({})", (minute + 1) / 3 * 3)
        } else {
            "from_snapshot=None".to_owned()
        };
        assert!(fast.stderr.contains(&expected), "at {at}: {expected}\n{}", fast.describe());
        assert!(full.stderr.contains("from_snapshot=None"), "{}", full.describe());
    }
}

#[test]
fn snapshots_on_a_counting_projection_are_refused_at_their_place() {
    let ws = Workspace::with_config(
        None,
        "projections:
  daily-activity:
    handler: daily-activity
    provider: local
    config: { memory: 64MB, timeout: 30s, concurrency: 1 }
    snapshots: { every: 10 }
",
    );
    let out = ws.run(&["status"], QUICK);
    out.assert_failure_mentioning(
        "snapshots on daily-activity",
        "projections.yaml:6:25: `snapshots` keep a row's state",
    );
    assert!(out.stderr.contains("handler `daily-activity` folds events of many aggregates"), "{}", out.describe());
}
