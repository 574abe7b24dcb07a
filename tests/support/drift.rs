//! Contract checks for behaviour on which the stores have differed: reused idempotency
//! keys, the applied-event count after a rebuild, the error count of a failed status, a
//! dead letter for an unregistered projection, and the input every store must refuse
//! with `InvalidInput` rather than store, reinterpret or report as something else.
//!
//! `contract_tests!` runs each of them as a test of its own, next to the conformance
//! suite, on a fresh store.

use chrono::{DateTime, Utc};
use projector::store::rules::RESERVED_TABLES;
use projector::{
    AppendOutcome, AppendRequest, BatchCommit, Checkpoint, DeadLetter, DeadLetterFilter, DeadLetterQueue, ErrorClass,
    EventFilter, ExpectedVersion, Lease, NewEvent, Partition, ProjectionHandler, ProjectionState, ReadBound, Rebuild,
    RowChanges, Status, StoreError, TableSchema, Value,
};
use serde_json::json;
use uuid::Uuid;

use crate::contract::{
    append, claim, event_ids, id, key, ok, probe_row, probe_rows, read_everything, request, run_live, settle, state,
    states_of, ContractStore, PROBE, PROBE_LAG, TTL,
};
use crate::ledger::Ledger;

fn keyed(aggregate: Uuid, key: &str, expected: ExpectedVersion, events: Vec<NewEvent>) -> AppendRequest {
    AppendRequest { idempotency_key: Some(key.to_owned()), ..request(aggregate, "thing", expected, events) }
}

/// The stored events of one aggregate.
async fn events_of<S: ContractStore>(store: &S, aggregate: Uuid) -> Vec<Uuid> {
    event_ids(&ok(store.read_aggregate(aggregate, ReadBound::All).await, "read_aggregate"))
}

fn refused_as_invalid<T: std::fmt::Debug>(result: Result<T, StoreError>, what: &str) {
    match result {
        Err(StoreError::InvalidInput(_)) => {}
        other => panic!("{what}: want InvalidInput, got {other:?}"),
    }
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

// ---------------------------------------------------------------------------------------
// Input every store refuses

/// Registers a probe table under each name; returns the names not refused with
/// `InvalidInput`, and what came instead.
async fn unrefused_table_names<S: ContractStore>(store: &S, names: &[&'static str]) -> Vec<String> {
    let mut unrefused = Vec::new();
    for (n, name) in names.iter().enumerate() {
        let table: &'static TableSchema = Box::leak(Box::new(TableSchema { name, ..PROBE }));
        let result = store.register(&format!("contract-table-{n}"), table, &EventFilter::all(), 1).await;
        if !matches!(result, Err(StoreError::InvalidInput(_))) {
            unrefused.push(format!("{name:?}: {result:?}"));
        }
    }
    unrefused
}

/// A read model may not take the name of one of the store's own tables.
pub async fn a_reserved_read_model_table_name_is_refused<S: ContractStore>(store: &S) {
    let out = append(store, id(44, 1), "thing", ExpectedVersion::Exact(0), vec![NewEvent::new("E", json!({}))]).await;
    let unrefused = unrefused_table_names(store, RESERVED_TABLES).await;
    assert!(unrefused.is_empty(), "reserved table names must be refused with InvalidInput at register: {unrefused:#?}");
    assert_eq!(events_of(store, out.aggregate_id).await, out.event_ids, "the store's events are untouched");
}

/// A read-model table name is a plain identifier: no spaces, no punctuation, not empty.
pub async fn a_read_model_table_name_that_is_not_a_plain_identifier_is_refused<S: ContractStore>(store: &S) {
    let unrefused = unrefused_table_names(store, &["bad name", "x;drop", ""]).await;
    assert!(unrefused.is_empty(), "table names that are not plain identifiers must be refused: {unrefused:#?}");
}

/// A projection has a name.
pub async fn an_empty_projection_name_is_refused<S: ContractStore>(store: &S) {
    refused_as_invalid(store.register("", &PROBE, &EventFilter::all(), 1).await, "register with an empty name");
    let states = ok(store.states().await, "states");
    assert!(states.iter().all(|s| !s.projection.is_empty()), "no partition of a nameless projection: {states:#?}");
}

/// A lease has an owner; a claim without one takes nothing.
pub async fn a_claim_without_an_owner_is_refused<S: ContractStore>(store: &S) {
    let p = "contract-owner";
    ok(store.register(p, &PROBE, &EventFilter::all(), 1).await, "register");
    refused_as_invalid(store.claim(p, Partition::WHOLE, "", TTL).await, "claim with an empty owner");
    assert!(claim(store, p, Partition::WHOLE, "alpha", TTL).await.is_some(), "the partition is still free");
}

/// Two events, readable, and a projection on [`PROBE`] claimed by "alpha" at the start.
async fn claimed_probe<S: ContractStore>(store: &S, check: u64, projection: &str) -> (Vec<Checkpoint>, Lease) {
    let out = append(
        store,
        id(check, 1),
        "thing",
        ExpectedVersion::Exact(0),
        vec![NewEvent::new("E", json!({})), NewEvent::new("F", json!({}))],
    )
    .await;
    settle(store, &out).await;
    let events = ok(store.read_aggregate(out.aggregate_id, ReadBound::All).await, "read");
    ok(store.register(projection, &PROBE, &EventFilter::all(), 1).await, "register");
    let lease = claim(store, projection, Partition::WHOLE, "alpha", TTL).await.expect("claim");
    (events.iter().map(|e| e.checkpoint()).collect(), lease)
}

fn probe_commit<'a>(
    lease: &'a Lease,
    table: &'static TableSchema,
    from: Checkpoint,
    to: Checkpoint,
    upserts: Vec<Vec<Value>>,
) -> BatchCommit<'a> {
    BatchCommit {
        lease,
        table,
        from,
        to,
        changes: RowChanges { upserts, deletes: vec![], inserts_only: false, snapshots: Vec::new() },
        events_applied: 1,
        last_event_at: None,
        lease_ttl: TTL,
        dead_letters: Vec::new(),
        audit: Vec::new(),
    }
}

/// A checkpoint never moves backwards: a commit whose `to` is before its `from` is
/// refused and writes nothing.
pub async fn a_commit_whose_end_is_before_its_start_is_refused<S: ContractStore>(store: &S) {
    let p = "contract-backwards";
    let (cp, lease) = claimed_probe(store, 45, p).await;
    ok(
        store.commit(probe_commit(&lease, &PROBE, Checkpoint::START, cp[1], vec![])).await,
        "commit to the second event",
    );
    let row = probe_row("back", Some("backwards"), 1, true, 1);
    refused_as_invalid(
        store.commit(probe_commit(&lease, &PROBE, cp[1], cp[0], vec![row])).await,
        "a commit from the second event back to the first",
    );
    assert!(probe_rows(store, &["back"]).await.is_empty(), "a refused commit writes no rows");
    let s = state(&ok(store.states().await, "states"), p, 0).clone();
    assert_eq!((s.checkpoint, s.events_applied), (cp[1], 1), "a refused commit moves and counts nothing");
}

/// A projection's batches write to its own read model only.
pub async fn a_commit_to_another_table_than_the_projections_is_refused<S: ContractStore>(store: &S) {
    let p = "contract-own-table";
    let (cp, lease) = claimed_probe(store, 46, p).await;
    ok(store.register("contract-other-table", &PROBE_LAG, &EventFilter::all(), 1).await, "register the other table");
    let row = probe_row("elsewhere", None, 1, false, 1);
    refused_as_invalid(
        store.commit(probe_commit(&lease, &PROBE_LAG, Checkpoint::START, cp[0], vec![row])).await,
        "a commit naming another projection's table",
    );
    let elsewhere = ok(store.load_rows(&PROBE_LAG, &[key("elsewhere")]).await, "load_rows of the other table");
    assert!(elsewhere.is_empty(), "a refused commit writes nothing to the other table: {elsewhere:?}");
    let s = state(&ok(store.states().await, "states"), p, 0).clone();
    assert_eq!((s.checkpoint, s.events_applied), (Checkpoint::START, 0), "a refused commit moves nothing");
}

/// No aggregate is at a negative version: expecting one is a caller's mistake, not a
/// version conflict.
pub async fn an_expected_version_below_zero_is_refused<S: ContractStore>(store: &S) {
    let (new, existing) = (id(47, 1), id(47, 2));
    let out = append(store, existing, "thing", ExpectedVersion::Exact(0), vec![NewEvent::new("E", json!({}))]).await;
    for (aggregate, what) in [(new, "a new aggregate"), (existing, "an aggregate at version 1")] {
        for expected in [-1, -5] {
            refused_as_invalid(
                store
                    .append(request(
                        aggregate,
                        "thing",
                        ExpectedVersion::Exact(expected),
                        vec![NewEvent::new("E", json!({}))],
                    ))
                    .await,
                &format!("append at expected version {expected} to {what}"),
            );
        }
    }
    assert!(events_of(store, new).await.is_empty(), "nothing was written to the new aggregate");
    assert_eq!(events_of(store, existing).await, out.event_ids, "nothing was written to the existing aggregate");
}

/// An append appends something.
pub async fn an_append_without_events_is_refused<S: ContractStore>(store: &S) {
    let (new, existing) = (id(48, 1), id(48, 2));
    let out = append(store, existing, "thing", ExpectedVersion::Exact(0), vec![NewEvent::new("E", json!({}))]).await;
    for (aggregate, expected, what) in [
        (new, ExpectedVersion::Exact(0), "a new aggregate at version 0"),
        (new, ExpectedVersion::Any, "a new aggregate at any version"),
        (existing, ExpectedVersion::Exact(1), "an aggregate at version 1"),
    ] {
        refused_as_invalid(
            store.append(request(aggregate, "thing", expected, vec![])).await,
            &format!("an empty append to {what}"),
        );
    }
    assert!(events_of(store, new).await.is_empty(), "nothing was written to the new aggregate");
    assert_eq!(events_of(store, existing).await, out.event_ids, "nothing was written to the existing aggregate");
}

/// `event_data` is a JSON object: arrays, scalars and `null` are refused (not stored as
/// `{}` or decoded by position later), as are empty type names, nil ids and payloads
/// over the size limit — each naming what is wrong, and writing nothing.
pub async fn an_append_that_is_not_a_well_formed_event_is_refused<S: ContractStore>(store: &S) {
    let a = id(49, 1);
    let one = |event: NewEvent| request(a, "thing", ExpectedVersion::Any, vec![event]);
    let cases: Vec<(&str, AppendRequest)> = vec![
        ("a null payload", one(NewEvent::new("E", json!(null)))),
        ("an array payload", one(NewEvent::new("E", json!([1, 2])))),
        ("a string payload", one(NewEvent::new("E", json!("text")))),
        ("a number payload", one(NewEvent::new("E", json!(7)))),
        ("an empty event type", one(NewEvent::new("", json!({})))),
        ("a payload over 1 MiB", one(NewEvent::new("E", json!({ "blob": "x".repeat(1 << 20) })))),
        ("an empty aggregate type", request(a, "", ExpectedVersion::Any, vec![NewEvent::new("E", json!({}))])),
        (
            "the nil aggregate id",
            request(Uuid::nil(), "thing", ExpectedVersion::Any, vec![NewEvent::new("E", json!({}))]),
        ),
        ("a nil event id", one(NewEvent { event_id: Some(Uuid::nil()), ..NewEvent::new("E", json!({})) })),
    ];
    for (what, bad) in cases {
        refused_as_invalid(store.append(bad).await, what);
    }
    assert!(events_of(store, a).await.is_empty(), "nothing was written");
    assert!(events_of(store, Uuid::nil()).await.is_empty(), "nothing was written for the nil id");
}

/// The partition count lives in the store: registering with another count is refused,
/// naming both counts and `projector scale`, and changes nothing; `repartition` changes
/// it, and `partition_count` says what it is.
pub async fn registering_with_another_partition_count_is_refused<S: ContractStore>(store: &S) {
    let p = "contract-partition-count";
    assert_eq!(ok(store.partition_count(p).await, "partition_count"), None, "not registered yet");
    ok(store.register(p, &PROBE, &EventFilter::all(), 2).await, "register with 2 partitions");
    assert_eq!(ok(store.partition_count(p).await, "partition_count"), Some(2));
    match store.register(p, &PROBE, &EventFilter::all(), 3).await {
        Err(StoreError::InvalidInput(m)) => {
            for needle in ["the store has 2", "`partitions: 3`", "projector scale contract-partition-count 3"] {
                assert!(m.contains(needle), "the refusal names {needle:?}: {m}");
            }
        }
        other => panic!("register with 3 partitions over 2: want InvalidInput, got {other:?}"),
    }
    let states = ok(store.states().await, "states");
    assert_eq!(states.iter().filter(|s| s.projection == p && s.partitions == 2).count(), 2, "nothing changed");
    ok(store.register(p, &PROBE, &EventFilter::all(), 2).await, "registering again with the stored count");
    ok(store.repartition(p, 3).await, "repartition 2 -> 3");
    assert_eq!(ok(store.partition_count(p).await, "partition_count"), Some(3));
    ok(store.register(p, &PROBE, &EventFilter::all(), 3).await, "register with the new count");
    match store.repartition("contract-no-such-projection", 2).await {
        Err(StoreError::UnknownProjection(name)) => assert_eq!(name, "contract-no-such-projection"),
        other => panic!("repartition of an unknown projection: want UnknownProjection, got {other:?}"),
    }
}
