//! The failure-handling suite every store must pass: dead letters, per-aggregate
//! parking, operator repairs and `on_failure: stop`, driven through the real runtime.
//! `failure_tests!` runs each check as a test of its own, on a fresh store.

use std::time::Duration;

use projection_user_profile::UserProfile;
use projector::repair::{repair, RepairAction, RepairEnd};
use projector::{
    AppendOutcome, AppendRequest, BatchRunner, DeadLetterFilter, DeadLetterQueue, DeadLetterStatus, EventFilter,
    EventStore, ExpectedVersion, NewEvent, OnFailure, Partition, ProjectionHandler, ProjectionStore, Rebuilds, Repairs,
    RuntimeError, StoreError,
};
use serde_json::json;
use uuid::Uuid;

use crate::contract::{read_everything, reference_profiles, settle, stored_profiles};
use crate::ledger::Ledger;
use crate::poison::Poisonable;

/// Everything the suite needs of a store.
pub trait FailureStore: EventStore + ProjectionStore + Rebuilds + Repairs + DeadLetterQueue {}
impl<T: EventStore + ProjectionStore + Rebuilds + Repairs + DeadLetterQueue> FailureStore for T {}

pub fn user(n: u128) -> Uuid {
    Uuid::from_u128(0xFA11_0000_0000_0000_0000 + n * 0x9E37_79B9)
}

pub async fn append<S: EventStore>(store: &S, id: Uuid, event_type: &str, data: serde_json::Value) -> AppendOutcome {
    store
        .append(AppendRequest {
            aggregate_id: id,
            aggregate_type: "user".into(),
            expected_version: ExpectedVersion::Any,
            events: vec![NewEvent::new(event_type, data)],
            idempotency_key: None,
        })
        .await
        .expect("append")
}

async fn register<H: ProjectionHandler, S: FailureStore>(store: &S, handler: &H) {
    store.register(handler.name(), handler.schema(), &handler.filter(), 1).await.expect("register");
}

/// Runs one partition to caught-up; returns events dead-lettered.
async fn run<H: ProjectionHandler, S: FailureStore>(store: &S, handler: &H, owner: &str) -> u64 {
    let lease = store
        .claim(handler.name(), Partition::WHOLE, owner, Duration::from_secs(30))
        .await
        .expect("claim")
        .expect("lease free");
    let mut runner = BatchRunner::new(handler, store, &EventFilter::all(), lease).batch_size(3);
    let dead = runner.catch_up().await.expect("batches").dead_lettered;
    store.release(runner.lease()).await.expect("release");
    dead
}

/// Two users with interleaved events; user A's second event is poison.
async fn poisoned_history<S: FailureStore>(store: &S) -> (Uuid, Uuid, AppendOutcome) {
    let (a, b) = (user(1), user(2));
    append(store, a, "UserRegistered", json!({"email": "a@x.io", "name": "A", "plan": "free"})).await;
    append(store, b, "UserRegistered", json!({"email": "b@x.io", "name": "B", "plan": "free"})).await;
    append(store, a, "UserRenamed", json!({"name": "A2", "poison": true})).await;
    append(store, b, "UserRenamed", json!({"name": "B2"})).await;
    append(store, a, "UserEmailChanged", json!({"email": "a3@x.io"})).await;
    append(store, b, "PlanUpgraded", json!({"plan": "pro"})).await;
    let last = append(store, a, "PlanUpgraded", json!({"plan": "team"})).await;
    settle(store, &last).await;
    (a, b, last)
}

pub async fn a_permanent_failure_dead_letters_at_once_and_parks_only_its_aggregate<S: FailureStore>(store: &S) {
    let handler = Poisonable::new(UserProfile);
    register(store, &handler).await;
    let (a, b, last) = poisoned_history(store).await;
    assert_eq!(run(store, &handler, "runner").await, 1, "one event dead-lettered");

    let letters = store.list(&DeadLetterFilter::default()).await.expect("list");
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!((letter.aggregate_id, letter.version, letter.attempts), (a, 2, 1), "permanent: zero retries");
    assert_eq!(letter.error_class, "permanent");
    assert!(letter.error.contains(&letter.event_id.to_string()), "error names the event: {}", letter.error);

    let rows = stored_profiles(store, &[a, b]).await;
    let all = read_everything(store, &EventFilter::all(), Partition::WHOLE, 100).await;
    let reference = reference_profiles(&all);
    assert_eq!(rows[&b], reference[&b], "aggregate B moves on");
    assert_eq!(rows[&a].1, 1, "A stays at its last good version");
    assert_eq!(rows[&a].0.name.as_deref(), Some("A"));

    let state = store.states().await.expect("states").into_iter().find(|s| s.projection == "user-profile").unwrap();
    assert_eq!(state.checkpoint.position, last.positions[0], "the checkpoint passes A's parked events");
    assert_eq!((state.dead_letters, state.parked_aggregates, state.parked_events), (1, 1, 3));
    assert_eq!(state.lag_events, 0, "parked events are not lag");
}

pub async fn retry_after_the_fix_applies_the_parked_sequence_in_order<S: FailureStore>(store: &S) {
    let handler = Poisonable::new(UserProfile);
    register(store, &handler).await;
    let (a, b, _) = poisoned_history(store).await;
    run(store, &handler, "runner").await;
    let id = store.list(&DeadLetterFilter::default()).await.expect("list")[0].id;

    // Still poisoned: the retry stops at the same event and leaves everything parked.
    let outcome = repair(&handler, store, &EventFilter::all(), id, RepairAction::Retry, "ops@example", 2)
        .await
        .expect("retry runs");
    assert!(matches!(outcome.end, RepairEnd::Stopped { dead_letter_id, .. } if dead_letter_id == id), "{outcome:?}");
    assert_eq!(store.get(id).await.unwrap().unwrap().attempts, 2, "the failed retry counts as an attempt");

    handler.faults.fix();
    let outcome = repair(&handler, store, &EventFilter::all(), id, RepairAction::Retry, "ops@example", 2)
        .await
        .expect("retry runs");
    assert_eq!(outcome.end, RepairEnd::Done);
    assert_eq!(outcome.events_applied, 3, "v2..v4 of A, in chunks of 2");
    let all = read_everything(store, &EventFilter::all(), Partition::WHOLE, 100).await;
    assert_eq!(stored_profiles(store, &[a, b]).await, reference_profiles(&all), "equals a clean replay");
    let letter = store.get(id).await.unwrap().unwrap();
    assert_eq!(letter.status, DeadLetterStatus::Resolved);
    let actions = store.actions(id).await.expect("actions");
    assert!(actions.iter().all(|a| a.actor == "ops@example" && a.action == "retry"), "{actions:?}");
    assert!(actions.last().unwrap().outcome.contains("applied 3"), "{actions:?}");

    // Unparked: A's new events apply live again.
    let last = append(store, a, "UserRenamed", json!({"name": "A5"})).await;
    settle(store, &last).await;
    run(store, &handler, "runner").await;
    let all = read_everything(store, &EventFilter::all(), Partition::WHOLE, 100).await;
    assert_eq!(stored_profiles(store, &[a, b]).await, reference_profiles(&all));
    let state = store.states().await.unwrap().into_iter().find(|s| s.projection == "user-profile").unwrap();
    assert_eq!((state.dead_letters, state.parked_aggregates, state.parked_events), (0, 0, 0));
}

pub async fn skip_drops_one_event_and_applies_the_rest<S: FailureStore>(store: &S) {
    let handler = Poisonable::new(UserProfile);
    register(store, &handler).await;
    let (a, _, _) = poisoned_history(store).await;
    run(store, &handler, "runner").await;
    let id = store.list(&DeadLetterFilter::default()).await.unwrap()[0].id;
    let outcome =
        repair(&handler, store, &EventFilter::all(), id, RepairAction::Skip, "ops", 100).await.expect("skip runs");
    assert_eq!((outcome.events_applied, outcome.events_dropped, outcome.end), (2, 1, RepairEnd::Done));
    let (profile, version) = stored_profiles(store, &[a]).await[&a].clone();
    assert_eq!(version, 4, "the skipped version counts as consumed");
    assert_eq!(profile.name.as_deref(), Some("A"), "the poison rename was skipped");
    assert_eq!(profile.email.as_deref(), Some("a3@x.io"));
    assert_eq!(profile.plan.as_deref(), Some("team"));
    assert_eq!(store.get(id).await.unwrap().unwrap().status, DeadLetterStatus::Skipped);
}

pub async fn discard_drops_the_sequence_and_later_events_apply<S: FailureStore>(store: &S) {
    let handler = Poisonable::new(UserProfile);
    register(store, &handler).await;
    let (a, _, _) = poisoned_history(store).await;
    run(store, &handler, "runner").await;
    let id = store.list(&DeadLetterFilter::default()).await.unwrap()[0].id;
    let outcome =
        repair(&handler, store, &EventFilter::all(), id, RepairAction::Discard, "ops", 100).await.expect("discard");
    assert_eq!((outcome.events_applied, outcome.events_dropped), (0, 3));
    assert_eq!(store.get(id).await.unwrap().unwrap().status, DeadLetterStatus::Discarded);
    let last = append(store, a, "UserRenamed", json!({"name": "A5"})).await;
    settle(store, &last).await;
    assert_eq!(run(store, &handler, "runner").await, 0, "the discarded sequence is not re-read");
    let (profile, version) = stored_profiles(store, &[a]).await[&a].clone();
    assert_eq!((profile.name.as_deref(), profile.email.as_deref(), version), (Some("A5"), Some("a@x.io"), 5));
}

pub async fn a_repair_of_an_unknown_or_closed_letter_is_refused_clearly<S: FailureStore>(store: &S) {
    let handler = Poisonable::new(UserProfile);
    register(store, &handler).await;
    let err = repair(&handler, store, &EventFilter::all(), 4242, RepairAction::Retry, "ops", 10)
        .await
        .expect_err("no such letter");
    assert!(matches!(err, RuntimeError::Store(StoreError::UnknownDeadLetter { id: 4242, .. })), "{err}");
    assert!(err.to_string().contains("4242"), "{err}");

    poisoned_history(store).await;
    run(store, &handler, "runner").await;
    let id = store.list(&DeadLetterFilter::default()).await.unwrap()[0].id;
    handler.faults.fix();
    repair(&handler, store, &EventFilter::all(), id, RepairAction::Retry, "ops", 10).await.expect("first retry");
    let err = repair(&handler, store, &EventFilter::all(), id, RepairAction::Retry, "ops", 10)
        .await
        .expect_err("the letter is resolved");
    assert!(err.to_string().contains("already resolved"), "{err}");
}

pub async fn stop_applies_nothing_after_the_failing_event<S: FailureStore>(store: &S) {
    let handler = Poisonable::new(UserProfile);
    register(store, &handler).await;
    let (a, b, _) = poisoned_history(store).await;
    let lease = store.claim("user-profile", Partition::WHOLE, "r", Duration::from_secs(30)).await.unwrap().unwrap();
    let mut runner =
        BatchRunner::new(&handler, store, &EventFilter::all(), lease).batch_size(100).on_failure(OnFailure::Stop);
    let err = runner.step().await.expect_err("stops");
    assert!(matches!(err, RuntimeError::Stopped(_)), "{err}");
    assert!(err.to_string().contains("stopped at event"), "{err}");
    assert!(stored_profiles(store, &[a, b]).await.is_empty(), "nothing of the batch applied");
    let state = store.states().await.unwrap().into_iter().find(|s| s.projection == "user-profile").unwrap();
    assert_eq!(state.checkpoint, projector::Checkpoint::START);
    assert!(store.list(&DeadLetterFilter::default()).await.unwrap().is_empty(), "nothing dead-lettered");
}

pub async fn a_transient_failure_is_retried_then_dead_lettered_with_its_attempts<S: FailureStore>(store: &S) {
    let handler = Poisonable::new(Ledger);
    register(store, &handler).await;
    let a = user(9);
    append(store, a, "UserRegistered", json!({"email": "a@x.io"})).await;
    let last = append(store, a, "UserRenamed", json!({"name": "F", "flaky": true})).await;
    settle(store, &last).await;
    let lease = store.claim("event-ledger", Partition::WHOLE, "r", Duration::from_secs(30)).await.unwrap().unwrap();
    let policy =
        projector::RetryPolicy { max_retries: 3, base: Duration::from_millis(1), cap: Duration::from_millis(4) };
    let mut runner = BatchRunner::new(&handler, store, &EventFilter::all(), lease).retry(policy);
    for attempt in 1..=3u32 {
        match runner.step().await {
            Err(RuntimeError::RetryLater { attempts, .. }) => assert_eq!(attempts, attempt),
            other => panic!("attempt {attempt}: expected a retry, got {other:?}"),
        }
    }
    let step = runner.step().await.expect("the fourth failure dead-letters");
    assert_eq!((step.events_read, step.dead_lettered), (2, 1));
    let letter = store.list(&DeadLetterFilter::default()).await.unwrap().remove(0);
    assert_eq!((letter.attempts, letter.error_class.as_str()), (4, "transient"), "1 attempt + exactly 3 retries");
    assert!(letter.first_failed_at <= letter.last_failed_at);
    assert_eq!(handler.faults.flaky_calls.lock().unwrap().len(), 4);
}

pub async fn a_transient_failure_that_heals_applies_once_and_forgets_its_attempts<S: FailureStore>(store: &S) {
    let handler = Poisonable::new(Ledger);
    register(store, &handler).await;
    let a = user(10);
    let last = append(store, a, "UserRenamed", json!({"name": "F", "flaky": true})).await;
    settle(store, &last).await;
    let lease = store.claim("event-ledger", Partition::WHOLE, "r", Duration::from_secs(30)).await.unwrap().unwrap();
    let mut runner = BatchRunner::new(&handler, store, &EventFilter::all(), lease);
    assert!(matches!(runner.step().await, Err(RuntimeError::RetryLater { attempts: 1, .. })));
    handler.faults.fix();
    let step = runner.step().await.expect("the healed event applies");
    assert_eq!((step.events_applied, step.dead_lettered), (1, 0));
    let event = read_everything(store, &EventFilter::all(), Partition::WHOLE, 10).await.remove(0);
    let record = store.record_failure("event-ledger", &event, "probe").await.expect("record");
    assert_eq!(record.attempts, 1, "the attempt history was forgotten once the event applied");
}
