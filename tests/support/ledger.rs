//! A test-only projection that counts how often each event was applied: one row per
//! event id. Any event skipped or applied twice is visible as a missing row or a count
//! other than 1.

use projector::{
    Column, ColumnType, DomainEvent, HandlerError, Ordering, ProjectionHandler, Record, RowError, RowReader,
    TableSchema, Value,
};
use uuid::Uuid;

pub const SCHEMA: TableSchema = TableSchema {
    name: "event_ledger",
    key: &[Column::new("event_id", ColumnType::Uuid)],
    columns: &[Column::new("applied", ColumnType::BigInt).additive()],
    version_column: None,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied(pub i64);

impl Record for Applied {
    fn to_values(&self, out: &mut Vec<Value>) {
        out.push(Value::BigInt(self.0));
    }
    fn from_values(values: &mut RowReader<'_>) -> Result<Self, RowError> {
        Ok(Applied(values.bigint()?))
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Ledger;

impl ProjectionHandler for Ledger {
    type Key = Uuid;
    type Row = Applied;

    fn name(&self) -> &'static str {
        "event-ledger"
    }
    fn schema(&self) -> &'static TableSchema {
        &SCHEMA
    }
    fn ordering(&self) -> Ordering {
        Ordering::Commutative
    }
    fn key(&self, event: &DomainEvent) -> Option<Uuid> {
        Some(event.event_id)
    }
    fn handle(&self, row: &mut Option<Applied>, _: &DomainEvent) -> Result<(), HandlerError> {
        row.get_or_insert_with(Applied::default).0 += 1;
        Ok(())
    }
}

/// The oracle statements for the example read models (the reference semantics).
pub const USER_PROFILE_ORACLE: &str = "
SELECT aggregate_id AS user_id,
  (array_agg(event_data ->> 'email' ORDER BY version DESC)
     FILTER (WHERE event_type IN ('UserRegistered', 'UserEmailChanged', 'SubjectErased')))[1] AS email,
  (array_agg(event_data ->> 'name' ORDER BY version DESC)
     FILTER (WHERE event_type IN ('UserRegistered', 'UserRenamed', 'SubjectErased')))[1] AS name,
  (array_agg(event_data ->> 'plan' ORDER BY version DESC)
     FILTER (WHERE event_type IN ('UserRegistered', 'PlanUpgraded')))[1] AS plan,
  NOT bool_or(event_type = 'UserDeactivated') AS active,
  max(version) AS version
FROM events WHERE aggregate_type = 'user' GROUP BY aggregate_id";

pub const DAILY_ACTIVITY_ORACLE: &str = "
SELECT (timestamp AT TIME ZONE 'UTC')::date AS day, event_type, count(*) AS events
FROM events GROUP BY 1, 2";

/// Rows in `table` and not in `oracle`, and the reverse (each as text), for assertions.
pub async fn differences(client: &tokio_postgres::Client, table: &str, oracle: &str) -> (Vec<String>, Vec<String>) {
    let q = |a: String, b: String| format!("SELECT x::text FROM (({a}) EXCEPT ({b})) x LIMIT 10");
    let extra = client
        .query(&q(format!("SELECT * FROM {table}"), oracle.to_owned()), &[])
        .await
        .expect("compare read model with oracle");
    let missing = client
        .query(&q(oracle.to_owned(), format!("SELECT * FROM {table}")), &[])
        .await
        .expect("compare oracle with read model");
    (extra.iter().map(|r| r.get(0)).collect(), missing.iter().map(|r| r.get(0)).collect())
}

/// Panics with the differing rows unless `table` equals `oracle`.
pub async fn assert_matches_oracle(client: &tokio_postgres::Client, table: &str, oracle: &str) {
    let (extra, missing) = differences(client, table, oracle).await;
    assert!(
        extra.is_empty() && missing.is_empty(),
        "{table} differs from a from-scratch replay:\n  rows not in the replay: {extra:?}\n  replay rows missing: {missing:?}"
    );
}
