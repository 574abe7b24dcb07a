//! `daily-activity`: how many events of each type were appended on each UTC day, over
//! every aggregate. Counting is not idempotent, so an event skipped or applied twice
//! shows here: the exactly-once tests assert on this projection.

use chrono::NaiveDate;
use projector::{
    Column, ColumnType, DomainEvent, EventFilter, HandlerError, Ordering, ProjectionHandler, Record, RowError,
    RowReader, TableSchema, Value,
};

/// The read-model table `daily_activity`, keyed by day and event type.
pub const SCHEMA: TableSchema = TableSchema {
    name: "daily_activity",
    key: &[Column::new("day", ColumnType::Date), Column::new("event_type", ColumnType::Text)],
    // Additive: several partitions may count into the same row at once.
    columns: &[Column::new("events", ColumnType::BigInt).additive()],
    version_column: None,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Count {
    pub events: i64,
}

impl Record for Count {
    fn to_values(&self, out: &mut Vec<Value>) {
        out.push(self.events.into());
    }

    fn from_values(values: &mut RowReader<'_>) -> Result<Self, RowError> {
        Ok(Self { events: values.bigint()? })
    }
}

/// Upcasters registered next to this projection (see `projection_user_profile::UPCASTERS`).
/// None: it counts events by type and never reads a payload.
pub const UPCASTERS: &[projector::upcast::Upcaster] = &[];

#[derive(Debug, Clone, Copy, Default)]
pub struct DailyActivity;

impl ProjectionHandler for DailyActivity {
    type Key = (NaiveDate, String);
    type Row = Count;

    fn name(&self) -> &'static str {
        "daily-activity"
    }

    fn schema(&self) -> &'static TableSchema {
        &SCHEMA
    }

    fn ordering(&self) -> Ordering {
        Ordering::Commutative
    }

    fn filter(&self) -> EventFilter {
        EventFilter::all().without_metadata()
    }

    fn key(&self, event: &DomainEvent) -> Option<(NaiveDate, String)> {
        Some((event.timestamp.date_naive(), event.event_type.clone()))
    }

    fn handle(&self, row: &mut Option<Count>, _event: &DomainEvent) -> Result<(), HandlerError> {
        row.get_or_insert_with(Count::default).events += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use projector::testing::{event, Scenario};
    use serde_json::json;
    use uuid::Uuid;

    #[test]
    fn counts_per_utc_day_and_type_across_aggregates() {
        let day = |d: u32, h: u32| Utc.with_ymd_and_hms(2026, 3, d, h, 0, 0).unwrap();
        let at = |id: u128, t: &str, ts| {
            let mut e = event("user", Uuid::from_u128(id), t, json!({}));
            e.timestamp = ts;
            e
        };
        let d1 = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        let d2 = NaiveDate::from_ymd_opt(2026, 3, 2).unwrap();
        Scenario::new(&DailyActivity)
            .given(at(1, "UserRegistered", day(1, 23)))
            .given(at(2, "UserRegistered", day(1, 1)))
            .given(at(1, "UserRenamed", day(2, 0)))
            .then_row(&(d1, "UserRegistered".into()), Some(Count { events: 2 }))
            .then_row(&(d2, "UserRenamed".into()), Some(Count { events: 1 }))
            .then_row(&(d2, "UserRegistered".into()), None);
    }
}
