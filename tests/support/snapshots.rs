//! Snapshots on every store: time travel from a snapshot gives the row a replay from the
//! first event gives, at any instant, and reads fewer events; snapshots are written with
//! the batches and rebuilds that reach them; a handler version, other upcaster chains, a
//! migration or a rebuild without them make them unused. Run by `snapshot_tests!`.
//!
//! The projection is the test-only `members` of [`crate::upcasting`], whose members join
//! at old payload versions (upcast on read) and then move from city to city.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use projector::migration::{ApplyOutcome, Migration};
use projector::runtime::{TimeTravel, Travelled};
use projector::store::snapshots::Snapshots;
use projector::upcast::{Payload, Upcaster, Upcasters};
use projector::{
    AppendOutcome, AppendRequest, BatchRunner, Checkpoint, DomainEvent, EventFilter, ExpectedVersion, HandlerError,
    NewEvent, Ordering, Partition, ProjectionHandler, Rebuild, TableSchema,
};
use rand::{Rng, SeedableRng};
use serde_json::json;
use uuid::Uuid;

use crate::contract::settle;
use crate::migrations::MigrationStore;
use crate::upcasting::{member, register, upcasters, Member, Members};

/// A store with everything snapshots touch.
pub trait SnapshotStore: MigrationStore + Snapshots {}
impl<T: MigrationStore + Snapshots> SnapshotStore for T {}

/// The interval the checks keep snapshots at.
const EVERY: u32 = 10;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

/// An event of `id` stamped `minutes` after [`t0`].
async fn append_at<S: SnapshotStore>(
    store: &S,
    id: Uuid,
    event_type: &str,
    version: u32,
    data: serde_json::Value,
    minutes: i64,
) -> AppendOutcome {
    let mut event = NewEvent::new(event_type, data).at(t0() + chrono::Duration::minutes(minutes));
    event.metadata.event_version = version;
    let request = AppendRequest {
        aggregate_id: id,
        aggregate_type: "member".into(),
        expected_version: ExpectedVersion::Any,
        events: vec![event],
        idempotency_key: None,
    };
    store.append(request).await.expect("append")
}

/// Three members, interleaved: each joins (at v1, at v2, as v3), then moves `moves`
/// times, a minute apart overall. The third one's history was imported out of order:
/// its version 8 is stamped after its version 11.
async fn history<S: SnapshotStore>(store: &S, moves: i64) -> Vec<Uuid> {
    let ids = vec![member(300), member(301), member(302)];
    append_at(store, ids[0], "MemberJoined", 1, json!({"name": "Ada Lovelace"}), 0).await;
    append_at(store, ids[1], "MemberJoined", 2, json!({"first_name": "Bo", "last_name": "Li"}), 1).await;
    let mut last =
        append_at(store, ids[2], "MemberSignedUp", 3, json!({"first_name": "Cy", "last_name": "Ng"}), 2).await;
    let mut minute = 3;
    for n in 1..=moves {
        for (i, id) in ids.iter().enumerate() {
            let stamp = if (i, n) == (2, 7) { minute + 10 } else { minute };
            last = append_at(store, *id, "MemberMoved", 1, json!({"city": format!("city {n}")}), stamp).await;
            minute += 1;
        }
    }
    settle(store, &last).await;
    ids
}

/// Runs the members partition to caught-up in batches of 7, keeping snapshots.
async fn run<S: SnapshotStore, H: ProjectionHandler>(store: &S, handler: &H, chains: Upcasters) {
    let lease = store.claim(handler.name(), Partition::WHOLE, "runner", Duration::from_secs(30)).await.expect("claim");
    let mut runner = BatchRunner::new(handler, store, &EventFilter::all(), lease.expect("free"))
        .upcasters(chains)
        .snapshots(Some(EVERY))
        .batch_size(7);
    runner.catch_up().await.expect("batches");
    store.release(runner.lease()).await.expect("release");
}

async fn travel<S: SnapshotStore, H: ProjectionHandler<Key = Uuid>>(
    store: &S,
    handler: &H,
    chains: &Upcasters,
    id: Uuid,
    at: Option<DateTime<Utc>>,
    snapshots: bool,
) -> Travelled<H::Row> {
    TimeTravel::new(handler, &EventFilter::all())
        .upcasters(chains.clone())
        .snapshots(snapshots)
        .row(store, &id, Some(id), at)
        .await
        .expect("time travel")
}

pub async fn time_travel_from_snapshots_equals_a_full_replay_at_random_instants<S: SnapshotStore>(store: &S) {
    register(store).await;
    let ids = history(store, 40).await;
    run(store, &Members, upcasters()).await;
    let chains = upcasters();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let (mut from_snapshots, mut read_with, mut read_without) = (0, 0, 0);
    let last_minute = 3 + 40 * 3;
    for _ in 0..20 {
        let at = t0() + chrono::Duration::seconds(rng.random_range(-60..=(last_minute + 2) * 60));
        for id in &ids {
            let full = travel(store, &Members, &chains, *id, Some(at), false).await;
            let fast = travel(store, &Members, &chains, *id, Some(at), true).await;
            assert_eq!(fast.row, full.row, "member {id} at {at}: the same row with and without snapshots");
            assert_eq!(full.from_snapshot, None);
            if let Some(version) = fast.from_snapshot {
                from_snapshots += 1;
                assert_eq!(version % i64::from(EVERY), 0, "snapshots are taken every {EVERY} versions");
                assert!(
                    fast.events_read < full.events_read,
                    "{id} at {at}: {} vs {}",
                    fast.events_read,
                    full.events_read
                );
            }
            read_with += fast.events_read;
            read_without += full.events_read;
        }
    }
    assert!(from_snapshots >= 30, "most of the 60 replays start from a snapshot: {from_snapshots}");
    assert!(read_with * 2 < read_without, "snapshots read far fewer events: {read_with} vs {read_without}");

    // Now, and around the third member's version 8, stamped after its versions 9 to 11:
    // before that stamp, the snapshot at v10 holds an event a replay leaves out.
    for id in &ids {
        let now = travel(store, &Members, &chains, *id, None, true).await;
        assert_eq!(now.row, travel(store, &Members, &chains, *id, None, false).await.row);
        assert_eq!(now.from_snapshot, Some(40), "member {id} (at v41) starts from v40");
        assert_eq!(now.events_read, 1);
    }
    let imported = store.read_aggregate(ids[2], projector::ReadBound::All).await.expect("read");
    assert!(imported[7].timestamp > imported[10].timestamp, "v8 is stamped after v11");
    for e in &imported[6..13] {
        for at in [e.timestamp, e.timestamp - chrono::Duration::seconds(1)] {
            let fast = travel(store, &Members, &chains, ids[2], Some(at), true).await;
            assert_eq!(fast.row, travel(store, &Members, &chains, ids[2], Some(at), false).await.row, "at {at}");
        }
    }
    let between = travel(store, &Members, &chains, ids[2], Some(imported[9].timestamp), true).await;
    assert_eq!(between.from_snapshot, None, "at v10's stamp, v8 is not in yet: the v10 snapshot is unusable");
}

pub async fn snapshots_are_kept_every_n_versions_by_batches_and_rebuilds<S: SnapshotStore>(store: &S) {
    register(store).await;
    let ids = history(store, 25).await;
    let chains = upcasters();
    // Without snapshots configured, a runner keeps none.
    let lease = store.claim("members", Partition::WHOLE, "runner", Duration::from_secs(30)).await.expect("claim");
    let mut runner = BatchRunner::new(&Members, store, &EventFilter::all(), lease.expect("free"))
        .upcasters(chains.clone())
        .batch_size(7);
    runner.catch_up().await.expect("batches");
    store.release(runner.lease()).await.expect("release");
    assert_eq!(travel(store, &Members, &chains, ids[0], None, true).await.from_snapshot, None);

    // A rebuild keeping them writes one every ten versions of every row.
    let rebuilt = Rebuild::new(&Members, &EventFilter::all())
        .upcasters(chains.clone())
        .snapshots(Some(EVERY))
        .read_size(5)
        .run(store, |_: u64, _: Checkpoint| {})
        .await
        .expect("rebuild");
    assert_eq!(rebuilt.dead_lettered, 0);
    for id in &ids {
        let now = travel(store, &Members, &chains, *id, None, true).await;
        assert_eq!(now.from_snapshot, Some(20), "member {id} at v26 starts from v20");
        let at = store.read_aggregate(*id, projector::ReadBound::Versions { after: 14, upto: 15 }).await.expect("v15");
        let earlier = travel(store, &Members, &chains, *id, Some(at[0].timestamp), true).await;
        assert_eq!(earlier.from_snapshot, Some(10), "member {id} at v15 starts from v10");
        assert_eq!(earlier.row, travel(store, &Members, &chains, *id, Some(at[0].timestamp), false).await.row);
    }

    // A rebuild without them drops them: its rows may differ from what they were taken of.
    Rebuild::new(&Members, &EventFilter::all())
        .upcasters(chains.clone())
        .run(store, |_: u64, _: Checkpoint| {})
        .await
        .expect("rebuild");
    assert_eq!(travel(store, &Members, &chains, ids[0], None, true).await.from_snapshot, None);
}

/// [`Members`] with its logic at version 2.
struct MembersV2;

impl ProjectionHandler for MembersV2 {
    type Key = Uuid;
    type Row = Member;
    fn name(&self) -> &'static str {
        Members.name()
    }
    fn version(&self) -> u32 {
        2
    }
    fn schema(&self) -> &'static TableSchema {
        Members.schema()
    }
    fn ordering(&self) -> Ordering {
        Members.ordering()
    }
    fn filter(&self) -> EventFilter {
        Members.filter()
    }
    fn key(&self, event: &DomainEvent) -> Option<Uuid> {
        Members.key(event)
    }
    fn handle(&self, row: &mut Option<Member>, event: &DomainEvent) -> Result<(), HandlerError> {
        Members.handle(row, event)
    }
}

fn unchanged(payload: Payload) -> Result<Payload, String> {
    Ok(payload)
}

pub async fn a_handler_version_other_chains_or_a_migration_make_snapshots_unused<S: SnapshotStore>(store: &S) {
    register(store).await;
    let ids = history(store, 12).await;
    let chains = upcasters();
    run(store, &Members, chains.clone()).await;
    let (id, joined_v1) = (ids[0], ids[0]);
    let now = travel(store, &Members, &chains, id, None, true).await;
    assert_eq!(now.from_snapshot, Some(10));

    let v2 = travel(store, &MembersV2, &chains, id, None, true).await;
    assert_eq!((v2.from_snapshot, &v2.row), (None, &now.row), "another handler version replays in full");

    let mut other = Upcasters::from_steps(crate::upcasting::UPCASTERS.iter().copied()).expect("steps");
    other.register(Upcaster::new("MemberMoved", 7, unchanged)).expect("a new step");
    let other = other.enable_only(&["MemberJoined".to_owned(), "MemberMoved".to_owned()]).expect("enabled");
    let changed = travel(store, &Members, &other, id, None, true).await;
    assert_eq!((changed.from_snapshot, &changed.row), (None, &now.row), "other chains replay in full");

    // A migration drops the snapshots of the aggregates it rewrites, and only those.
    let migrated = Migration::new(chains.clone()).chunk_size(2).apply(store, &mut ()).await.expect("apply");
    assert!(matches!(migrated, ApplyOutcome::Applied { .. }), "{migrated:?}");
    let after = travel(store, &Members, &chains, joined_v1, None, true).await;
    assert_eq!((after.from_snapshot, &after.row), (None, &now.row), "the rewritten member replays in full");
    let untouched = travel(store, &Members, &chains, ids[2], None, true).await;
    assert_eq!(untouched.from_snapshot, Some(10), "a member joined at v3 was not rewritten");
}
