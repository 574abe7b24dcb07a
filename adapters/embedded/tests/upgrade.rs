//! A store file written by an older schema opens in place: the migrations it lacks run,
//! and what it held (checkpoints, leases, idempotency keys) reads as before.

use std::time::Duration;

use projector::{
    AppendOutcome, AppendRequest, Checkpoint, Column, ColumnType, EventFilter, EventStore, ExpectedVersion, NewEvent,
    Partition, ProjectionStore, ReadBound, Status, StoreError, TableSchema,
};
use projector_embedded::{EmbeddedStore, MIGRATIONS};
use serde_json::json;
use uuid::Uuid;

const COUNTS: TableSchema = TableSchema {
    name: "upgrade_counts",
    key: &[Column::new("id", ColumnType::Uuid)],
    columns: &[Column::new("n", ColumnType::BigInt)],
    version_column: None,
};

const AGGREGATE: Uuid = Uuid::from_u128(0x5eed_0000_0000_0000_0000_0000_0000_0001);
const KEY: &str = "req-42";

fn keyed_request(aggregate_id: Uuid) -> AppendRequest {
    AppendRequest {
        aggregate_id,
        aggregate_type: "user".into(),
        expected_version: ExpectedVersion::Exact(0),
        events: vec![
            NewEvent::new("UserRegistered", json!({"email": "ada@example.com"})),
            NewEvent::new("UserRenamed", json!({"name": "Ada"})),
        ],
        idempotency_key: Some(KEY.into()),
    }
}

/// What the keyed append of the old file wrote.
fn first_outcome() -> AppendOutcome {
    AppendOutcome {
        aggregate_id: AGGREGATE,
        first_version: 1,
        last_version: 2,
        event_ids: vec![Uuid::from_u128(101), Uuid::from_u128(102)],
        positions: vec![1, 2],
        deduplicated: false,
    }
}

/// A file as schema version 4 left it: the migrations of that time applied by hand, a
/// projection of two partitions with their checkpoints, a lease and its read-model table,
/// two events and the idempotency key of the append that wrote them.
fn write_version_4_file(path: &std::path::Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)",
    )
    .unwrap();
    for m in MIGRATIONS.iter().filter(|m| m.version <= 4) {
        conn.execute_batch(m.sql).unwrap();
        conn.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, '2026-03-01T00:00:00.000000Z')",
            rusqlite::params![m.version, m.name],
        )
        .unwrap();
    }
    let outcome = first_outcome();
    for (i, (id, position)) in outcome.event_ids.iter().zip(&outcome.positions).enumerate() {
        conn.execute(
            "INSERT INTO events (position, event_id, aggregate_id, aggregate_type, event_type, event_data, version, \
             timestamp) VALUES (?1, ?2, ?3, 'user', ?4, '{}', ?5, '2026-03-01T12:00:00.000000Z')",
            rusqlite::params![
                position,
                id.to_string(),
                AGGREGATE.to_string(),
                ["UserRegistered", "UserRenamed"][i],
                i as i64 + 1
            ],
        )
        .unwrap();
    }
    conn.execute(
        "INSERT INTO idempotency_keys (key, outcome, created_at) VALUES (?1, ?2, '2026-03-01T12:00:00.000000Z')",
        rusqlite::params![KEY, serde_json::to_string(&outcome).unwrap()],
    )
    .unwrap();
    conn.execute_batch(
        "CREATE TABLE upgrade_counts (id TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (id)) WITHOUT ROWID;
         INSERT INTO projections (name, table_name, filter, partitions) VALUES ('counts', 'upgrade_counts', '{}', 2);
         INSERT INTO projection_checkpoints (projection, partition, partitions, transaction_id, position, lease_owner,
             lease_expires_at, status, events_applied, error_count, last_error, last_event_at, updated_at,
             parking_epoch)
         VALUES ('counts', 0, 2, 0, 2, 'runner-a', '2026-03-01T12:00:10.000000Z', 'running', 2, 1, 'was down',
                 '2026-03-01T12:00:00.000000Z', '2026-03-01T12:00:05.000000Z', 3),
                ('counts', 1, 2, 0, 2, NULL, NULL, 'stopped', 0, 0, NULL, NULL,
                 '2026-03-01T12:00:05.000000Z', 0);",
    )
    .unwrap();
}

#[tokio::test]
async fn a_version_4_file_upgrades_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v4.db");
    write_version_4_file(&path);

    let store = EmbeddedStore::open(&path).expect("a version 4 file opens");
    assert_eq!(store.schema_version().unwrap(), MIGRATIONS.last().unwrap().version);

    let states = store.states().await.unwrap();
    let seen: Vec<_> = states
        .iter()
        .map(|s| {
            (
                s.projection.as_str(),
                s.partition,
                s.partitions,
                s.checkpoint,
                s.status,
                s.events_applied,
                s.error_count,
                s.last_error.as_deref(),
                s.lease_owner.as_deref(),
            )
        })
        .collect();
    let at = Checkpoint { transaction_id: 0, position: 2 };
    assert_eq!(
        seen,
        vec![
            ("counts", 0, 2, at, Status::CaughtUp, 2, 1, Some("was down"), Some("runner-a")),
            ("counts", 1, 2, at, Status::Stopped, 0, 0, None, None),
        ],
        "the checkpoints, leases and counters are those of the old file"
    );
    assert_eq!(states[0].lag_events, 0);

    // The same key gives the same outcome, and writes nothing.
    let again = store.append(keyed_request(AGGREGATE)).await.expect("the stored key answers");
    assert_eq!(again, AppendOutcome { deduplicated: true, ..first_outcome() });
    assert_eq!(store.read_aggregate(AGGREGATE, ReadBound::All).await.unwrap().len(), 2);
    // The old key has no fingerprint, so only its aggregate is compared.
    let other_events = AppendRequest { events: vec![NewEvent::new("Other", json!({}))], ..keyed_request(AGGREGATE) };
    assert_eq!(store.append(other_events).await.unwrap(), again, "a key stored without a fingerprint");
    let elsewhere = store.append(keyed_request(Uuid::from_u128(7))).await;
    assert!(
        matches!(&elsewhere, Err(StoreError::IdempotencyConflict { key, .. }) if key == KEY),
        "the old key's aggregate was kept: {elsewhere:?}"
    );
    assert!(store.read_aggregate(Uuid::from_u128(7), ReadBound::All).await.unwrap().is_empty());

    // Registering again with the same partitions keeps the checkpoints; the parking epoch
    // of the old row comes with the lease.
    store.register("counts", &COUNTS, &EventFilter::all(), 2).await.unwrap();
    let lease = store
        .claim("counts", Partition { index: 0, count: 2 }, "runner-b", Duration::from_secs(10))
        .await
        .unwrap()
        .expect("the old lease has expired");
    assert_eq!((lease.checkpoint, lease.parked.epoch), (at, 3));

    let conn = rusqlite::Connection::open(&path).unwrap();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'projection%' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(tables, ["projection_state", "projections"], "the partition rows have their new name");
    let aggregate: String =
        conn.query_row("SELECT aggregate_id FROM idempotency_keys WHERE key = ?1", [KEY], |r| r.get(0)).unwrap();
    assert_eq!(aggregate, AGGREGATE.to_string(), "the old key's aggregate is taken from its outcome");
}
