//! Replays with poison in the history: rebuilds and time travel give the rows live
//! processing gives. Events operators skipped or discarded stay out; aggregates parked
//! behind an open dead letter stay parked; an event that fails in a rebuild is
//! dead-lettered and parks its aggregate while the rebuild completes for everyone else.
//! Run by `failure_tests!` on every store.

use std::collections::BTreeMap;

use projection_user_profile::{Profile, UserProfile};
use projector::repair::{repair, RepairAction, RepairEnd};
use projector::runtime::state_at;
use projector::{
    Checkpoint, DeadLetterFilter, DeadLetterStatus, EventFilter, Partition, ProjectionHandler, Rebuild, RebuildOutcome,
    Value,
};
use serde_json::json;
use uuid::Uuid;

use crate::contract::{read_everything, reference_profiles, settle, stored_profiles};
use crate::failures::{append, poisoned_history, register, run, user, FailureStore};
use crate::ledger::{Ledger, SCHEMA as LEDGER};
use crate::poison::Poisonable;

/// A rebuild in pages of two events, flushing its rows after each page (so that they
/// are reloaded in between).
async fn rebuild<H: ProjectionHandler, S: FailureStore>(store: &S, handler: &H, from: Option<i64>) -> RebuildOutcome {
    rebuild_flushing(store, handler, from, 1).await
}

/// A rebuild in pages of two events, flushing every `flush_rows` rows.
async fn rebuild_flushing<H: ProjectionHandler, S: FailureStore>(
    store: &S,
    handler: &H,
    from: Option<i64>,
    flush_rows: usize,
) -> RebuildOutcome {
    Rebuild::new(handler, &EventFilter::all())
        .from_position(from)
        .read_size(2)
        .flush_rows(flush_rows)
        .run(store, |_: u64, _: Checkpoint| {})
        .await
        .unwrap_or_else(|e| panic!("the rebuild of {} completes: {e}", handler.name()))
}

async fn open_letters<S: FailureStore>(store: &S) -> Vec<(Uuid, i64, u32)> {
    let letters = store.list(&DeadLetterFilter::default()).await.expect("list");
    letters.iter().map(|l| (l.aggregate_id, l.version, l.attempts)).collect()
}

async fn partition_failures<S: FailureStore>(store: &S, projection: &str) -> (i64, i64, i64, i64) {
    let states = store.states().await.expect("states");
    let s = states.iter().find(|s| s.projection == projection).expect("a state row");
    (s.dead_letters, s.parked_aggregates, s.parked_events, s.lag_events)
}

/// The user-profile rows live processing gives when `parked` aggregates stop before the
/// given versions and the `out` events were taken out.
async fn expected_profiles<S: FailureStore>(
    store: &S,
    parked: &[(Uuid, i64)],
    out: &[Uuid],
) -> BTreeMap<Uuid, (Profile, i64)> {
    let all = read_everything(store, &EventFilter::all(), Partition::WHOLE, 100).await;
    let held = |e: &projector::DomainEvent| parked.iter().any(|(a, v)| e.aggregate_id == *a && e.version >= *v);
    let kept: Vec<_> = all.iter().filter(|e| !held(e) && !out.contains(&e.event_id)).cloned().collect();
    let mut expected = reference_profiles(&kept);
    // A row's version counts the versions taken out as consumed.
    for e in all.iter().filter(|e| out.contains(&e.event_id) && !held(e)) {
        if let Some(row) = expected.get_mut(&e.aggregate_id) {
            row.1 = row.1.max(e.version);
        }
    }
    expected
}

pub async fn a_rebuild_with_a_poison_event_equals_the_live_read_model<S: FailureStore>(store: &S) {
    let handler = Poisonable::new(UserProfile);
    register(store, &handler).await;
    let (a, b, last) = poisoned_history(store).await;
    assert_eq!(run(store, &handler, "runner").await, 1, "live: A's poison event is dead-lettered");
    let live = stored_profiles(store, &[a, b]).await;
    let live_failures = partition_failures(store, handler.name()).await;
    assert_eq!(live_failures, (1, 1, 3, 0), "live: A parked with 3 events");

    let outcome = rebuild(store, &handler, None).await;
    assert_eq!(outcome.checkpoint.position, last.positions[0], "the rebuild reads to the end");
    assert_eq!(outcome.dead_lettered, 0, "A is parked already: its events wait for `dlq retry`");
    assert_eq!(stored_profiles(store, &[a, b]).await, live, "a full rebuild gives the live rows");
    assert_eq!(partition_failures(store, handler.name()).await, live_failures, "A stays parked, one open letter");
    let outcome = rebuild(store, &handler, Some(last.positions[0])).await;
    assert_eq!(outcome.dead_lettered, 0);
    assert_eq!(stored_profiles(store, &[a, b]).await, live, "a partial rebuild gives the live rows");

    // A poison event the runner never saw: the rebuild dead-letters it and parks B.
    let poison = append(store, b, "UserRenamed", json!({"name": "B4", "poison": true})).await;
    append(store, b, "UserEmailChanged", json!({"email": "b5@x.io"})).await;
    let c = user(3);
    let last = append(store, c, "UserRegistered", json!({"email": "c@x.io", "name": "C", "plan": "free"})).await;
    settle(store, &last).await;
    // Rows stay in memory across pages: B's row goes back to where the poison's page
    // found it, not to where the rebuild started.
    let outcome = rebuild_flushing(store, &handler, None, 1_000).await;
    assert_eq!(outcome.dead_lettered, 1, "B's new poison event is dead-lettered by the rebuild");
    let rows = stored_profiles(store, &[a, b, c]).await;
    assert_eq!(rows, expected_profiles(store, &[(a, 2), (b, poison.first_version)], &[]).await, "rows");
    assert_eq!(rows[&b].1, 3, "B stays at its last good version");
    let mut letters = open_letters(store).await;
    letters.sort();
    let mut want = vec![(a, 2, 1), (b, poison.first_version, 1)];
    want.sort();
    assert_eq!(letters, want, "one letter per poison event, as live processing sends");
    assert_eq!(partition_failures(store, handler.name()).await, (2, 2, 5, 0), "A and B parked, nothing lags");

    // Live processing goes on from the rebuild's checkpoint and holds B back as well.
    let more = append(store, b, "PlanUpgraded", json!({"plan": "pro"})).await;
    settle(store, &more).await;
    assert_eq!(run(store, &handler, "runner").await, 0, "B's later event waits behind its letter");
    assert_eq!(stored_profiles(store, &[a, b, c]).await, rows, "nothing of a parked aggregate applied live");

    // `dlq retry` after the fix applies each parked sequence up to the rebuild's and the
    // runner's checkpoint: the rows then equal a clean replay.
    handler.faults.fix();
    for letter in store.list(&DeadLetterFilter::default()).await.expect("list") {
        let outcome = repair(&handler, store, &EventFilter::all(), letter.id, RepairAction::Retry, "ops", 10)
            .await
            .expect("retry");
        assert_eq!(outcome.end, RepairEnd::Done, "{letter:?}");
    }
    let all = read_everything(store, &EventFilter::all(), Partition::WHOLE, 100).await;
    assert_eq!(stored_profiles(store, &[a, b, c]).await, reference_profiles(&all), "retried: a clean replay");
}

pub async fn a_rebuild_keeps_skipped_and_discarded_events_out<S: FailureStore>(store: &S) {
    let handler = Poisonable::new(UserProfile);
    register(store, &handler).await;
    let (a, b, _) = poisoned_history(store).await;
    run(store, &handler, "runner").await;
    let letter = store.list(&DeadLetterFilter::default()).await.expect("list").remove(0);
    repair(&handler, store, &EventFilter::all(), letter.id, RepairAction::Skip, "ops", 10).await.expect("skip");
    let live = stored_profiles(store, &[a, b]).await;
    assert_eq!(live, expected_profiles(store, &[], &[letter.event_id]).await, "live rows after the skip");
    let kept = store.exclusions(handler.name()).await.expect("exclusions");
    assert!(kept.discarded.contains(&letter.event_id), "the skip is recorded: {kept:?}");

    // The handler still rejects the skipped event: the rebuild leaves it out.
    let outcome = rebuild(store, &handler, None).await;
    assert_eq!(outcome.dead_lettered, 0, "a skipped event is not tried again");
    assert_eq!(stored_profiles(store, &[a, b]).await, live, "a full rebuild equals the live rows after a skip");
    assert!(open_letters(store).await.is_empty(), "no letter reopened");
    assert_eq!(store.get(letter.id).await.expect("get").expect("letter").status, DeadLetterStatus::Skipped);

    // Discard: the whole parked sequence stays out of rebuilds.
    let d = user(4);
    append(store, d, "UserRegistered", json!({"email": "d@x.io", "name": "D", "plan": "free"})).await;
    append(store, d, "UserRenamed", json!({"name": "D2", "poison": true})).await;
    let last = append(store, d, "PlanUpgraded", json!({"plan": "pro"})).await;
    settle(store, &last).await;
    assert_eq!(run(store, &handler, "runner").await, 1);
    let letter = store.list(&DeadLetterFilter::default()).await.expect("list").remove(0);
    repair(&handler, store, &EventFilter::all(), letter.id, RepairAction::Discard, "ops", 10).await.expect("discard");
    let live = stored_profiles(store, &[a, b, d]).await;
    assert_eq!(live[&d].0.name.as_deref(), Some("D"), "the discarded sequence is not applied");
    let outcome = rebuild(store, &handler, None).await;
    assert_eq!(outcome.dead_lettered, 0);
    assert_eq!(stored_profiles(store, &[a, b, d]).await, live, "a full rebuild equals the live rows after a discard");
    assert_eq!(partition_failures(store, handler.name()).await, (0, 0, 0, 0), "nothing parked, nothing lags");
}

/// A handler that changes the row before it fails, rebuilt in pages of two events with
/// a flush after each: the failing aggregate's rows go back to where its page found
/// them, every other event is applied exactly once.
pub async fn a_rebuild_takes_out_what_a_failing_event_touched<S: FailureStore>(store: &S) {
    let handler = Poisonable::new(Ledger);
    register(store, &handler).await;
    let (a, _, _) = poisoned_history(store).await;
    let outcome = rebuild(store, &handler, None).await;
    assert_eq!(outcome.dead_lettered, 1, "the poison event is dead-lettered");
    let all = read_everything(store, &EventFilter::all(), Partition::WHOLE, 100).await;
    let keys: Vec<Vec<Value>> = all.iter().map(|e| vec![Value::Uuid(e.event_id)]).collect();
    let rows = store.load_rows(&LEDGER, &keys).await.expect("load");
    let applied: BTreeMap<Uuid, i64> = rows
        .iter()
        .map(|r| match (&r[0], &r[1]) {
            (Value::Uuid(id), Value::BigInt(n)) => (*id, *n),
            other => panic!("ledger row {other:?}"),
        })
        .collect();
    for e in &all {
        let want = if e.aggregate_id == a && e.version >= 2 { None } else { Some(1) };
        assert_eq!(
            applied.get(&e.event_id).copied(),
            want,
            "event {} of {} v{}",
            e.event_id,
            e.aggregate_id,
            e.version
        );
    }
    assert_eq!(open_letters(store).await, vec![(a, 2, 1)]);
}

pub async fn time_travel_leaves_out_a_skipped_event<S: FailureStore>(store: &S) {
    let handler = Poisonable::new(UserProfile);
    register(store, &handler).await;
    let (a, b, _) = poisoned_history(store).await;
    run(store, &handler, "runner").await;
    let h = &handler;
    let state = |key: Uuid, at: Option<chrono::DateTime<chrono::Utc>>| async move {
        state_at(h, store, &EventFilter::all(), &key, Some(key), at).await.expect("time travel")
    };
    assert_eq!(state(a, None).await, stored_profiles(store, &[a]).await.remove(&a), "parked: the last good row");

    let letter = store.list(&DeadLetterFilter::default()).await.expect("list").remove(0);
    repair(&handler, store, &EventFilter::all(), letter.id, RepairAction::Skip, "ops", 10).await.expect("skip");
    let now = stored_profiles(store, &[a, b]).await;
    assert_eq!(state(a, None).await, now.get(&a).cloned(), "time travel to now equals the stored row");
    assert_eq!(state(b, None).await, now.get(&b).cloned());
    let history = store.read_aggregate(a, projector::ReadBound::All).await.expect("read");
    let (row, version) = state(a, Some(history[2].timestamp)).await.expect("A had a row at v3");
    assert_eq!(version, 3, "v3 follows the skipped v2");
    assert_eq!((row.name.as_deref(), row.email.as_deref()), (Some("A"), Some("a3@x.io")), "{row:?}");
}
