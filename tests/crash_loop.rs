//! An event that crashes the runner process (`std::process::abort()`, which no
//! `catch_unwind` catches) is found and dead-lettered, on each store: the runner is a
//! real child process (this binary, started again with `PROJECTOR_CRASH_LOOP_STORE`
//! set), restarted after every crash, until it catches up. Only the crashing event's
//! aggregate waits; everything else applies.

use std::process::Command;
use std::time::Duration;

use projection_user_profile::{Profile, UserProfile};
use projector::{
    BatchRunner, DeadLetterFilter, DeadLetterQueue, DomainEvent, EventFilter, EventStore, HandlerError,
    Ordering as Order, Partition, ProjectionHandler, ProjectionStore, Rebuilds, TableSchema,
};
use projector_embedded::EmbeddedStore;
use projector_postgres::PgStore;
use projector_tests::contract::{read_everything, reference_profiles, settle, stored_profiles};
use projector_tests::failures::{append, user};
use projector_tests::pg::TestDb;
use serde_json::json;
use uuid::Uuid;

const CHILD: &str = "PROJECTOR_CRASH_LOOP_STORE";
const CRASH_LIMIT: u32 = 3;

/// The user-profile projection, except that an event marked `"abort": true` kills the
/// process that applies it.
struct Aborting;

impl ProjectionHandler for Aborting {
    type Key = Uuid;
    type Row = Profile;
    fn name(&self) -> &'static str {
        UserProfile.name()
    }
    fn schema(&self) -> &'static TableSchema {
        UserProfile.schema()
    }
    fn ordering(&self) -> Order {
        UserProfile.ordering()
    }
    fn filter(&self) -> EventFilter {
        UserProfile.filter()
    }
    fn key(&self, event: &DomainEvent) -> Option<Uuid> {
        UserProfile.key(event)
    }
    fn handle(&self, row: &mut Option<Profile>, event: &DomainEvent) -> Result<(), HandlerError> {
        if event.event_data.get().contains("\"abort\"") {
            std::process::abort();
        }
        UserProfile.handle(row, event)
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    if let Ok(spec) = std::env::var(CHILD) {
        runtime.block_on(child(&spec));
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("crash-loop.db");
    runtime.block_on(async {
        let store = EmbeddedStore::open(&path).expect("open the store file");
        crash_loop(&store, &format!("embedded:{}", path.display())).await;
        println!("embedded: ok");
        let db = TestDb::new().await;
        let store = db.store().await;
        crash_loop(&store, &format!("postgres:{}", db.url)).await;
        println!("postgres: ok");
    });
}

/// The runner process: catch up once and exit (unless an event kills it first).
async fn child(spec: &str) {
    if let Some(path) = spec.strip_prefix("embedded:") {
        run_once(&EmbeddedStore::open(path).expect("open the store file")).await;
    } else if let Some(url) = spec.strip_prefix("postgres:") {
        run_once(&PgStore::connect(url).await.expect("connect")).await;
    } else {
        panic!("{CHILD}={spec}: expected embedded:PATH or postgres:URL");
    }
}

async fn run_once<S: EventStore + ProjectionStore>(store: &S) {
    let ttl = Duration::from_secs(60);
    // The same owner every time: the dead runner's lease is taken over at once.
    let lease = store.claim(Aborting.name(), Partition::WHOLE, "runner", ttl).await.expect("claim").expect("free");
    let mut runner =
        BatchRunner::new(&Aborting, store, &EventFilter::all(), lease).batch_size(4).crash_limit(CRASH_LIMIT);
    runner.catch_up().await.expect("catch up");
    store.release(runner.lease()).await.expect("release");
}

async fn crash_loop<S: EventStore + ProjectionStore + DeadLetterQueue + Rebuilds>(store: &S, spec: &str) {
    store.register(Aborting.name(), Aborting.schema(), &Aborting.filter(), 1).await.expect("register");
    let users: Vec<Uuid> = (51..57).map(user).collect();
    for u in &users {
        append(store, *u, "UserRegistered", json!({"email": "u@x.io", "name": "U", "plan": "free"})).await;
    }
    let mut last = None;
    for (n, u) in users.iter().enumerate() {
        let data = if n == 2 { json!({"name": "boom", "abort": true}) } else { json!({"name": format!("U{n}")}) };
        last = Some(append(store, *u, "UserRenamed", data).await);
    }
    settle(store, &last.expect("appended")).await;

    let mut crashes = 0;
    for _ in 0..20 {
        let out = Command::new(std::env::current_exe().expect("this binary"))
            .env(CHILD, spec)
            .output()
            .expect("start the runner process");
        if out.status.success() {
            break;
        }
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("panicked"),
            "{spec}: the runner failed instead of crashing: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        crashes += 1;
    }
    assert!(crashes >= CRASH_LIMIT, "{spec}: the runner crashed {crashes} times, fewer than the limit");
    assert!(crashes < 20, "{spec}: the runner never got past the crashing event");

    let crasher = users[2];
    let letters = store.list(&DeadLetterFilter::default()).await.expect("list");
    assert_eq!(letters.len(), 1, "{spec}: {letters:?}");
    assert_eq!((letters[0].aggregate_id, letters[0].version), (crasher, 2), "{spec}");
    assert!(letters[0].error.contains("crashed the runner"), "{spec}: {}", letters[0].error);

    let all = read_everything(store, &EventFilter::all(), Partition::WHOLE, 100).await;
    let mut reference = reference_profiles(&all);
    let rows = stored_profiles(store, &users).await;
    assert_eq!(rows[&crasher].1, 1, "{spec}: the crashing aggregate stays at its last good version");
    reference.remove(&crasher);
    let mut others = rows.clone();
    others.remove(&crasher);
    assert_eq!(others, reference, "{spec}: everything else applied");
    let state = store.states().await.expect("states").remove(0);
    assert_eq!((state.parked_aggregates, state.lag_events), (1, 0), "{spec}");
    println!("{spec}: {crashes} crashes before the event was isolated");
}
