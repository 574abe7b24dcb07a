//! Contract checks for behaviour on which the stores have differed: reused idempotency
//! keys.
//!
//! `contract_tests!` runs each of them as a test of its own, next to the conformance
//! suite, on a fresh store.

use projector::{
    AppendOutcome, AppendRequest, EventFilter, ExpectedVersion, NewEvent, Partition, ReadBound, StoreError,
};
use serde_json::json;
use uuid::Uuid;

use crate::contract::{event_ids, id, ok, read_everything, request, settle, ContractStore};

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
