//! A read-model table that is gone (or does not match the handler's schema) under a
//! checkpoint past the start: the projection waits for a rebuild instead of passing an
//! empty table off as caught up, and a full rebuild brings it back. Run by
//! `contract_tests!` on every store.

use projector::{
    Checkpoint, Column, ColumnType, DomainEvent, EventFilter, ExpectedVersion, HandlerError, NewEvent, Ordering,
    Partition, ProjectionHandler, ProjectionState, Rebuild, Status, StoreError, TableSchema, Value,
};
use serde_json::json;
use uuid::Uuid;

use crate::contract::{append, claim, id, ok, read_everything, run_live, settle, states_of, ContractStore, TTL};
use crate::ledger::{Applied, Ledger, SCHEMA as LEDGER};

/// The ledger's table under another name, as a handler that renamed its table has it.
const MOVED: TableSchema = TableSchema { name: "event_ledger_moved", ..LEDGER };

/// The moved table with a column the handler does not have (a table that does not match).
const WIDER: TableSchema = TableSchema {
    name: "event_ledger_moved",
    columns: &[Column::new("applied", ColumnType::BigInt).additive(), Column::new("extra", ColumnType::BigInt)],
    ..LEDGER
};

/// The ledger writing [`MOVED`].
struct Moved;

impl ProjectionHandler for Moved {
    type Key = Uuid;
    type Row = Applied;
    fn name(&self) -> &'static str {
        Ledger.name()
    }
    fn schema(&self) -> &'static TableSchema {
        &MOVED
    }
    fn ordering(&self) -> Ordering {
        Ledger.ordering()
    }
    fn key(&self, event: &DomainEvent) -> Option<Uuid> {
        Ledger.key(event)
    }
    fn handle(&self, row: &mut Option<Applied>, event: &DomainEvent) -> Result<(), HandlerError> {
        Ledger.handle(row, event)
    }
}

fn statuses(states: &[ProjectionState]) -> Vec<Status> {
    states_of(states, Ledger.name()).iter().map(|s| s.status).collect()
}

async fn assert_waits_for_a_rebuild<S: ContractStore>(store: &S, what: &str, needle: &str) {
    let states = ok(store.states().await, "states");
    assert_eq!(statuses(&states), vec![Status::NeedsRebuild; 2], "{what}: {states:#?}");
    for s in states_of(&states, Ledger.name()) {
        let error = s.last_error.unwrap_or_default();
        assert!(error.contains(needle) && error.contains("projector rebuild"), "{what}: the reason says so: {error}");
    }
    for index in 0..2 {
        let partition = Partition { index, count: 2 };
        assert!(claim(store, Ledger.name(), partition, "runner", TTL).await.is_none(), "{what}: {partition} unclaimed");
    }
}

pub async fn a_missing_read_model_table_needs_a_rebuild<S: ContractStore>(store: &S) {
    let mut last = None;
    for n in 0..8 {
        let events = (0..=n % 3).map(|i| NewEvent::new("Ticked", json!({ "i": i }))).collect();
        last = Some(append(store, id(60, n), "thing", ExpectedVersion::Exact(0), events).await);
    }
    settle(store, last.as_ref().expect("appended")).await;
    ok(store.register(Ledger.name(), &LEDGER, &Ledger.filter(), 2).await, "register");
    run_live(store, &Ledger, 2, 5).await;

    // The handler now writes a table that does not exist, under checkpoints past the start.
    ok(store.register(Moved.name(), &MOVED, &Moved.filter(), 2).await, "register with the moved table");
    assert_waits_for_a_rebuild(store, "a missing table", "event_ledger_moved is missing").await;
    let refused = store.repartition(Ledger.name(), 3).await;
    assert!(matches!(&refused, Err(StoreError::InvalidInput(m)) if m.contains("waits for a rebuild")), "{refused:?}");
    let partial = Rebuild::new(&Moved, &EventFilter::all()).from_position(Some(1)).run(store, |_: u64, _| {}).await;
    assert!(
        matches!(&partial, Err(projector::RuntimeError::Store(StoreError::InvalidInput(m))) if m.contains("in full")),
        "a rebuild from a position cannot fill a missing table: {partial:?}"
    );
    assert_waits_for_a_rebuild(store, "after a refused partial rebuild", "missing").await;

    let rebuilt = Rebuild::new(&Moved, &EventFilter::all()).run(store, |_: u64, _: Checkpoint| {}).await;
    let rebuilt = rebuilt.unwrap_or_else(|e| panic!("a full rebuild fills the table: {e}"));
    let all = read_everything(store, &EventFilter::all(), Partition::WHOLE, 100).await;
    assert_eq!(rebuilt.events_applied as usize, all.len());
    let keys: Vec<Vec<Value>> = all.iter().map(|e| vec![Value::Uuid(e.event_id)]).collect();
    let rows = ok(store.load_rows(&MOVED, &keys).await, "load");
    assert_eq!(rows.len(), all.len(), "one row per event");
    assert!(rows.iter().all(|r| r[1] == Value::BigInt(1)), "each event applied once: {rows:?}");
    let states = ok(store.states().await, "states");
    assert_eq!(statuses(&states), vec![Status::CaughtUp; 2], "rebuilt: {states:#?}");
    let lease = claim(store, Ledger.name(), Partition { index: 0, count: 2 }, "runner", TTL).await;
    ok(store.release(&lease.expect("claimable again")).await, "release");

    // A table that lacks a column the handler needs: the same, and registering the
    // fitting schema again does not lift it.
    ok(store.register(Moved.name(), &WIDER, &Moved.filter(), 2).await, "register with a wider schema");
    assert_waits_for_a_rebuild(store, "a table lacking a column", "extra").await;
    ok(store.register(Moved.name(), &MOVED, &Moved.filter(), 2).await, "register with the fitting schema");
    assert_waits_for_a_rebuild(store, "registered again", "extra").await;
    let rebuilt = Rebuild::new(&Moved, &EventFilter::all()).run(store, |_: u64, _: Checkpoint| {}).await;
    rebuilt.unwrap_or_else(|e| panic!("a full rebuild lifts the wait: {e}"));
    assert_eq!(statuses(&ok(store.states().await, "states")), vec![Status::CaughtUp; 2], "rebuilt again");
}
