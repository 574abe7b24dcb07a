//! The store conformance suite: one set of checks every store (embedded, PostgreSQL, ...)
//! must pass, written against the core traits only.
//!
//! ```ignore
//! projector_tests::contract_tests!(MyStore::open_in_memory().expect("a store"));
//! ```
//!
//! expands to one `#[tokio::test]` per check, named after it. Every check takes a fresh,
//! empty store and panics with a message naming what differed; a check may also be called
//! on its own (`contract::idempotency(&store)`).
//!
//! Stores may normalise JSON text (PostgreSQL's `jsonb` reorders keys and adds spaces),
//! so payloads are compared as parsed JSON, never as text.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use chrono::{DateTime, Duration as Span, NaiveDate, TimeZone, Utc};
use projection_daily_activity::{Count, DailyActivity};
use projection_user_profile::{Profile, UserProfile};
use projector::{
    AppendOutcome, AppendRequest, BatchCommit, BatchRunner, Checkpoint, Column, ColumnType, DomainEvent, EventFilter,
    EventStore, ExpectedVersion, Lease, Metadata, NewEvent, Partition, ProjectionHandler, ProjectionState,
    ProjectionStore, ReadBound, Rebuild, RebuildSession, Rebuilds, Record, RowChanges, RowReader, Status, StoreError,
    TableSchema, Value,
};
use serde_json::json;
use uuid::Uuid;

/// Everything the suite needs of a store.
pub trait ContractStore: EventStore + ProjectionStore + Rebuilds {}
impl<T: EventStore + ProjectionStore + Rebuilds> ContractStore for T {}

// ---------------------------------------------------------------------------------------
// Helpers

/// A deterministic id, distinct per (check, n) and with well-spread partition buckets.
pub fn id(check: u64, n: u64) -> Uuid {
    let hi = splitmix(check.wrapping_mul(0x1000_0000_01B3) ^ n);
    let lo = splitmix(hi ^ n.wrapping_add(0x9E37_79B9));
    Uuid::from_u64_pair(hi, lo)
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A small deterministic random source for generated histories.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        splitmix(self.0)
    }
    /// Uniform-ish in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// 2026-03-01T20:00:00.123456Z: fractional microseconds test timestamp precision.
pub fn base_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 20, 0, 0).unwrap() + Span::microseconds(123_456)
}

/// `value` sealed as a writer stores it; the key is thrown away, only the shape matters.
pub fn envelope_of(value: serde_json::Value) -> serde_json::Value {
    let dek = projector::crypto::Dek::generate().expect("random key");
    let at = projector::crypto::FieldContext {
        aggregate_type: "user",
        aggregate_id: Uuid::from_u128(1),
        event_type: "UserRegistered",
        version: 1,
        path: "field",
    };
    json!(projector::crypto::encrypt_field(&dek, 1, &at, &value).expect("seal"))
}

pub fn ok<T>(result: Result<T, StoreError>, what: &str) -> T {
    result.unwrap_or_else(|e| panic!("{what}: unexpected store error: {e} ({e:?})"))
}

pub(crate) fn request(
    aggregate_id: Uuid,
    aggregate_type: &str,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> AppendRequest {
    AppendRequest {
        aggregate_id,
        aggregate_type: aggregate_type.to_owned(),
        expected_version: expected,
        events,
        idempotency_key: None,
    }
}

pub async fn append<S: EventStore>(
    store: &S,
    aggregate_id: Uuid,
    aggregate_type: &str,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> AppendOutcome {
    ok(
        store.append(request(aggregate_id, aggregate_type, expected, events)).await,
        &format!("append to {aggregate_type} {aggregate_id}"),
    )
}

fn data(event: &DomainEvent) -> serde_json::Value {
    serde_json::from_str(event.event_data.get())
        .unwrap_or_else(|e| panic!("event {} data is not JSON: {e}", event.position))
}

fn metadata(event: &DomainEvent) -> Metadata {
    event.metadata().unwrap_or_else(|e| panic!("event {} metadata: {e}", event.position))
}

/// Every event matching `filter` in `partition`, read in pages of `page`, asserting that
/// checkpoints strictly increase.
pub async fn read_everything<S: EventStore>(
    store: &S,
    filter: &EventFilter,
    partition: Partition,
    page: usize,
) -> Vec<DomainEvent> {
    let mut out: Vec<DomainEvent> = Vec::new();
    let mut after = Checkpoint::START;
    for _ in 0..100_000 {
        let batch = ok(store.read_all(after, filter, partition, page).await, "read_all");
        assert!(batch.len() <= page, "read_all returned {} events for limit {page}", batch.len());
        let Some(last) = batch.last() else { return out };
        for e in &batch {
            assert!(
                e.checkpoint() > after,
                "read_all after {after} returned event at {} (not after the checkpoint)",
                e.checkpoint()
            );
            after = e.checkpoint();
        }
        after = last.checkpoint();
        out.extend(batch);
    }
    panic!("read_all never ran out of events (filter {filter:?}, partition {partition})");
}

/// Waits until `read_all` returns the last event of `last` (and so every event appended
/// before it). A commit-safe store may hold events back for a while after their append
/// returned, while some other transaction that could still commit earlier-ordered events
/// is open (on PostgreSQL: any writing transaction on the server).
pub async fn settle<S: EventStore>(store: &S, last: &AppendOutcome) {
    let bound = ReadBound::Versions { after: last.last_version - 1, upto: last.last_version };
    let events = ok(store.read_aggregate(last.aggregate_id, bound).await, "settle: read_aggregate");
    let event = events.first().unwrap_or_else(|| panic!("settle: the appended event is missing: {last:?}"));
    let before = Checkpoint { transaction_id: event.transaction_id, position: event.position - 1 };
    for _ in 0..1500 {
        let next = ok(store.read_all(before, &EventFilter::all(), Partition::WHOLE, 1).await, "settle: read_all");
        if next.first().map(|e| e.event_id) == Some(event.event_id) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "event {} (aggregate {}) was not returned by read_all within 30 s of its append",
        event.event_id, last.aggregate_id
    );
}

pub(crate) fn event_ids(events: &[DomainEvent]) -> Vec<Uuid> {
    events.iter().map(|e| e.event_id).collect()
}

fn versions(events: &[DomainEvent]) -> Vec<i64> {
    events.iter().map(|e| e.version).collect()
}

pub fn state<'a>(states: &'a [ProjectionState], projection: &str, partition: u32) -> &'a ProjectionState {
    states
        .iter()
        .find(|s| s.projection == projection && s.partition == partition)
        .unwrap_or_else(|| panic!("states() has no row for {projection} partition {partition}: {states:#?}"))
}

pub(crate) fn states_of(states: &[ProjectionState], projection: &str) -> Vec<ProjectionState> {
    let mut out: Vec<ProjectionState> = states.iter().filter(|s| s.projection == projection).cloned().collect();
    out.sort_by_key(|s| s.partition);
    out
}

// ---------------------------------------------------------------------------------------
// Events

/// Append, then read back: every field round-trips, versions run 1..n, positions grow.
pub async fn append_and_read_back<S: ContractStore>(store: &S) {
    let a = id(1, 1);
    let b = id(1, 2);
    let given_id = id(1, 100);
    let t1 = base_time();
    let t2 = base_time() + Span::milliseconds(1500);
    let meta = Metadata {
        causation_id: Some(id(1, 200)),
        correlation_id: Some(id(1, 201)),
        event_version: 2,
        extra: serde_json::from_value(json!({"tenant": "acme", "trace": {"depth": 3}})).unwrap(),
    };
    // Listed fields hold envelopes (the store refuses plaintext under a listed path).
    let (email, name) = (envelope_of(json!("ada@example.com")), envelope_of(json!("Ada")));
    let mut first = NewEvent::new(
        "UserRegistered",
        json!({"email": email, "name": name, "tags": ["a", "b"], "n": 1.5, "nested": {"z": 1, "a": null}}),
    )
    .with_id(given_id)
    .at(t1);
    first.metadata = meta.clone();
    first.encrypted_fields = vec!["email".into(), "name".into()];
    let second = NewEvent::new("UserRenamed", json!({"name": "Ada L."})).at(t2);
    let third = NewEvent::new("UserLoggedIn", json!({}));

    let before = Utc::now();
    let out = append(store, a, "user", ExpectedVersion::Exact(0), vec![first, second, third]).await;
    let after = Utc::now();
    assert_eq!(out.aggregate_id, a, "outcome aggregate id");
    assert_eq!((out.first_version, out.last_version), (1, 3), "outcome versions of a new aggregate's first append");
    assert!(!out.deduplicated, "a first append is not deduplicated");
    assert_eq!(out.event_ids.len(), 3, "one event id per event: {out:?}");
    assert_eq!(out.event_ids[0], given_id, "a given event id is kept");
    assert!(out.event_ids.iter().all(|e| !e.is_nil()), "generated event ids are not nil: {out:?}");
    assert_eq!(out.event_ids.iter().collect::<BTreeSet<_>>().len(), 3, "event ids are distinct: {out:?}");
    assert_eq!(out.positions.len(), 3, "one position per event: {out:?}");
    assert!(out.positions.windows(2).all(|w| w[0] < w[1]), "positions increase within an append: {out:?}");
    assert!(out.positions[0] > 0, "positions are positive: {out:?}");

    let read = ok(store.read_aggregate(a, ReadBound::All).await, "read_aggregate");
    assert_eq!(versions(&read), vec![1, 2, 3], "versions of the appended events");
    assert_eq!(event_ids(&read), out.event_ids, "event ids read back equal the outcome's");
    assert_eq!(read.iter().map(|e| e.position).collect::<Vec<_>>(), out.positions, "positions read back");
    for e in &read {
        assert_eq!(e.aggregate_id, a, "aggregate id of event {}", e.position);
        assert_eq!(e.aggregate_type, "user", "aggregate type of event {}", e.position);
    }
    let types: Vec<&str> = read.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["UserRegistered", "UserRenamed", "UserLoggedIn"], "event types in version order");
    assert_eq!(
        data(&read[0]),
        json!({"email": email, "name": name, "tags": ["a", "b"], "n": 1.5, "nested": {"z": 1, "a": null}}),
        "event_data round-trips (as JSON)"
    );
    assert_eq!(data(&read[1]), json!({"name": "Ada L."}), "event_data of the second event");
    assert_eq!(data(&read[2]), json!({}), "empty event_data");
    assert_eq!(metadata(&read[0]), meta, "metadata round-trips, extra keys included");
    assert_eq!(metadata(&read[1]).event_version, 1, "default metadata has event_version 1");
    assert_eq!(read[0].encrypted_fields, vec!["email".to_string(), "name".to_string()], "encrypted_fields round-trip");
    assert!(read[1].encrypted_fields.is_empty(), "no encrypted fields given, none read");
    assert_eq!(read[0].timestamp, t1, "a given timestamp round-trips to the microsecond");
    assert_eq!(read[1].timestamp, t2, "a given timestamp round-trips");
    let slack = Span::seconds(60);
    assert!(
        read[2].timestamp >= before - slack && read[2].timestamp <= after + slack,
        "a missing timestamp defaults to the store's clock at append: got {}, append ran {before}..{after}",
        read[2].timestamp
    );

    let more = append(
        store,
        a,
        "user",
        ExpectedVersion::Exact(3),
        vec![NewEvent::new("UserRenamed", json!({"name": "A"})), NewEvent::new("UserDeactivated", json!({}))],
    )
    .await;
    assert_eq!((more.first_version, more.last_version), (4, 5), "versions continue from the current one");
    assert!(more.positions[0] > out.positions[2], "a later append has later positions: {more:?} after {out:?}");
    let other =
        append(store, b, "order", ExpectedVersion::Any, vec![NewEvent::new("OrderPlaced", json!({"total": 7}))]).await;
    assert_eq!((other.first_version, other.last_version), (1, 1), "Any on a new aggregate starts at version 1");
    settle(store, &other).await;

    let read = ok(store.read_aggregate(a, ReadBound::All).await, "read_aggregate");
    assert_eq!(versions(&read), vec![1, 2, 3, 4, 5], "no gaps across appends");
    let all = read_everything(store, &EventFilter::all(), Partition::WHOLE, 100).await;
    assert_eq!(all.len(), 6, "read_all returns every appended event");
    let mut by_aggregate = read.clone();
    by_aggregate.extend(ok(store.read_aggregate(b, ReadBound::All).await, "read_aggregate"));
    for e in &all {
        let same = by_aggregate.iter().find(|r| r.event_id == e.event_id);
        assert_eq!(Some(e), same, "read_all and read_aggregate return the same event");
    }
    assert_eq!(all.last().map(|e| e.event_id), Some(other.event_ids[0]), "the last append reads last");
}

/// A wrong expected version is the typed conflict, with aggregate, expected and actual,
/// and writes nothing.
pub async fn expected_version_conflict<S: ContractStore>(store: &S) {
    let a = id(2, 1);
    let c = id(2, 2);
    let two = || vec![NewEvent::new("A", json!({"i": 1})), NewEvent::new("B", json!({"i": 2}))];
    let first = append(store, a, "thing", ExpectedVersion::Exact(0), two()).await;
    settle(store, &first).await;
    for expected in [0, 1, 5] {
        match store.append(request(a, "thing", ExpectedVersion::Exact(expected), two())).await {
            Err(StoreError::Conflict { aggregate_id, expected: e, actual }) => {
                assert_eq!(
                    (aggregate_id, e, actual),
                    (a, expected, 2),
                    "conflict fields for expected version {expected} on an aggregate at version 2"
                );
            }
            other => panic!("append at expected version {expected} (aggregate at 2): want Conflict, got {other:?}"),
        }
    }
    match store.append(request(c, "thing", ExpectedVersion::Exact(3), two())).await {
        Err(StoreError::Conflict { aggregate_id, expected, actual }) => {
            assert_eq!((aggregate_id, expected, actual), (c, 3, 0), "conflict on an aggregate that does not exist")
        }
        other => {
            panic!("append at expected version 3 to a new aggregate: want Conflict, got {other:?}")
        }
    }
    assert_eq!(ok(store.read_aggregate(a, ReadBound::All).await, "read").len(), 2, "conflicts wrote nothing");
    assert!(ok(store.read_aggregate(c, ReadBound::All).await, "read").is_empty(), "conflicts wrote nothing");
    assert_eq!(
        read_everything(store, &EventFilter::all(), Partition::WHOLE, 10).await.len(),
        2,
        "conflicts wrote nothing"
    );
    let next = append(store, a, "thing", ExpectedVersion::Exact(2), two()).await;
    assert_eq!((next.first_version, next.last_version), (3, 4), "the right expected version appends");
}

/// Two appends at the same expected version, run concurrently: exactly one wins, the
/// other is a `Conflict`. Concurrent `Any` appends both land, versions without gaps.
pub async fn concurrent_appends_one_wins<S: ContractStore>(store: &S) {
    for round in 0..5u64 {
        let a = id(3, round);
        append(store, a, "thing", ExpectedVersion::Exact(0), vec![NewEvent::new("Created", json!({}))]).await;
        let left = store.append(request(
            a,
            "thing",
            ExpectedVersion::Exact(1),
            vec![NewEvent::new("Left", json!({"side": "left"})), NewEvent::new("LeftAgain", json!({}))],
        ));
        let right =
            store.append(request(a, "thing", ExpectedVersion::Exact(1), vec![NewEvent::new("Right", json!({}))]));
        let (left, right) = futures_util::future::join(left, right).await;
        let (winner, loser_type) = match (&left, &right) {
            (Ok(w), Err(StoreError::Conflict { .. })) => (w, "Right"),
            (Err(StoreError::Conflict { .. }), Ok(w)) => (w, "Left"),
            _ => panic!("round {round}: exactly one of two appends at version 1 must win: {left:?} / {right:?}"),
        };
        let conflict = if left.is_err() { &left } else { &right };
        if let Err(StoreError::Conflict { aggregate_id, expected, actual }) = conflict {
            assert_eq!((*aggregate_id, *expected), (a, 1), "round {round}: conflict fields");
            assert_eq!(*actual, winner.last_version, "round {round}: the loser sees the winner's version");
        }
        let read = ok(store.read_aggregate(a, ReadBound::All).await, "read");
        assert_eq!(read.len() as i64, winner.last_version, "round {round}: only the winner's events were written");
        assert!(
            read[1].event_type != loser_type,
            "round {round}: the loser's event is absent: {:?}",
            read[1].event_type
        );
        assert_eq!(versions(&read), (1..=winner.last_version).collect::<Vec<_>>(), "round {round}: versions");
    }

    let b = id(3, 100);
    append(store, b, "thing", ExpectedVersion::Exact(0), vec![NewEvent::new("Created", json!({}))]).await;
    let two = || vec![NewEvent::new("X", json!({})), NewEvent::new("Y", json!({}))];
    let (x, y) = futures_util::future::join(
        store.append(request(b, "thing", ExpectedVersion::Any, two())),
        store.append(request(b, "thing", ExpectedVersion::Any, two())),
    )
    .await;
    let (x, y) = (ok(x, "concurrent Any append"), ok(y, "concurrent Any append"));
    let mut ranges = [(x.first_version, x.last_version), (y.first_version, y.last_version)];
    ranges.sort();
    assert_eq!(ranges, [(2, 3), (4, 5)], "concurrent Any appends take consecutive, disjoint versions");
    let read = ok(store.read_aggregate(b, ReadBound::All).await, "read");
    assert_eq!(versions(&read), vec![1, 2, 3, 4, 5], "no gaps after concurrent Any appends");
}

/// Repeating a keyed append returns the first outcome, marked deduplicated, and writes
/// nothing, even when the repeated request would now conflict. (A key reused for a
/// different append is refused: see the idempotency checks in [`crate::drift`].)
pub async fn idempotency<S: ContractStore>(store: &S) {
    let a = id(4, 1);
    let keyed = |key: &str, expected, events| AppendRequest {
        idempotency_key: Some(key.to_owned()),
        ..request(a, "thing", expected, events)
    };
    let events = || vec![NewEvent::new("A", json!({"n": 1})), NewEvent::new("B", json!({"n": 2}))];
    let first = ok(store.append(keyed("key-1", ExpectedVersion::Exact(0), events())).await, "first keyed append");
    assert!(!first.deduplicated, "the first use of a key is not deduplicated");
    settle(store, &first).await;

    let again = ok(store.append(keyed("key-1", ExpectedVersion::Exact(0), events())).await, "repeated keyed append");
    assert_eq!(again, AppendOutcome { deduplicated: true, ..first.clone() }, "a retry returns the first outcome");
    assert_eq!(ok(store.read_aggregate(a, ReadBound::All).await, "read").len(), 2, "a repeated key writes nothing");
    assert_eq!(read_everything(store, &EventFilter::all(), Partition::WHOLE, 10).await.len(), 2, "nothing new");

    let other = ok(store.append(keyed("key-2", ExpectedVersion::Exact(2), events())).await, "append with a new key");
    assert!(!other.deduplicated, "a new key appends");
    assert_eq!((other.first_version, other.last_version), (3, 4), "a new key appends the next versions");
    match store.append(keyed("key-3", ExpectedVersion::Exact(0), events())).await {
        Err(StoreError::Conflict { .. }) => {}
        other => panic!("a new key with a wrong expected version must conflict, got {other:?}"),
    }
    let retry = ok(store.append(keyed("key-3", ExpectedVersion::Exact(4), events())).await, "key of a failed append");
    assert!(!retry.deduplicated, "a key whose append failed was not recorded");
}

/// `read_aggregate` bounds: all, version ranges, and time travel.
pub async fn read_aggregate_bounds<S: ContractStore>(store: &S) {
    let a = id(5, 1);
    let b = id(5, 2);
    let t0 = base_time();
    for i in 0..5i64 {
        let at = t0 + Span::hours(i);
        append(store, a, "thing", ExpectedVersion::Exact(i), vec![NewEvent::new("Tick", json!({"i": i})).at(at)]).await;
        append(store, b, "thing", ExpectedVersion::Any, vec![NewEvent::new("Tock", json!({"i": i})).at(at)]).await;
    }
    let read = |bound| async move { versions(&ok(store.read_aggregate(a, bound).await, &format!("read {bound:?}"))) };
    assert_eq!(read(ReadBound::All).await, vec![1, 2, 3, 4, 5], "All");
    assert_eq!(read(ReadBound::Versions { after: 1, upto: 3 }).await, vec![2, 3], "Versions 1 < v <= 3");
    assert_eq!(read(ReadBound::Versions { after: 0, upto: 1 }).await, vec![1], "Versions 0 < v <= 1");
    assert_eq!(read(ReadBound::Versions { after: 3, upto: 10 }).await, vec![4, 5], "Versions past the end");
    assert_eq!(read(ReadBound::Versions { after: 5, upto: 9 }).await, Vec::<i64>::new(), "Versions after the last");
    assert_eq!(read(ReadBound::At(t0 + Span::hours(2))).await, vec![1, 2, 3], "At an event's timestamp includes it");
    assert_eq!(
        read(ReadBound::At(t0 + Span::hours(2) - Span::microseconds(1))).await,
        vec![1, 2],
        "At one microsecond before an event excludes it"
    );
    assert_eq!(read(ReadBound::At(t0 - Span::seconds(1))).await, Vec::<i64>::new(), "At before the first event");
    assert_eq!(read(ReadBound::At(t0 + Span::days(365))).await, vec![1, 2, 3, 4, 5], "At in the future");
    let events = ok(store.read_aggregate(a, ReadBound::All).await, "read");
    assert!(events.iter().all(|e| e.aggregate_id == a), "read_aggregate returns only that aggregate's events");
    assert!(
        ok(store.read_aggregate(id(5, 3), ReadBound::All).await, "read unknown").is_empty(),
        "an unknown aggregate has no events"
    );
}

/// `read_all`: paging with checkpoints sees every event exactly once in order; event-type
/// and aggregate-type filters; partitions cover every event exactly once.
pub async fn read_all_paging_filters_and_partitions<S: ContractStore>(store: &S) {
    let mut rng = Rng::new(6);
    let kinds = ["user", "order", "invoice"];
    let types = ["Created", "Updated", "Closed", "Noted"];
    let mut appended: Vec<Uuid> = Vec::new();
    let mut aggregate_kind: HashMap<Uuid, &str> = HashMap::new();
    let mut last = None;
    while appended.len() < 200 {
        let n = rng.below(40);
        let aggregate = id(6, n);
        let kind = *aggregate_kind.entry(aggregate).or_insert(kinds[(n % 3) as usize]);
        let events: Vec<NewEvent> = (0..=rng.below(3))
            .map(|_| NewEvent::new(types[rng.below(4) as usize], json!({"n": rng.below(1000)})))
            .collect();
        let out = append(store, aggregate, kind, ExpectedVersion::Any, events).await;
        appended.extend(out.event_ids.iter().copied());
        last = Some(out);
    }
    settle(store, last.as_ref().unwrap()).await;

    let full = read_everything(store, &EventFilter::all(), Partition::WHOLE, 1000).await;
    assert_eq!(full.len(), appended.len(), "read_all returns every event");
    assert_eq!(
        full.iter().map(|e| e.event_id).collect::<BTreeSet<_>>(),
        appended.iter().copied().collect::<BTreeSet<_>>(),
        "read_all returns exactly the appended events"
    );
    assert_eq!(event_ids(&full), appended, "with one appender at a time, read order is append order");
    assert!(full.windows(2).all(|w| w[0].position < w[1].position), "positions increase in read order");
    for page in [1, 7, 64] {
        let paged = read_everything(store, &EventFilter::all(), Partition::WHOLE, page).await;
        assert_eq!(event_ids(&paged), event_ids(&full), "paging by {page} sees every event once, in order");
    }
    let last = full.last().unwrap().checkpoint();
    assert!(
        ok(store.read_all(last, &EventFilter::all(), Partition::WHOLE, 10).await, "read after the end").is_empty(),
        "nothing after the last event's checkpoint"
    );
    let mid = full[full.len() / 2].checkpoint();
    let rest = ok(store.read_all(mid, &EventFilter::all(), Partition::WHOLE, 1000).await, "read from the middle");
    assert_eq!(event_ids(&rest), event_ids(&full[full.len() / 2 + 1..]), "reading from a checkpoint resumes after it");

    let filters = [
        EventFilter {
            event_types: vec!["Created".into(), "Closed".into()],
            aggregate_types: vec![],
            skip_metadata: false,
        },
        EventFilter::aggregate_types(["order"]),
        EventFilter {
            event_types: vec!["Updated".into()],
            aggregate_types: vec!["user".into(), "invoice".into()],
            skip_metadata: false,
        },
        EventFilter { event_types: vec!["NoSuchEvent".into()], aggregate_types: vec![], skip_metadata: false },
    ];
    for filter in &filters {
        let expected: Vec<Uuid> = full.iter().filter(|e| filter.matches(e)).map(|e| e.event_id).collect();
        let got = read_everything(store, filter, Partition::WHOLE, 9).await;
        assert_eq!(event_ids(&got), expected, "filter {filter:?}");
    }
    assert!(full.iter().any(|e| filters[1].matches(e)), "the generated history has orders");

    for (count, filter) in [(4u32, EventFilter::all()), (3, EventFilter::aggregate_types(["user", "invoice"]))] {
        let mut seen: Vec<DomainEvent> = Vec::new();
        for index in 0..count {
            let partition = Partition { index, count };
            let part = read_everything(store, &filter, partition, 9).await;
            for e in &part {
                assert_eq!(
                    Partition::bucket(&e.aggregate_id, count),
                    index,
                    "event {} of aggregate {} is in partition {partition} but hashes elsewhere",
                    e.position,
                    e.aggregate_id
                );
            }
            seen.extend(part);
        }
        seen.sort_by_key(|e| e.checkpoint());
        let expected: Vec<Uuid> = full.iter().filter(|e| filter.matches(e)).map(|e| e.event_id).collect();
        assert_eq!(event_ids(&seen), expected, "{count} partitions ({filter:?}) cover every event exactly once");
    }
}

// ---------------------------------------------------------------------------------------
// Projection bookkeeping

/// A read model with every column type, an additive column and a version column.
pub const PROBE: TableSchema = TableSchema {
    name: "contract_probe",
    key: &[Column::new("id", ColumnType::Text)],
    columns: &[
        Column::new("label", ColumnType::Text).nullable(),
        Column::new("counter", ColumnType::BigInt).additive(),
        Column::new("flag", ColumnType::Bool),
        Column::new("ref_id", ColumnType::Uuid).nullable(),
        Column::new("seen_at", ColumnType::Timestamp).nullable(),
        Column::new("day", ColumnType::Date).nullable(),
        Column::new("doc", ColumnType::Json).nullable(),
    ],
    version_column: Some("version"),
};

pub(crate) fn probe_row(key: &str, label: Option<&str>, counter: i64, full: bool, version: i64) -> Vec<Value> {
    vec![
        Value::Text(key.to_owned()),
        label.map_or(Value::Null, Value::from),
        Value::BigInt(counter),
        Value::Bool(full),
        if full { Value::Uuid(id(7, 999)) } else { Value::Null },
        if full { Value::Timestamp(base_time() + Span::microseconds(7)) } else { Value::Null },
        if full { Value::Date(NaiveDate::from_ymd_opt(2026, 2, 28).unwrap()) } else { Value::Null },
        if full { Value::Json(json!({"list": [1, 2, {"x": null}], "s": "ü \"q\""})) } else { Value::Null },
        Value::BigInt(version),
    ]
}

pub(crate) fn key(k: &str) -> Vec<Value> {
    vec![Value::Text(k.to_owned())]
}

pub(crate) async fn probe_rows<S: ContractStore>(store: &S, keys: &[&str]) -> BTreeMap<String, Vec<Value>> {
    let keys: Vec<Vec<Value>> = keys.iter().map(|k| key(k)).collect();
    let rows = ok(store.load_rows(&PROBE, &keys).await, "load_rows");
    let mut out = BTreeMap::new();
    for row in rows {
        assert_eq!(row.len(), PROBE.all_columns().count(), "load_rows returns full rows: {row:?}");
        let Value::Text(k) = &row[0] else { panic!("probe key is not text: {row:?}") };
        assert!(out.insert(k.clone(), row.clone()).is_none(), "load_rows returned key {k} twice");
    }
    out
}

pub(crate) const TTL: Duration = Duration::from_secs(30);

pub(crate) async fn claim<S: ContractStore>(
    store: &S,
    projection: &str,
    partition: Partition,
    owner: &str,
    ttl: Duration,
) -> Option<Lease> {
    ok(store.claim(projection, partition, owner, ttl).await, &format!("claim {projection} {partition} for {owner}"))
}

/// `register` creates partitions; `claim` leases them (renewable by the owner, refused to
/// others while live, free again after release or expiry).
pub async fn register_and_claim<S: ContractStore>(store: &S) {
    let p = "contract-claims";
    let filter = EventFilter::aggregate_types(["user"]);
    ok(store.register(p, &PROBE, &filter, 2).await, "register");
    ok(store.register(p, &PROBE, &filter, 2).await, "registering again is idempotent");
    let states = states_of(&ok(store.states().await, "states"), p);
    assert_eq!(states.len(), 2, "one state per partition: {states:#?}");
    for (i, s) in states.iter().enumerate() {
        assert_eq!((s.partition, s.partitions), (i as u32, 2), "partition numbering");
        assert_eq!(s.checkpoint, Checkpoint::START, "a new partition starts at the beginning");
        assert!(
            matches!(s.status, Status::Running | Status::CaughtUp),
            "a new partition is running (or caught up: there are no events): {:?}",
            s.status
        );
        assert_eq!((s.events_applied, s.error_count, s.lag_events), (0, 0, 0), "fresh counters, no events yet");
        assert_eq!(s.lease_owner, None, "no lease yet");
    }

    let p0 = Partition { index: 0, count: 2 };
    let p1 = Partition { index: 1, count: 2 };
    let lease = claim(store, p, p0, "alpha", TTL).await.expect("a free partition can be claimed");
    assert_eq!(
        (lease.projection.as_str(), lease.partition, lease.owner.as_str(), lease.checkpoint),
        (p, p0, "alpha", Checkpoint::START),
        "the lease names projection, partition, owner and checkpoint"
    );
    assert_eq!(claim(store, p, p0, "beta", TTL).await, None, "a live lease is refused to another owner");
    assert!(claim(store, p, p0, "alpha", TTL).await.is_some(), "the owner renews its own lease");
    assert!(claim(store, p, p1, "beta", TTL).await.is_some(), "another partition is free");
    let states = ok(store.states().await, "states");
    assert_eq!(state(&states, p, 0).lease_owner.as_deref(), Some("alpha"), "states show the lease owner");
    assert!(state(&states, p, 0).lease_expires_at.is_some_and(|t| t > Utc::now()), "states show a future lease expiry");

    ok(store.release(&lease).await, "release");
    let taken = claim(store, p, p0, "beta", TTL).await.expect("a released lease can be taken at once");
    assert_eq!(taken.owner, "beta");
    ok(store.release(&lease).await, "releasing a lease one no longer holds is harmless");
    assert_eq!(claim(store, p, p0, "alpha", TTL).await, None, "a stale release did not free beta's lease");

    assert!(claim(store, p, p1, "beta", Duration::from_millis(300)).await.is_some(), "renew with a short ttl");
    assert_eq!(claim(store, p, p1, "gamma", TTL).await, None, "the short lease is live at first");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let stolen = claim(store, p, p1, "gamma", TTL).await.expect("an expired lease can be taken by another owner");
    assert_eq!(stolen.owner, "gamma");

    match store.claim("contract-no-such-projection", Partition::WHOLE, "alpha", TTL).await {
        Err(StoreError::UnknownProjection(name)) => {
            assert!(name.contains("contract-no-such-projection"), "UnknownProjection names the projection: {name}")
        }
        other => {
            panic!("claiming an unregistered projection: want UnknownProjection, got {other:?}")
        }
    }
}

/// `commit` moves the checkpoint and writes rows in one step; a stale `from` or a lost
/// lease fails and writes nothing; `Merge::Add` columns add the delta.
pub async fn commit_moves_checkpoint_and_writes_rows<S: ContractStore>(store: &S) {
    let a = id(8, 1);
    let t = base_time();
    let out = append(
        store,
        a,
        "user",
        ExpectedVersion::Exact(0),
        (0..4).map(|i| NewEvent::new("Tick", json!({"i": i})).at(t + Span::minutes(i))).collect(),
    )
    .await;
    settle(store, &out).await;
    let events = ok(store.read_aggregate(a, ReadBound::All).await, "read");
    let cp: Vec<Checkpoint> = events.iter().map(DomainEvent::checkpoint).collect();
    assert_eq!(cp.len(), 4, "{out:?}");

    let p = "contract-commit";
    ok(store.register(p, &PROBE, &EventFilter::all(), 1).await, "register");
    let lease = claim(store, p, Partition::WHOLE, "alpha", TTL).await.expect("claim");
    let commit = |from, to, changes, applied, last| BatchCommit {
        lease: &lease,
        table: &PROBE,
        from,
        to,
        changes,
        events_applied: applied,
        last_event_at: last,
        lease_ttl: TTL,
        dead_letters: Vec::new(),
        audit: Vec::new(),
    };

    let a_row = probe_row("a", Some("first"), 10, true, 2);
    let b_row = probe_row("b", None, 1, false, 1);
    let changes = RowChanges {
        upserts: vec![a_row.clone(), b_row.clone()],
        deletes: vec![],
        inserts_only: false,
        snapshots: Vec::new(),
    };
    ok(store.commit(commit(Checkpoint::START, cp[1], changes, 2, Some(events[1].timestamp))).await, "first commit");
    let rows = probe_rows(store, &["a", "b", "zz"]).await;
    assert_eq!(rows.len(), 2, "load_rows returns the stored rows and skips missing keys: {rows:?}");
    assert_eq!(rows["a"], a_row, "every column type round-trips");
    assert_eq!(rows["b"], b_row, "nulls round-trip");
    let s = state(&ok(store.states().await, "states"), p, 0).clone();
    assert_eq!(s.checkpoint, cp[1], "the commit moved the checkpoint");
    assert_eq!(s.events_applied, 2, "events_applied adds the batch's count");
    assert_eq!(s.last_event_at, Some(events[1].timestamp), "last_event_at is the batch's");
    assert_eq!(s.lag_events, 2, "two events remain after the checkpoint");
    assert!(s.lag_seconds > 0.0, "lag_seconds is the age of the oldest unapplied event: {}", s.lag_seconds);
    assert_eq!(s.lease_owner.as_deref(), Some("alpha"), "a commit keeps the lease");

    let stale = RowChanges {
        upserts: vec![probe_row("c", Some("stale"), 5, true, 1)],
        deletes: vec![key("a")],
        inserts_only: false,
        snapshots: Vec::new(),
    };
    match store.commit(commit(Checkpoint::START, cp[2], stale.clone(), 1, None)).await {
        Err(StoreError::CheckpointMoved { projection, partition }) => {
            assert_eq!((projection.as_str(), partition), (p, 0))
        }
        other => panic!("a commit from a stale checkpoint: want CheckpointMoved, got {other:?}"),
    }
    let rows = probe_rows(store, &["a", "b", "c"]).await;
    assert_eq!(rows.keys().collect::<Vec<_>>(), ["a", "b"], "a failed commit writes and deletes nothing");
    assert_eq!(state(&ok(store.states().await, "states"), p, 0).checkpoint, cp[1], "a failed commit moves nothing");

    let intruder = Lease { owner: "mallory".into(), ..lease.clone() };
    let foreign = BatchCommit { lease: &intruder, ..commit(cp[1], cp[2], stale.clone(), 1, None) };
    match store.commit(foreign).await {
        Err(StoreError::LeaseLost { projection, partition, owner }) => {
            assert_eq!((projection.as_str(), partition, owner.as_str()), (p, 0, "alpha"), "LeaseLost names the holder")
        }
        other => panic!("a commit without the lease: want LeaseLost, got {other:?}"),
    }
    assert_eq!(probe_rows(store, &["c"]).await.len(), 0, "a commit without the lease writes nothing");

    // Replace columns take the new value, additive columns add the delta, deletes delete.
    let mut a_delta = probe_row("a", Some("second"), 5, false, 4);
    a_delta[3] = Value::Bool(false);
    let c_row = probe_row("c", Some("new"), 7, true, 3);
    let changes = RowChanges {
        upserts: vec![a_delta, c_row.clone()],
        deletes: vec![key("b"), key("never-existed")],
        inserts_only: false,
        snapshots: Vec::new(),
    };
    ok(store.commit(commit(cp[1], cp[3], changes, 2, Some(events[3].timestamp))).await, "second commit");
    let rows = probe_rows(store, &["a", "b", "c"]).await;
    assert_eq!(rows.keys().collect::<Vec<_>>(), ["a", "c"], "b was deleted, c inserted");
    let mut a_expected = probe_row("a", Some("second"), 15, false, 4);
    a_expected[3] = Value::Bool(false);
    assert_eq!(rows["a"], a_expected, "replace columns replaced, the additive column added 10 + 5");
    assert_eq!(rows["c"], c_row, "an inserted row's additive column holds the delta");
    let s = state(&ok(store.states().await, "states"), p, 0).clone();
    assert_eq!((s.checkpoint, s.events_applied), (cp[3], 4), "second commit moved the checkpoint and counted");
    assert_eq!((s.lag_events, s.lag_seconds), (0, 0.0), "no lag at the last event");

    match store.commit(commit(cp[1], cp[3], RowChanges::default(), 0, None)).await {
        Err(StoreError::CheckpointMoved { .. }) => {}
        other => panic!("repeating a committed batch: want CheckpointMoved, got {other:?}"),
    }
}

/// `set_status` records status and errors; `states` measures lag per filter and partition.
pub async fn status_and_lag<S: ContractStore>(store: &S) {
    let p = "contract-status";
    ok(store.register(p, &PROBE, &EventFilter::all(), 1).await, "register");
    ok(store.set_status(p, Partition::WHOLE, Status::Failed, Some("boom at 42")).await, "set_status failed");
    let s = state(&ok(store.states().await, "states"), p, 0).clone();
    assert_eq!(s.status, Status::Failed, "status recorded");
    assert_eq!(s.last_error.as_deref(), Some("boom at 42"), "error text recorded");
    assert!(s.error_count >= 1, "a failure counts as an error: {}", s.error_count);
    ok(store.set_status(p, Partition::WHOLE, Status::Stopped, None).await, "set_status stopped");
    assert_eq!(state(&ok(store.states().await, "states"), p, 0).status, Status::Stopped, "status changed again");

    let hour_ago = Utc::now() - Span::hours(1);
    let mut users = 0;
    for n in 0..12u64 {
        let kind = if n % 3 == 0 { "order" } else { "user" };
        users += i64::from(kind == "user") * 2;
        let events = vec![NewEvent::new("E", json!({})).at(hour_ago), NewEvent::new("F", json!({})).at(hour_ago)];
        let out = append(store, id(9, n), kind, ExpectedVersion::Exact(0), events).await;
        if n == 11 {
            settle(store, &out).await;
        }
    }
    let lagging = "contract-lag";
    let filter = EventFilter::aggregate_types(["user"]);
    ok(store.register(lagging, &PROBE_LAG, &filter, 2).await, "register with a filter and 2 partitions");
    let all = read_everything(store, &filter, Partition::WHOLE, 100).await;
    assert_eq!(all.len() as i64, users);
    let states = ok(store.states().await, "states");
    let mut total = 0;
    for index in 0..2 {
        let s = state(&states, lagging, index);
        let expected = all.iter().filter(|e| Partition::bucket(&e.aggregate_id, 2) == index).count() as i64;
        assert_eq!(s.lag_events, expected, "lag_events of partition {index} counts its matching events");
        if expected > 0 {
            // Timestamped an hour ago, recorded just now: lag counts from the recording.
            assert!(
                (0.0..600.0).contains(&s.lag_seconds),
                "lag_seconds is the time since the store recorded the oldest unapplied event: {}",
                s.lag_seconds
            );
        }
        total += s.lag_events;
    }
    assert_eq!(total, users, "the partitions' lag adds up to the filter's events");
}

/// A second table for projections registered next to [`PROBE`] in one store.
pub const PROBE_LAG: TableSchema = TableSchema { name: "contract_probe_lag", ..PROBE };

/// Repartitioning is allowed while every partition is at one checkpoint, and refused
/// (`InvalidInput`) once they differ.
pub async fn rescale_needs_aligned_checkpoints<S: ContractStore>(store: &S) {
    let p = "contract-rescale";
    let out = append(store, id(10, 1), "user", ExpectedVersion::Exact(0), vec![NewEvent::new("E", json!({}))]).await;
    settle(store, &out).await;
    ok(store.register(p, &PROBE, &EventFilter::all(), 2).await, "register 2");
    ok(store.repartition(p, 4).await, "rescale 2 -> 4 at one checkpoint");
    let states = states_of(&ok(store.states().await, "states"), p);
    assert_eq!(states.len(), 4, "4 partitions after rescaling: {states:#?}");
    assert!(states.iter().all(|s| s.partitions == 4), "every partition knows the new count");
    let index = Partition::bucket(&id(10, 1), 4);
    let partition = Partition { index, count: 4 };
    let lease = claim(store, p, partition, "alpha", TTL).await.expect("claim");
    let events = ok(store.read_all(Checkpoint::START, &EventFilter::all(), partition, 10).await, "read");
    assert_eq!(event_ids(&events), out.event_ids, "the event is in its partition");
    let commit = BatchCommit {
        lease: &lease,
        table: &PROBE,
        from: Checkpoint::START,
        to: events[0].checkpoint(),
        changes: RowChanges::default(),
        events_applied: 1,
        last_event_at: None,
        lease_ttl: TTL,
        dead_letters: Vec::new(),
        audit: Vec::new(),
    };
    ok(store.commit(commit).await, "commit");
    match store.repartition(p, 2).await {
        Err(StoreError::InvalidInput(_)) => {}
        other => panic!("rescaling partitions at different checkpoints: want InvalidInput, got {other:?}"),
    }
    assert_eq!(states_of(&ok(store.states().await, "states"), p).len(), 4, "a refused rescale changes nothing");
}

// ---------------------------------------------------------------------------------------
// End to end with the example projections

const PLANS: [&str; 3] = ["pro", "team", "enterprise"];

/// One generated history: appended through the store, with the outcome of each append.
#[derive(Debug, Default)]
struct History {
    users: Vec<Uuid>,
    versions: HashMap<Uuid, i64>,
    clock: Option<DateTime<Utc>>,
}

impl History {
    fn tick(&mut self, rng: &mut Rng) -> DateTime<Utc> {
        let now = self.clock.unwrap_or_else(base_time)
            + Span::minutes(1 + rng.below(40) as i64)
            + Span::microseconds(rng.below(1_000_000) as i64);
        self.clock = Some(now);
        now
    }

    fn user_event(&mut self, rng: &mut Rng, registered: bool, user: u64) -> NewEvent {
        let at = self.tick(rng);
        if !registered {
            let mut data = json!({"email": format!("u{user}@example.com"), "name": format!("User {user}")});
            if rng.below(3) > 0 {
                data["plan"] = json!("free");
            }
            return NewEvent::new("UserRegistered", data).at(at);
        }
        let n = rng.below(100);
        let (kind, data) = match n {
            0..=24 => ("UserEmailChanged", json!({"email": format!("u{user}.{n}@example.com")})),
            25..=29 => ("UserEmailChanged", json!({"email": null})),
            30..=54 => ("UserRenamed", json!({"name": format!("User {user} #{n}")})),
            55..=69 => ("PlanUpgraded", json!({"plan": PLANS[(n % 3) as usize]})),
            70..=93 => ("UserLoggedIn", json!({"ip": format!("10.0.0.{n}")})),
            _ => ("UserDeactivated", json!({"reason": "requested"})),
        };
        NewEvent::new(kind, data).at(at)
    }

    /// Appends about `user_events` user events over `users` users (ids from `check`),
    /// interleaved with order events. Returns the first appended position.
    async fn append_users<S: ContractStore>(
        &mut self,
        store: &S,
        rng: &mut Rng,
        check: u64,
        users: u64,
        user_events: usize,
    ) -> i64 {
        let mut first = None;
        let mut last = None;
        let mut written = 0;
        while written < user_events {
            let user = rng.below(users);
            let aggregate = id(check, user);
            let version = self.versions.get(&aggregate).copied().unwrap_or(0);
            let batch = 1 + rng.below(3);
            let events: Vec<NewEvent> = (0..batch).map(|i| self.user_event(rng, version > 0 || i > 0, user)).collect();
            written += events.len();
            let out = append(store, aggregate, "user", ExpectedVersion::Exact(version), events).await;
            first.get_or_insert(out.positions[0]);
            self.versions.insert(aggregate, out.last_version);
            if version == 0 {
                self.users.push(aggregate);
            }
            last = Some(out);
            if rng.below(5) == 0 {
                let order = id(check + 1, rng.below(8));
                let at = self.tick(rng);
                last = Some(
                    append(
                        store,
                        order,
                        "order",
                        ExpectedVersion::Any,
                        vec![NewEvent::new("OrderPlaced", json!({})).at(at)],
                    )
                    .await,
                );
            }
        }
        if let Some(last) = &last {
            settle(store, last).await;
        }
        first.unwrap_or(0)
    }
}

/// The user-profile rows as specified, computed directly from the events.
pub fn reference_profiles(events: &[DomainEvent]) -> BTreeMap<Uuid, (Profile, i64)> {
    let mut by_user: BTreeMap<Uuid, Vec<&DomainEvent>> = BTreeMap::new();
    for e in events.iter().filter(|e| e.aggregate_type == "user") {
        by_user.entry(e.aggregate_id).or_default().push(e);
    }
    let mut out = BTreeMap::new();
    for (user, mut list) in by_user {
        list.sort_by_key(|e| e.version);
        let text = |e: &DomainEvent, field: &str| data(e).get(field).and_then(|v| v.as_str().map(str::to_owned));
        let last_setting = |types: &[&str], field: &str| {
            list.iter().rev().find(|e| types.contains(&e.event_type.as_str())).and_then(|e| text(e, field))
        };
        let profile = Profile {
            email: last_setting(&["UserRegistered", "UserEmailChanged", "SubjectErased"], "email"),
            name: last_setting(&["UserRegistered", "UserRenamed", "SubjectErased"], "name"),
            plan: last_setting(&["UserRegistered", "PlanUpgraded"], "plan"),
            active: !list.iter().any(|e| e.event_type == "UserDeactivated"),
        };
        out.insert(user, (profile, list.last().map_or(0, |e| e.version)));
    }
    out
}

/// Events per (UTC day, event type).
fn reference_activity(events: &[DomainEvent]) -> BTreeMap<(NaiveDate, String), i64> {
    let mut out = BTreeMap::new();
    for e in events {
        *out.entry((e.timestamp.date_naive(), e.event_type.clone())).or_insert(0) += 1;
    }
    out
}

pub async fn stored_profiles<S: ContractStore>(store: &S, users: &[Uuid]) -> BTreeMap<Uuid, (Profile, i64)> {
    let schema = UserProfile.schema();
    let keys: Vec<Vec<Value>> = users.iter().map(|u| vec![Value::Uuid(*u)]).collect();
    let rows = ok(store.load_rows(schema, &keys).await, "load user_profile rows");
    let mut out = BTreeMap::new();
    for row in rows {
        let mut reader = RowReader::new(schema, &row);
        let user = reader.uuid().unwrap_or_else(|e| panic!("user_profile key: {e}"));
        let profile = Profile::from_values(&mut reader).unwrap_or_else(|e| panic!("user_profile row: {e}"));
        let version = reader.bigint().unwrap_or_else(|e| panic!("user_profile version: {e}"));
        out.insert(user, (profile, version));
    }
    out
}

async fn stored_activity<S: ContractStore>(
    store: &S,
    keys: &BTreeSet<(NaiveDate, String)>,
) -> BTreeMap<(NaiveDate, String), i64> {
    let schema = DailyActivity.schema();
    let key_values: Vec<Vec<Value>> =
        keys.iter().map(|(day, kind)| vec![Value::Date(*day), Value::Text(kind.clone())]).collect();
    let rows = ok(store.load_rows(schema, &key_values).await, "load daily_activity rows");
    let mut out = BTreeMap::new();
    for row in rows {
        let mut reader = RowReader::new(schema, &row);
        let day = reader.date().unwrap_or_else(|e| panic!("daily_activity key: {e}"));
        let kind = reader.text().unwrap_or_else(|e| panic!("daily_activity key: {e}"));
        let count = Count::from_values(&mut reader).unwrap_or_else(|e| panic!("daily_activity row: {e}"));
        out.insert((day, kind), count.events);
    }
    out
}

/// Runs every partition of a projection to caught-up, round-robin, in small batches.
pub(crate) async fn run_live<H: ProjectionHandler, S: ContractStore>(
    store: &S,
    handler: &H,
    partitions: u32,
    batch: usize,
) {
    let mut runners = Vec::new();
    for index in 0..partitions {
        let partition = Partition { index, count: partitions };
        let owner = format!("contract-runner-{index}");
        let lease = claim(store, handler.name(), partition, &owner, TTL)
            .await
            .unwrap_or_else(|| panic!("{} partition {partition} is free to claim", handler.name()));
        runners.push(BatchRunner::new(handler, store, &EventFilter::all(), lease).batch_size(batch).lease_ttl(TTL));
    }
    let mut done = vec![false; runners.len()];
    for _ in 0..100_000 {
        if done.iter().all(|d| *d) {
            for runner in &runners {
                ok(store.release(runner.lease()).await, "release");
            }
            return;
        }
        for (runner, done) in runners.iter_mut().zip(done.iter_mut()) {
            if !*done {
                let step = runner.step().await.unwrap_or_else(|e| panic!("{} batch failed: {e}", handler.name()));
                *done = step.events_read == 0;
            }
        }
    }
    panic!("{} never caught up", handler.name());
}

async fn assert_read_models<S: ContractStore>(store: &S, users: &[Uuid], what: &str) {
    assert_profiles(store, users, what).await;
    assert_activity(store, what).await;
}

async fn assert_profiles<S: ContractStore>(store: &S, users: &[Uuid], what: &str) {
    let all = read_everything(store, &EventFilter::all(), Partition::WHOLE, 1000).await;
    let expected = reference_profiles(&all);
    let got = stored_profiles(store, users).await;
    assert_eq!(got.len(), expected.len(), "{what}: one user_profile row per user");
    for (user, row) in &expected {
        assert_eq!(got.get(user), Some(row), "{what}: user_profile row of {user}");
    }
}

async fn assert_activity<S: ContractStore>(store: &S, what: &str) {
    let all = read_everything(store, &EventFilter::all(), Partition::WHOLE, 1000).await;
    let expected = reference_activity(&all);
    let keys: BTreeSet<(NaiveDate, String)> = expected.keys().cloned().collect();
    let got = stored_activity(store, &keys).await;
    assert_eq!(got, expected, "{what}: daily_activity counts equal the events per (UTC day, event type)");
}

async fn assert_caught_up<S: ContractStore>(store: &S, projection: &str, what: &str) -> Vec<ProjectionState> {
    let states = states_of(&ok(store.states().await, "states"), projection);
    assert!(!states.is_empty(), "{what}: {projection} has states");
    for s in &states {
        assert_eq!(
            (s.lag_events, s.lag_seconds),
            (0, 0.0),
            "{what}: {projection} partition {} is caught up (no lag): {s:#?}",
            s.partition
        );
    }
    states
}

/// The example projections, run live in small batches over several partitions, agree
/// with a direct computation; a full rebuild and a partial rebuild give the same rows.
pub async fn end_to_end_with_the_example_projections<S: ContractStore>(store: &S) {
    let check = 20;
    let mut rng = Rng::new(20);
    let mut history = History::default();
    history.append_users(store, &mut rng, check, 30, 300).await;

    ok(store.register(UserProfile.name(), UserProfile.schema(), &UserProfile.filter(), 2).await, "register profile");
    ok(
        store.register(DailyActivity.name(), DailyActivity.schema(), &DailyActivity.filter(), 3).await,
        "register activity",
    );
    let before = ok(store.states().await, "states");
    let users_lag: i64 = states_of(&before, UserProfile.name()).iter().map(|s| s.lag_events).sum();
    let all = read_everything(store, &EventFilter::all(), Partition::WHOLE, 1000).await;
    let user_events = all.iter().filter(|e| e.aggregate_type == "user").count() as i64;
    assert_eq!(users_lag, user_events, "before running, user-profile lags by every user event");
    let days: BTreeSet<NaiveDate> = all.iter().map(|e| e.timestamp.date_naive()).collect();
    assert!(days.len() >= 3, "the history spans several UTC days: {days:?}");

    run_live(store, &UserProfile, 2, 7).await;
    run_live(store, &DailyActivity, 3, 11).await;
    assert_read_models(store, &history.users, "after the live run").await;
    let profile_states = assert_caught_up(store, UserProfile.name(), "after the live run").await;
    let applied: i64 = profile_states.iter().map(|s| s.events_applied).sum();
    assert_eq!(applied, user_events, "user-profile applied every user event exactly once");
    let activity_states = assert_caught_up(store, DailyActivity.name(), "after the live run").await;
    let applied: i64 = activity_states.iter().map(|s| s.events_applied).sum();
    assert_eq!(applied, all.len() as i64, "daily-activity applied every event exactly once");
    let live_profiles = stored_profiles(store, &history.users).await;

    // Full rebuilds, flushing often so that rows are reloaded between flushes.
    let rebuilt = Rebuild::new(&UserProfile, &EventFilter::all())
        .read_size(13)
        .flush_rows(8)
        .run(store, |_: u64, _: Checkpoint| {})
        .await
        .unwrap_or_else(|e| panic!("user-profile rebuild: {e}"));
    assert_eq!(rebuilt.events_read as i64, user_events, "the rebuild read every user event");
    assert_eq!(stored_profiles(store, &history.users).await, live_profiles, "a rebuild gives the live run's rows");
    Rebuild::new(&DailyActivity, &EventFilter::all())
        .read_size(17)
        .flush_rows(5)
        .run(store, |_: u64, _: Checkpoint| {})
        .await
        .unwrap_or_else(|e| panic!("daily-activity rebuild: {e}"));
    assert_read_models(store, &history.users, "after full rebuilds").await;
    for projection in [UserProfile.name(), DailyActivity.name()] {
        for s in assert_caught_up(store, projection, "after a full rebuild").await {
            assert_eq!(s.status, Status::CaughtUp, "a finished rebuild marks {projection} caught up");
        }
    }
    let last_user = all.iter().rev().find(|e| e.aggregate_type == "user").unwrap().checkpoint();
    let profile_states = states_of(&ok(store.states().await, "states"), UserProfile.name());
    assert!(
        profile_states.iter().all(|s| s.checkpoint == last_user),
        "a rebuild sets every partition's checkpoint to its last event {last_user}: {profile_states:#?}"
    );

    // New events (some new users), not applied live: a partial rebuild picks them up.
    let from = history.append_users(store, &mut rng, check, 34, 40).await;
    for handler_name in [UserProfile.name(), DailyActivity.name()] {
        let lag: i64 = states_of(&ok(store.states().await, "states"), handler_name).iter().map(|s| s.lag_events).sum();
        assert!(lag > 0, "{handler_name} lags after new events");
    }
    Rebuild::new(&UserProfile, &EventFilter::all())
        .from_position(Some(from))
        .read_size(19)
        .run(store, |_: u64, _: Checkpoint| {})
        .await
        .unwrap_or_else(|e| panic!("partial user-profile rebuild: {e}"));
    Rebuild::new(&DailyActivity, &EventFilter::all())
        .from_position(Some(from))
        .read_size(19)
        .flush_rows(4)
        .run(store, |_: u64, _: Checkpoint| {})
        .await
        .unwrap_or_else(|e| panic!("partial daily-activity rebuild: {e}"));
    assert_read_models(store, &history.users, "after partial rebuilds from a position").await;
    assert_caught_up(store, UserProfile.name(), "after a partial rebuild").await;
    assert_caught_up(store, DailyActivity.name(), "after a partial rebuild").await;

    // Live runners continue from the rebuild's checkpoint.
    history.append_users(store, &mut rng, check, 36, 30).await;
    run_live(store, &UserProfile, 2, 5).await;
    run_live(store, &DailyActivity, 3, 5).await;
    assert_read_models(store, &history.users, "live after the rebuilds").await;
    assert_caught_up(store, UserProfile.name(), "live after the rebuilds").await;
    assert_caught_up(store, DailyActivity.name(), "live after the rebuilds").await;
}

/// A rebuild session dropped without `finish` leaves rows and checkpoints as they were.
pub async fn abandoned_rebuild_changes_nothing<S: ContractStore>(store: &S) {
    let mut rng = Rng::new(30);
    let mut history = History::default();
    history.append_users(store, &mut rng, 30, 5, 40).await;
    ok(store.register(DailyActivity.name(), DailyActivity.schema(), &EventFilter::all(), 1).await, "register");
    run_live(store, &DailyActivity, 1, 50).await;
    let before = states_of(&ok(store.states().await, "states"), DailyActivity.name());
    {
        let mut session = ok(store.begin_rebuild(DailyActivity.name(), DailyActivity.schema()).await, "begin_rebuild");
        ok(session.clear_rows(None).await, "clear_rows");
        let probe_key = vec![vec![Value::Date(NaiveDate::from_ymd_opt(2000, 1, 1).unwrap()), Value::Text("X".into())]];
        ok(
            session
                .write_rows(RowChanges {
                    upserts: vec![vec![probe_key[0][0].clone(), probe_key[0][1].clone(), Value::BigInt(1)]],
                    deletes: vec![],
                    inserts_only: false,
                    snapshots: Vec::new(),
                })
                .await,
            "write_rows",
        );
        assert_eq!(
            ok(session.load_rows(&probe_key).await, "load_rows in session").len(),
            1,
            "the session sees its writes"
        );
        let events = ok(session.read_all(Checkpoint::START, &EventFilter::all(), 1000).await, "session read_all");
        assert!(!events.is_empty(), "the session reads events");
        drop(session);
    }
    assert_activity(store, "after an abandoned rebuild").await;
    let key = BTreeSet::from([(NaiveDate::from_ymd_opt(2000, 1, 1).unwrap(), "X".to_string())]);
    assert!(stored_activity(store, &key).await.is_empty(), "an abandoned rebuild's writes are gone");
    let after = states_of(&ok(store.states().await, "states"), DailyActivity.name());
    assert_eq!(
        before.iter().map(|s| (s.checkpoint, s.status)).collect::<Vec<_>>(),
        after.iter().map(|s| (s.checkpoint, s.status)).collect::<Vec<_>>(),
        "an abandoned rebuild moves no checkpoint"
    );
}
