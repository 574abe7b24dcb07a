//! The failure-handling suite every store must pass: dead letters, per-aggregate
//! parking, operator repairs and `on_failure: stop`, driven through the real runtime;
//! then the store operations beneath them, called directly: dead-lettering commits,
//! parked sets and their epoch, the attempt history, the queue and repair sessions.
//! `failure_tests!` runs each check as a test of its own, on a fresh store.

use std::time::Duration;

use chrono::{DateTime, Utc};
use projection_user_profile::UserProfile;
use projector::repair::{repair, RepairAction, RepairEnd};
use projector::{
    AppendOutcome, AppendRequest, BatchCommit, BatchRunner, Checkpoint, Column, ColumnType, DeadLetter,
    DeadLetterFilter, DeadLetterQueue, DeadLetterStatus, DomainEvent, ErrorClass, EventFilter, EventStore,
    ExpectedVersion, Lease, NewEvent, OnFailure, OperatorAction, Parked, Partition, ProjectionHandler, ProjectionStore,
    ReadBound, Rebuilds, RepairSession, Repairs, RowChanges, RuntimeError, StoreError, TableSchema, Value,
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

pub(crate) async fn register<H: ProjectionHandler, S: FailureStore>(store: &S, handler: &H) {
    store.register(handler.name(), handler.schema(), &handler.filter(), 1).await.expect("register");
}

/// Runs one partition to caught-up; returns events dead-lettered.
pub(crate) async fn run<H: ProjectionHandler, S: FailureStore>(store: &S, handler: &H, owner: &str) -> u64 {
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
pub(crate) async fn poisoned_history<S: FailureStore>(store: &S) -> (Uuid, Uuid, AppendOutcome) {
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

// ---------------------------------------------------------------------------------------
// The store operations beneath: commits with dead letters, parked sets, the attempt
// history, the queue and repair sessions.

/// The fixture table of the store-level checks: a count per aggregate.
pub const COUNTS: TableSchema = TableSchema {
    name: "dl_counts",
    key: &[Column::new("id", ColumnType::Uuid)],
    columns: &[Column::new("n", ColumnType::BigInt)],
    version_column: None,
};

const OTHER: TableSchema = TableSchema { name: "dl_other", ..COUNTS };

pub const TTL: Duration = Duration::from_secs(30);

/// `Uuid::from_u128(n)` lands in partition `n % count` (the bucket is the low 32 bits).
pub fn aggregate(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

/// Appends `n` events to the aggregate; returns all of its events, once readable.
pub async fn ticks<S: FailureStore>(store: &S, aggregate_id: Uuid, n: usize) -> Vec<DomainEvent> {
    let outcome = store
        .append(AppendRequest {
            aggregate_id,
            aggregate_type: "thing".into(),
            expected_version: ExpectedVersion::Any,
            events: (0..n).map(|i| NewEvent::new("Ticked", json!({ "i": i }))).collect(),
            idempotency_key: None,
        })
        .await
        .unwrap();
    settle(store, &outcome).await;
    store.read_aggregate(aggregate_id, ReadBound::All).await.unwrap()
}

pub async fn register_counts<S: FailureStore>(store: &S, partitions: u32) {
    store.register("p", &COUNTS, &EventFilter::all(), partitions).await.unwrap();
}

pub async fn claim<S: FailureStore>(store: &S, partition: Partition) -> Lease {
    store.claim("p", partition, "runner", TTL).await.unwrap().expect("the partition is free")
}

pub fn letter(projection: &str, event: &DomainEvent, error: &str) -> DeadLetter {
    DeadLetter::new(projection, event, error, ErrorClass::Permanent, 1, DateTime::<Utc>::MIN_UTC)
}

pub fn row(id: Uuid, n: i64) -> Vec<Value> {
    vec![Value::Uuid(id), Value::BigInt(n)]
}

pub fn commit<'a>(
    lease: &'a Lease,
    to: Checkpoint,
    upserts: Vec<Vec<Value>>,
    dead_letters: Vec<DeadLetter>,
) -> BatchCommit<'a> {
    BatchCommit {
        lease,
        table: &COUNTS,
        from: lease.checkpoint,
        to,
        changes: RowChanges { upserts, deletes: vec![], inserts_only: false, snapshots: Vec::new() },
        events_applied: 1,
        last_event_at: None,
        lease_ttl: TTL,
        dead_letters,
        audit: Vec::new(),
    }
}

pub fn action(id: i64, what: &str, outcome: &str) -> OperatorAction {
    OperatorAction {
        dead_letter_id: id,
        actor: "ada".into(),
        action: what.into(),
        at: DateTime::<Utc>::MIN_UTC,
        outcome: outcome.into(),
    }
}

pub fn open_letters() -> DeadLetterFilter {
    DeadLetterFilter::default()
}

async fn load<S: FailureStore>(store: &S, id: Uuid) -> Vec<Vec<Value>> {
    store.load_rows(&COUNTS, &[vec![Value::Uuid(id)]]).await.unwrap()
}

pub async fn a_commit_with_dead_letters_parks_their_aggregates_and_moves_the_epoch<S: FailureStore>(store: &S) {
    register_counts(store, 1).await;
    let a = aggregate(1);
    let b = aggregate(2);
    let a_events = ticks(store, a, 3).await;
    let b_events = ticks(store, b, 1).await;
    let lease = claim(store, Partition::WHOLE).await;
    assert_eq!(lease.parked.epoch, 0);
    assert!(lease.parked.by_aggregate.is_empty());

    let before = Utc::now();
    let to = b_events[0].checkpoint();
    store.commit(commit(&lease, to, vec![row(b, 1)], vec![letter("p", &a_events[1], "boom")])).await.unwrap();

    let letters = store.list(&open_letters()).await.unwrap();
    assert_eq!(letters.len(), 1);
    let stored = &letters[0];
    assert!(stored.id > 0);
    assert_eq!((stored.event_id, stored.aggregate_id, stored.version), (a_events[1].event_id, a, 2));
    assert_eq!((stored.error.as_str(), stored.error_class.as_str(), stored.attempts), ("boom", "permanent", 1));
    assert_eq!(stored.status, DeadLetterStatus::Open);
    assert!(stored.first_failed_at >= before, "the store stamps the failure time: {}", stored.first_failed_at);
    assert_eq!(stored.first_failed_at, stored.last_failed_at);

    let renewed = claim(store, Partition::WHOLE).await;
    assert_eq!(renewed.checkpoint, to);
    assert_eq!(renewed.parked.epoch, 1, "parking moved the epoch");
    assert_eq!(
        renewed.parked.by_aggregate.values().copied().collect::<Vec<_>>(),
        vec![Parked { aggregate_id: a, from_version: 2, dead_letter_id: stored.id }]
    );
    assert!(renewed.parked.holds(&a_events[2]) && !renewed.parked.holds(&a_events[0]));
    assert_eq!(load(store, b).await, vec![row(b, 1)]);

    // A lease that still has the old epoch (a runner that missed the park) writes nothing.
    let c = aggregate(3);
    let c_events = ticks(store, c, 1).await;
    let stale = Lease { checkpoint: to, ..lease.clone() };
    let result = store
        .commit(commit(&stale, c_events[0].checkpoint(), vec![row(c, 1)], vec![letter("p", &c_events[0], "x")]))
        .await;
    assert!(matches!(result, Err(StoreError::CheckpointMoved { partition: 0, .. })), "{result:?}");
    assert!(load(store, c).await.is_empty(), "no rows");
    assert_eq!(store.list(&open_letters()).await.unwrap().len(), 1, "no letters");
    let again = claim(store, Partition::WHOLE).await;
    assert_eq!((again.checkpoint, again.parked.epoch), (to, 1), "neither checkpoint nor epoch moved");
    assert_eq!(again.parked.by_aggregate.len(), 1, "nothing parked");

    // A commit without letters keeps the epoch; a lower version takes the parking over,
    // a higher one leaves it.
    let to = c_events[0].checkpoint();
    store.commit(commit(&again, to, vec![row(c, 1)], vec![])).await.unwrap();
    let lease = claim(store, Partition::WHOLE).await;
    assert_eq!(lease.parked.epoch, 1);
    store.commit(commit(&lease, to, vec![], vec![letter("p", &a_events[0], "earlier")])).await.unwrap();
    let lease = claim(store, Partition::WHOLE).await;
    let earlier = store.list(&open_letters()).await.unwrap().into_iter().find(|l| l.version == 1).unwrap();
    assert_eq!(lease.parked.epoch, 2);
    assert_eq!(lease.parked.by_aggregate[&a], Parked { aggregate_id: a, from_version: 1, dead_letter_id: earlier.id });
    store.commit(commit(&lease, to, vec![], vec![letter("p", &a_events[2], "later")])).await.unwrap();
    let lease = claim(store, Partition::WHOLE).await;
    assert_eq!(lease.parked.epoch, 3, "every dead-lettering commit moves the epoch");
    assert_eq!(lease.parked.by_aggregate[&a].from_version, 1, "the lowest version wins");
    assert_eq!(lease.parked.by_aggregate[&a].dead_letter_id, earlier.id);

    let states = store.states().await.unwrap();
    assert_eq!(states.len(), 1);
    let state = &states[0];
    assert_eq!(state.dead_letters, 3);
    assert_eq!(state.oldest_dead_letter_at, Some(stored.first_failed_at));
    assert_eq!(state.parked_aggregates, 1);
    assert_eq!(state.parked_events, 3, "a's versions 1 to 3, all at or before the checkpoint");
    assert_eq!(state.lag_events, 0);

    // Events after the checkpoint are lag, not parked.
    ticks(store, a, 2).await;
    let state = store.states().await.unwrap().remove(0);
    assert_eq!((state.parked_events, state.lag_events), (3, 2));
}

pub async fn claim_returns_the_parked_set_of_its_partition_only<S: FailureStore>(store: &S) {
    register_counts(store, 2).await;
    let even = aggregate(2);
    let odd = aggregate(3);
    let even_events = ticks(store, even, 2).await;
    let odd_events = ticks(store, odd, 2).await;
    let p0 = Partition { index: 0, count: 2 };
    let p1 = Partition { index: 1, count: 2 };
    let lease0 = claim(store, p0).await;
    let lease1 = claim(store, p1).await;

    store
        .commit(commit(&lease0, even_events[1].checkpoint(), vec![], vec![letter("p", &even_events[0], "e")]))
        .await
        .unwrap();
    let lease0 = claim(store, p0).await;
    assert_eq!(lease0.parked.by_aggregate.keys().copied().collect::<Vec<_>>(), vec![even]);
    assert_eq!(lease0.parked.epoch, 1);
    let lease1 = Lease { parked: claim(store, p1).await.parked, ..lease1 };
    assert!(lease1.parked.by_aggregate.is_empty(), "{:?}", lease1.parked);
    assert_eq!(lease1.parked.epoch, 0, "epochs are per partition");

    store
        .commit(commit(&lease1, odd_events[1].checkpoint(), vec![], vec![letter("p", &odd_events[1], "o")]))
        .await
        .unwrap();
    let lease0 = claim(store, p0).await;
    let lease1 = claim(store, p1).await;
    assert_eq!(lease0.parked.by_aggregate.keys().copied().collect::<Vec<_>>(), vec![even]);
    assert_eq!(lease0.parked.epoch, 1);
    assert_eq!(lease1.parked.by_aggregate.keys().copied().collect::<Vec<_>>(), vec![odd]);
    assert_eq!(lease1.parked.by_aggregate[&odd].from_version, 2);
    assert_eq!(lease1.parked.epoch, 1);

    let states = store.states().await.unwrap();
    let per_partition: Vec<(u32, i64, i64, i64)> =
        states.iter().map(|s| (s.partition, s.dead_letters, s.parked_aggregates, s.parked_events)).collect();
    assert_eq!(per_partition, vec![(0, 1, 1, 2), (1, 1, 1, 1)]);
}

pub async fn record_failure_counts_attempts_and_keeps_the_first_failure<S: FailureStore>(store: &S) {
    register_counts(store, 1).await;
    let events = ticks(store, aggregate(1), 2).await;

    let first = store.record_failure("p", &events[0], "timeout 1").await.unwrap();
    assert_eq!(first.attempts, 1);
    let second = store.record_failure("p", &events[0], "timeout 2").await.unwrap();
    assert_eq!((second.attempts, second.first_failed_at), (2, first.first_failed_at));
    let other_event = store.record_failure("p", &events[1], "timeout").await.unwrap();
    assert_eq!(other_event.attempts, 1, "counted per event");
    let other_projection = store.record_failure("q", &events[0], "timeout").await.unwrap();
    assert_eq!(other_projection.attempts, 1, "counted per projection");
    let third = store.record_failure("p", &events[0], "timeout 3").await.unwrap();
    assert_eq!((third.attempts, third.first_failed_at), (3, first.first_failed_at));

    // A dead letter's failure times come from the history.
    let lease = claim(store, Partition::WHOLE).await;
    let dead = DeadLetter::new("p", &events[0], "timeout 4", ErrorClass::Transient, 4, DateTime::<Utc>::MIN_UTC);
    store.commit(commit(&lease, events[0].checkpoint(), vec![], vec![dead])).await.unwrap();
    let stored = store.list(&open_letters()).await.unwrap().remove(0);
    assert_eq!((stored.attempts, stored.error_class.as_str()), (4, "transient"));
    assert_eq!(stored.first_failed_at, first.first_failed_at);
    assert!(stored.last_failed_at >= first.first_failed_at);
}

pub async fn the_queue_stores_lists_and_resolves_letters<S: FailureStore>(store: &S) {
    register_counts(store, 1).await;
    store.register("q", &OTHER, &EventFilter::all(), 1).await.unwrap();
    let a = ticks(store, aggregate(1), 1).await;
    let b = ticks(store, aggregate(2), 1).await;

    let ids = store.send(&[letter("p", &a[0], "a failed"), letter("q", &b[0], "b failed")]).await.unwrap();
    assert_eq!(ids.len(), 2);
    assert!(ids[0] != ids[1]);
    let first = store.get(ids[0]).await.unwrap().expect("stored");
    assert_eq!((first.projection.as_str(), first.event_id, first.error.as_str()), ("p", a[0].event_id, "a failed"));
    assert_eq!(first.id, ids[0]);

    // Sending again updates the letter in place (delivery may be at least once).
    let mut repeat = letter("p", &a[0], "a failed again");
    repeat.attempts = 3;
    let again = store.send(&[repeat]).await.unwrap();
    assert_eq!(again, vec![ids[0]]);
    let updated = store.get(ids[0]).await.unwrap().unwrap();
    assert_eq!((updated.error.as_str(), updated.attempts), ("a failed again", 3));
    assert_eq!(updated.first_failed_at, first.first_failed_at);
    assert!(updated.last_failed_at >= first.last_failed_at);
    assert_eq!(store.list(&DeadLetterFilter { include_closed: true, ..open_letters() }).await.unwrap().len(), 2);
    assert_eq!(store.get(9_999).await.unwrap(), None);

    // Filters.
    let ids_of = |letters: Vec<DeadLetter>| letters.into_iter().map(|l| l.id).collect::<Vec<_>>();
    assert_eq!(ids_of(store.list(&open_letters()).await.unwrap()), ids);
    let of_q = DeadLetterFilter { projection: Some("q".into()), ..open_letters() };
    assert_eq!(ids_of(store.list(&of_q).await.unwrap()), vec![ids[1]]);
    let of_a = DeadLetterFilter { aggregate_id: Some(aggregate(1)), ..open_letters() };
    assert_eq!(ids_of(store.list(&of_a).await.unwrap()), vec![ids[0]]);
    let none = DeadLetterFilter { projection: Some("q".into()), aggregate_id: Some(aggregate(1)), ..open_letters() };
    assert!(store.list(&none).await.unwrap().is_empty());

    // Resolving closes the letter and records who did it.
    let before = Utc::now();
    store.resolve(ids[0], DeadLetterStatus::Skipped, &action(ids[0], "skip", "skipped by hand")).await.unwrap();
    assert_eq!(store.get(ids[0]).await.unwrap().unwrap().status, DeadLetterStatus::Skipped);
    assert_eq!(ids_of(store.list(&open_letters()).await.unwrap()), vec![ids[1]], "closed letters are not listed");
    let all = DeadLetterFilter { include_closed: true, ..open_letters() };
    assert_eq!(ids_of(store.list(&all).await.unwrap()), ids);
    store.resolve(ids[0], DeadLetterStatus::Discarded, &action(ids[0], "discard", "dropped")).await.unwrap();
    let actions = store.actions(ids[0]).await.unwrap();
    assert_eq!(
        actions
            .iter()
            .map(|a| (a.dead_letter_id, a.actor.as_str(), a.action.as_str(), a.outcome.as_str()))
            .collect::<Vec<_>>(),
        vec![(ids[0], "ada", "skip", "skipped by hand"), (ids[0], "ada", "discard", "dropped")],
        "oldest first"
    );
    assert!(actions.iter().all(|a| a.at >= before), "the store stamps the time: {actions:?}");
    assert!(store.actions(ids[1]).await.unwrap().is_empty());

    let missing = store.resolve(9_999, DeadLetterStatus::Resolved, &action(9_999, "retry", "")).await;
    assert!(matches!(missing, Err(StoreError::UnknownDeadLetter { id: 9_999, .. })), "{missing:?}");

    // A closed letter sent again is open again, under the same id.
    assert_eq!(store.send(&[letter("p", &a[0], "back")]).await.unwrap(), vec![ids[0]]);
    assert_eq!(store.get(ids[0]).await.unwrap().unwrap().status, DeadLetterStatus::Open);
    assert_eq!(store.actions(ids[0]).await.unwrap().len(), 2, "the trail stays");
}

/// A parked aggregate in partition 1 of 2, with partition 0 at another checkpoint.
pub async fn parked_setup<S: FailureStore>(store: &S) -> (Uuid, Vec<DomainEvent>, DeadLetter, Lease) {
    register_counts(store, 2).await;
    let even = aggregate(2);
    let odd = aggregate(3);
    let even_events = ticks(store, even, 1).await;
    let odd_events = ticks(store, odd, 3).await;
    let p0 = Partition { index: 0, count: 2 };
    let p1 = Partition { index: 1, count: 2 };
    let lease0 = claim(store, p0).await;
    store.commit(commit(&lease0, even_events[0].checkpoint(), vec![row(even, 1)], vec![])).await.unwrap();
    let lease1 = claim(store, p1).await;
    store
        .commit(commit(
            &lease1,
            odd_events[2].checkpoint(),
            vec![row(odd, 1)],
            vec![letter("p", &odd_events[1], "boom")],
        ))
        .await
        .unwrap();
    let stored = store.list(&open_letters()).await.unwrap().remove(0);
    let lease1 = claim(store, p1).await;
    (odd, odd_events, stored, lease1)
}

pub async fn begin_repair_finds_the_letter_its_parking_and_its_partition<S: FailureStore>(store: &S) {
    let (odd, odd_events, stored, _) = parked_setup(store).await;

    for (projection, id) in [("p", 9_999), ("q", stored.id)] {
        match store.begin_repair(projection, id).await {
            Err(StoreError::UnknownDeadLetter { projection: p, id: i }) => {
                assert_eq!((p.as_str(), i), (projection, id))
            }
            Err(other) => panic!("want UnknownDeadLetter, got {other:?}"),
            Ok(session) => panic!("want UnknownDeadLetter, got a session on {:?}", session.dead_letter()),
        }
    }
    // A failed begin leaves nothing open.
    assert_eq!(store.states().await.unwrap().len(), 2);

    let session = store.begin_repair("p", stored.id).await.unwrap();
    assert_eq!(session.dead_letter(), &stored);
    assert_eq!(session.parked(), Some(Parked { aggregate_id: odd, from_version: 2, dead_letter_id: stored.id }));
    assert_eq!(session.checkpoint(), odd_events[2].checkpoint(), "the checkpoint of the aggregate's partition");
}

pub async fn a_repair_session_commits_everything_or_nothing<S: FailureStore>(store: &S) {
    let (odd, odd_events, stored, lease1) = parked_setup(store).await;
    assert_eq!(lease1.parked.epoch, 1);

    // Dropped: rolled back.
    {
        let mut session = store.begin_repair("p", stored.id).await.unwrap();
        let events = session.read_aggregate(odd, ReadBound::Versions { after: 1, upto: i64::MAX }).await.unwrap();
        assert_eq!(events.iter().map(|e| e.version).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(session.load_rows(&COUNTS, &[vec![Value::Uuid(odd)]]).await.unwrap(), vec![row(odd, 1)]);
        session
            .write_rows(
                &COUNTS,
                RowChanges { upserts: vec![row(odd, 3)], deletes: vec![], inserts_only: false, snapshots: Vec::new() },
            )
            .await
            .unwrap();
        session.failed_again("still broken").await.unwrap();
        session.set_parking(None).await.unwrap();
        assert_eq!(session.parked(), None);
        session.close(DeadLetterStatus::Resolved, &action(stored.id, "retry", "applied 2 event(s)")).await.unwrap();
    }
    assert_eq!(store.get(stored.id).await.unwrap().unwrap(), stored, "the letter is as it was");
    assert!(store.actions(stored.id).await.unwrap().is_empty());
    assert_eq!(load(store, odd).await, vec![row(odd, 1)]);
    let lease = claim(store, lease1.partition).await;
    assert_eq!(lease.parked, lease1.parked, "parking and epoch are as they were");

    // A session that stops: the letter stays open and a later event is parked behind a
    // new letter; the runner's stale lease cannot commit over it.
    let mut session = store.begin_repair("p", stored.id).await.unwrap();
    session
        .write_rows(
            &COUNTS,
            RowChanges { upserts: vec![row(odd, 2)], deletes: vec![], inserts_only: false, snapshots: Vec::new() },
        )
        .await
        .unwrap();
    let new_id = session.send_letter(&letter("p", &odd_events[2], "v3 failed")).await.unwrap();
    assert!(new_id > stored.id);
    session.set_parking(Some(Parked { aggregate_id: odd, from_version: 3, dead_letter_id: new_id })).await.unwrap();
    session.close(DeadLetterStatus::Resolved, &action(stored.id, "retry", "now dead letter 2")).await.unwrap();
    session.commit().await.unwrap();

    assert_eq!(store.get(stored.id).await.unwrap().unwrap().status, DeadLetterStatus::Resolved);
    assert_eq!(store.get(new_id).await.unwrap().unwrap().status, DeadLetterStatus::Open);
    assert_eq!(store.actions(stored.id).await.unwrap().len(), 1);
    assert_eq!(load(store, odd).await, vec![row(odd, 2)]);
    let stale = store.commit(commit(&lease1, lease1.checkpoint, vec![], vec![])).await;
    assert!(matches!(stale, Err(StoreError::CheckpointMoved { partition: 1, .. })), "{stale:?}");
    let lease = claim(store, lease1.partition).await;
    assert_eq!(lease.parked.epoch, 2);
    assert_eq!(lease.parked.by_aggregate[&odd], Parked { aggregate_id: odd, from_version: 3, dead_letter_id: new_id });
    let other = claim(store, Partition { index: 0, count: 2 }).await;
    assert_eq!(other.parked.epoch, 0, "only the aggregate's partition moves");

    // Another attempt that fails again, recorded, then one that lifts the parking.
    let mut session = store.begin_repair("p", new_id).await.unwrap();
    assert_eq!(session.parked().map(|p| p.from_version), Some(3));
    session.failed_again("v3 failed again").await.unwrap();
    session.record_action(&action(new_id, "retry", "stopped")).await.unwrap();
    session.commit().await.unwrap();
    let letter = store.get(new_id).await.unwrap().unwrap();
    assert_eq!((letter.attempts, letter.error.as_str(), letter.status), (2, "v3 failed again", DeadLetterStatus::Open));
    assert!(letter.last_failed_at >= letter.first_failed_at);

    let mut session = store.begin_repair("p", new_id).await.unwrap();
    session.set_parking(None).await.unwrap();
    session.close(DeadLetterStatus::Skipped, &action(new_id, "skip", "unparked")).await.unwrap();
    session.commit().await.unwrap();
    let lease = claim(store, lease1.partition).await;
    assert!(lease.parked.by_aggregate.is_empty());
    assert_eq!(lease.parked.epoch, 3);
    let state = store.states().await.unwrap().remove(1);
    assert_eq!((state.dead_letters, state.parked_aggregates, state.parked_events), (0, 0, 0));
    assert_eq!(state.oldest_dead_letter_at, None);
    assert_eq!(
        store.actions(new_id).await.unwrap().iter().map(|a| a.action.as_str()).collect::<Vec<_>>(),
        vec!["retry", "skip"]
    );
}
