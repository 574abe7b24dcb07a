//! Failure handling particular to the embedded store: the attempt history across a
//! restart, a repair holding the file's connection, reserved table names and the upgrade
//! of an older file. What every store does (dead-lettering commits, parked sets and their
//! epoch, the queue, repair sessions, a poison event parking its aggregate) is checked by
//! the shared failure suite in `tests/` (`failures_embedded`).

use std::sync::mpsc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use projector::{
    AppendRequest, BatchCommit, Checkpoint, Column, ColumnType, DeadLetter, DeadLetterFilter, DeadLetterQueue,
    DeadLetterStatus, DomainEvent, ErrorClass, EventFilter, EventStore, ExpectedVersion, Lease, NewEvent,
    OperatorAction, Partition, ProjectionStore, ReadBound, RepairSession, Repairs, RowChanges, StoreError, TableSchema,
    Value,
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

/// The attempt history is in the file: a restart keeps the retry budget spent.
#[tokio::test]
async fn the_attempt_history_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("failures.db");
    let store = EmbeddedStore::open(&path).unwrap();
    store.register("p", &COUNTS, &EventFilter::all(), 1).await.unwrap();
    let events = append(&store, aggregate(1), 1).await;
    let first = store.record_failure("p", &events[0], "timeout 1").await.unwrap();
    store.record_failure("p", &events[0], "timeout 2").await.unwrap();
    drop(store);

    let store = EmbeddedStore::open(&path).unwrap();
    let third = store.record_failure("p", &events[0], "timeout 3").await.unwrap();
    assert_eq!((third.attempts, third.first_failed_at), (3, first.first_failed_at));
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
