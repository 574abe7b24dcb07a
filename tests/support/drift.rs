//! Contract checks for behaviour on which the stores have differed: reused idempotency
//! keys, the applied-event count after a rebuild, the error count of a failed status and
//! a dead letter for an unregistered projection.
//!
//! `contract_tests!` runs each of them as a test of its own, next to the conformance
//! suite, on a fresh store.

use chrono::{DateTime, Utc};
use projector::{
    AppendOutcome, AppendRequest, Checkpoint, DeadLetter, DeadLetterFilter, DeadLetterQueue, ErrorClass, EventFilter,
    ExpectedVersion, NewEvent, Partition, ProjectionHandler, ProjectionState, ReadBound, Rebuild, Status, StoreError,
};
use serde_json::json;
use uuid::Uuid;

use crate::contract::{
    append, event_ids, id, ok, read_everything, request, run_live, settle, state, states_of, ContractStore, PROBE,
};
use crate::ledger::Ledger;

fn keyed(aggregate: Uuid, key: &str, expected: ExpectedVersion, events: Vec<NewEvent>) -> AppendRequest {
    AppendRequest { idempotency_key: Some(key.to_owned()), ..request(aggregate, "thing", expected, events) }
}

/// The stored events of one aggregate.
async fn events_of<S: ContractStore>(store: &S, aggregate: Uuid) -> Vec<Uuid> {
    event_ids(&ok(store.read_aggregate(aggregate, ReadBound::All).await, "read_aggregate"))
}

// ---------------------------------------------------------------------------------------
// Idempotency keys

/// A key names one append: using it for another aggregate is an `IdempotencyConflict`
/// that writes nothing, not the first aggregate's outcome.
pub async fn an_idempotency_key_reused_for_another_aggregate_is_refused<S: ContractStore>(store: &S) {
    let (a, b) = (id(40, 1), id(40, 2));
    let events = || vec![NewEvent::new("A", json!({"n": 1})), NewEvent::new("B", json!({"n": 2}))];
    let first =
        ok(store.append(keyed(a, "key-shared", ExpectedVersion::Exact(0), events())).await, "keyed append to A");
    assert!(!first.deduplicated, "the first use of a key is not deduplicated");
    settle(store, &first).await;

    match store.append(keyed(b, "key-shared", ExpectedVersion::Exact(0), events())).await {
        Err(StoreError::IdempotencyConflict { key, .. }) => assert_eq!(key, "key-shared", "the conflict names the key"),
        other => panic!("key used for aggregate A, then for aggregate B: want IdempotencyConflict, got {other:?}"),
    }
    assert!(events_of(store, b).await.is_empty(), "nothing was written for B");
    assert_eq!(events_of(store, a).await, first.event_ids, "A keeps its events");
    assert_eq!(read_everything(store, &EventFilter::all(), Partition::WHOLE, 10).await.len(), 2, "nothing new");
}

/// A key names one append: using it for other events on the same aggregate (another
/// payload, another event type, more events) is an `IdempotencyConflict` that writes
/// nothing; the identical request still returns the first outcome.
pub async fn an_idempotency_key_reused_with_other_events_is_refused<S: ContractStore>(store: &S) {
    let a = id(41, 1);
    let events = || vec![NewEvent::new("A", json!({"n": 1})), NewEvent::new("B", json!({"n": 2}))];
    let first = ok(store.append(keyed(a, "key-1", ExpectedVersion::Exact(0), events())).await, "first keyed append");
    settle(store, &first).await;

    let others = [
        ("another payload", vec![NewEvent::new("A", json!({"n": 1})), NewEvent::new("B", json!({"n": 3}))]),
        ("another event type", vec![NewEvent::new("A", json!({"n": 1})), NewEvent::new("C", json!({"n": 2}))]),
        ("more events", vec![NewEvent::new("C", json!({})); 3]),
    ];
    for (what, other) in others {
        match store.append(keyed(a, "key-1", ExpectedVersion::Exact(0), other)).await {
            Err(StoreError::IdempotencyConflict { key, .. }) => {
                assert_eq!(key, "key-1", "{what}: the conflict names the key")
            }
            result => panic!("the key of an append reused with {what}: want IdempotencyConflict, got {result:?}"),
        }
    }
    assert_eq!(events_of(store, a).await, first.event_ids, "a refused key writes nothing");
    assert_eq!(read_everything(store, &EventFilter::all(), Partition::WHOLE, 10).await.len(), 2, "nothing new");

    let again = ok(store.append(keyed(a, "key-1", ExpectedVersion::Exact(0), events())).await, "the identical request");
    assert_eq!(again, AppendOutcome { deduplicated: true, ..first }, "the identical request returns the first outcome");
}

// ---------------------------------------------------------------------------------------
// Counters

/// `events_applied` counts applications: a rebuild over several partitions adds the
/// events it applied once, not once per partition, and does not reset the count.
pub async fn a_rebuild_adds_its_events_once_to_the_applied_count<S: ContractStore>(store: &S) {
    let mut last = None;
    for n in 0..12 {
        let events = (0..=n % 3).map(|i| NewEvent::new("Ticked", json!({ "i": i }))).collect();
        last = Some(append(store, id(42, n), "thing", ExpectedVersion::Exact(0), events).await);
    }
    settle(store, last.as_ref().unwrap()).await;
    let handler = Ledger;
    ok(store.register(handler.name(), handler.schema(), &handler.filter(), 3).await, "register with 3 partitions");
    run_live(store, &handler, 3, 5).await;
    let applied = |states: &[ProjectionState]| -> i64 {
        states_of(states, handler.name()).iter().map(|s| s.events_applied).sum()
    };
    let before = applied(&ok(store.states().await, "states"));
    assert_eq!(before, 24, "the live run applied every event once");

    let rebuilt = Rebuild::new(&handler, &EventFilter::all())
        .run(store, |_: u64, _: Checkpoint| {})
        .await
        .unwrap_or_else(|e| panic!("rebuild: {e}"));
    assert_eq!(rebuilt.events_applied, 24, "the rebuild applied every event");
    let after = applied(&ok(store.states().await, "states"));
    assert_eq!(
        after - before,
        rebuilt.events_applied as i64,
        "the partitions' events_applied went from {before} to {after}: a rebuild of {} events adds them once",
        rebuilt.events_applied
    );
}

/// A partition set to `Failed` has had an error, with or without a message; any other
/// status counts none.
pub async fn a_failed_status_counts_an_error<S: ContractStore>(store: &S) {
    let p = "contract-failed-status";
    ok(store.register(p, &PROBE, &EventFilter::all(), 1).await, "register");
    let now = |what: &'static str| async move {
        let states = ok(store.states().await, what);
        let s = state(&states, p, 0);
        (s.status, s.error_count, s.last_error.clone())
    };
    let (_, start, _) = now("states").await;

    ok(store.set_status(p, Partition::WHOLE, Status::Failed, None).await, "set_status failed without a message");
    let (status, count, _) = now("states after a failure").await;
    assert_eq!((status, count), (Status::Failed, start + 1), "a failure without a message counts one error");

    ok(store.set_status(p, Partition::WHOLE, Status::Running, None).await, "set_status running");
    let (status, count, _) = now("states after running again").await;
    // A running partition with nothing left to read may be reported caught up.
    assert!(matches!(status, Status::Running | Status::CaughtUp), "the partition runs again: {status:?}");
    assert_eq!(count, start + 1, "running again counts no error");

    ok(store.set_status(p, Partition::WHOLE, Status::Failed, Some("disk full")).await, "set_status with a message");
    let (status, count, error) = now("states after a failure with a message").await;
    assert_eq!(
        (status, count, error.as_deref()),
        (Status::Failed, start + 2, Some("disk full")),
        "a failure with a message counts one error and keeps the message"
    );
}

// ---------------------------------------------------------------------------------------
// The dead-letter queue

/// A letter must belong to a registered projection; the refusal names the projection.
pub async fn a_dead_letter_for_an_unknown_projection_is_refused_by_name<S: ContractStore + DeadLetterQueue>(store: &S) {
    ok(store.register("contract-letters", &PROBE, &EventFilter::all(), 1).await, "register");
    let out = append(store, id(43, 1), "thing", ExpectedVersion::Exact(0), vec![NewEvent::new("E", json!({}))]).await;
    let event = ok(store.read_aggregate(out.aggregate_id, ReadBound::All).await, "read").remove(0);
    let letter = DeadLetter::new("nope", &event, "x", ErrorClass::Permanent, 1, DateTime::<Utc>::MIN_UTC);
    let unknown = store.send(&[letter]).await;
    assert!(
        matches!(unknown, Err(StoreError::UnknownProjection(ref p)) if p == "nope"),
        "a letter for the unregistered projection \"nope\": want UnknownProjection(\"nope\"), got {unknown:?}"
    );
    let all = DeadLetterFilter { include_closed: true, ..DeadLetterFilter::default() };
    assert!(ok(store.list(&all).await, "list").is_empty(), "a refused letter is not stored");
}
