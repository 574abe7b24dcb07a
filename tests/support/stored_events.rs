//! Events written around the store's append (by SQL): versions missing before an event,
//! a version far ahead, a payload over the store's limit. The runtime must neither fold
//! over such a row nor skip what comes later; each check runs on every store through
//! `failure_tests!`.

use std::time::Duration;

use projection_user_profile::UserProfile;
use projector::repair::{repair, RepairAction, RepairEnd};
use projector::{
    AppendOutcome, AppendRequest, BatchRunner, DeadLetterFilter, DeadLetterStatus, EventFilter, ExpectedVersion,
    NewEvent, Partition, ProjectionHandler, RuntimeError, StepOutcome, StoreError,
};
use projector_embedded::EmbeddedStore;
use projector_postgres::PgStore;
use serde_json::json;
use uuid::Uuid;

use crate::contract::{read_everything, reference_profiles, settle, stored_profiles};
use crate::failures::{append, user, FailureStore};

/// Running SQL on a store as-is, to write rows its API refuses.
#[allow(async_fn_in_trait)]
pub trait RawSql {
    async fn run_sql(&self, sql: &str);
}

impl RawSql for EmbeddedStore {
    async fn run_sql(&self, sql: &str) {
        self.execute_script(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

impl RawSql for PgStore {
    async fn run_sql(&self, sql: &str) {
        self.execute_script(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// Everything these checks need of a store.
pub trait StoredEventsStore: FailureStore + RawSql {}
impl<T: FailureStore + RawSql> StoredEventsStore for T {}

/// Inserts one user event at `version` by SQL (no version check, no size check), and
/// waits until the store's reader returns it.
async fn insert_by_sql<S: StoredEventsStore>(store: &S, aggregate: Uuid, version: i64, data: &str) {
    let event_id = Uuid::new_v4();
    store
        .run_sql(&format!(
            "INSERT INTO events (event_id, aggregate_id, aggregate_type, event_type, event_data, version, timestamp) \
             VALUES ('{event_id}', '{aggregate}', 'user', 'UserRenamed', '{data}', {version}, \
             '2026-03-01T20:00:00.000000Z')"
        ))
        .await;
    let outcome = AppendOutcome {
        aggregate_id: aggregate,
        first_version: version,
        last_version: version,
        event_ids: vec![event_id],
        positions: vec![],
        deduplicated: false,
    };
    settle(store, &outcome).await;
}

async fn runner_step<S: StoredEventsStore>(store: &S, gap_timeout: Duration) -> Result<StepOutcome, RuntimeError> {
    let lease =
        store.claim(UserProfile.name(), Partition::WHOLE, "runner", Duration::from_secs(30)).await.unwrap().unwrap();
    let mut runner =
        BatchRunner::new(&UserProfile, store, &EventFilter::all(), lease).batch_size(10).gap_timeout(gap_timeout);
    let mut total = StepOutcome::default();
    loop {
        let step = runner.step().await?;
        total.events_read += step.events_read;
        total.events_applied += step.events_applied;
        total.dead_lettered += step.dead_lettered;
        if step.events_read == 0 {
            return Ok(total);
        }
    }
}

const LONG: Duration = Duration::from_secs(3600);

/// v1 applied, v5 written by SQL: v5 waits while the timeout runs, then is dead-lettered
/// naming v2–v4 and parks its aggregate only; `skip` accepts the gap and v5 applies.
pub async fn a_version_gap_is_dead_lettered_after_its_timeout_and_skip_accepts_it<S: StoredEventsStore>(store: &S) {
    let handler = UserProfile;
    store.register(handler.name(), handler.schema(), &handler.filter(), 1).await.unwrap();
    let (a, b) = (user(31), user(32));
    append(store, a, "UserRegistered", json!({"email": "a@x.io", "name": "A"})).await;
    insert_by_sql(store, a, 5, r#"{"name": "A5"}"#).await;
    let last = append(store, b, "UserRegistered", json!({"email": "b@x.io", "name": "B"})).await;
    settle(store, &last).await;

    let err = runner_step(store, LONG).await.expect_err("v5 waits for v2-v4");
    assert!(matches!(err, RuntimeError::GapWait(_)), "{err}");
    assert!(err.to_string().contains("versions 2\u{2013}4 missing"), "{err}");
    let rows = stored_profiles(store, &[a, b]).await;
    assert_eq!(rows[&a].1, 1, "v1 applied before the gap; v5 not folded over it");
    assert!(!rows.contains_key(&b), "the batch stops at the gap while it waits");
    assert!(store.list(&DeadLetterFilter::default()).await.unwrap().is_empty(), "no letter while waiting");

    let outcome = runner_step(store, Duration::ZERO).await.expect("the wait is over");
    assert_eq!(outcome.dead_lettered, 1);
    let letters = store.list(&DeadLetterFilter::default()).await.unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!((letter.aggregate_id, letter.version, letter.status), (a, 5, DeadLetterStatus::Open));
    assert!(letter.error.contains("versions 2\u{2013}4 missing"), "the letter names the gap: {}", letter.error);
    let rows = stored_profiles(store, &[a, b]).await;
    assert_eq!(rows[&a].1, 1, "A is parked at v1");
    assert_eq!(rows[&b].0.name.as_deref(), Some("B"), "B goes on");
    let state = store.states().await.unwrap().into_iter().find(|s| s.projection == handler.name()).unwrap();
    assert_eq!((state.dead_letters, state.parked_aggregates), (1, 1));

    // Retrying while the versions are still missing fails again.
    let retry = repair(&handler, store, &EventFilter::all(), letter.id, RepairAction::Retry, "ops", 10).await.unwrap();
    assert!(matches!(retry.end, RepairEnd::Stopped { ref error, .. } if error.contains("missing")), "{retry:?}");
    assert_eq!(stored_profiles(store, &[a]).await[&a].1, 1);

    let skip = repair(&handler, store, &EventFilter::all(), letter.id, RepairAction::Skip, "ops", 10).await.unwrap();
    assert_eq!((skip.end, skip.events_applied, skip.events_dropped), (RepairEnd::Done, 1, 0), "the gap is accepted");
    let (profile, version) = stored_profiles(store, &[a]).await[&a].clone();
    assert_eq!((profile.name.as_deref(), version), (Some("A5"), 5));
    assert_eq!(store.get(letter.id).await.unwrap().unwrap().status, DeadLetterStatus::Skipped);

    // The aggregate continues after the gap.
    let next = append(store, a, "UserRenamed", json!({"name": "A6"})).await;
    assert_eq!(next.last_version, 6);
    settle(store, &next).await;
    runner_step(store, LONG).await.expect("v6 applies");
    let (profile, version) = stored_profiles(store, &[a]).await[&a].clone();
    assert_eq!((profile.name.as_deref(), version), (Some("A6"), 6));
}

/// v2–v4 written while v5 waits: everything applies, in version order, and no letter
/// is left.
pub async fn a_gap_filled_within_its_timeout_applies_everything_in_order<S: StoredEventsStore>(store: &S) {
    let handler = UserProfile;
    store.register(handler.name(), handler.schema(), &handler.filter(), 1).await.unwrap();
    let a = user(33);
    append(store, a, "UserRegistered", json!({"email": "a@x.io", "name": "A", "plan": "free"})).await;
    insert_by_sql(store, a, 5, r#"{"name": "A5"}"#).await;
    let err = runner_step(store, LONG).await.expect_err("v5 waits");
    assert!(matches!(err, RuntimeError::GapWait(_)), "{err}");

    insert_by_sql(store, a, 2, r#"{"name": "A2"}"#).await;
    insert_by_sql(store, a, 3, r#"{"name": "A3"}"#).await;
    insert_by_sql(store, a, 4, r#"{"name": "A4"}"#).await;
    let outcome = runner_step(store, LONG).await.expect("the gap is filled");
    assert_eq!((outcome.events_applied, outcome.dead_lettered), (4, 0), "v2..v5 applied once each");

    let all = read_everything(store, &EventFilter::all(), Partition::WHOLE, 100).await;
    let rows = stored_profiles(store, &[a]).await;
    assert_eq!(rows, reference_profiles(&all), "equals a replay in version order");
    assert_eq!((rows[&a].0.name.as_deref(), rows[&a].1), (Some("A5"), 5));
    assert!(store.list(&DeadLetterFilter::default()).await.unwrap().is_empty());
}

/// A version at the largest bigint, written by SQL: the next append is refused naming
/// the limit, and the runner treats the version as a gap (nothing breaks later).
pub async fn a_version_at_the_largest_bigint_is_a_gap_and_refuses_appends<S: StoredEventsStore>(store: &S) {
    let handler = UserProfile;
    store.register(handler.name(), handler.schema(), &handler.filter(), 1).await.unwrap();
    let (a, b) = (user(34), user(35));
    append(store, a, "UserRegistered", json!({"email": "a@x.io", "name": "A"})).await;
    insert_by_sql(store, a, i64::MAX, r#"{"name": "far"}"#).await;

    let refused = store
        .append(AppendRequest {
            aggregate_id: a,
            aggregate_type: "user".into(),
            expected_version: ExpectedVersion::Any,
            events: vec![NewEvent::new("UserRenamed", json!({"name": "next"}))],
            idempotency_key: None,
        })
        .await
        .expect_err("no version after the largest");
    assert!(matches!(refused, StoreError::InvalidInput(_)), "{refused:?}");
    assert!(refused.to_string().contains(&i64::MAX.to_string()), "{refused}");
    assert!(refused.to_string().contains(&a.to_string()), "{refused}");

    let last = append(store, b, "UserRegistered", json!({"email": "b@x.io", "name": "B"})).await;
    settle(store, &last).await;
    let outcome = runner_step(store, Duration::ZERO).await.expect("dead-lettered");
    assert_eq!(outcome.dead_lettered, 1);
    let letter = store.list(&DeadLetterFilter::default()).await.unwrap().remove(0);
    assert_eq!(letter.version, i64::MAX);
    assert!(letter.error.contains(&format!("versions 2\u{2013}{} missing", i64::MAX - 1)), "{}", letter.error);
    let rows = stored_profiles(store, &[a, b]).await;
    assert_eq!((rows[&a].1, rows[&b].1), (1, 1));
}

/// A row over the store's payload limit, written by SQL, is dead-lettered unfolded with
/// its size and the limit; the rest applies.
pub async fn an_oversized_stored_event_is_dead_lettered_with_its_size<S: StoredEventsStore>(store: &S) {
    let handler = UserProfile;
    store.register(handler.name(), handler.schema(), &handler.filter(), 1).await.unwrap();
    let (a, b) = (user(36), user(37));
    append(store, a, "UserRegistered", json!({"email": "a@x.io", "name": "A"})).await;
    let limit = store.max_payload_bytes();
    let name = "x".repeat(limit);
    insert_by_sql(store, a, 2, &format!(r#"{{"name": "{name}"}}"#)).await;
    let size = limit + r#"{"name":""}"#.len();
    let last = append(store, b, "UserRegistered", json!({"email": "b@x.io", "name": "B"})).await;
    settle(store, &last).await;

    let outcome = runner_step(store, LONG).await.expect("the batch commits");
    assert_eq!(outcome.dead_lettered, 1);
    let letter = store.list(&DeadLetterFilter::default()).await.unwrap().remove(0);
    assert_eq!((letter.aggregate_id, letter.version), (a, 2));
    assert!(
        letter.error.contains(&format!("{size} bytes")) && letter.error.contains(&format!("limit of {limit} bytes")),
        "the letter names size and limit: {}",
        letter.error
    );
    let rows = stored_profiles(store, &[a, b]).await;
    assert_eq!((rows[&a].0.name.as_deref(), rows[&a].1), (Some("A"), 1), "not folded");
    assert_eq!(rows[&b].1, 1, "B goes on");

    // An operator's retry is held to the same limit; skip drops the event.
    let retry = repair(&handler, store, &EventFilter::all(), letter.id, RepairAction::Retry, "ops", 10).await.unwrap();
    assert!(matches!(retry.end, RepairEnd::Stopped { ref error, .. } if error.contains("over the limit")), "{retry:?}");
    let skip = repair(&handler, store, &EventFilter::all(), letter.id, RepairAction::Skip, "ops", 10).await.unwrap();
    assert_eq!((skip.end, skip.events_dropped), (RepairEnd::Done, 1));
    let (profile, version) = stored_profiles(store, &[a]).await[&a].clone();
    assert_eq!((profile.name.as_deref(), version), (Some("A"), 2), "skipped, the version consumed");
}

/// A rebuild meets an oversized stored event as live processing does: dead-lettered with
/// its size, its aggregate parked at the last good version, everyone else rebuilt.
pub async fn a_rebuild_dead_letters_an_oversized_stored_event<S: StoredEventsStore>(store: &S) {
    let handler = UserProfile;
    store.register(handler.name(), handler.schema(), &handler.filter(), 1).await.unwrap();
    let (a, b) = (user(38), user(39));
    append(store, a, "UserRegistered", json!({"email": "a@x.io", "name": "A"})).await;
    let limit = store.max_payload_bytes();
    insert_by_sql(store, a, 2, &format!(r#"{{"name": "{}"}}"#, "x".repeat(limit))).await;
    let last = append(store, b, "UserRegistered", json!({"email": "b@x.io", "name": "B"})).await;
    settle(store, &last).await;

    let outcome = projector::Rebuild::new(&handler, &EventFilter::all())
        .run(store, |_: u64, _: projector::Checkpoint| {})
        .await
        .expect("the rebuild completes for everyone else");
    assert_eq!(outcome.dead_lettered, 1);
    let letter = store.list(&DeadLetterFilter::default()).await.unwrap().remove(0);
    assert_eq!((letter.aggregate_id, letter.version), (a, 2));
    assert!(letter.error.contains(&format!("limit of {limit} bytes")), "{}", letter.error);
    let rows = stored_profiles(store, &[a, b]).await;
    assert_eq!((rows[&a].0.name.as_deref(), rows[&a].1), (Some("A"), 1), "not folded");
    assert_eq!((rows[&b].0.name.as_deref(), rows[&b].1), (Some("B"), 1), "B rebuilt");
}
