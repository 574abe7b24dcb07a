//! The store's answers to claims, commits, statuses and rebuilds that the core's rules
//! decide.

use std::time::Duration;

use chrono::Utc;
use projector::{
    BatchCommit, Checkpoint, DeadLetter, DeadLetterFilter, DeadLetterQueue, ErrorClass, EventFilter, EventStore, Lease,
    Partition, ProjectionState, ProjectionStore, RebuildSession, Rebuilds, RowChanges, Status, StoreError, TableSchema,
    Value,
};
use projector_postgres::PgStore;

use crate::{append, id, request, PROBE};
use projector_tests::pg::TestDb;

const TTL: Duration = Duration::from_secs(30);
const OTHER: TableSchema = TableSchema { name: "probe_other", ..PROBE };

async fn states(store: &PgStore, projection: &str) -> Vec<ProjectionState> {
    store.states().await.expect("states").into_iter().filter(|s| s.projection == projection).collect()
}

fn invalid<T: std::fmt::Debug>(result: Result<T, StoreError>, what: &str) {
    assert!(matches!(result, Err(StoreError::InvalidInput(_))), "{what}: want InvalidInput, got {result:?}");
}

#[tokio::test]
async fn claims_name_a_registered_partition_and_its_count() {
    let db = TestDb::new().await;
    let store = db.store().await;
    store.register("p", &PROBE, &EventFilter::all(), 2).await.expect("register");
    match store.claim("nope", Partition::WHOLE, "a", TTL).await {
        Err(StoreError::UnknownProjection(name)) => assert_eq!(name, "nope"),
        other => panic!("unknown projection: {other:?}"),
    }
    invalid(store.claim("p", Partition { index: 0, count: 4 }, "a", TTL).await, "another count");
    invalid(store.claim("p", Partition { index: 2, count: 2 }, "a", TTL).await, "no such partition");
    invalid(store.claim("p", Partition { index: 0, count: 2 }, "", TTL).await, "no owner");
    assert!(states(&store, "p").await.iter().all(|s| s.lease_owner.is_none()), "a refused claim leases nothing");
    let lease = store.claim("p", Partition { index: 1, count: 2 }, "a", TTL).await.expect("claim");
    assert!(lease.is_some());
    assert_eq!(store.claim("p", Partition { index: 1, count: 2 }, "b", TTL).await.expect("held"), None);
}

#[tokio::test]
async fn registration_checks_names_and_counts() {
    let db = TestDb::new().await;
    let store = db.store().await;
    invalid(store.register("Bad Name", &PROBE, &EventFilter::all(), 1).await, "projection name");
    invalid(store.register("p", &TableSchema { name: "events", ..PROBE }, &EventFilter::all(), 1).await, "table");
    invalid(store.register("p", &PROBE, &EventFilter::all(), 0).await, "no partitions");
    assert!(states(&store, "p").await.is_empty(), "nothing registered");
}

async fn commit(store: &PgStore, lease: &Lease, table: &'static TableSchema, to: Checkpoint) -> Result<(), StoreError> {
    store
        .commit(BatchCommit {
            lease,
            table,
            from: lease.checkpoint,
            to,
            changes: RowChanges {
                upserts: vec![vec![Value::Text("k".into()), Value::BigInt(1)]],
                deletes: vec![],
                inserts_only: false,
                snapshots: Vec::new(),
            },
            events_applied: 1,
            last_event_at: None,
            lease_ttl: TTL,
            dead_letters: Vec::new(),
            audit: Vec::new(),
        })
        .await
}

#[tokio::test]
async fn a_commit_writes_only_the_registered_table_and_moves_forward() {
    let db = TestDb::new().await;
    let store = db.store().await;
    store.register("p", &PROBE, &EventFilter::all(), 1).await.expect("register");
    store.register("q", &OTHER, &EventFilter::all(), 1).await.expect("register other");
    let lease = store.claim("p", Partition::WHOLE, "a", TTL).await.expect("claim").expect("free");
    let later = Checkpoint { transaction_id: 1, position: 1 };

    invalid(commit(&store, &lease, &OTHER, later).await, "another projection's table");
    let moved_back = Lease { checkpoint: later, ..lease.clone() };
    invalid(commit(&store, &moved_back, &PROBE, Checkpoint::START).await, "a checkpoint moving back");
    let key = vec![vec![Value::Text("k".into())]];
    assert!(store.load_rows(&OTHER, &key).await.expect("rows").is_empty(), "a refused commit writes nothing");
    assert_eq!(states(&store, "p").await[0].checkpoint, Checkpoint::START, "nor moves the checkpoint");

    commit(&store, &lease, &PROBE, later).await.expect("commit");
    assert_eq!(store.load_rows(&PROBE, &key).await.expect("rows").len(), 1);
    match commit(&store, &lease, &PROBE, later).await {
        Err(StoreError::CheckpointMoved { projection, partition: 0 }) => assert_eq!(projection, "p"),
        other => panic!("a stale commit: {other:?}"),
    }
}

#[tokio::test]
async fn statuses_count_failures_and_report_lag() {
    let db = TestDb::new().await;
    let store = db.store().await;
    store.register("p", &PROBE, &EventFilter::all(), 1).await.expect("register");
    store.set_status("p", Partition::WHOLE, Status::Failed, None).await.expect("failed");
    assert_eq!(states(&store, "p").await[0].error_count, 1, "a failure counts even without text");
    store.set_status("p", Partition::WHOLE, Status::Stopped, Some("why")).await.expect("stopped");
    assert_eq!(states(&store, "p").await[0].error_count, 2, "error text counts");

    store.set_status("p", Partition::WHOLE, Status::CaughtUp, None).await.expect("caught up");
    assert_eq!(states(&store, "p").await[0].status, Status::CaughtUp);
    append(&store, request(id(1), 0, &["A"], None)).await;
    let s = &states(&store, "p").await[0];
    assert_eq!((s.lag_events, s.status), (1, Status::Running), "a stored caught-up with lag reports running");
}

#[tokio::test]
async fn a_rebuild_counts_its_events_once() {
    let db = TestDb::new().await;
    let store = db.store().await;
    store.register("p", &PROBE, &EventFilter::all(), 3).await.expect("register");
    for _ in 0..2 {
        let mut session = store.begin_rebuild("p", &PROBE).await.expect("begin");
        session.clear_rows(None).await.expect("clear");
        session.finish(Checkpoint { transaction_id: 1, position: 5 }, 5, None).await.expect("finish");
    }
    let applied: Vec<i64> = states(&store, "p").await.iter().map(|s| s.events_applied).collect();
    assert_eq!(applied, [10, 0, 0], "each rebuild adds its count once, on partition 0");
}

#[tokio::test]
async fn letters_for_an_unregistered_projection_are_refused() {
    let db = TestDb::new().await;
    let store = db.store().await;
    append(&store, request(id(1), 0, &["A"], None)).await;
    let event = store.read_committed(0, &EventFilter::all(), 1).await.expect("read").remove(0);
    let letter = DeadLetter::new("nope", &event, "boom", ErrorClass::Permanent, 1, Utc::now());
    match store.send(&[letter]).await {
        Err(StoreError::UnknownProjection(name)) => assert_eq!(name, "nope"),
        other => panic!("want UnknownProjection, got {other:?}"),
    }
    let filter = DeadLetterFilter { include_closed: true, ..DeadLetterFilter::default() };
    assert!(store.list(&filter).await.expect("list").is_empty(), "nothing stored");
}
