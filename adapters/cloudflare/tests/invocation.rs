//! One scheduled invocation natively, on the PostgreSQL store: what the Worker's cron
//! runs, without workerd. The clock is a stub, so the budget is exact.

#[path = "support/events.rs"]
mod events;

use std::time::Duration;

use projector::{EventStore, Partition, ProjectionStore};
use projector_cloudflare::budget::Clock;
use projector_cloudflare::invocation::{self, Ending, Retries};
use projector_cloudflare::settings::Settings;
use projector_tests::pg::TestDb;

/// A clock that has always run out: every invocation runs one batch per partition.
struct Spent;

impl Clock for Spent {
    fn elapsed(&self) -> Duration {
        Duration::from_secs(3600)
    }
}

/// A clock that never runs out.
struct Fresh;

impl Clock for Fresh {
    fn elapsed(&self) -> Duration {
        Duration::ZERO
    }
}

fn settings(batch_size: usize) -> Settings {
    Settings::from_vars(|name| match name {
        "PROJECTIONS" => Some("user-profile,daily-activity".into()),
        "BATCH_SIZE" => Some(batch_size.to_string()),
        // Missing versions are waited for longer than any test runs.
        "GAP_TIMEOUT_MS" => Some("3600000".into()),
        _ => None,
    })
    .expect("settings")
}

async fn seeded() -> (TestDb, usize) {
    let db = TestDb::new().await;
    let store = db.store().await;
    let mut requests = events::demo(20);
    requests.insert(7, events::poison());
    let total = requests.iter().map(|r| r.events.len()).sum();
    for request in requests {
        store.append(request).await.expect("append");
    }
    db.settle().await;
    (db, total)
}

#[tokio::test]
async fn a_spent_budget_stops_after_one_batch_per_partition_and_the_next_invocation_goes_on() {
    let (db, total) = seeded().await;
    let store = db.store().await;
    let settings = settings(10);
    let first = invocation::run(&store, &settings, &Retries::Configured, "w1", Spent).await.expect("first invocation");
    assert_eq!(first.partitions.len(), 2);
    for p in &first.partitions {
        assert_eq!((p.batches, p.ending.clone()), (1, Ending::BudgetSpent), "{p:?}");
    }
    let activity = first.partitions.iter().find(|p| p.projection == "daily-activity").unwrap();
    assert_eq!(activity.events_applied, 10);
    // Leases were released: another owner takes over at once.
    let mut invocations = 1;
    let mut applied = activity.events_applied;
    loop {
        let report = invocation::run(&store, &settings, &Retries::Configured, &format!("w{}", invocations + 1), Spent)
            .await
            .unwrap();
        invocations += 1;
        let activity = report.partitions.iter().find(|p| p.projection == "daily-activity").unwrap();
        applied += activity.events_applied;
        if report.partitions.iter().all(|p| p.ending == Ending::CaughtUp) {
            break;
        }
        assert!(invocations <= total, "no progress: {report:?}");
    }
    assert_eq!(applied as usize, total, "every event applied exactly once across invocations");
    assert!(invocations > total / 10, "{invocations} invocations");
    let states = store.states().await.unwrap();
    assert!(states.iter().all(|s| s.lag_events == 0 && s.lease_owner.is_none()), "{states:#?}");
}

#[tokio::test]
async fn a_partition_leased_elsewhere_is_left_alone_and_the_rest_catch_up() {
    let (db, total) = seeded().await;
    let store = db.store().await;
    let settings = settings(1000);
    invocation::run(&store, &settings, &Retries::Configured, "w1", Fresh).await.expect("registers and catches up");
    let other = store
        .claim("user-profile", Partition::WHOLE, "someone-else", Duration::from_secs(60))
        .await
        .unwrap()
        .expect("free lease");
    // One more user registers.
    let more = vec![events::demo(21).remove(20)];
    let added = more.len();
    let store2 = db.store().await;
    for r in more {
        store2.append(r).await.unwrap();
    }
    db.settle().await;
    let report = invocation::run(&store, &settings, &Retries::Configured, "w2", Fresh).await.unwrap();
    let ending = |name: &str| report.partitions.iter().find(|p| p.projection == name).unwrap().clone();
    assert_eq!(ending("user-profile").ending, Ending::LeasedElsewhere);
    assert_eq!(ending("daily-activity").ending, Ending::CaughtUp);
    assert_eq!(ending("daily-activity").events_applied as usize, added);
    let states = store.states().await.unwrap();
    let activity = states.iter().find(|s| s.projection == "daily-activity").unwrap();
    assert_eq!(activity.events_applied as usize, total + added);
    store.release(&other).await.unwrap();
}

/// Open dead letters of `projection` whose error contains `text`.
async fn letters(db: &TestDb, projection: &str, text: &str) -> i64 {
    let client = db.client().await;
    let row = client
        .query_one(
            "SELECT count(*) FROM dead_letters WHERE projection = $1 AND status = 'open' AND strpos(error, $2) > 0",
            &[&projection, &text],
        )
        .await
        .expect("count dead letters");
    row.get(0)
}

#[tokio::test]
async fn a_partition_whose_retries_the_queue_gave_up_dead_letters_the_event_it_waits_on_once() {
    let (db, _) = seeded().await;
    let (_, third) = events::gap(&db).await;
    let store = db.store().await;
    let settings = settings(1000);
    let report = invocation::run(&store, &settings, &Retries::Configured, "w1", Fresh).await.unwrap();
    let profile = report.partitions.iter().find(|p| p.projection == "user-profile").unwrap();
    assert_eq!(profile.ending.waiting_for(), Some(third), "user-profile waits for version 2: {profile:?}");

    let spent = Retries::SpentFor { projection: "user-profile".into(), partition: 0 };
    let forced = invocation::run(&store, &settings, &spent, "w2", Fresh).await.unwrap();
    assert_eq!(forced.partitions.len(), 1, "only the partition named: {forced:?}");
    assert_eq!((forced.partitions[0].dead_lettered, forced.partitions[0].ending.clone()), (1, Ending::CaughtUp));
    assert_eq!(letters(&db, "user-profile", "missing").await, 1);

    // The queue delivers at least once: a second copy finds the event parked already.
    let again = invocation::run(&store, &settings, &spent, "w3", Fresh).await.unwrap();
    assert_eq!((again.partitions[0].dead_lettered, again.partitions[0].ending.clone()), (0, Ending::CaughtUp));
    assert_eq!(letters(&db, "user-profile", "missing").await, 1);
}

#[tokio::test]
async fn spent_retries_leave_every_other_partition_alone() {
    let (db, _) = seeded().await;
    let (_, third) = events::gap(&db).await;
    let store = db.store().await;
    let mut settings = settings(1000);
    settings.partitions = 2;
    invocation::run(&store, &settings, &Retries::Configured, "w1", Fresh).await.unwrap();
    let waiting = invocation::run(&store, &settings, &Retries::Configured, "w2", Fresh).await.unwrap();
    let (held, other): (Vec<_>, Vec<_>) = waiting
        .partitions
        .iter()
        .filter(|p| p.projection == "user-profile")
        .partition(|p| p.ending.waiting_for() == Some(third));
    assert_eq!((held.len(), other.len()), (1, 1), "{waiting:?}");
    let spent = Retries::SpentFor { projection: "user-profile".into(), partition: other[0].partition };
    let forced = invocation::run(&store, &settings, &spent, "w3", Fresh).await.unwrap();
    assert_eq!(forced.partitions.len(), 1);
    assert_eq!(forced.partitions[0].dead_lettered, 0, "nothing waits in the partition named");
    assert_eq!(letters(&db, "user-profile", "missing").await, 0, "the waiting partition keeps its gap timeout");
}
