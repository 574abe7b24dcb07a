//! Taking over a dead runner's lease at once on PostgreSQL: a claim finds the owner's
//! session lock free and takes the partition without waiting for the lease to expire;
//! a live owner keeps it; the dead owner's commit is still refused by the compare-and-set;
//! a pooled store holds no lock and waits for expiry.

use std::time::{Duration, Instant};

use projector::{BatchCommit, Checkpoint, EventFilter, Partition, ProjectionStore, RowChanges, StoreError};
use projector_postgres::PgStore;
use projector_tests::contract::{ok, PROBE};
use projector_tests::pg::TestDb;

const TTL: Duration = Duration::from_secs(30);
const P: &str = "takeover";

async fn claimed_by(store: &PgStore, owner: &str) -> Option<projector::Lease> {
    ok(store.claim(P, Partition::WHOLE, owner, TTL).await, &format!("claim as {owner}"))
}

/// Claims as `owner` until it succeeds or `within` passes: the server ends a closed
/// connection's backend (and frees its locks) a moment after the client goes.
async fn claim_within(store: &PgStore, owner: &str, within: Duration) -> Option<projector::Lease> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(lease) = claimed_by(store, owner).await {
            return Some(lease);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn empty_commit(lease: &projector::Lease) -> BatchCommit<'_> {
    BatchCommit {
        lease,
        table: &PROBE,
        from: lease.checkpoint,
        to: Checkpoint { transaction_id: lease.checkpoint.transaction_id, position: lease.checkpoint.position + 1 },
        changes: RowChanges::default(),
        events_applied: 0,
        last_event_at: None,
        lease_ttl: TTL,
        dead_letters: Vec::new(),
        audit: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_owners_lease_is_taken_over_at_once_and_its_commit_refused() {
    let db = TestDb::new().await;
    let dead = db.store().await;
    ok(dead.register(P, &PROBE, &EventFilter::all(), 1).await, "register");
    let stale = claimed_by(&dead, "runner-a").await.expect("a free partition is claimed");

    let live = db.store().await;
    assert!(claimed_by(&live, "runner-b").await.is_none(), "a live owner's lease is not taken over");

    drop(dead);
    let started = Instant::now();
    let lease = claim_within(&live, "runner-b", Duration::from_secs(5))
        .await
        .expect("the dead owner's lease is taken over long before its 30 s expiry");
    let took = started.elapsed();
    eprintln!("takeover {:.0} ms after the owner's connection closed", took.as_secs_f64() * 1000.0);
    assert!(took < TTL / 6, "takeover took {took:?}, lease_ttl is {TTL:?}");
    assert_eq!(lease.owner, "runner-b");

    // The old owner (say, it lost its connection and came back) is fenced by the lease.
    let returned = db.store().await;
    match returned.commit(empty_commit(&stale)).await {
        Err(StoreError::LeaseLost { owner, .. }) => assert_eq!(owner, "runner-b", "LeaseLost names the new holder"),
        other => panic!("a commit by the owner whose lease was taken over: want LeaseLost, got {other:?}"),
    }
    ok(live.commit(empty_commit(&lease)).await, "the new owner commits");
    assert!(claimed_by(&returned, "runner-a").await.is_none(), "the new owner is live: no takeover back");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_runner_holds_its_lock_on_every_connection() {
    let db = TestDb::new().await;
    let first = db.store().await;
    let second = db.store().await;
    ok(first.register(P, &PROBE, &EventFilter::all(), 2).await, "register");
    let one = Partition { index: 0, count: 2 };
    let two = Partition { index: 1, count: 2 };
    assert!(ok(first.claim(P, one, "runner-a", TTL).await, "claim 0").is_some());
    assert!(ok(second.claim(P, two, "runner-a", TTL).await, "claim 1").is_some());
    drop(first);
    // runner-a still lives on its second connection: neither partition is taken over.
    let other = db.store().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for partition in [one, two] {
        assert!(
            ok(other.claim(P, partition, "runner-b", TTL).await, "claim").is_none(),
            "partition {} of an owner alive on another connection is not taken over",
            partition.index
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_that_claims_for_two_owners_does_not_find_either_gone() {
    let db = TestDb::new().await;
    let store = db.store().await;
    ok(store.register(P, &PROBE, &EventFilter::all(), 1).await, "register");
    assert!(claimed_by(&store, "runner-a").await.is_some());
    assert!(claimed_by(&store, "runner-b").await.is_none(), "runner-a lives: its lock is held by this very session");
}

#[tokio::test(flavor = "multi_thread")]
async fn through_a_pooler_the_lease_is_only_taken_once_expired() {
    let db = TestDb::new().await;
    let pooled = db.store().await;
    pooled.set_pooled(true);
    ok(pooled.register(P, &PROBE, &EventFilter::all(), 1).await, "register");
    assert!(claimed_by(&pooled, "runner-a").await.is_some());
    drop(pooled);
    let direct = db.store().await;
    assert!(
        claim_within(&direct, "runner-b", Duration::from_millis(500)).await.is_none(),
        "a lease taken without a session lock is not probed: it waits for expiry"
    );
    let late = db.store().await;
    late.set_pooled(true);
    // An expired lease is anyone's, pooled or not.
    ok(
        direct.execute_script("UPDATE projection_state SET lease_expires_at = now() - interval '1 second'").await,
        "expire",
    );
    assert!(claimed_by(&late, "runner-c").await.is_some(), "an expired lease is taken through a pooler");
}
