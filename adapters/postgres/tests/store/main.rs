//! Checks of the PostgreSQL store itself: the schema upgrade, the partition function and
//! its plans, and the store's answers where the shared contract leaves room.

mod idempotency;
mod listen;
mod partitions;
mod projections;
mod upgrade;

use projector::{AppendOutcome, AppendRequest, Column, ColumnType, EventStore, ExpectedVersion, NewEvent, TableSchema};
use projector_postgres::PgStore;
use uuid::Uuid;

/// A read model for the checks: a text key and an additive counter.
pub const PROBE: TableSchema = TableSchema {
    name: "probe",
    key: &[Column::new("id", ColumnType::Text)],
    columns: &[Column::new("n", ColumnType::BigInt).additive()],
    version_column: None,
};

/// Deterministic, well-spread aggregate ids.
pub fn id(n: u64) -> Uuid {
    let mut x = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    Uuid::from_u64_pair(n, x)
}

pub fn request(aggregate: Uuid, expected: i64, event_types: &[&str], key: Option<&str>) -> AppendRequest {
    AppendRequest {
        aggregate_id: aggregate,
        aggregate_type: "thing".into(),
        expected_version: ExpectedVersion::Exact(expected),
        events: event_types.iter().map(|t| NewEvent::new(*t, serde_json::json!({"t": t}))).collect(),
        idempotency_key: key.map(str::to_owned),
    }
}

pub async fn append(store: &PgStore, request: AppendRequest) -> AppendOutcome {
    store.append(request).await.expect("append")
}
