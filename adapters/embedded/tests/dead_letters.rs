//! Failure handling in the embedded store: dead-lettering commits, parked sets and their
//! epoch, the attempt history, the queue and repair sessions. The cross-store behaviour
//! (a poison event parks its aggregate, `dlq retry` applies it) is in the shared suite.

use std::sync::mpsc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use projector::{
    AppendRequest, BatchCommit, Checkpoint, Column, ColumnType, DeadLetter, DeadLetterFilter, DeadLetterQueue,
    DeadLetterStatus, DomainEvent, ErrorClass, EventFilter, EventStore, ExpectedVersion, Lease, NewEvent,
    OperatorAction, Parked, Partition, ProjectionStore, ReadBound, RepairSession, Repairs, RowChanges, StoreError,
    TableSchema, Value,
};
use projector_embedded::{EmbeddedStore, MIGRATIONS};
use serde_json::json;
use uuid::Uuid;

const COUNTS: TableSchema = TableSchema {
    name: "dl_counts",
    key: &[Column::new("id", ColumnType::Uuid)],
    columns: &[Column::new("n", ColumnType::BigInt)],
    version_column: None,
};

const OTHER: TableSchema = TableSchema { name: "dl_other", ..COUNTS };

const TTL: Duration = Duration::from_secs(30);

/// `Uuid::from_u128(n)` lands in partition `n % count` (the bucket is the low 32 bits).
fn aggregate(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

async fn append(store: &EmbeddedStore, aggregate_id: Uuid, n: usize) -> Vec<DomainEvent> {
    store
        .append(AppendRequest {
            aggregate_id,
            aggregate_type: "thing".into(),
            expected_version: ExpectedVersion::Any,
            events: (0..n).map(|i| NewEvent::new("Ticked", json!({ "i": i }))).collect(),
            idempotency_key: None,
        })
        .await
        .unwrap();
    store.read_aggregate(aggregate_id, ReadBound::All).await.unwrap()
}

async fn setup(partitions: u32) -> EmbeddedStore {
    let store = EmbeddedStore::open_in_memory().unwrap();
    store.register("p", &COUNTS, &EventFilter::all(), partitions).await.unwrap();
    store
}

async fn claim(store: &EmbeddedStore, partition: Partition) -> Lease {
    store.claim("p", partition, "runner", TTL).await.unwrap().expect("the partition is free")
}

fn letter(projection: &str, event: &DomainEvent, error: &str) -> DeadLetter {
    DeadLetter::new(projection, event, error, ErrorClass::Permanent, 1, DateTime::<Utc>::MIN_UTC)
}

fn row(id: Uuid, n: i64) -> Vec<Value> {
    vec![Value::Uuid(id), Value::BigInt(n)]
}

fn commit<'a>(
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
        changes: RowChanges { upserts, deletes: vec![], inserts_only: false },
        events_applied: 1,
        last_event_at: None,
        lease_ttl: TTL,
        dead_letters,
    }
}

fn action(id: i64, what: &str, outcome: &str) -> OperatorAction {
    OperatorAction {
        dead_letter_id: id,
        actor: "ada".into(),
        action: what.into(),
        at: DateTime::<Utc>::MIN_UTC,
        outcome: outcome.into(),
    }
}

fn open_letters() -> DeadLetterFilter {
    DeadLetterFilter::default()
}

async fn load(store: &EmbeddedStore, id: Uuid) -> Vec<Vec<Value>> {
    store.load_rows(&COUNTS, &[vec![Value::Uuid(id)]]).await.unwrap()
}

#[tokio::test]
async fn a_commit_with_dead_letters_parks_their_aggregates_and_moves_the_epoch() {
    let store = setup(1).await;
    let a = aggregate(1);
    let b = aggregate(2);
    let a_events = append(&store, a, 3).await;
    let b_events = append(&store, b, 1).await;
    let lease = claim(&store, Partition::WHOLE).await;
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

    let renewed = claim(&store, Partition::WHOLE).await;
    assert_eq!(renewed.checkpoint, to);
    assert_eq!(renewed.parked.epoch, 1, "parking moved the epoch");
    assert_eq!(
        renewed.parked.by_aggregate.values().copied().collect::<Vec<_>>(),
        vec![Parked { aggregate_id: a, from_version: 2, dead_letter_id: stored.id }]
    );
    assert!(renewed.parked.holds(&a_events[2]) && !renewed.parked.holds(&a_events[0]));
    assert_eq!(load(&store, b).await, vec![row(b, 1)]);

    // A lease that still has the old epoch (a runner that missed the park) writes nothing.
    let c = aggregate(3);
    let c_events = append(&store, c, 1).await;
    let stale = Lease { checkpoint: to, ..lease.clone() };
    let result = store
        .commit(commit(&stale, c_events[0].checkpoint(), vec![row(c, 1)], vec![letter("p", &c_events[0], "x")]))
        .await;
    assert!(matches!(result, Err(StoreError::CheckpointMoved { partition: 0, .. })), "{result:?}");
    assert!(load(&store, c).await.is_empty(), "no rows");
    assert_eq!(store.list(&open_letters()).await.unwrap().len(), 1, "no letters");
    let again = claim(&store, Partition::WHOLE).await;
    assert_eq!((again.checkpoint, again.parked.epoch), (to, 1), "neither checkpoint nor epoch moved");
    assert_eq!(again.parked.by_aggregate.len(), 1, "nothing parked");

    // A commit without letters keeps the epoch; a lower version takes the parking over,
    // a higher one leaves it.
    let to = c_events[0].checkpoint();
    store.commit(commit(&again, to, vec![row(c, 1)], vec![])).await.unwrap();
    let lease = claim(&store, Partition::WHOLE).await;
    assert_eq!(lease.parked.epoch, 1);
    store.commit(commit(&lease, to, vec![], vec![letter("p", &a_events[0], "earlier")])).await.unwrap();
    let lease = claim(&store, Partition::WHOLE).await;
    let earlier = store.list(&open_letters()).await.unwrap().into_iter().find(|l| l.version == 1).unwrap();
    assert_eq!(lease.parked.epoch, 2);
    assert_eq!(lease.parked.by_aggregate[&a], Parked { aggregate_id: a, from_version: 1, dead_letter_id: earlier.id });
    store.commit(commit(&lease, to, vec![], vec![letter("p", &a_events[2], "later")])).await.unwrap();
    let lease = claim(&store, Partition::WHOLE).await;
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
    append(&store, a, 2).await;
    let state = store.states().await.unwrap().remove(0);
    assert_eq!((state.parked_events, state.lag_events), (3, 2));
}

#[tokio::test]
async fn claim_returns_the_parked_set_of_its_partition_only() {
    let store = setup(2).await;
    let even = aggregate(2);
    let odd = aggregate(3);
    let even_events = append(&store, even, 2).await;
    let odd_events = append(&store, odd, 2).await;
    let p0 = Partition { index: 0, count: 2 };
    let p1 = Partition { index: 1, count: 2 };
    let lease0 = claim(&store, p0).await;
    let lease1 = claim(&store, p1).await;

    store
        .commit(commit(&lease0, even_events[1].checkpoint(), vec![], vec![letter("p", &even_events[0], "e")]))
        .await
        .unwrap();
    let lease0 = claim(&store, p0).await;
    assert_eq!(lease0.parked.by_aggregate.keys().copied().collect::<Vec<_>>(), vec![even]);
    assert_eq!(lease0.parked.epoch, 1);
    let lease1 = Lease { parked: claim(&store, p1).await.parked, ..lease1 };
    assert!(lease1.parked.by_aggregate.is_empty(), "{:?}", lease1.parked);
    assert_eq!(lease1.parked.epoch, 0, "epochs are per partition");

    store
        .commit(commit(&lease1, odd_events[1].checkpoint(), vec![], vec![letter("p", &odd_events[1], "o")]))
        .await
        .unwrap();
    let lease0 = claim(&store, p0).await;
    let lease1 = claim(&store, p1).await;
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

#[tokio::test]
async fn record_failure_counts_attempts_and_keeps_the_first_failure() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("failures.db");
    let store = EmbeddedStore::open(&path).unwrap();
    store.register("p", &COUNTS, &EventFilter::all(), 1).await.unwrap();
    let events = append(&store, aggregate(1), 2).await;

    let first = store.record_failure("p", &events[0], "timeout 1").await.unwrap();
    assert_eq!(first.attempts, 1);
    let second = store.record_failure("p", &events[0], "timeout 2").await.unwrap();
    assert_eq!((second.attempts, second.first_failed_at), (2, first.first_failed_at));
    let other_event = store.record_failure("p", &events[1], "timeout").await.unwrap();
    assert_eq!(other_event.attempts, 1, "counted per event");
    let other_projection = store.record_failure("q", &events[0], "timeout").await.unwrap();
    assert_eq!(other_projection.attempts, 1, "counted per projection");
    drop(store);

    // Stored: a restart keeps the budget spent.
    let store = EmbeddedStore::open(&path).unwrap();
    let third = store.record_failure("p", &events[0], "timeout 3").await.unwrap();
    assert_eq!((third.attempts, third.first_failed_at), (3, first.first_failed_at));

    // A dead letter's failure times come from the history.
    let lease = claim(&store, Partition::WHOLE).await;
    let dead = DeadLetter::new("p", &events[0], "timeout 4", ErrorClass::Transient, 4, DateTime::<Utc>::MIN_UTC);
    store.commit(commit(&lease, events[0].checkpoint(), vec![], vec![dead])).await.unwrap();
    let stored = store.list(&open_letters()).await.unwrap().remove(0);
    assert_eq!((stored.attempts, stored.error_class.as_str()), (4, "transient"));
    assert_eq!(stored.first_failed_at, first.first_failed_at);
    assert!(stored.last_failed_at >= first.first_failed_at);
}

#[tokio::test]
async fn the_queue_stores_lists_and_resolves_letters() {
    let store = setup(1).await;
    store.register("q", &OTHER, &EventFilter::all(), 1).await.unwrap();
    let a = append(&store, aggregate(1), 1).await;
    let b = append(&store, aggregate(2), 1).await;

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

    let unknown = store.send(&[letter("nope", &a[0], "x")]).await;
    assert!(matches!(unknown, Err(StoreError::UnknownProjection(ref p)) if p == "nope"), "{unknown:?}");
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
async fn parked_setup() -> (EmbeddedStore, Uuid, Vec<DomainEvent>, DeadLetter, Lease) {
    let store = setup(2).await;
    let even = aggregate(2);
    let odd = aggregate(3);
    let even_events = append(&store, even, 1).await;
    let odd_events = append(&store, odd, 3).await;
    let p0 = Partition { index: 0, count: 2 };
    let p1 = Partition { index: 1, count: 2 };
    let lease0 = claim(&store, p0).await;
    store.commit(commit(&lease0, even_events[0].checkpoint(), vec![row(even, 1)], vec![])).await.unwrap();
    let lease1 = claim(&store, p1).await;
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
    let lease1 = claim(&store, p1).await;
    (store, odd, odd_events, stored, lease1)
}

#[tokio::test]
async fn begin_repair_finds_the_letter_its_parking_and_its_partition() {
    let (store, odd, odd_events, stored, _) = parked_setup().await;

    for (projection, id) in [("p", 9_999), ("q", stored.id)] {
        match store.begin_repair(projection, id).await {
            Err(StoreError::UnknownDeadLetter { projection: p, id: i }) => {
                assert_eq!((p.as_str(), i), (projection, id))
            }
            Err(other) => panic!("want UnknownDeadLetter, got {other:?}"),
            Ok(session) => panic!("want UnknownDeadLetter, got {session:?}"),
        }
    }
    // A failed begin leaves nothing open.
    assert_eq!(store.states().await.unwrap().len(), 2);

    let session = store.begin_repair("p", stored.id).await.unwrap();
    assert_eq!(session.dead_letter(), &stored);
    assert_eq!(session.parked(), Some(Parked { aggregate_id: odd, from_version: 2, dead_letter_id: stored.id }));
    assert_eq!(session.checkpoint(), odd_events[2].checkpoint(), "the checkpoint of the aggregate's partition");
}

#[tokio::test]
async fn a_repair_session_commits_everything_or_nothing() {
    let (store, odd, odd_events, stored, lease1) = parked_setup().await;
    assert_eq!(lease1.parked.epoch, 1);

    // Dropped: rolled back.
    {
        let mut session = store.begin_repair("p", stored.id).await.unwrap();
        let events = session.read_aggregate(odd, ReadBound::Versions { after: 1, upto: i64::MAX }).await.unwrap();
        assert_eq!(events.iter().map(|e| e.version).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(session.load_rows(&COUNTS, &[vec![Value::Uuid(odd)]]).await.unwrap(), vec![row(odd, 1)]);
        session
            .write_rows(&COUNTS, RowChanges { upserts: vec![row(odd, 3)], deletes: vec![], inserts_only: false })
            .await
            .unwrap();
        session.failed_again("still broken").await.unwrap();
        session.set_parking(None).await.unwrap();
        assert_eq!(session.parked(), None);
        session.close(DeadLetterStatus::Resolved, &action(stored.id, "retry", "applied 2 event(s)")).await.unwrap();
    }
    assert_eq!(store.get(stored.id).await.unwrap().unwrap(), stored, "the letter is as it was");
    assert!(store.actions(stored.id).await.unwrap().is_empty());
    assert_eq!(load(&store, odd).await, vec![row(odd, 1)]);
    let lease = claim(&store, lease1.partition).await;
    assert_eq!(lease.parked, lease1.parked, "parking and epoch are as they were");

    // A session that stops: the letter stays open and a later event is parked behind a
    // new letter; the runner's stale lease cannot commit over it.
    let mut session = store.begin_repair("p", stored.id).await.unwrap();
    session
        .write_rows(&COUNTS, RowChanges { upserts: vec![row(odd, 2)], deletes: vec![], inserts_only: false })
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
    assert_eq!(load(&store, odd).await, vec![row(odd, 2)]);
    let stale = store.commit(commit(&lease1, lease1.checkpoint, vec![], vec![])).await;
    assert!(matches!(stale, Err(StoreError::CheckpointMoved { partition: 1, .. })), "{stale:?}");
    let lease = claim(&store, lease1.partition).await;
    assert_eq!(lease.parked.epoch, 2);
    assert_eq!(lease.parked.by_aggregate[&odd], Parked { aggregate_id: odd, from_version: 3, dead_letter_id: new_id });
    let other = claim(&store, Partition { index: 0, count: 2 }).await;
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
    let lease = claim(&store, lease1.partition).await;
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

/// The session holds the connection: the partition's runner waits for it, then sees the
/// parked set the repair left.
#[tokio::test]
async fn a_runner_waits_for_an_open_repair() {
    let (store, odd, _, stored, lease1) = parked_setup().await;
    let mut session = store.begin_repair("p", stored.id).await.unwrap();
    session.set_parking(None).await.unwrap();

    let (done, claimed) = mpsc::channel();
    let runner = store.clone();
    let partition = lease1.partition;
    let thread = std::thread::spawn(move || {
        let lease = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(async { runner.claim("p", partition, "runner", TTL).await.unwrap().unwrap() });
        done.send(lease).unwrap();
    });
    assert!(claimed.recv_timeout(Duration::from_millis(200)).is_err(), "the claim waits for the repair");
    session.close(DeadLetterStatus::Resolved, &action(stored.id, "retry", "done")).await.unwrap();
    session.commit().await.unwrap();
    let lease = claimed.recv_timeout(Duration::from_secs(10)).expect("the claim goes on after the commit");
    thread.join().unwrap();
    assert!(!lease.parked.by_aggregate.contains_key(&odd));
    assert_eq!(lease.parked.epoch, lease1.parked.epoch + 1);
}

#[tokio::test]
async fn the_failure_tables_are_reserved_and_a_version_3_file_upgrades() {
    let store = EmbeddedStore::open_in_memory().unwrap();
    for name in ["dead_letters", "parked_aggregates", "event_failures", "dead_letter_actions"] {
        let table: &'static TableSchema = Box::leak(Box::new(TableSchema { name, ..COUNTS }));
        let result = store.register("sneaky", table, &EventFilter::all(), 1).await;
        assert!(matches!(result, Err(StoreError::InvalidInput(_))), "{name}: {result:?}");
    }

    // A file at schema version 3 with a projection in it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v3.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)",
        )
        .unwrap();
        for m in MIGRATIONS.iter().filter(|m| m.version <= 3) {
            conn.execute_batch(m.sql).unwrap();
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, 'then')",
                rusqlite::params![m.version, m.name],
            )
            .unwrap();
        }
        conn.execute_batch(
            "INSERT INTO projections (name, table_name, filter, partitions) VALUES ('p', 'dl_counts', '{}', 1);
             INSERT INTO projection_checkpoints (projection, partition, partitions, position, updated_at)
             VALUES ('p', 0, 1, 7, '2026-03-01T00:00:00.000000Z');",
        )
        .unwrap();
    }
    let store = EmbeddedStore::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), MIGRATIONS.last().unwrap().version);
    let lease = claim(&store, Partition::WHOLE).await;
    assert_eq!(lease.checkpoint.position, 7);
    assert_eq!(lease.parked, Default::default());
    let state = store.states().await.unwrap().remove(0);
    assert_eq!((state.dead_letters, state.parked_aggregates, state.parked_events), (0, 0, 0));
}
