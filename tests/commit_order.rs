//! Commit-safe order under load: writers hold transactions open for random delays so
//! that later-started transactions commit first (and, by reading an aggregate's version
//! after their first write, append version n+1 with a lower transaction id than version
//! n), while projections run the whole time. After draining, every read model equals a
//! from-scratch replay and every event was applied exactly once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use projection_daily_activity::DailyActivity;
use projection_user_profile::UserProfile;
use projector::{BatchRunner, EventFilter, Partition, ProjectionHandler, ProjectionStore, StepOutcome};
use projector_tests::ledger::{assert_matches_oracle, Ledger, DAILY_ACTIVITY_ORACLE, USER_PROFILE_ORACLE};
use projector_tests::pg::TestDb;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

const WRITERS: usize = 8;
const TOTAL: u64 = 20_000;
const USERS: u128 = 300;

const INSERT: &str = "
INSERT INTO events (event_id, aggregate_id, aggregate_type, event_type, event_data, version)
SELECT gen_random_uuid(), $1, 'user', $2, $3::text::jsonb, coalesce(max(version), 0) + 1
FROM events WHERE aggregate_id = $1";

fn random_event(rng: &mut impl Rng, n: u64) -> (&'static str, String) {
    match rng.random_range(0..5) {
        0 => ("UserRegistered", format!(r#"{{"email":"u{n}@x.io","name":"U {n}","plan":"free"}}"#)),
        1 => ("UserEmailChanged", format!(r#"{{"email":"e{n}@x.io"}}"#)),
        2 => ("UserRenamed", format!(r#"{{"name":"N {n}"}}"#)),
        3 => ("PlanUpgraded", format!(r#"{{"plan":"p{}"}}"#, n % 4)),
        _ => ("UserDeactivated", "{}".to_owned()),
    }
}

/// One writer: transactions of 1-4 events; the first insert takes a transaction id, then
/// the transaction sleeps, reads versions and inserts more, and commits.
async fn writer(db_url: String, seed: u64, written: Arc<AtomicU64>) {
    let (mut client, connection) =
        tokio_postgres::connect(&db_url, tokio_postgres::NoTls).await.expect("writer connects");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let insert = client.prepare(INSERT).await.expect("prepare insert");
    while written.load(Ordering::Relaxed) < TOTAL {
        let k = rng.random_range(1..=4u64);
        let tx = client.transaction().await.expect("begin");
        let mut ok = true;
        for i in 0..k {
            let user = Uuid::from_u128(0xABCD_0000_0000 + rng.random_range(0..USERS) * 0x1_0001);
            let (event_type, data) = random_event(&mut rng, seed * 1_000_000 + i);
            if let Err(e) = tx.execute(&insert, &[&user, &event_type, &data]).await {
                // Two transactions raced for one version: give up this one, try again.
                assert!(
                    e.code().is_some_and(|c| c.code() == "23505" || c.code() == "40P01"),
                    "unexpected writer error: {e}"
                );
                ok = false;
                break;
            }
            if i == 0 {
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..12))).await;
            }
        }
        if ok && tx.commit().await.is_ok() {
            written.fetch_add(k, Ordering::Relaxed);
        }
    }
}

/// Steps one projection until told to stop and caught up.
async fn project<H: ProjectionHandler>(handler: H, db: &TestDb, stop: Arc<AtomicBool>) -> u64 {
    let store = db.store().await;
    let lease = store
        .claim(handler.name(), Partition::WHOLE, "load-test", Duration::from_secs(60))
        .await
        .expect("claim")
        .expect("lease is free");
    let mut runner = BatchRunner::new(&handler, &store, &EventFilter::all(), lease).batch_size(97);
    let mut applied = 0;
    loop {
        let StepOutcome { events_read, events_applied, .. } = runner.step().await.expect("batch commits");
        applied += events_applied;
        if events_read == 0 {
            // Drained only when nothing is left behind the checkpoint: an empty read can
            // also mean a transaction elsewhere on the server holds the horizon back.
            if stop.load(Ordering::Acquire) {
                let states = store.states().await.expect("states");
                if states.iter().any(|s| s.projection == handler.name() && s.lag_events == 0) {
                    return applied;
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_with_late_commits_lose_and_repeat_nothing() {
    let db = Arc::new(TestDb::new().await);
    let setup = db.store().await;
    for (name, schema, filter) in [
        ("user-profile", UserProfile.schema(), UserProfile.filter()),
        ("daily-activity", DailyActivity.schema(), DailyActivity.filter()),
        ("event-ledger", Ledger.schema(), Ledger.filter()),
    ] {
        setup.register(name, schema, &filter, 1).await.expect("register");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let projections: Vec<_> = [0, 1, 2]
        .into_iter()
        .map(|i| {
            let (db, stop) = (Arc::clone(&db), Arc::clone(&stop));
            tokio::spawn(async move {
                match i {
                    0 => project(UserProfile, &db, stop).await,
                    1 => project(DailyActivity, &db, stop).await,
                    _ => project(Ledger, &db, stop).await,
                }
            })
        })
        .collect();

    let started = Instant::now();
    let written = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> =
        (0..WRITERS).map(|w| tokio::spawn(writer(db.url.clone(), w as u64 + 1, Arc::clone(&written)))).collect();
    for w in writers {
        w.await.expect("writer finished");
    }
    stop.store(true, Ordering::Release);
    let mut applied = Vec::new();
    for p in projections {
        applied.push(
            tokio::time::timeout(Duration::from_secs(120), p).await.expect("projections drain").expect("no panic"),
        );
    }
    let client = db.client().await;
    let total: i64 = client.query_one("SELECT count(*) FROM events", &[]).await.unwrap().get(0);
    assert!(total as u64 >= TOTAL, "writers appended {total} events");
    eprintln!("{total} events by {WRITERS} writers in {:?}; applied {applied:?}", started.elapsed());

    // Out-of-order commits really happened: some event has a higher version but a lower
    // transaction id than an earlier version of its aggregate.
    let inversions: i64 = client
        .query_one(
            "SELECT count(*) FROM events a JOIN events b
               ON a.aggregate_id = b.aggregate_id AND a.version < b.version AND a.transaction_id > b.transaction_id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    eprintln!("{inversions} version/transaction-order inversions");

    let ledger = client
        .query_one(
            "SELECT count(*), coalesce(min(applied), 0), coalesce(max(applied), 0),
                    (SELECT count(*) FROM events e WHERE NOT EXISTS
                        (SELECT 1 FROM event_ledger l WHERE l.event_id = e.event_id))
             FROM event_ledger",
            &[],
        )
        .await
        .unwrap();
    let (rows, min, max, missing): (i64, i64, i64, i64) = (ledger.get(0), ledger.get(1), ledger.get(2), ledger.get(3));
    assert_eq!(missing, 0, "events never applied");
    assert_eq!((rows, min, max), (total, 1, 1), "every event applied exactly once");
    assert_eq!(applied[2], total as u64);
    assert_eq!(applied[1], total as u64, "daily-activity applied every event once");
    assert_matches_oracle(&client, "daily_activity", DAILY_ACTIVITY_ORACLE).await;
    assert_matches_oracle(&client, "user_profile", USER_PROFILE_ORACLE).await;
}
