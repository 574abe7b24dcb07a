//! The batch in flight and the crash count: what a store keeps so that an event that
//! crashes the runner process (which no `catch_unwind` catches) is found. The store
//! operations are called directly, and the runtime is started from the state a crashed
//! runner leaves; `crash_loop.rs` kills real processes. Runs on every store through
//! `failure_tests!`.

use std::time::Duration;

use projection_user_profile::UserProfile;
use projector::{
    BatchRunner, Checkpoint, DeadLetterFilter, EventFilter, InFlight, Lease, Partition, ProjectionHandler, StoreError,
};
use serde_json::json;

use crate::contract::{read_everything, settle, stored_profiles};
use crate::failures::{append, user, FailureStore};

const TTL: Duration = Duration::from_secs(30);

async fn claim<S: FailureStore>(store: &S, owner: &str) -> Lease {
    store.claim(UserProfile.name(), Partition::WHOLE, owner, TTL).await.expect("claim").expect("the lease is free")
}

/// Four users, one event each.
async fn four_users<S: FailureStore>(store: &S) -> Vec<uuid::Uuid> {
    store.register(UserProfile.name(), UserProfile.schema(), &UserProfile.filter(), 1).await.unwrap();
    let users: Vec<_> = (41..45).map(user).collect();
    let mut last = None;
    for (n, u) in users.iter().enumerate() {
        last = Some(append(store, *u, "UserRegistered", json!({"email": format!("{n}@x.io"), "name": "U"})).await);
    }
    settle(store, &last.unwrap()).await;
    users
}

pub async fn a_claim_returns_the_batch_left_in_flight_and_a_commit_clears_it<S: FailureStore>(store: &S) {
    four_users(store).await;
    let lease = claim(store, "r").await;
    assert_eq!((lease.in_flight, lease.crashes), (None, 0), "a new partition has nothing in flight");
    let batch = InFlight { to: Checkpoint { transaction_id: 7, position: 12 }, events: 9 };
    store.set_in_flight(&lease, Some(batch), 2, TTL).await.expect("record the batch");
    let again = claim(store, "r").await;
    assert_eq!((again.in_flight, again.crashes), (Some(batch), 2), "the claim finds what was recorded");

    let stranger = Lease { owner: "mallory".into(), ..again.clone() };
    let refused = store.set_in_flight(&stranger, None, 0, TTL).await.expect_err("not the lease holder");
    assert!(matches!(refused, StoreError::LeaseLost { .. }), "{refused:?}");
    assert!(refused.to_string().contains("mallory"), "{refused}");

    // A batch that commits is no longer in flight; the crash count stays for the runner.
    let mut runner = BatchRunner::new(&UserProfile, store, &EventFilter::all(), again).crash_limit(100);
    runner.catch_up().await.expect("batches commit");
    let after = claim(store, "r").await;
    assert_eq!(after.in_flight, None);
    assert_eq!(after.crashes, 0, "a batch committed in the normal course starts the count over");
}

/// A runner that died with one event in flight, at the crash limit: that event is
/// dead-lettered unapplied, naming the crashes, and only its aggregate is parked.
pub async fn one_event_in_flight_at_the_crash_limit_is_dead_lettered<S: FailureStore>(store: &S) {
    let users = four_users(store).await;
    let all = read_everything(store, &EventFilter::all(), Partition::WHOLE, 100).await;
    let crasher = all[1].clone();
    // Two crashes recorded, the third one now: the batch of the second event alone.
    let mut lease = claim(store, "r").await;
    let mut runner = BatchRunner::new(&UserProfile, store, &EventFilter::all(), lease.clone()).batch_size(1);
    runner.step().await.expect("the first event applies");
    lease.checkpoint = runner.checkpoint();
    store.set_in_flight(&lease, Some(InFlight { to: crasher.checkpoint(), events: 1 }), 2, TTL).await.unwrap();

    let lease = claim(store, "r").await;
    let mut runner = BatchRunner::new(&UserProfile, store, &EventFilter::all(), lease).crash_limit(3);
    let outcome = runner.catch_up().await.expect("the runner goes on");
    assert_eq!(outcome.dead_lettered, 1);
    let letters = projector::DeadLetterQueue::list(store, &DeadLetterFilter::default()).await.unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].event_id, crasher.event_id);
    assert!(letters[0].error.contains("crashed the runner 3 times"), "{}", letters[0].error);
    assert_eq!(letters[0].attempts, 3);
    let rows = stored_profiles(store, &users).await;
    assert!(!rows.contains_key(&crasher.aggregate_id), "the crashing event is not applied");
    assert_eq!(rows.len(), 3, "every other event applies");
    let state = store.states().await.unwrap().remove(0);
    assert_eq!(state.parked_aggregates, 1);
    let after = claim(store, "r").await;
    assert_eq!((after.in_flight, after.crashes), (None, 0), "the count starts over");
}

/// A batch of four in flight at the crash limit: the next batch is half of it.
pub async fn a_batch_in_flight_at_the_crash_limit_is_halved<S: FailureStore>(store: &S) {
    four_users(store).await;
    let all = read_everything(store, &EventFilter::all(), Partition::WHOLE, 100).await;
    let lease = claim(store, "r").await;
    store.set_in_flight(&lease, Some(InFlight { to: all[3].checkpoint(), events: 4 }), 2, TTL).await.unwrap();

    let lease = claim(store, "r").await;
    let mut runner = BatchRunner::new(&UserProfile, store, &EventFilter::all(), lease).crash_limit(3).batch_size(100);
    let step = runner.step().await.expect("a probe");
    assert_eq!(step.events_read, 2, "half of the batch that crashed");
    // Had the probe crashed, the next claim would find it in flight, with the count.
    let mut probe = claim(store, "r").await;
    assert_eq!((probe.in_flight, probe.crashes), (None, 3), "committed, the count kept until the range is passed");
    probe.checkpoint = step.checkpoint;
    let mut runner = BatchRunner::new(&UserProfile, store, &EventFilter::all(), probe).crash_limit(3).batch_size(100);
    let rest = runner.catch_up().await.expect("the rest");
    assert_eq!(rest.events_read, 2);
    let after = claim(store, "r").await;
    assert_eq!((after.in_flight, after.crashes), (None, 0), "a batch committed in the normal course starts over");
}
