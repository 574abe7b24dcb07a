//! The batch runtime on PostgreSQL when things go wrong: a payload that does not fit, a
//! connection killed mid-run, a server that is not there.

use std::time::Duration;

use projection_user_profile::UserProfile;
use projector::{
    AppendRequest, BatchRunner, Checkpoint, DeadLetterFilter, DeadLetterQueue, ErrorClass, EventFilter, EventStore,
    ExpectedVersion, NewEvent, Partition, ProjectionHandler, ProjectionStore, StoreError,
};
use projector_postgres::PgStore;
use projector_tests::ledger::{assert_matches_oracle, Ledger, USER_PROFILE_ORACLE};
use projector_tests::pg::TestDb;
use serde_json::json;
use uuid::Uuid;

fn user(n: u128) -> Uuid {
    Uuid::from_u128(0x5EED_0000 + n)
}

async fn append(store: &PgStore, id: Uuid, expected: i64, event_type: &str, data: serde_json::Value) -> Uuid {
    let outcome = store
        .append(AppendRequest {
            aggregate_id: id,
            aggregate_type: "user".into(),
            expected_version: ExpectedVersion::Exact(expected),
            events: vec![NewEvent::new(event_type, data)],
            idempotency_key: None,
        })
        .await
        .expect("append");
    outcome.event_ids[0]
}

async fn claimed(store: &PgStore) -> projector::Lease {
    store.register("user-profile", UserProfile.schema(), &UserProfile.filter(), 1).await.expect("register");
    store
        .claim("user-profile", Partition::WHOLE, "runtime-test", Duration::from_secs(30))
        .await
        .expect("claim")
        .expect("free lease")
}

async fn checkpoint(store: &PgStore) -> Checkpoint {
    store.states().await.expect("states").iter().find(|s| s.projection == "user-profile").expect("state").checkpoint
}

#[tokio::test]
async fn a_payload_that_does_not_fit_is_dead_lettered_naming_the_event_and_never_panics() {
    let db = TestDb::new().await;
    let store = db.store().await;
    append(&store, user(1), 0, "UserRegistered", json!({"email": "a@x.io", "name": "A", "plan": "free"})).await;
    let bad = append(&store, user(1), 1, "UserEmailChanged", json!({"email": 42})).await;
    append(&store, user(2), 0, "UserRegistered", json!({"email": "b@x.io", "name": "B", "plan": "free"})).await;
    db.settle().await;
    let lease = claimed(&store).await;
    let mut runner = BatchRunner::new(&UserProfile, &store, &EventFilter::all(), lease);
    let step = runner.step().await.expect("the batch commits around the bad event");
    assert_eq!((step.events_read, step.dead_lettered), (3, 1));
    let letters = store.list(&DeadLetterFilter::default()).await.expect("dead letters");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].event_id, bad, "the letter is the failing event");
    assert!(letters[0].error.contains(&bad.to_string()), "the error names the event: {}", letters[0].error);
    assert!(letters[0].error.contains("payload does not fit"), "{}", letters[0].error);
    let versions: Vec<(Uuid, i64)> = db
        .client()
        .await
        .query("SELECT user_id, version FROM user_profile ORDER BY version, user_id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(versions.len(), 2, "both users have rows: {versions:?}");
    assert!(versions.iter().all(|(_, v)| *v == 1), "user 1 stays at its last good version: {versions:?}");
    assert_eq!(checkpoint(&store).await, step.checkpoint, "the checkpoint passed the bad event");
}

#[tokio::test]
async fn a_killed_connection_is_transient_and_the_next_runner_resumes_exactly() {
    let db = TestDb::new().await;
    let writer = db.store().await;
    for n in 0..50 {
        append(
            &writer,
            user(n),
            0,
            "UserRegistered",
            json!({"email": format!("{n}@x.io"), "name": "N", "plan": "free"}),
        )
        .await;
    }
    db.settle().await;
    let store = db.store().await;
    let lease = claimed(&store).await;
    let mut runner = BatchRunner::new(&UserProfile, &store, &EventFilter::all(), lease).batch_size(20);
    assert_eq!(runner.step().await.expect("first batch").events_read, 20);
    let before = checkpoint(&writer).await;

    // Kill every other connection to this database: the runner's among them.
    let admin = db.client().await;
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .expect("terminate backends");
    let err = runner.step().await.expect_err("the connection is gone");
    assert_eq!(err.class(), ErrorClass::Transient, "a lost connection is retried, not dead-lettered: {err}");
    assert_eq!(checkpoint(&admin_store(&db).await).await, before, "nothing written by the failed batch");

    // What the local runner does next: reconnect, re-claim from the stored checkpoint.
    let store = db.store().await;
    let lease = store
        .claim("user-profile", Partition::WHOLE, "runtime-test", Duration::from_secs(30))
        .await
        .expect("claim")
        .expect("our lease");
    assert_eq!(lease.checkpoint, before);
    let mut runner = BatchRunner::new(&UserProfile, &store, &EventFilter::all(), lease).batch_size(20);
    runner.catch_up().await.expect("batches");
    assert_matches_oracle(&admin, "user_profile", USER_PROFILE_ORACLE).await;
}

async fn admin_store(db: &TestDb) -> PgStore {
    db.store().await
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_transient_error() {
    let err = PgStore::connect("postgres://postgres:secret@127.0.0.1:1/nowhere")
        .await
        .expect_err("nothing listens on port 1");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(err.is_retryable());
    let message = err.to_string();
    assert!(message.contains("127.0.0.1:1/nowhere"), "names the server: {message}");
    assert!(!message.contains("secret"), "never prints the password: {message}");
}

#[tokio::test]
async fn a_conflicting_append_names_aggregate_and_versions() {
    let db = TestDb::new().await;
    let (a, b) = (db.store().await, db.store().await);
    append(&a, user(7), 0, "UserRegistered", json!({"email": "x@x.io"})).await;
    let request = |name: &str| AppendRequest {
        aggregate_id: user(7),
        aggregate_type: "user".into(),
        expected_version: ExpectedVersion::Exact(1),
        events: vec![NewEvent::new("UserRenamed", json!({ "name": name }))],
        idempotency_key: None,
    };
    // Two connections race for version 2: exactly one wins.
    let (ra, rb) = tokio::join!(a.append(request("A")), b.append(request("B")));
    let wins = [ra.is_ok(), rb.is_ok()].iter().filter(|w| **w).count();
    assert_eq!(wins, 1, "exactly one append wins: {ra:?} / {rb:?}");
    let err = ra.err().or(rb.err()).expect("one conflict");
    match err {
        StoreError::Conflict { aggregate_id, expected, actual } => {
            assert_eq!((aggregate_id, expected, actual), (user(7), 1, 2));
        }
        other => panic!("expected a version conflict, got {other:?}"),
    }
}

#[tokio::test]
async fn a_reader_that_skips_metadata_gets_none_and_a_clear_error_if_it_asks() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let id = append(&store, user(8), 0, "UserRegistered", json!({"email": "m@x.io"})).await;
    db.settle().await;
    let full = store.read_all(Checkpoint::START, &EventFilter::all(), Partition::WHOLE, 10).await.unwrap();
    assert_eq!(full[0].metadata().expect("metadata is read").event_version, 1);
    let light =
        store.read_all(Checkpoint::START, &EventFilter::all().without_metadata(), Partition::WHOLE, 10).await.unwrap();
    assert_eq!(light[0].event_data.get(), full[0].event_data.get(), "the payload is still there");
    let err = light[0].metadata().expect_err("metadata was left out");
    assert!(err.to_string().contains(&id.to_string()), "names the event: {err}");
}

/// A transaction takes its id at its first write. One that writes, then reads an
/// aggregate's version and appends the next one, puts version n+1 before version n in
/// commit-safe order. The runtime must still apply the aggregate in version order, and
/// count every event once.
#[tokio::test]
async fn a_version_ordered_before_its_predecessor_is_applied_in_version_order_once() {
    const INSERT: &str = "INSERT INTO events (event_id, aggregate_id, aggregate_type, event_type, event_data, version)
         SELECT gen_random_uuid(), $1, 'user', $2, $3::text::jsonb, coalesce(max(version), 0) + 1
         FROM events WHERE aggregate_id = $1";
    let db = TestDb::new().await;
    let store = db.store().await;
    let (x, y) = (user(20), user(21));
    append(&store, x, 0, "UserRegistered", json!({"email": "x@x.io", "name": "first", "plan": "free"})).await;

    let mut early = db.client().await;
    let tx = early.transaction().await.unwrap();
    tx.execute(INSERT, &[&y, &"UserRegistered", &r#"{"email":"y@x.io"}"#]).await.unwrap();
    // Version 2 commits meanwhile, in a later transaction.
    // (It sets a field version 3 does not, so skipping it would show.)
    append(&store, x, 1, "UserEmailChanged", json!({"email": "x2@x.io"})).await;
    tx.execute(INSERT, &[&x, &"UserRenamed", &r#"{"name":"third"}"#]).await.unwrap();
    tx.commit().await.unwrap();
    db.settle().await;

    let client = db.client().await;
    let inverted: bool = client
        .query_one(
            "SELECT (SELECT transaction_id FROM events WHERE aggregate_id = $1 AND version = 3)
                  < (SELECT transaction_id FROM events WHERE aggregate_id = $1 AND version = 2)",
            &[&x],
        )
        .await
        .unwrap()
        .get(0);
    assert!(inverted, "version 3 sorts before version 2 in commit-safe order");

    for (name, schema, filter) in [
        (UserProfile.name(), UserProfile.schema(), UserProfile.filter()),
        (Ledger.name(), Ledger.schema(), Ledger.filter()),
    ] {
        store.register(name, schema, &filter, 1).await.unwrap();
    }
    // Batches of 3: [x v1, y v1, x v3] then [x v2], so v2 arrives after v3 was applied.
    let lease = store.claim(UserProfile.name(), Partition::WHOLE, "t", Duration::from_secs(30)).await.unwrap().unwrap();
    let mut runner = BatchRunner::new(&UserProfile, &store, &EventFilter::all(), lease).batch_size(3);
    runner.catch_up().await.unwrap();
    let lease = store.claim(Ledger.name(), Partition::WHOLE, "t", Duration::from_secs(30)).await.unwrap().unwrap();
    let mut runner = BatchRunner::new(&Ledger, &store, &EventFilter::all(), lease).batch_size(3);
    runner.catch_up().await.unwrap();

    assert_matches_oracle(&client, "user_profile", USER_PROFILE_ORACLE).await;
    let row =
        client.query_one("SELECT email, name, version FROM user_profile WHERE user_id = $1", &[&x]).await.unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1), row.get::<_, i64>(2)),
        ("x2@x.io".to_owned(), "third".to_owned(), 3)
    );
    let ledger = client.query_one("SELECT count(*), min(applied), max(applied) FROM event_ledger", &[]).await.unwrap();
    assert_eq!((ledger.get::<_, i64>(0), ledger.get::<_, i64>(1), ledger.get::<_, i64>(2)), (4, 1, 1));
}
