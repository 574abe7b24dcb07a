//! Lazy upcasting on every path that folds events: live batches, rebuilds, time travel
//! and operator repairs see an event stored at an old payload version exactly as if it
//! had been written at the current one; an event its upcaster fails on is dead-lettered
//! and parks only its aggregate. Run by `failure_tests!` on every store.
//!
//! The example is a test-only `members` projection: `MemberJoined` v1 carried one
//! `name`, v2 splits it into `first_name` and `last_name`, and v3 is the same payload
//! renamed `MemberSignedUp`. The handler reads only v3 (`MemberSignedUp`) and filters on
//! that name, so a stored `MemberJoined` reaches it only through the chain.

use std::collections::BTreeMap;
use std::time::Duration;

use projector::repair::{repair_upcast, RepairAction, RepairEnd};
use projector::runtime::state_upcast_at;
use projector::upcast::{Payload, Reading, Upcaster, Upcasters};
use projector::{
    AppendOutcome, AppendRequest, BatchRunner, Checkpoint, Column, ColumnType, DeadLetterFilter, DomainEvent,
    EventFilter, EventStore, ExpectedVersion, HandlerError, NewEvent, Ordering, Partition, ProjectionHandler, Rebuild,
    Record, RowError, RowReader, TableSchema, Value,
};
use serde_json::json;
use uuid::Uuid;

use crate::contract::settle;
use crate::failures::FailureStore;

pub const SCHEMA: TableSchema = TableSchema {
    name: "members",
    key: &[Column::new("member_id", ColumnType::Uuid)],
    columns: &[
        Column::new("first_name", ColumnType::Text).nullable(),
        Column::new("last_name", ColumnType::Text).nullable(),
        Column::new("city", ColumnType::Text).nullable(),
    ],
    version_column: Some("version"),
};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Member {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub city: Option<String>,
}

impl Record for Member {
    fn to_values(&self, out: &mut Vec<Value>) {
        out.push(self.first_name.clone().into());
        out.push(self.last_name.clone().into());
        out.push(self.city.clone().into());
    }

    fn from_values(values: &mut RowReader<'_>) -> Result<Self, RowError> {
        Ok(Self { first_name: values.opt_text()?, last_name: values.opt_text()?, city: values.opt_text()? })
    }
}

/// v1 → v2: `name` ("Ada Lovelace") becomes `first_name` and `last_name`; a name that
/// does not split is refused.
fn split_name(mut payload: Payload) -> Result<Payload, String> {
    let name = payload.remove("name").ok_or("no `name`")?;
    let name = name.as_str().ok_or("`name` is not a string")?.to_owned();
    let (first, last) = name.split_once(' ').ok_or_else(|| format!("cannot split the name {name:?}"))?;
    payload.insert("first_name".into(), json!(first));
    payload.insert("last_name".into(), json!(last));
    Ok(payload)
}

fn unchanged(payload: Payload) -> Result<Payload, String> {
    Ok(payload)
}

/// The members chains, registered next to the handler.
pub const UPCASTERS: &[Upcaster] = &[
    Upcaster::new("MemberJoined", 1, split_name),
    Upcaster::new("MemberJoined", 2, unchanged).renaming_to("MemberSignedUp"),
];

/// The chains as `upcasting: { event_types: [MemberJoined] }` enables them.
pub fn upcasters() -> Upcasters {
    let all = Upcasters::from_steps(UPCASTERS.iter().copied()).expect("one step per version");
    all.enable_only(&["MemberJoined".to_owned()]).expect("MemberJoined has upcasters")
}

/// The text at `field` of the event's payload; anything else is a payload error.
fn text(event: &DomainEvent, field: &str) -> Result<String, HandlerError> {
    let data: serde_json::Value = event.data()?;
    data.get(field).and_then(|v| v.as_str()).map(str::to_owned).ok_or_else(|| HandlerError::Payload {
        event_id: event.event_id,
        event_type: event.event_type.clone(),
        reason: format!("no text at `{field}`"),
    })
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Members;

impl ProjectionHandler for Members {
    type Key = Uuid;
    type Row = Member;

    fn name(&self) -> &'static str {
        "members"
    }

    fn schema(&self) -> &'static TableSchema {
        &SCHEMA
    }

    fn ordering(&self) -> Ordering {
        Ordering::AggregateVersion
    }

    /// On the current names only; and without metadata, which upcasting must override.
    fn filter(&self) -> EventFilter {
        EventFilter {
            event_types: vec!["MemberSignedUp".into(), "MemberMoved".into()],
            aggregate_types: vec!["member".into()],
            skip_metadata: true,
        }
    }

    fn key(&self, event: &DomainEvent) -> Option<Uuid> {
        Some(event.aggregate_id)
    }

    fn handle(&self, row: &mut Option<Member>, event: &DomainEvent) -> Result<(), HandlerError> {
        let member = row.get_or_insert_with(Member::default);
        match event.event_type.as_str() {
            "MemberSignedUp" => {
                member.first_name = Some(text(event, "first_name")?);
                member.last_name = Some(text(event, "last_name")?);
            }
            "MemberMoved" => member.city = Some(text(event, "city")?),
            other => return Err(HandlerError::Rejected { event_id: event.event_id, reason: format!("saw {other}") }),
        }
        Ok(())
    }
}

pub fn member(n: u128) -> Uuid {
    Uuid::from_u128(0x6d00_0000_0000_0000_0000_0000_0000_0000 | n)
}

pub async fn append<S: EventStore>(
    store: &S,
    id: Uuid,
    event_type: &str,
    event_version: u32,
    data: serde_json::Value,
) -> AppendOutcome {
    let mut event = NewEvent::new(event_type, data);
    event.metadata.event_version = event_version;
    let request = AppendRequest {
        aggregate_id: id,
        aggregate_type: "member".into(),
        expected_version: ExpectedVersion::Any,
        events: vec![event],
        idempotency_key: None,
    };
    store.append(request).await.expect("append")
}

/// The same member history written at three payload versions (v1 and v2 `MemberJoined`,
/// v3 `MemberSignedUp`), each member then moving; returns the three members.
async fn three_versions<S: FailureStore>(store: &S) -> [Uuid; 3] {
    let (v1, v2, v3) = (member(1), member(2), member(3));
    append(store, v1, "MemberJoined", 1, json!({"name": "Ada Lovelace"})).await;
    append(store, v2, "MemberJoined", 2, json!({"first_name": "Ada", "last_name": "Lovelace"})).await;
    append(store, v3, "MemberSignedUp", 3, json!({"first_name": "Ada", "last_name": "Lovelace"})).await;
    for id in [v1, v2, v3] {
        append(store, id, "MemberMoved", 1, json!({"city": "London"})).await;
    }
    let last = append(store, v1, "MemberMoved", 1, json!({"city": "Paris"})).await;
    settle(store, &last).await;
    [v1, v2, v3]
}

pub async fn register<S: FailureStore>(store: &S) {
    store.register("members", &SCHEMA, &Members.filter(), 1).await.expect("register");
}

/// Runs the members partition to caught-up with upcasting; returns events dead-lettered.
pub async fn run<S: FailureStore>(store: &S) -> u64 {
    let lease = store.claim("members", Partition::WHOLE, "runner", Duration::from_secs(30)).await.expect("claim");
    let lease = lease.expect("lease free");
    let mut runner = BatchRunner::new(&Members, store, &EventFilter::all(), lease).upcasters(upcasters()).batch_size(2);
    let dead = runner.catch_up().await.expect("batches").dead_lettered;
    store.release(runner.lease()).await.expect("release");
    dead
}

pub async fn rows<S: FailureStore>(store: &S, ids: &[Uuid]) -> BTreeMap<Uuid, (Member, i64)> {
    let keys: Vec<Vec<Value>> = ids.iter().map(|id| vec![Value::Uuid(*id)]).collect();
    let mut out = BTreeMap::new();
    for row in store.load_rows(&SCHEMA, &keys).await.expect("load rows") {
        let mut reader = RowReader::new(&SCHEMA, &row);
        let id = reader.uuid().expect("key");
        let member = Member::from_values(&mut reader).expect("row");
        out.insert(id, (member, reader.bigint().expect("version")));
    }
    out
}

pub fn ada(city: &str) -> Member {
    Member { first_name: Some("Ada".into()), last_name: Some("Lovelace".into()), city: Some(city.into()) }
}

async fn travel<S: FailureStore>(store: &S, id: Uuid) -> Option<(Member, i64)> {
    state_upcast_at(&Members, store, &EventFilter::all(), &upcasters(), &id, Some(id), None).await.expect("replay")
}

pub async fn events_stored_at_old_versions_fold_like_events_written_at_the_current_one<S: FailureStore>(store: &S) {
    register(store).await;
    let [v1, v2, v3] = three_versions(store).await;
    assert_eq!(run(store).await, 0, "nothing fails");
    let live = rows(store, &[v1, v2, v3]).await;
    assert_eq!(live.get(&v1), Some(&(ada("Paris"), 3)), "v1: upcast through both steps and renamed");
    assert_eq!(live.get(&v2), Some(&(ada("London"), 2)), "v2: upcast through the rename");
    assert_eq!(live.get(&v3), Some(&(ada("London"), 2)), "v3: as written");

    let rebuilt = Rebuild::new(&Members, &EventFilter::all())
        .upcasters(upcasters())
        .read_size(2)
        .run(store, |_: u64, _: Checkpoint| {})
        .await
        .expect("rebuild");
    assert_eq!(rebuilt.dead_lettered, 0);
    assert_eq!(rows(store, &[v1, v2, v3]).await, live, "a rebuild gives the live rows");
    for id in [v1, v2, v3] {
        assert_eq!(travel(store, id).await.as_ref(), live.get(&id), "time travel gives the live row");
    }
    // Through a scan in commit order too (no aggregate id given).
    let scanned = state_upcast_at(&Members, store, &EventFilter::all(), &upcasters(), &v1, None, None).await;
    assert_eq!(scanned.expect("replay").as_ref(), live.get(&v1));
}

/// Member A's first event does not upcast ("Cher" has no last name); B is fine.
pub async fn a_failing_history<S: FailureStore>(store: &S) -> (Uuid, Uuid, DomainEvent) {
    let (a, b) = (member(10), member(11));
    append(store, a, "MemberJoined", 1, json!({"name": "Cher"})).await;
    append(store, b, "MemberJoined", 1, json!({"name": "Ada Lovelace"})).await;
    append(store, a, "MemberMoved", 1, json!({"city": "Paris"})).await;
    let last = append(store, b, "MemberMoved", 1, json!({"city": "London"})).await;
    settle(store, &last).await;
    let events = store.read_aggregate(a, projector::ReadBound::All).await.expect("read A");
    (a, b, events[0].clone())
}

pub async fn a_failing_upcaster_dead_letters_its_event_and_parks_only_its_aggregate<S: FailureStore>(store: &S) {
    register(store).await;
    let (a, b, failing) = a_failing_history(store).await;
    assert_eq!(run(store).await, 1, "the event that does not upcast is dead-lettered");
    let live = rows(store, &[a, b]).await;
    assert_eq!(live.get(&b), Some(&(ada("London"), 2)), "B moves on");
    assert_eq!(live.get(&a), None, "A is parked before its first event");
    let letters = store.list(&DeadLetterFilter::default()).await.expect("list");
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!((letter.aggregate_id, letter.version, letter.event_id), (a, 1, failing.event_id));
    for part in ["MemberJoined v1", "upcaster failed", "cannot split the name \"Cher\"", &failing.event_id.to_string()]
    {
        assert!(letter.error.contains(part), "the letter names {part}: {}", letter.error);
    }
    let states = store.states().await.expect("states");
    let state = states.iter().find(|s| s.projection == "members").expect("state");
    assert_eq!((state.dead_letters, state.parked_aggregates, state.lag_events), (1, 1, 0));

    // Rebuild and time travel leave A parked and give the live rows.
    let rebuilt = Rebuild::new(&Members, &EventFilter::all())
        .upcasters(upcasters())
        .read_size(2)
        .run(store, |_: u64, _: Checkpoint| {})
        .await
        .expect("rebuild");
    assert_eq!(rebuilt.dead_lettered, 0, "A is parked already");
    assert_eq!(rows(store, &[a, b]).await, live, "a rebuild gives the live rows");
    assert_eq!(travel(store, a).await, None);
    assert_eq!(travel(store, b).await.as_ref(), live.get(&b));

    // A retry upcasts again and fails again; a skip drops the event and applies the rest
    // of A's sequence through the same chains.
    let reading = Reading::new(EventFilter::all(), upcasters());
    let retry = repair_upcast(&Members, store, &reading, letter.id, RepairAction::Retry, "ops", 10).await;
    assert!(
        matches!(retry.expect("retry runs").end, RepairEnd::Stopped { event_id, .. } if event_id == failing.event_id),
        "the upcaster still fails"
    );
    let skip = repair_upcast(&Members, store, &reading, letter.id, RepairAction::Skip, "ops", 10).await;
    assert_eq!(skip.expect("skip runs").end, RepairEnd::Done);
    let city_only = Member { city: Some("Paris".into()), ..Member::default() };
    assert_eq!(rows(store, &[a]).await.get(&a), Some(&(city_only, 2)), "A's move applies after the skip");
}

pub async fn a_rebuild_dead_letters_an_event_that_does_not_upcast_like_live_processing<S: FailureStore>(store: &S) {
    register(store).await;
    let (a, b, failing) = a_failing_history(store).await;
    // Never run live: the rebuild is the first to see the failing event.
    let rebuilt = Rebuild::new(&Members, &EventFilter::all())
        .upcasters(upcasters())
        .read_size(2)
        .run(store, |_: u64, _: Checkpoint| {})
        .await
        .expect("rebuild");
    assert_eq!(rebuilt.dead_lettered, 1);
    let letters = store.list(&DeadLetterFilter::default()).await.expect("list");
    assert_eq!(letters.iter().map(|l| l.event_id).collect::<Vec<_>>(), [failing.event_id]);
    let rows_now = rows(store, &[a, b]).await;
    assert_eq!(rows_now.get(&b), Some(&(ada("London"), 2)));
    assert_eq!(rows_now.get(&a), None);
    // Live processing goes on from the rebuild and holds A back as well.
    assert_eq!(run(store).await, 0);
    assert_eq!(rows(store, &[a, b]).await, rows_now);
}

pub async fn events_upcast_out_of_the_filter_are_passed_over<S: FailureStore>(store: &S) {
    register(store).await;
    // `MemberJoined` at v3 has no step: it keeps its old name, which the handler's
    // filter no longer names, so it is read (its name may upcast) and then left out.
    let m = member(20);
    append(store, m, "MemberJoined", 3, json!({"first_name": "Ada", "last_name": "Lovelace"})).await;
    append(store, m, "MemberJoined", 3, json!({"first_name": "Ada", "last_name": "Byron"})).await;
    let last = append(store, m, "MemberMoved", 1, json!({"city": "London"})).await;
    settle(store, &last).await;
    let lease = store.claim("members", Partition::WHOLE, "runner", Duration::from_secs(30)).await.expect("claim");
    let mut runner = BatchRunner::new(&Members, store, &EventFilter::all(), lease.expect("lease free"))
        .upcasters(upcasters())
        .batch_size(2);
    let first = runner.step().await.expect("a batch of left-out events");
    assert_eq!((first.events_read, first.events_applied), (2, 0), "{first:?}");
    let events = store.read_aggregate(m, projector::ReadBound::All).await.expect("read");
    assert_eq!(first.checkpoint, events[1].checkpoint(), "the checkpoint moves past them");
    let rest = runner.catch_up().await.expect("the rest");
    assert_eq!(rest.checkpoint, events[2].checkpoint());
    assert_eq!(rest.dead_lettered, 0, "the versions left out are no gap");
    let city_only = Member { city: Some("London".into()), ..Member::default() };
    assert_eq!(rows(store, &[m]).await.get(&m), Some(&(city_only, 3)));
}
