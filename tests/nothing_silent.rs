//! Ways off the happy path that must end in the right result or a named error, on both
//! stores: here, a handler that panics on one event.

use std::time::Duration;

use projection_user_profile::{Profile, UserProfile};
use projector::{
    DeadLetterFilter, DeadLetterQueue, DomainEvent, EventFilter, EventStore, HandlerError, Ordering, Partition,
    ProjectionHandler, ProjectionStore, TableSchema,
};
use projector_embedded::EmbeddedStore;
use projector_tests::failures::{append, user};
use projector_tests::pg::TestDb;
use serde_json::json;
use uuid::Uuid;

/// The user-profile projection, except that it panics on events marked `"panic": true`.
#[derive(Debug, Clone, Copy)]
struct Panicky;

impl ProjectionHandler for Panicky {
    type Key = Uuid;
    type Row = Profile;

    fn name(&self) -> &'static str {
        UserProfile.name()
    }

    fn schema(&self) -> &'static TableSchema {
        UserProfile.schema()
    }

    fn ordering(&self) -> Ordering {
        UserProfile.ordering()
    }

    fn filter(&self) -> EventFilter {
        UserProfile.filter()
    }

    fn key(&self, event: &DomainEvent) -> Option<Uuid> {
        UserProfile.key(event)
    }

    fn handle(&self, row: &mut Option<Profile>, event: &DomainEvent) -> Result<(), HandlerError> {
        let data: serde_json::Value = event.data()?;
        if data.get("panic") == Some(&json!(true)) {
            panic!("index out of bounds in the handler");
        }
        UserProfile.handle(row, event)
    }
}

trait Store: EventStore + ProjectionStore + DeadLetterQueue {}
impl<T: EventStore + ProjectionStore + DeadLetterQueue> Store for T {}

/// A panics on its second event; B is fine. Returns (A, B).
async fn a_panic_parks_only_its_aggregate<S: Store>(store: &S) -> (Uuid, Uuid) {
    store.register(Panicky.name(), Panicky.schema(), &Panicky.filter(), 1).await.expect("register");
    let (a, b) = (user(101), user(102));
    append(store, a, "UserRegistered", json!({"email": "a@example.com", "name": "A", "plan": "free"})).await;
    append(store, b, "UserRegistered", json!({"email": "b@example.com", "name": "B", "plan": "free"})).await;
    append(store, a, "UserRenamed", json!({"name": "A2", "panic": true})).await;
    append(store, b, "UserRenamed", json!({"name": "B2"})).await;
    append(store, a, "UserRenamed", json!({"name": "A3"})).await;
    (a, b)
}

async fn run_and_check<S: Store>(store: &S, a: Uuid, b: Uuid) {
    let lease = store
        .claim(Panicky.name(), Partition::WHOLE, "runner", Duration::from_secs(30))
        .await
        .expect("claim")
        .expect("free");
    let mut runner = projector::BatchRunner::new(&Panicky, store, &EventFilter::all(), lease).batch_size(2);
    let outcome = runner.catch_up().await.expect("the panic does not end the runner");
    assert_eq!(outcome.dead_lettered, 1);

    let letters = store.list(&DeadLetterFilter::default()).await.expect("letters");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].aggregate_id, a);
    assert_eq!(letters[0].version, 2);
    assert!(
        letters[0].error.contains("panicked") && letters[0].error.contains("index out of bounds"),
        "{}",
        letters[0].error
    );

    let states = store.states().await.expect("states");
    let state = states.iter().find(|s| s.projection == Panicky.name()).expect("state");
    assert_eq!((state.parked_aggregates, state.parked_events), (1, 2), "A's v2 and v3 wait behind the letter");
    assert_eq!(state.lag_events, 0);

    let schema = Panicky.schema();
    let rows = store.load_rows(schema, &[vec![a.into()], vec![b.into()]]).await.expect("rows");
    let name_of = |id: Uuid| {
        rows.iter().find(|r| r[0] == id.into()).map(|r| r[2].clone()).unwrap_or_else(|| panic!("a row for {id}"))
    };
    assert_eq!(name_of(a), "A".into(), "A stays at its last good state");
    assert_eq!(name_of(b), "B2".into(), "B moves on");
}

#[tokio::test]
async fn a_handler_panic_parks_its_aggregate_and_the_others_move_on_embedded() {
    let store = EmbeddedStore::open_in_memory().expect("store");
    let (a, b) = a_panic_parks_only_its_aggregate(&store).await;
    run_and_check(&store, a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_panic_parks_its_aggregate_and_the_others_move_on_postgres() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let (a, b) = a_panic_parks_only_its_aggregate(&store).await;
    db.settle().await;
    run_and_check(&store, a, b).await;
}
