//! Eager migration on every store: a plan writes nothing; an apply rewrites each event
//! once, through the chains lazy upcasting uses, and a rollback puts every byte back; a
//! run that stops half way goes on where it stopped; an event the chains cannot rewrite
//! stops the migration before it starts; and projections running across a migration
//! apply every event once and end as a replay would. Run by `migration_tests!`.
//!
//! The history is the test-only `members` projection of [`crate::upcasting`]:
//! `MemberJoined` v1 (`name`) and v2 (`first_name`, `last_name`) become `MemberSignedUp`
//! v3, which the handler reads.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::FutureExt;
use projector::migration::{rollback, ApplyOutcome, Migration, MigrationError, MigrationProgress};
use projector::store::migrations::{EventMigrations, MigrationStatus, NewEventMigration, Rewrite, RewriteChunk};
use projector::upcast::Upcasters;
use projector::{
    BatchRunner, Checkpoint, DeadLetterFilter, EventFilter, Partition, ProjectionHandler, ReadBound, Rebuild, Value,
};
use serde_json::json;
use uuid::Uuid;

use crate::contract::{read_everything, settle};
use crate::dumps::{differing_tables, RowDump};
use crate::failures::FailureStore;
use crate::ledger::{Ledger, SCHEMA as LEDGER};
use crate::upcasting::{a_failing_history, ada, append, member, register, rows, upcasters, Members};

/// A store with everything a migration touches.
pub trait MigrationStore: FailureStore + EventMigrations {}
impl<T: FailureStore + EventMigrations> MigrationStore for T {}

/// Members joined at v1 (`first`), at v2 (`second`) and as `MemberSignedUp` v3
/// (`third`), each of them moving once; returns them all.
async fn history<S: MigrationStore>(store: &S, from: u128, first: u128, second: u128, third: u128) -> Vec<Uuid> {
    let mut ids = Vec::new();
    let mut n = from;
    for (count, event_type, version, data) in [
        (first, "MemberJoined", 1, json!({"name": "Ada Lovelace"})),
        (second, "MemberJoined", 2, json!({"first_name": "Ada", "last_name": "Lovelace"})),
        (third, "MemberSignedUp", 3, json!({"first_name": "Ada", "last_name": "Lovelace"})),
    ] {
        for _ in 0..count {
            let id = member(n);
            n += 1;
            append(store, id, event_type, version, data.clone()).await;
            ids.push(id);
        }
    }
    let mut last = None;
    for id in &ids {
        last = Some(append(store, *id, "MemberMoved", 1, json!({"city": "London"})).await);
    }
    settle(store, &last.expect("members")).await;
    ids
}

/// The standard history: six members at v1, three at v2, three at v3.
async fn members<S: MigrationStore>(store: &S) -> Vec<Uuid> {
    history(store, 100, 6, 3, 3).await
}

fn migration() -> Migration {
    Migration::new(upcasters()).chunk_size(3).read_size(4).actor("ops")
}

/// Progress that stops the run (a panic, as a crash would) after `chunks` chunks.
struct CrashAfter(u64);

impl MigrationProgress for CrashAfter {
    fn chunk(&mut self, _: u64, _: u64) {
        self.0 = self.0.saturating_sub(1);
        if self.0 == 0 {
            panic!("the migration process dies between chunks");
        }
    }
}

/// An apply that dies after `chunks` committed chunks.
async fn apply_crashing<S: MigrationStore>(store: &S, chunks: u64) {
    let run = std::panic::AssertUnwindSafe(migration().apply(store, &mut CrashAfter(chunks))).catch_unwind().await;
    assert!(run.is_err(), "the run was meant to die after {chunks} chunk(s)");
}

async fn applied<S: MigrationStore>(store: &S) -> (projector::store::migrations::EventMigration, bool, u64) {
    match migration().apply(store, &mut ()).await {
        Ok(ApplyOutcome::Applied { migration, resumed, chunks }) => (*migration, resumed, chunks),
        other => panic!("expected an applied migration, got {other:?}"),
    }
}

async fn stored_types<S: MigrationStore>(store: &S, ids: &[Uuid]) -> BTreeMap<Uuid, Vec<(String, u32)>> {
    let mut out = BTreeMap::new();
    for id in ids {
        let events = store.read_aggregate(*id, ReadBound::All).await.expect("read");
        let types = events.iter().map(|e| (e.event_type.clone(), e.metadata().expect("metadata").event_version));
        out.insert(*id, types.collect());
    }
    out
}

pub async fn a_plan_writes_nothing<S: MigrationStore, D: RowDump>(store: &S, dump: &D) {
    register(store).await;
    members(store).await;
    crate::upcasting::run(store).await;
    let before = dump.every_row().await;
    let plan = migration().plan(store, &mut ()).await.expect("plan");
    let after = dump.every_row().await;
    assert!(after == before, "the plan changed tables {:?}", differing_tables(&before, &after));

    assert_eq!(plan.event_types, ["MemberJoined"]);
    assert_eq!(plan.upcasters, ["MemberJoined v1 -> v2", "MemberJoined v2 -> v3 as MemberSignedUp"]);
    assert_eq!((plan.events_scanned, plan.events_to_change, plan.events_current), (9, 9, 0));
    assert!(plan.failures.is_empty(), "{:?}", plan.failures);
    let counts: Vec<_> = plan
        .changes
        .iter()
        .map(|c| (c.event_type.as_str(), c.event_version, c.target_type.as_str(), c.target_version, c.events))
        .collect();
    assert_eq!(counts, [("MemberJoined", 1, "MemberSignedUp", 3, 6), ("MemberJoined", 2, "MemberSignedUp", 3, 3)]);
    let sample = &plan.changes[0].sample;
    assert_eq!(sample.before.event_data, json!({"name": "Ada Lovelace"}));
    assert_eq!(sample.after.event_data, json!({"first_name": "Ada", "last_name": "Lovelace"}));
    assert_eq!(
        (sample.before.event_type.as_str(), sample.after.event_type.as_str()),
        ("MemberJoined", "MemberSignedUp")
    );
    assert_eq!(sample.after.metadata["event_version"], json!(3));
    assert_ne!(plan.before_checksum, plan.after_checksum);
}

pub async fn apply_then_rollback_restores_every_row_byte_for_byte<S: MigrationStore, D: RowDump>(store: &S, dump: &D) {
    register(store).await;
    let ids = members(store).await;
    let original = dump.events().await;
    let plan = migration().plan(store, &mut ()).await.expect("plan");

    let (record, resumed, chunks) = applied(store).await;
    assert!(!resumed);
    assert!(chunks >= 3, "9 events in chunks of 3 reads: {chunks}");
    assert_eq!(record.status, MigrationStatus::Applied);
    assert_eq!((record.events_planned, record.events_rewritten), (9, 9));
    assert_eq!(
        (record.before_checksum.as_str(), record.after_checksum.as_str()),
        (plan.before_checksum.as_str(), plan.after_checksum.as_str())
    );
    assert_eq!(record.upcasters, plan.upcasters);
    assert!(record.applied_at.is_some() && record.last_error.is_none());
    let rewritten = stored_types(store, &ids).await;
    for (id, types) in &rewritten {
        assert_eq!(types[0], ("MemberSignedUp".to_owned(), 3), "member {id} is stored at the chain's end");
        assert_eq!(types[1], ("MemberMoved".to_owned(), 1), "other types are left alone");
    }
    assert_ne!(dump.events().await, original);
    match migration().apply(store, &mut ()).await {
        Ok(ApplyOutcome::NothingToDo(plan)) => assert_eq!(plan.events_to_change, 0),
        other => panic!("a second apply has nothing to do: {other:?}"),
    }

    let undone = rollback(store, record.id, "bo", 2, &mut ()).await.expect("rollback");
    assert!(!undone.already);
    assert_eq!(undone.migration.status, MigrationStatus::RolledBack);
    assert_eq!((undone.migration.events_restored, undone.migration.rolled_back_by.as_deref()), (9, Some("bo")));
    assert!(undone.migration.rolled_back_at.is_some());
    assert_eq!(dump.events().await, original, "every event row is back, byte for byte");
    let again = rollback(store, record.id, "bo", 2, &mut ()).await.expect("a second rollback");
    assert!(again.already, "a rolled-back migration stays rolled back");
    assert!(matches!(rollback(store, 99, "bo", 2, &mut ()).await, Err(MigrationError::Unknown(99))));
    let listed: Vec<_> = store.event_migrations().await.expect("list").iter().map(|m| (m.id, m.status)).collect();
    assert_eq!(listed, [(record.id, MigrationStatus::RolledBack)]);
}

pub async fn a_rollback_waits_for_the_later_migrations<S: MigrationStore, D: RowDump>(store: &S, _: &D) {
    register(store).await;
    members(store).await;
    let (first, _, _) = applied(store).await;
    history(store, 500, 2, 0, 0).await;
    let (second, _, _) = applied(store).await;
    assert_eq!(second.events_rewritten, 2, "only the events appended since");
    match rollback(store, first.id, "ops", 10, &mut ()).await {
        Err(MigrationError::LaterMigration { id, later, .. }) => assert_eq!((id, later), (first.id, second.id)),
        other => panic!("expected a refusal naming the later migration, got {other:?}"),
    }
    rollback(store, second.id, "ops", 10, &mut ()).await.expect("the later one first");
    rollback(store, first.id, "ops", 10, &mut ()).await.expect("then the earlier one");
}

pub async fn apply_then_a_rebuild_gives_the_read_model_of_lazy_upcasting<S: MigrationStore, D: RowDump>(
    store: &S,
    _: &D,
) {
    register(store).await;
    let ids = members(store).await;
    assert_eq!(crate::upcasting::run(store).await, 0);
    let lazily = rows(store, &ids).await;
    assert_eq!(lazily.get(&ids[0]), Some(&(ada("London"), 2)));
    assert_eq!(lazily.len(), ids.len());

    applied(store).await;
    for (upcast, what) in [(upcasters(), "with the chains"), (Upcasters::new(), "without any chain")] {
        Rebuild::new(&Members, &EventFilter::all())
            .upcasters(upcast)
            .read_size(4)
            .run(store, |_: u64, _: Checkpoint| {})
            .await
            .expect("rebuild");
        assert_eq!(rows(store, &ids).await, lazily, "a rebuild {what} after the migration gives the lazy read model");
    }
}

pub async fn a_failing_upcaster_is_named_by_the_plan_and_apply_refuses<S: MigrationStore, D: RowDump>(
    store: &S,
    dump: &D,
) {
    register(store).await;
    members(store).await;
    let (a, b, failing) = a_failing_history(store).await;
    let plan = migration().plan(store, &mut ()).await.expect("plan");
    assert_eq!(plan.failures.len(), 1, "{:?}", plan.failures);
    let failure = &plan.failures[0];
    assert_eq!((failure.event_id, failure.position, failure.aggregate_id), (failing.event_id, failing.position, a));
    assert_eq!((failure.event_type.as_str(), failure.event_version), ("MemberJoined", Some(1)));
    assert!(failure.error.contains("cannot split the name \"Cher\""), "{}", failure.error);
    assert!(failure.to_string().contains(&failing.event_id.to_string()));

    let before = dump.every_row().await;
    match migration().apply(store, &mut ()).await {
        Err(MigrationError::PlanFailed(failures)) => assert_eq!(failures, plan.failures),
        other => panic!("apply must refuse to start: {other:?}"),
    }
    let after = dump.every_row().await;
    assert!(after == before, "a refused apply wrote to {:?}", differing_tables(&before, &after));
    assert!(store.event_migrations().await.expect("list").is_empty(), "nothing recorded");

    // Lazily, the event is dead-lettered and parks only its aggregate.
    assert_eq!(crate::upcasting::run(store).await, 1);
    let letters = store.list(&DeadLetterFilter::default()).await.expect("letters");
    assert_eq!(letters.iter().map(|l| (l.event_id, l.aggregate_id)).collect::<Vec<_>>(), [(failing.event_id, a)]);
    let live = rows(store, &[a, b]).await;
    assert_eq!((live.get(&a), live.get(&b)), (None, Some(&(ada("London"), 2))));
}

pub async fn an_interrupted_apply_goes_on_and_rewrites_nothing_twice<S: MigrationStore, D: RowDump>(
    store: &S,
    dump: &D,
) {
    register(store).await;
    let ids = members(store).await;
    let original = dump.events().await;
    let plan = migration().plan(store, &mut ()).await.expect("plan");
    apply_crashing(store, 2).await;
    let open = store.event_migrations().await.expect("list");
    assert_eq!(open.len(), 1);
    let stopped = &open[0];
    assert_eq!(stopped.status, MigrationStatus::Applying, "a stopped run leaves its migration open");
    assert!(stopped.events_rewritten > 0 && stopped.events_rewritten < 9, "{stopped:?}");
    let backups = store.migrated_events(stopped.id, 0, 100).await.expect("backups");
    assert_eq!(backups.len() as i64, stopped.events_rewritten, "each committed chunk backed up what it rewrote");

    // Another migration cannot start meanwhile.
    let other = NewEventMigration {
        event_types: vec!["MemberJoined".into()],
        upcasters: vec![],
        upto_position: 1,
        events_planned: 1,
        actor: "x".into(),
    };
    let refused = store.begin_event_migration(&other).await.expect_err("one open migration at a time");
    assert!(refused.to_string().contains(&format!("migration {} is still applying", stopped.id)), "{refused}");

    let (record, resumed, _) = applied(store).await;
    assert!(resumed, "the second run goes on with the open migration");
    assert_eq!(record.id, stopped.id);
    assert_eq!((record.events_planned, record.events_rewritten), (9, 9));
    assert_eq!(record.before_checksum, plan.before_checksum);
    assert_eq!(record.after_checksum, plan.after_checksum);
    let backups = store.migrated_events(record.id, 0, 100).await.expect("backups");
    assert_eq!(backups.len(), 9, "one backup per event");
    for backup in &backups {
        assert_eq!(backup.original.event_type, "MemberJoined", "an original, never a rewritten event");
    }
    assert!(stored_types(store, &ids).await.values().all(|t| t[0] == ("MemberSignedUp".to_owned(), 3)));
    rollback(store, record.id, "ops", 4, &mut ()).await.expect("rollback");
    assert_eq!(dump.events().await, original, "the rollback puts back what the two runs rewrote");
}

pub async fn an_event_committed_behind_the_cursor_is_picked_up_before_verification<S: MigrationStore, D: RowDump>(
    store: &S,
    dump: &D,
) {
    register(store).await;
    // A stand-in between the members: it becomes a `MemberJoined` v1 once the chunk that
    // covers its position has run, as an event whose transaction committed late would.
    history(store, 600, 2, 0, 0).await;
    append(store, member(700), "Filler", 1, json!({"name": "Late Comer"})).await;
    let mut ids = history(store, 610, 2, 0, 0).await;
    ids.push(member(700));
    apply_crashing(store, 2).await;
    let stopped = store.event_migrations().await.expect("list").remove(0);
    assert_eq!((stopped.status, stopped.events_rewritten), (MigrationStatus::Applying, 4));
    assert_eq!(stopped.rewritten_upto, stopped.upto_position, "every chunk ran; only the verification is left");
    dump.execute("UPDATE events SET event_type = 'MemberJoined', metadata = '{\"event_version\": 1}' WHERE event_type = 'Filler'")
        .await;

    let (record, resumed, _) = applied(store).await;
    assert!(resumed);
    assert_eq!((record.events_planned, record.events_rewritten), (4, 5), "the late event is rewritten too");
    assert_eq!(store.migrated_events(record.id, 0, 100).await.expect("backups").len(), 5);
    let types = stored_types(store, &ids).await;
    assert!(types.values().all(|t| t[0] == ("MemberSignedUp".to_owned(), 3)), "{types:?}");
}

pub async fn a_chunk_is_written_whole_or_not_at_all<S: MigrationStore, D: RowDump>(store: &S, dump: &D) {
    register(store).await;
    let ids = members(store).await;
    let plan = migration().plan(store, &mut ()).await.expect("plan");
    let new = NewEventMigration {
        event_types: plan.event_types.clone(),
        upcasters: plan.upcasters.clone(),
        upto_position: plan.upto_position,
        events_planned: 2,
        actor: "ops".into(),
    };
    let record = store.begin_event_migration(&new).await.expect("begin");
    let before = dump.events().await;
    let events: Vec<_> = [ids[0], ids[1]]
        .into_iter()
        .map(|id| store.read_aggregate(id, ReadBound::All))
        .collect::<futures_util::future::JoinAll<_>>()
        .await
        .into_iter()
        .map(|e| e.expect("read").remove(0))
        .collect();
    let rewrite = |e: &projector::DomainEvent, from_type: &str| {
        let upcast = upcasters().upcast(e.clone()).expect("upcasts");
        Rewrite {
            position: e.position,
            event_id: e.event_id,
            aggregate_id: e.aggregate_id,
            from: shape(from_type, e),
            to: shape(&upcast.event_type, &upcast),
        }
    };
    // The second event is not what the chunk says it read: the first must not be written either.
    let rewrites = [rewrite(&events[0], "MemberJoined"), rewrite(&events[1], "SomethingElse")];
    let to = events[1].position;
    let chunk = |rewrites| chunk(record.id, to, rewrites);
    let failed = store.rewrite_events(&chunk(&rewrites)).await;
    assert!(failed.is_err(), "a chunk with an event changed under it fails: {failed:?}");
    assert_eq!(dump.events().await, before, "nothing of the chunk was written");
    let now = &store.event_migrations().await.expect("list")[0];
    assert_eq!((now.rewritten_upto, now.events_rewritten), (0, 0));
    assert!(store.migrated_events(record.id, 0, 10).await.expect("backups").is_empty());

    let wrong_cursor = RewriteChunk { from: 1, ..chunk(&rewrites[..1]) };
    assert!(!store.rewrite_events(&wrong_cursor).await.expect("a refused compare-and-set is no error"));
    assert!(store.rewrite_events(&chunk(&rewrites[..1])).await.expect("a good chunk"));
    assert!(!store.rewrite_events(&chunk(&rewrites[..1])).await.expect("repeated"), "the cursor moved on");
    assert_eq!(store.migrated_events(record.id, 0, 10).await.expect("backups").len(), 1, "backed up once");
}

/// A chunk of migration `id` from its start to `to`.
fn chunk(id: i64, to: i64, rewrites: &[Rewrite]) -> RewriteChunk<'_> {
    RewriteChunk {
        migration: id,
        from: 0,
        to,
        rewrites,
        before_checksum: "0000000000000001".into(),
        after_checksum: "0000000000000002".into(),
    }
}

fn shape(event_type: &str, e: &projector::DomainEvent) -> projector::store::migrations::StoredShape {
    projector::store::migrations::StoredShape {
        event_type: event_type.to_owned(),
        event_data: e.event_data.clone(),
        metadata: e.metadata.clone(),
    }
}

/// Runs up to `steps` batches of `handler` (of two events each) with the chains.
async fn steps<H: ProjectionHandler, S: MigrationStore>(store: &S, handler: &H, steps: usize) {
    let lease = store.claim(handler.name(), Partition::WHOLE, "runner", Duration::from_secs(30)).await.expect("claim");
    let lease = lease.expect("the lease is free");
    let mut runner = BatchRunner::new(handler, store, &EventFilter::all(), lease).upcasters(upcasters()).batch_size(2);
    for _ in 0..steps {
        if runner.step().await.expect("a batch").events_read == 0 {
            break;
        }
    }
    store.release(runner.lease()).await.expect("release");
}

pub async fn projections_running_across_a_migration_apply_every_event_once<S: MigrationStore, D: RowDump>(
    store: &S,
    _: &D,
) {
    register(store).await;
    store.register(Ledger.name(), &LEDGER, &EventFilter::all(), 1).await.expect("register the ledger");
    let mut ids = members(store).await;
    steps(store, &Members, 3).await;
    steps(store, &Ledger, 4).await;
    apply_crashing(store, 1).await;
    steps(store, &Members, 2).await;
    steps(store, &Ledger, 3).await;
    applied(store).await;
    steps(store, &Ledger, 1).await;
    // Appended after the migration, at old versions: upcast lazily.
    ids.extend(history(store, 900, 2, 1, 0).await);
    steps(store, &Members, usize::MAX).await;
    steps(store, &Ledger, usize::MAX).await;

    let events = read_everything(store, &EventFilter::all(), Partition::WHOLE, 100).await;
    let keys: Vec<Vec<Value>> = events.iter().map(|e| vec![Value::Uuid(e.event_id)]).collect();
    let counted = store.load_rows(&LEDGER, &keys).await.expect("ledger rows");
    assert_eq!(counted.len(), events.len(), "every event was applied");
    for row in &counted {
        assert_eq!(row[1], Value::BigInt(1), "every event was applied once: {row:?}");
    }
    let states = store.states().await.expect("states");
    assert!(states.iter().all(|s| s.lag_events == 0 && s.dead_letters == 0), "{states:#?}");

    let live = rows(store, &ids).await;
    assert_eq!(live.len(), ids.len());
    assert!(live.values().all(|(m, _)| m.first_name.as_deref() == Some("Ada")), "{live:?}");
    Rebuild::new(&Members, &EventFilter::all())
        .upcasters(upcasters())
        .read_size(4)
        .run(store, |_: u64, _: Checkpoint| {})
        .await
        .expect("replay");
    assert_eq!(rows(store, &ids).await, live, "the live read model equals a replay");
}
