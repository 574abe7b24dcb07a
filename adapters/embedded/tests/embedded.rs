//! What is particular to the embedded store: files, migrations, several handles on one
//! file, damaged rows and the on-disk encodings. The store-agnostic behaviour is checked
//! by the conformance suite in `tests/` (`contract_embedded`).

use std::time::Duration;

use chrono::{TimeZone, Utc};
use projector::{
    AppendRequest, BatchCommit, Checkpoint, Column, ColumnType, EventFilter, EventStore, ExpectedVersion, NewEvent,
    Partition, ProjectionStore, ReadBound, RowChanges, StoreError, TableSchema, Value,
};
use projector_embedded::{EmbeddedStore, MIGRATIONS};
use serde_json::json;
use uuid::Uuid;

fn request(aggregate_id: Uuid, expected: ExpectedVersion, events: Vec<NewEvent>) -> AppendRequest {
    AppendRequest {
        aggregate_id,
        aggregate_type: "thing".into(),
        expected_version: expected,
        events,
        idempotency_key: None,
    }
}

fn raw(path: &std::path::Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).expect("open the file directly");
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn
}

#[tokio::test]
async fn open_creates_directories_and_migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/projector.db");
    let store = EmbeddedStore::open(&path).expect("open creates parent directories");
    assert_eq!(store.path(), Some(path.as_path()));
    assert!(path.is_file(), "the database file exists");
    let newest = MIGRATIONS.last().unwrap().version;
    assert_eq!(store.schema_version().unwrap(), newest);
    store.migrate().expect("migrating again is a no-op");
    store
        .append(request(Uuid::from_u128(1), ExpectedVersion::Exact(0), vec![NewEvent::new("E", json!({}))]))
        .await
        .unwrap();
    drop(store);

    let again = EmbeddedStore::open(&path).expect("reopen");
    assert_eq!(again.schema_version().unwrap(), newest);
    let events = again.read_aggregate(Uuid::from_u128(1), ReadBound::All).await.unwrap();
    assert_eq!(events.len(), 1, "events survive reopening");

    let conn = raw(&path);
    let applied: i64 = conn.query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0)).unwrap();
    assert_eq!(applied, MIGRATIONS.len() as i64, "each migration is recorded once");
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode.to_lowercase(), "wal");
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("projector.db");
    drop(EmbeddedStore::open(&path).unwrap());
    raw(&path)
        .execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 'x')", [])
        .unwrap();
    match EmbeddedStore::open(&path) {
        Err(StoreError::Schema(message)) => assert!(message.contains("999"), "{message}"),
        other => panic!("want a Schema error, got {other:?}"),
    }
}

#[test]
fn open_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"this is not a database, just some text that is long enough....").unwrap();
    let err = EmbeddedStore::open(&file).expect_err("a text file is not a store");
    assert!(err.to_string().contains("plain-file"), "the error names the file: {err}");

    let below_file = file.join("store.db");
    let err = EmbeddedStore::open(&below_file).expect_err("a directory cannot be created below a file");
    assert!(err.to_string().contains("plain-file"), "the error names the path: {err}");
}

/// Two handles on one file behave like two processes: writers take turns, versions stay
/// gapless, and each sees the other's events.
#[test]
fn two_handles_on_one_file_take_turns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let first = EmbeddedStore::open(&path).unwrap();
    let second = EmbeddedStore::open(&path).unwrap();
    let aggregate = Uuid::from_u128(42);
    let runtime = || tokio::runtime::Builder::new_current_thread().build().unwrap();

    let handles: Vec<_> = [first.clone(), second.clone()]
        .into_iter()
        .enumerate()
        .map(|(n, store)| {
            std::thread::spawn(move || {
                runtime().block_on(async {
                    let mut conflicts = 0;
                    for i in 0..40 {
                        let event = NewEvent::new("Tick", json!({"writer": n, "i": i}));
                        store.append(request(aggregate, ExpectedVersion::Any, vec![event.clone()])).await.unwrap();
                        // An optimistic append at a version read a moment ago may lose.
                        let current = store.read_aggregate(aggregate, ReadBound::All).await.unwrap().len() as i64;
                        match store.append(request(aggregate, ExpectedVersion::Exact(current), vec![event])).await {
                            Ok(_) => {}
                            Err(StoreError::Conflict { .. }) => conflicts += 1,
                            Err(e) => panic!("writer {n}: {e}"),
                        }
                    }
                    conflicts
                })
            })
        })
        .collect();
    let conflicts: i64 = handles.into_iter().map(|h| h.join().unwrap()).sum();

    runtime().block_on(async {
        for store in [&first, &second] {
            let events = store.read_aggregate(aggregate, ReadBound::All).await.unwrap();
            assert_eq!(events.len() as i64, 160 - conflicts, "every successful append is there");
            let versions: Vec<i64> = events.iter().map(|e| e.version).collect();
            assert_eq!(versions, (1..=events.len() as i64).collect::<Vec<_>>(), "versions have no gaps");
            let all = store.read_all(Checkpoint::START, &EventFilter::all(), Partition::WHOLE, 1000).await.unwrap();
            assert!(all.windows(2).all(|w| w[0].position < w[1].position));
            assert_eq!(all.len(), events.len());
        }
    });
}

#[tokio::test]
async fn damaged_rows_are_reported_not_panicked_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("damaged.db");
    let store = EmbeddedStore::open(&path).unwrap();
    let good = Uuid::from_u128(7);
    store.append(request(good, ExpectedVersion::Exact(0), vec![NewEvent::new("Fine", json!({}))])).await.unwrap();
    let conn = raw(&path);
    let insert = |id: &str, aggregate: &str, data: &str, timestamp: &str, encrypted: &str| {
        conn.execute(
            "INSERT INTO events (event_id, aggregate_id, aggregate_type, event_type, event_data, metadata, version, \
             timestamp, encrypted_fields) VALUES (?1, ?2, 'thing', 'Bad', ?3, '{}', 1, ?4, ?5)",
            [id, aggregate, data, timestamp, encrypted],
        )
        .unwrap();
        conn.last_insert_rowid()
    };
    let ok_ts = "2026-03-01T00:00:00.000000Z";
    let cases = [
        insert("e1", "00000000-0000-0000-0000-000000000011", "{\"a\": 1}", ok_ts, "[]"),
        insert(&Uuid::from_u128(12).to_string(), "not-a-uuid", "{}", ok_ts, "[]"),
        insert(&Uuid::from_u128(13).to_string(), &Uuid::from_u128(13).to_string(), "{broken", ok_ts, "[]"),
        insert(&Uuid::from_u128(14).to_string(), &Uuid::from_u128(14).to_string(), "{}", "yesterday", "[]"),
        insert(&Uuid::from_u128(15).to_string(), &Uuid::from_u128(15).to_string(), "{}", ok_ts, "{\"no\": 1}"),
    ];
    let mut after = Checkpoint::START;
    let first = store.read_all(after, &EventFilter::all(), Partition::WHOLE, 1).await.unwrap();
    after = first[0].checkpoint();
    for position in cases {
        match store.read_all(after, &EventFilter::all(), Partition::WHOLE, 10).await {
            Err(StoreError::Corrupt { position: p, reason }) => {
                assert_eq!(p, position, "Corrupt names the row: {reason}");
            }
            other => panic!("row {position}: want Corrupt, got {other:?}"),
        }
        after = Checkpoint { transaction_id: 0, position };
    }
    // A damaged aggregate id lands in partition 0, where it is reported.
    let bad_only = EventFilter { event_types: vec!["Bad".into()], aggregate_types: vec![], skip_metadata: false };
    match store.read_all(Checkpoint::START, &bad_only, Partition { index: 0, count: 2 }, 10).await {
        Err(StoreError::Corrupt { position, .. }) => assert_eq!(position, cases[1]),
        other => panic!("want Corrupt in partition 0, got {other:?}"),
    }
    let events = store.read_aggregate(Uuid::from_u128(13), ReadBound::All).await;
    assert!(matches!(events, Err(StoreError::Corrupt { .. })), "read_aggregate reports damage too: {events:?}");
}

const TYPES: TableSchema = TableSchema {
    name: "embedded_types",
    key: &[Column::new("id", ColumnType::Uuid)],
    columns: &[
        Column::new("flag", ColumnType::Bool),
        Column::new("at", ColumnType::Timestamp),
        Column::new("day", ColumnType::Date),
        Column::new("doc", ColumnType::Json),
        Column::new("n", ColumnType::BigInt).additive(),
    ],
    version_column: Some("version"),
};

#[tokio::test]
async fn read_model_values_are_stored_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("types.db");
    let store = EmbeddedStore::open(&path).unwrap();
    store.register("types", &TYPES, &EventFilter::all(), 1).await.unwrap();
    let lease = store.claim("types", Partition::WHOLE, "me", Duration::from_secs(30)).await.unwrap().unwrap();
    let id = Uuid::parse_str("A1B2C3D4-0000-4000-8000-00000000000F").unwrap();
    let at = Utc.with_ymd_and_hms(2026, 3, 1, 12, 30, 0).unwrap();
    let row = vec![
        Value::Uuid(id),
        Value::Bool(true),
        Value::Timestamp(at),
        Value::Date(at.date_naive()),
        Value::Json(json!({"b": 1, "a": [true]})),
        Value::BigInt(3),
        Value::BigInt(9),
    ];
    let commit = BatchCommit {
        lease: &lease,
        table: &TYPES,
        from: Checkpoint::START,
        to: Checkpoint { transaction_id: 0, position: 0 },
        changes: RowChanges { upserts: vec![row.clone()], deletes: vec![], inserts_only: false, snapshots: Vec::new() },
        events_applied: 0,
        last_event_at: None,
        lease_ttl: Duration::from_secs(30),
        dead_letters: vec![],
        audit: Vec::new(),
    };
    store.commit(commit).await.unwrap();
    assert_eq!(store.load_rows(&TYPES, &[vec![Value::Uuid(id)]]).await.unwrap(), vec![row]);

    let conn = raw(&path);
    let (key, flag, ts, day, doc, version): (String, i64, String, String, String, i64) = conn
        .query_row("SELECT id, flag, at, day, doc, version FROM embedded_types", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
        })
        .unwrap();
    assert_eq!(key, "a1b2c3d4-0000-4000-8000-00000000000f", "uuids are lower-case hyphenated text");
    assert_eq!(flag, 1, "booleans are 0/1");
    assert_eq!(ts, "2026-03-01T12:30:00.000000Z", "timestamps are RFC 3339 UTC with microseconds");
    assert_eq!(day, "2026-03-01", "dates are YYYY-MM-DD");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&doc).unwrap(), json!({"a": [true], "b": 1}));
    assert_eq!(version, 9);

    // A value of the wrong type or a null in a non-null column is refused, naming the column.
    let bad = vec![
        Value::Uuid(id),
        Value::Text("yes".into()),
        Value::Null,
        Value::Null,
        Value::Null,
        Value::Null,
        Value::Null,
    ];
    let commit = BatchCommit {
        lease: &lease,
        table: &TYPES,
        from: Checkpoint::START,
        to: Checkpoint::START,
        changes: RowChanges { upserts: vec![bad], deletes: vec![], inserts_only: false, snapshots: Vec::new() },
        events_applied: 0,
        last_event_at: None,
        lease_ttl: Duration::from_secs(30),
        dead_letters: vec![],
        audit: Vec::new(),
    };
    match store.commit(commit).await {
        Err(StoreError::Row { table, reason }) => {
            assert_eq!(table, "embedded_types");
            assert!(reason.contains("flag"), "{reason}");
        }
        other => panic!("want a Row error, got {other:?}"),
    }
}

#[tokio::test]
async fn out_of_range_timestamps_are_refused() {
    let store = EmbeddedStore::open_in_memory().unwrap();
    let far = Utc.with_ymd_and_hms(12_000, 1, 1, 0, 0, 0).unwrap();
    let result = store
        .append(request(Uuid::from_u128(1), ExpectedVersion::Any, vec![NewEvent::new("E", json!({})).at(far)]))
        .await;
    assert!(matches!(result, Err(StoreError::InvalidInput(_))), "{result:?}");
    let empty = store.append(request(Uuid::from_u128(1), ExpectedVersion::Any, vec![])).await;
    assert!(matches!(empty, Err(StoreError::InvalidInput(_))), "{empty:?}");
}

#[tokio::test]
async fn reserved_and_foreign_tables_are_refused() {
    let store = EmbeddedStore::open_in_memory().unwrap();
    const EVENTS: TableSchema = TableSchema { name: "events", ..TYPES };
    let result = store.register("sneaky", &EVENTS, &EventFilter::all(), 1).await;
    assert!(matches!(result, Err(StoreError::InvalidInput(_))), "{result:?}");
    store.register("types", &TYPES, &EventFilter::all(), 1).await.unwrap();
    let result = store.register("other", &TYPES, &EventFilter::all(), 1).await;
    assert!(matches!(result, Err(StoreError::InvalidInput(_))), "a table belongs to one projection: {result:?}");
    let result = store.register("types", &TYPES, &EventFilter::all(), 0).await;
    assert!(matches!(result, Err(StoreError::InvalidInput(_))), "{result:?}");
}

/// The store asks the core's rules and answers with their errors: a claim split for
/// another count or beyond the partitions, a commit for another table or projection, a
/// status change of a missing partition, a rebuild counted once.
#[tokio::test]
async fn the_store_answers_with_the_core_rules() {
    use projector::{RebuildSession, Rebuilds, Status};
    let store = EmbeddedStore::open_in_memory().unwrap();
    store.register("types", &TYPES, &EventFilter::all(), 2).await.unwrap();
    let ttl = Duration::from_secs(30);

    let result = store.claim("types", Partition { index: 0, count: 3 }, "me", ttl).await;
    assert!(matches!(&result, Err(StoreError::InvalidInput(m)) if m.contains("projector scale")), "{result:?}");
    let result = store.claim("types", Partition { index: 2, count: 2 }, "me", ttl).await;
    assert!(matches!(&result, Err(StoreError::InvalidInput(m)) if m.contains("no partition")), "{result:?}");
    let result = store.claim("types", Partition { index: 0, count: 2 }, "", ttl).await;
    assert!(matches!(result, Err(StoreError::InvalidInput(_))), "{result:?}");

    let lease = store.claim("types", Partition { index: 0, count: 2 }, "me", ttl).await.unwrap().unwrap();
    const ELSEWHERE: TableSchema = TableSchema { name: "embedded_elsewhere", ..TYPES };
    let commit = |table: &'static TableSchema, lease| BatchCommit {
        lease,
        table,
        from: Checkpoint::START,
        to: Checkpoint::START,
        changes: RowChanges::default(),
        events_applied: 0,
        last_event_at: None,
        lease_ttl: ttl,
        dead_letters: vec![],
        audit: Vec::new(),
    };
    let result = store.commit(commit(&ELSEWHERE, &lease)).await;
    assert!(matches!(&result, Err(StoreError::InvalidInput(m)) if m.contains("writes table")), "{result:?}");
    let stranger = projector::Lease { projection: "nobody".into(), ..lease.clone() };
    let result = store.commit(commit(&TYPES, &stranger)).await;
    assert!(matches!(result, Err(StoreError::UnknownProjection(ref p)) if p == "nobody"), "{result:?}");

    store.set_status("types", lease.partition, Status::Failed, None).await.unwrap();
    store.set_status("types", lease.partition, Status::Stopped, Some("held")).await.unwrap();
    store.set_status("types", lease.partition, Status::Running, None).await.unwrap();
    let state = store.states().await.unwrap().remove(0);
    // Running again clears the text; the count keeps the history.
    assert_eq!((state.error_count, state.last_error.as_deref()), (2, None));
    let result = store.set_status("nobody", Partition::WHOLE, Status::Running, None).await;
    assert!(matches!(result, Err(StoreError::UnknownProjection(_))), "{result:?}");

    let to = Checkpoint { transaction_id: 0, position: 9 };
    let session = store.begin_rebuild("types", &TYPES).await.unwrap();
    session.finish(to, 5, None).await.unwrap();
    let applied: Vec<(u32, i64, Checkpoint, Status)> =
        store.states().await.unwrap().iter().map(|s| (s.partition, s.events_applied, s.checkpoint, s.status)).collect();
    assert_eq!(applied, vec![(0, 5, to, Status::CaughtUp), (1, 0, to, Status::CaughtUp)]);
}

/// A key names one request: the same request again is answered from the key, another
/// one under the same key is refused and writes nothing. The key keeps its aggregate and
/// the request's fingerprint.
#[tokio::test]
async fn an_idempotency_key_names_one_request() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    let store = EmbeddedStore::open(&path).unwrap();
    let a = Uuid::from_u128(1);
    let keyed = |aggregate, events| AppendRequest {
        idempotency_key: Some("req-1".into()),
        ..request(aggregate, ExpectedVersion::Exact(0), events)
    };
    let events = || vec![NewEvent::new("E", json!({"n": 1, "m": 2}))];
    let first = store.append(keyed(a, events())).await.unwrap();
    let again = store.append(keyed(a, vec![NewEvent::new("E", json!({"m": 2, "n": 1}))])).await.unwrap();
    assert_eq!(again, projector::AppendOutcome { deduplicated: true, ..first.clone() }, "the same request");

    for (what, other) in [
        ("another payload", keyed(a, vec![NewEvent::new("E", json!({"n": 2}))])),
        ("another event type", keyed(a, vec![NewEvent::new("F", json!({"n": 1, "m": 2}))])),
        ("another expected version", AppendRequest { expected_version: ExpectedVersion::Any, ..keyed(a, events()) }),
        ("another aggregate", keyed(Uuid::from_u128(2), events())),
    ] {
        match store.append(other).await {
            Err(StoreError::IdempotencyConflict { key, .. }) => assert_eq!(key, "req-1", "{what}"),
            other => panic!("{what}: want IdempotencyConflict, got {other:?}"),
        }
    }
    assert_eq!(store.read_aggregate(a, ReadBound::All).await.unwrap().len(), 1, "nothing written");
    assert!(store.read_aggregate(Uuid::from_u128(2), ReadBound::All).await.unwrap().is_empty());

    let (aggregate, fingerprint): (String, String) = raw(&path)
        .query_row("SELECT aggregate_id, fingerprint FROM idempotency_keys WHERE key = 'req-1'", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(aggregate, a.to_string());
    assert_eq!(fingerprint, projector::store::rules::request_fingerprint(&keyed(a, events())));
}
