use std::sync::atomic::{AtomicU32, Ordering as Atomic};

use super::*;
use crate::read_model::{Column, ColumnType, Record, RowReader};
use crate::testing::event;

/// Counts events per key (`bucket` in the payload); fails on payloads saying so, and
/// counts every call, so a test can tell how often a batch was folded.
#[derive(Debug, Default)]
struct Counting {
    calls: AtomicU32,
}

const SCHEMA: TableSchema = TableSchema {
    name: "counts",
    key: &[Column::new("bucket", ColumnType::Text)],
    columns: &[Column::new("n", ColumnType::BigInt).additive()],
    version_column: None,
};

#[derive(Debug, Clone, PartialEq)]
struct Count(i64);

impl Record for Count {
    fn to_values(&self, out: &mut Vec<Value>) {
        out.push(self.0.into());
    }

    fn from_values(values: &mut RowReader<'_>) -> Result<Self, RowError> {
        Ok(Count(values.bigint()?))
    }
}

impl ProjectionHandler for Counting {
    type Key = String;
    type Row = Count;

    fn name(&self) -> &'static str {
        "counting"
    }

    fn schema(&self) -> &'static TableSchema {
        &SCHEMA
    }

    fn ordering(&self) -> Ordering {
        Ordering::Commutative
    }

    fn key(&self, event: &DomainEvent) -> Option<String> {
        event.data::<serde_json::Value>().ok()?.get("bucket")?.as_str().map(str::to_owned)
    }

    fn handle(&self, row: &mut Option<Count>, event: &DomainEvent) -> Result<(), HandlerError> {
        self.calls.fetch_add(1, Atomic::Relaxed);
        // Touches the row before failing, as a handler may.
        row.get_or_insert(Count(0)).0 += 1;
        if event.event_type == "Crash" {
            panic!("crashed on {}", event.event_id);
        }
        if event.event_type == "Poison" {
            return Err(HandlerError::Rejected { event_id: event.event_id, reason: "poison".into() });
        }
        Ok(())
    }
}

fn batch(spec: &[(u128, i64, &str, &str)]) -> Vec<DomainEvent> {
    spec.iter()
        .enumerate()
        .map(|(i, &(aggregate, version, bucket, event_type))| {
            let mut e = event("thing", Uuid::from_u128(aggregate), event_type, serde_json::json!({ "bucket": bucket }));
            e.position = i as i64 + 1;
            e.event_id = Uuid::from_u128(1000 + i as u128);
            e.version = version;
            e
        })
        .collect()
}

#[test]
fn apply_from_says_where_it_stopped_with_everything_before_applied() {
    let handler = Counting::default();
    let mut fold = Fold::new(&handler).assume_absent(true);
    let events = batch(&[(1, 1, "a", "Ok"), (2, 1, "a", "Ok"), (3, 1, "b", "Poison"), (4, 1, "b", "Ok")]);
    let halt = fold.apply_from(&events, &[], 0, |_| false).expect_err("the poison fails");
    assert_eq!(halt.index, 2);
    assert_eq!(halt.failure.aggregate_id, Uuid::from_u128(3));
    assert_eq!(fold.row(&"a".to_owned()), Some(&Count(2)));
    assert_eq!(fold.events_applied(), 2);
}

#[test]
fn a_parked_aggregate_is_taken_out_of_the_rows_it_reached_without_refolding_the_batch() {
    let handler = Counting::default();
    let mut fold = Fold::new(&handler).assume_absent(true);
    // Aggregate 1's v2 reaches row "a" before its v1 fails (commit order is not
    // version order for a commutative projection).
    let events = batch(&[
        (1, 2, "a", "Ok"),
        (2, 1, "a", "Ok"),
        (3, 1, "b", "Ok"),
        (1, 1, "a", "Poison"),
        (4, 1, "a", "Ok"),
        (5, 1, "b", "Ok"),
    ]);
    let halt = fold.apply_from(&events, &[], 0, |_| false).expect_err("the poison fails");
    assert_eq!(halt.index, 3);
    let parked = |e: &DomainEvent| e.aggregate_id == Uuid::from_u128(1);
    fold.take_out(&events, &[], halt.index, &events[halt.index], parked).expect("replay");
    fold.apply_from(&events, &[], halt.index, parked).expect("the rest applies");

    assert_eq!(fold.row(&"a".to_owned()), Some(&Count(2)), "aggregate 1 counts nowhere");
    assert_eq!(fold.row(&"b".to_owned()), Some(&Count(2)));
    assert_eq!(fold.events_applied(), 4);
    // 4 first-pass calls up to and including the failure, 1 replay of row "a" (aggregate
    // 2), 2 calls for the rest: far from folding the six events twice.
    assert_eq!(handler.calls.load(Atomic::Relaxed), 7);
}

#[test]
fn k_failures_in_one_batch_cost_no_refold() {
    let handler = Counting::default();
    let mut fold = Fold::new(&handler).assume_absent(true);
    let spec: Vec<(u128, i64, String, &str)> =
        (0..100u128).map(|i| (i, 1, format!("b{}", i % 10), if i % 25 == 7 { "Poison" } else { "Ok" })).collect();
    let spec: Vec<(u128, i64, &str, &str)> = spec.iter().map(|(a, v, b, t)| (*a, *v, b.as_str(), *t)).collect();
    let events = batch(&spec);
    let mut parked: Vec<Uuid> = Vec::new();
    let mut start = 0;
    while let Err(halt) = fold.apply_from(&events, &[], start, |e| parked.contains(&e.aggregate_id)) {
        parked.push(halt.failure.aggregate_id);
        start = halt.index;
    }
    assert_eq!(parked.len(), 4);
    assert_eq!(fold.events_applied(), 96);
    assert_eq!(handler.calls.load(Atomic::Relaxed), 100, "each event is handled once");
}

#[test]
fn scenario_then_error_accepts_a_failing_last_event() {
    let handler = Counting::default();
    crate::testing::Scenario::new(&handler)
        .given(batch(&[(1, 1, "a", "Ok")]).remove(0))
        .given(batch(&[(2, 1, "a", "Poison")]).remove(0))
        .then_error(|e| matches!(e, HandlerError::Rejected { .. }));
}

#[test]
#[should_panic(expected = "expected the last event to fail")]
fn scenario_then_error_fails_when_a_later_event_applied() {
    let handler = Counting::default();
    crate::testing::Scenario::new(&handler)
        .given(batch(&[(2, 1, "a", "Poison")]).remove(0))
        .given(batch(&[(1, 1, "a", "Ok")]).remove(0))
        .then_error(|_| true);
}

#[test]
fn a_handler_panic_is_a_permanent_failure_of_that_event() {
    let handler = Counting::default();
    let mut fold = Fold::new(&handler).assume_absent(true);
    let events = batch(&[(1, 1, "a", "Ok"), (2, 1, "a", "Crash"), (3, 1, "b", "Ok")]);
    let halt = fold.apply_from(&events, &[], 0, |_| false).expect_err("the crash fails");
    assert_eq!(halt.index, 1);
    assert!(
        matches!(&halt.failure.error, HandlerError::Panicked { message, .. } if message.contains("crashed on")),
        "{:?}",
        halt.failure.error
    );
    assert_eq!(halt.failure.error.class(), crate::ErrorClass::Permanent);
    let parked = |e: &DomainEvent| e.aggregate_id == Uuid::from_u128(2);
    fold.take_out(&events, &[], halt.index, &events[halt.index], parked).expect("replay");
    fold.apply_from(&events, &[], halt.index, parked).expect("the rest applies");
    assert_eq!(fold.row(&"a".to_owned()), Some(&Count(1)));
    assert_eq!(fold.row(&"b".to_owned()), Some(&Count(1)));
}

#[test]
fn a_payload_that_is_not_an_object_fails_for_every_handler() {
    let handler = Counting::default();
    for (payload, found) in [("[1,2]", "an array"), ("null", "null"), ("\"x\"", "a string"), ("7", "a number")] {
        let mut fold = Fold::new(&handler).assume_absent(true);
        let mut e = batch(&[(1, 1, "a", "Ok")]).remove(0);
        e.event_data = serde_json::value::RawValue::from_string(payload.to_owned()).unwrap();
        let failure = fold.apply_one(&e).expect_err("not an object");
        assert!(
            matches!(&failure.error, HandlerError::Payload { reason, .. } if reason.contains(found)),
            "{payload}: {:?}",
            failure.error
        );
    }
}
