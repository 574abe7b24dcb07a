//! Failure handling on PostgreSQL: the shared suite (one test per check), concurrent
//! repairs, the local worker's backoff against a handler that never heals, and its
//! wait at a version gap.

use std::sync::Arc;
use std::time::Duration;

use projection_user_profile::UserProfile;
use projector::repair::{repair, RepairAction};
use projector::{
    DeadLetterFilter, DeadLetterQueue, EventFilter, OnFailure, Partition, ProjectionHandler, ProjectionStore,
    RetryPolicy,
};
use projector_local::{run_partition, PgConnector, WorkerExit, WorkerSettings};
use projector_tests::failures::{append, user};
use projector_tests::ledger::Ledger;
use projector_tests::pg::TestDb;
use projector_tests::poison::Poisonable;
use serde_json::json;

projector_tests::failure_tests!(
    flavor: multi_thread;
    let db = TestDb::new().await;
    db.store().await
);

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
    runner.catch_up().await.unwrap();
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

    // Delays long against one batch's round trips, so the measured gaps show the sleeps.
    let policy = RetryPolicy { max_retries: 3, base: Duration::from_millis(200), cap: Duration::from_millis(800) };
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
        gap_timeout: projector::config::DEFAULT_GAP_TIMEOUT,
        crash_limit: projector::config::DEFAULT_CRASH_LIMIT,
        upcasters: projector::upcast::Upcasters::new(),
        window: projector::CatchUpWindow::for_memory(128 << 20),
        decryption: Default::default(),
        snapshots: None,
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
        assert!(
            waited <= ceiling + Duration::from_millis(400),
            "retry {retry}: waited {waited:?}, more than the ceiling {ceiling:?} and a batch"
        );
    }
    let letter = store.list(&DeadLetterFilter::default()).await.unwrap().remove(0);
    assert_eq!((letter.aggregate_id, letter.attempts), (a, 4));
    let rows = projector_tests::contract::stored_profiles(&store, &[a, b]).await;
    assert_eq!(rows[&b].1, 1, "the other aggregate was applied");
    assert_eq!(rows[&a].1, 1, "the flaky aggregate is parked at its last good version");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_mid_catch_up_loses_and_repeats_nothing() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let handler = Ledger;
    store.register(handler.name(), handler.schema(), &handler.filter(), 1).await.unwrap();
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO events (event_id, aggregate_id, aggregate_type, event_type, event_data, version)
             SELECT gen_random_uuid(), ('00000000-0000-4000-8000-' || lpad(to_hex(i % 500), 12, '0'))::uuid,
                    'user', 'UserRenamed', jsonb_build_object('name', i), i / 500 + 1
             FROM generate_series(0, 39999) AS i",
        )
        .await
        .unwrap();
    db.settle().await;

    let settings = WorkerSettings {
        projection: handler.name().to_owned(),
        filter: EventFilter::all(),
        partition: Partition::WHOLE,
        batch_size: 200,
        poll_interval: Duration::from_millis(20),
        lease_ttl: Duration::from_secs(5),
        owner: "kill-test".into(),
        retry: RetryPolicy { max_retries: 3, base: Duration::from_millis(20), cap: Duration::from_millis(200) },
        on_failure: OnFailure::Park,
        gap_timeout: projector::config::DEFAULT_GAP_TIMEOUT,
        crash_limit: projector::config::DEFAULT_CRASH_LIMIT,
        upcasters: projector::upcast::Upcasters::new(),
        // Windows of about 2,000 events: kills land between commits and inside windows.
        window: projector::CatchUpWindow::for_memory(8 << 20),
        decryption: Default::default(),
        snapshots: None,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let connector = PgConnector::new(db.url.clone());
    let metrics = projector_local::metrics::Metrics::new();
    let worker = {
        let metrics = Arc::clone(&metrics);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(run_partition(&handler, &connector, &settings, &metrics, Arc::new(Default::default()), stop_rx))
        })
    };
    let applied = || async {
        client
            .query_one("SELECT coalesce(sum(applied), 0)::bigint FROM event_ledger", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    // Kill the worker's backend three times while it is mid catch-up.
    for kill in 0..3 {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let goal = 8_000 * (kill + 1);
        while applied().await < goal {
            assert!(std::time::Instant::now() < deadline, "no progress to {goal} events");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let killed: i64 = client
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(killed >= 1, "the worker's connection was there to kill");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while applied().await < 40_000 {
        assert!(std::time::Instant::now() < deadline, "the worker did not recover: {} applied", applied().await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_tx.send(true).unwrap();
    assert_eq!(worker.join().unwrap(), WorkerExit::Stopped);
    let row = client.query_one("SELECT count(*), min(applied), max(applied) FROM event_ledger", &[]).await.unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1), row.get::<_, i64>(2)), (40_000, 1, 1));
    let store = db.store().await;
    assert!(
        store.list(&DeadLetterFilter::default()).await.unwrap().is_empty(),
        "a lost connection dead-letters nothing"
    );
    assert!(metrics.counters(handler.name(), 0).is_some_and(|c| c.retries >= 3), "the retries were counted");
}

/// The worker waits at a version gap without failing, and dead-letters the event once
/// `gap_timeout` has passed; the other aggregate then applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_waits_at_a_gap_then_dead_letters_it() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let handler = UserProfile;
    store.register(handler.name(), handler.schema(), &handler.filter(), 1).await.unwrap();
    let (a, b) = (user(6), user(7));
    append(&store, a, "UserRegistered", json!({"email": "a@x.io"})).await;
    store
        .execute_script(&format!(
            "INSERT INTO events (event_id, aggregate_id, aggregate_type, event_type, event_data, version) \
             VALUES (gen_random_uuid(), '{a}', 'user', 'UserRenamed', '{{\"name\": \"A5\"}}', 5)"
        ))
        .await
        .unwrap();
    append(&store, b, "UserRegistered", json!({"email": "b@x.io"})).await;
    db.settle().await;

    let settings = WorkerSettings {
        projection: handler.name().to_owned(),
        filter: EventFilter::all(),
        partition: Partition::WHOLE,
        batch_size: 100,
        poll_interval: Duration::from_millis(20),
        lease_ttl: Duration::from_secs(5),
        owner: "gap-test".into(),
        retry: RetryPolicy::default(),
        on_failure: OnFailure::Park,
        gap_timeout: Duration::from_millis(300),
        crash_limit: projector::config::DEFAULT_CRASH_LIMIT,
        upcasters: projector::upcast::Upcasters::new(),
        window: projector::CatchUpWindow::for_memory(128 << 20),
        decryption: Default::default(),
        snapshots: None,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let connector = PgConnector::new(db.url.clone());
    let worker = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let metrics = projector_local::metrics::Metrics::new();
        rt.block_on(run_partition(
            &UserProfile,
            &connector,
            &settings,
            &metrics,
            Arc::new(tokio::sync::Notify::new()),
            stop_rx,
        ))
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while store.list(&DeadLetterFilter::default()).await.unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no dead letter within 20 s");
        assert!(!worker.is_finished(), "the worker ended while waiting at the gap");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let letter = store.list(&DeadLetterFilter::default()).await.unwrap().remove(0);
    assert_eq!((letter.aggregate_id, letter.version), (a, 5));
    assert!(letter.error.contains("versions 2\u{2013}4 missing"), "{}", letter.error);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !projector_tests::contract::stored_profiles(&store, &[b]).await.contains_key(&b) {
        assert!(std::time::Instant::now() < deadline, "the other aggregate was not applied within 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_tx.send(true).unwrap();
    assert_eq!(worker.join().unwrap(), WorkerExit::Stopped);
}
