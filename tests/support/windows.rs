//! Catch-up windows, on every store: a step far behind folds several full batches into
//! the same rows and commits them once; near the head it commits each batch; a failure
//! inside a window commits what came before it and parks only its aggregate. Every
//! event is applied exactly once throughout (the event ledger counts).

use std::time::Duration;

use projection_user_profile::UserProfile;
use projector::{
    AppendRequest, BatchRunner, CatchUpWindow, EventFilter, ExpectedVersion, NewEvent, Partition, ProjectionHandler,
    ReadBound, RowReader, StepOutcome, Value,
};
use serde_json::json;
use uuid::Uuid;

use crate::contract::{read_everything, reference_profiles, settle, stored_profiles};
use crate::failures::{register, ticks, user, FailureStore};
use crate::ledger::{Ledger, SCHEMA as LEDGER};
use crate::poison::Poisonable;

const TTL: Duration = Duration::from_secs(30);

/// Every event id the store holds has one ledger row, applied once; no other row exists.
async fn assert_each_applied_once<S: FailureStore>(store: &S) {
    let events = read_everything(store, &EventFilter::all(), Partition::WHOLE, 500).await;
    let keys: Vec<Vec<Value>> = events.iter().map(|e| vec![Value::Uuid(e.event_id)]).collect();
    let rows = store.load_rows(&LEDGER, &keys).await.expect("load ledger rows");
    assert_eq!(rows.len(), events.len(), "one ledger row per event");
    for row in rows {
        let mut reader = RowReader::new(&LEDGER, &row);
        let id = reader.uuid().expect("ledger key");
        let applied = reader.bigint().expect("ledger count");
        assert_eq!(applied, 1, "event {id} applied {applied} times");
    }
}

async fn step<H: ProjectionHandler, S: FailureStore>(runner: &mut BatchRunner<'_, H, S>) -> StepOutcome {
    runner.step().await.unwrap_or_else(|e| panic!("step: {e}"))
}

pub async fn a_far_behind_step_folds_a_window_and_near_the_head_commits_each_batch<S: FailureStore>(store: &S) {
    register(store, &Ledger).await;
    for n in 0..10 {
        ticks(store, user(100 + n), 100).await;
    }
    let lease = store.claim(Ledger.name(), Partition::WHOLE, "window", TTL).await.unwrap().expect("free");
    // The ledger holds a row per event: 400 rows are four batches of 100.
    let mut runner = BatchRunner::new(&Ledger, store, &EventFilter::all(), lease)
        .batch_size(100)
        .lease_ttl(TTL)
        .window(CatchUpWindow { rows: 400, events: 100_000 });
    let first = step(&mut runner).await;
    assert_eq!((first.events_read, first.events_applied), (400, 400), "four full batches, one commit");
    let state = store.states().await.unwrap().into_iter().find(|s| s.projection == Ledger.name()).unwrap();
    assert_eq!(state.checkpoint, first.checkpoint, "the window committed its end");
    assert_eq!(state.events_applied, 400);

    // Events appended while the runner catches up are read in their turn.
    let mut total = first.events_read;
    let mut sizes = vec![first.events_read];
    for round in 0..100 {
        if round < 3 {
            ticks(store, user(200 + round), 30).await;
        }
        let s = step(&mut runner).await;
        if s.events_read == 0 {
            break;
        }
        sizes.push(s.events_read);
        total += s.events_read;
    }
    assert_eq!(total, 1090, "every event read once: {sizes:?}");
    assert!(sizes.iter().all(|n| *n <= 400), "no window past its rows: {sizes:?}");

    // Caught up: a new event is a batch of its own, committed at once.
    ticks(store, user(300), 5).await;
    let live = step(&mut runner).await;
    assert_eq!(live.events_read, 5);
    assert_each_applied_once(store).await;
}

pub async fn a_failure_inside_a_window_commits_what_came_before_and_parks_only_its_aggregate<S: FailureStore>(
    store: &S,
) {
    let handler = Poisonable::new(UserProfile);
    register(store, &handler).await;
    let users: Vec<Uuid> = (0..30).map(|n| user(400 + n)).collect();
    let poisoned = users[7];
    let mut last = None;
    for version in 1..=10i64 {
        for &u in &users {
            let data = if u == poisoned && version == 8 {
                json!({"name": "poison", "poison": true})
            } else if version == 1 {
                json!({"email": format!("{u}@example.com"), "name": "first", "plan": "free"})
            } else {
                json!({"name": format!("v{version}")})
            };
            let kind = if version == 1 { "UserRegistered" } else { "UserRenamed" };
            let request = AppendRequest {
                aggregate_id: u,
                aggregate_type: "user".into(),
                expected_version: ExpectedVersion::Exact(version - 1),
                events: vec![NewEvent::new(kind, data)],
                idempotency_key: None,
            };
            last = Some(store.append(request).await.expect("append"));
        }
    }
    settle(store, &last.expect("appended")).await;
    let lease = store.claim(handler.name(), Partition::WHOLE, "window", TTL).await.unwrap().expect("free");
    let mut runner = BatchRunner::new(&handler, store, &EventFilter::all(), lease)
        .batch_size(30)
        .lease_ttl(TTL)
        .window(CatchUpWindow { rows: usize::MAX, events: 150 });
    // 300 events, 30 per version round: the poison (version 8) is in the eighth batch.
    let first = step(&mut runner).await;
    assert_eq!((first.events_read, first.dead_lettered), (150, 0), "a window of five batches");
    let second = step(&mut runner).await;
    assert_eq!(
        (second.events_read, second.dead_lettered),
        (90, 1),
        "the window ends with the batch that dead-lettered the poison"
    );
    let mut rest = 0;
    loop {
        let s = step(&mut runner).await;
        if s.events_read == 0 {
            break;
        }
        assert_eq!(s.dead_lettered, 0);
        rest += s.events_read;
    }
    assert_eq!(rest, 60);

    let all = read_everything(store, &EventFilter::all(), Partition::WHOLE, 500).await;
    // The poisoned user stops before the poison; everyone else has everything.
    let applied: Vec<_> = all.iter().filter(|e| e.aggregate_id != poisoned || e.version < 8).cloned().collect();
    assert_eq!(stored_profiles(store, &users).await, reference_profiles(&applied));
    let held = store.read_aggregate(poisoned, ReadBound::All).await.unwrap();
    assert_eq!(held.len(), 10, "the poisoned user's events are all kept");
}
