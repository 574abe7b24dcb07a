//! Failure handling on PostgreSQL: the shared suite, concurrent repairs, and the local
//! worker's backoff against a handler that never heals.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use projection_user_profile::UserProfile;
use projector::repair::{repair, RepairAction};
use projector::{
    DeadLetterFilter, DeadLetterQueue, EventFilter, OnFailure, Partition, ProjectionHandler, ProjectionStore,
    RetryPolicy,
};
use projector_local::{run_partition, PgConnector, WorkerExit, WorkerSettings};
use projector_tests::failures::{self, append, user};
use projector_tests::ledger::Ledger;
use projector_tests::pg::TestDb;
use projector_tests::poison::Poisonable;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_meets_the_failure_handling_contract() {
    let databases: Mutex<Vec<TestDb>> = Mutex::new(Vec::new());
    failures::run_all(|| async {
        let db = TestDb::new().await;
        let store = db.store().await;
        databases.lock().expect("database list").push(db);
        store
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_retries_apply_nothing_twice() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let handler = Poisonable::new(Ledger);
    store.register(handler.name(), handler.schema(), &handler.filter(), 1).await.unwrap();
    let a = user(3);
    append(&store, a, "UserRegistered", json!({})).await;
    append(&store, a, "UserRenamed", json!({"poison": true})).await;
    for n in 0..40 {
        append(&store, a, "UserRenamed", json!({ "name": n })).await;
    }
    db.settle().await;
    let lease = store.claim(handler.name(), Partition::WHOLE, "r", Duration::from_secs(30)).await.unwrap().unwrap();
    let mut runner = projector::BatchRunner::new(&handler, &store, &EventFilter::all(), lease);
    while runner.step().await.unwrap().events_read > 0 {}
    let id = store.list(&DeadLetterFilter::default()).await.unwrap()[0].id;
    handler.faults.fix();

    let (one, two) = (db.store().await, db.store().await);
    let all = EventFilter::all();
    let (r1, r2) = tokio::join!(
        repair(&handler, &one, &all, id, RepairAction::Retry, "ops-1", 5),
        repair(&handler, &two, &all, id, RepairAction::Retry, "ops-2", 5),
    );
    let applied: u64 = [&r1, &r2].iter().filter_map(|r| r.as_ref().ok()).map(|o| o.events_applied).sum();
    assert_eq!(applied, 41, "41 parked events applied once between both runs: {r1:?} / {r2:?}");
    for r in [&r1, &r2] {
        if let Err(e) = r {
            assert!(e.to_string().contains("already resolved"), "the loser says why: {e}");
        }
    }
    let client = db.client().await;
    let row = client.query_one("SELECT count(*), min(applied), max(applied) FROM event_ledger", &[]).await.unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1), row.get::<_, i64>(2)), (42, 1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_backs_off_within_the_jitter_bounds_then_dead_letters() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let handler = Poisonable::new(UserProfile);
    store.register(handler.name(), handler.schema(), &handler.filter(), 1).await.unwrap();
    let a = user(4);
    append(&store, a, "UserRegistered", json!({"email": "a@x.io"})).await;
    append(&store, a, "UserRenamed", json!({"name": "F", "flaky": true})).await;
    let b = user(5);
    append(&store, b, "UserRegistered", json!({"email": "b@x.io"})).await;
    db.settle().await;

    let policy = RetryPolicy { max_retries: 3, base: Duration::from_millis(40), cap: Duration::from_millis(100) };
    let settings = WorkerSettings {
        projection: handler.name().to_owned(),
        filter: EventFilter::all(),
        partition: Partition::WHOLE,
        batch_size: 100,
        poll_interval: Duration::from_millis(20),
        lease_ttl: Duration::from_secs(5),
        owner: "backoff-test".into(),
        retry: policy,
        on_failure: OnFailure::Park,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let connector = PgConnector::new(db.url.clone());
    let worker = {
        let handler = handler.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let metrics = projector_local::metrics::Metrics::new();
            rt.block_on(run_partition(
                &handler,
                &connector,
                &settings,
                &metrics,
                Arc::new(tokio::sync::Notify::new()),
                stop_rx,
            ))
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while store.list(&DeadLetterFilter::default()).await.unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no dead letter within 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_tx.send(true).unwrap();
    assert_eq!(worker.join().unwrap(), WorkerExit::Stopped);

    let calls = handler.faults.flaky_calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 4, "one attempt and exactly three retries");
    for (retry, pair) in calls.windows(2).enumerate() {
        let waited = pair[1] - pair[0];
        let ceiling = policy.ceiling(retry as u32);
        // The sleep is random in [0, ceiling); the rest is one batch's round trips.
        assert!(waited <= ceiling + Duration::from_millis(150), "retry {retry}: waited {waited:?} > {ceiling:?}");
    }
    let letter = store.list(&DeadLetterFilter::default()).await.unwrap().remove(0);
    assert_eq!((letter.aggregate_id, letter.attempts), (a, 4));
    let rows = projector_tests::contract::stored_profiles(&store, &[a, b]).await;
    assert_eq!(rows[&b].1, 1, "the other aggregate was applied");
    assert_eq!(rows[&a].1, 1, "the flaky aggregate is parked at its last good version");
}
