//! `projector run` refuses to start rather than run in a way nobody asked for: with a
//! partition count other than the store's, or without the `/metrics` and `/health`
//! endpoint it was configured to serve.

mod support;

use std::time::Duration;

use support::{test_config, Pg, Workspace};

const QUICK: Duration = Duration::from_secs(30);

/// Every partition of every projection, as (projection, partition, count), sorted.
fn split(states: &[projector::ProjectionState]) -> Vec<(String, u32, u32)> {
    let mut split: Vec<_> = states.iter().map(|s| (s.projection.clone(), s.partition, s.partitions)).collect();
    split.sort();
    split
}

#[test]
fn a_runner_whose_partitions_disagree_with_the_store_exits_and_the_running_one_keeps_its_split() {
    let pg = Pg::new();
    let ws = Workspace::with_config(Some(pg.url()), &test_config(2));
    ws.run(&["init"], QUICK).assert_success("projector init");
    let mut running = ws.spawn_runner(&[]);
    let before = ws.wait_status(
        "both projections' partitions leased",
        QUICK,
        |s| s.len() == 4 && s.iter().all(|s| s.lease_owner.is_some()),
        || running.logs(),
    );

    ws.write("four.yaml", &test_config(4));
    let out = ws.run(&["--config", "four.yaml", "run"], QUICK);
    out.assert_failure_mentioning("a runner configured for 4 partitions", "`partitions: 4`");
    assert!(out.stderr.contains("the store has 2"), "{}", out.describe());
    assert!(out.stderr.contains("projector scale user-profile 4"), "{}", out.describe());

    assert!(running.try_status().is_none(), "the running runner still runs\n{}", running.logs());
    let after = ws.status();
    assert_eq!(split(&after), split(&before), "the split is unchanged");
    let owners: Vec<_> = after.iter().map(|s| s.lease_owner.clone()).collect();
    assert!(owners.iter().all(|o| *o == owners[0] && o.is_some()), "the first runner keeps every lease: {owners:?}");
    running.stop_cleanly(QUICK);
}

#[test]
fn a_runner_that_cannot_bind_its_observability_address_exits_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let addr = taken.local_addr().expect("local address").to_string();
    let yaml =
        test_config(1).replace("observability:\n  listen: off\n", &format!("observability:\n  listen: {addr}\n"));
    assert!(yaml.contains(&addr), "the test configuration has an observability section to change");
    let ws = Workspace::with_config(None, &yaml);
    let out = ws.run(&["run"], QUICK);
    out.assert_failure_mentioning("run on a taken port", &addr);
    assert!(out.stderr.contains("/metrics"), "{}", out.describe());
    drop(taken);
}
