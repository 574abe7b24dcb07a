//! What a store reports about its projections, checked on every store: lag measured by
//! the store's own clock, counted exactly up to a bound and estimated (and labelled so)
//! beyond it, and errors that clear once a partition recovers.

use std::num::NonZeroU32;

use chrono::{TimeZone, Utc};
use projector::{EventFilter, ExpectedVersion, NewEvent, Partition, ReadBound, Status};
use projector_embedded::EmbeddedStore;
use projector_postgres::PgStore;
use serde_json::json;

use crate::contract::{append, id, ok, settle, state, ContractStore, PROBE};

/// Lag counts from when the store recorded an event, not from the `timestamp` its
/// appender gave: imported history (1970) is not decades of lag, and an appender's clock
/// running ahead (2099) is not negative lag. The timestamps themselves are kept.
pub async fn lag_is_measured_from_when_the_store_recorded_the_events<S: ContractStore>(store: &S) {
    let p = "reporting-lag";
    let long_ago = Utc.with_ymd_and_hms(1970, 1, 2, 0, 0, 0).unwrap();
    let ahead = Utc.with_ymd_and_hms(2099, 1, 1, 0, 0, 0).unwrap();
    let (old, new) = (id(40, 1), id(40, 2));
    append(store, old, "user", ExpectedVersion::Exact(0), vec![NewEvent::new("E", json!({})).at(long_ago)]).await;
    let last =
        append(store, new, "user", ExpectedVersion::Exact(0), vec![NewEvent::new("E", json!({})).at(ahead)]).await;
    settle(store, &last).await;
    ok(store.register(p, &PROBE, &EventFilter::all(), 1).await, "register");
    let s = state(&ok(store.states().await, "states"), p, 0).clone();
    assert_eq!(s.lag_events, 2, "both events are unread");
    assert!(
        (0.0..60.0).contains(&s.lag_seconds),
        "lag_seconds is the time since the store recorded the oldest unread event (moments ago), \
         whatever its timestamp says: {}",
        s.lag_seconds
    );
    for (aggregate, expected) in [(old, long_ago), (new, ahead)] {
        let events = ok(store.read_aggregate(aggregate, ReadBound::All).await, "read_aggregate");
        assert_eq!(events[0].timestamp, expected, "an explicit timestamp is kept as given");
    }
}

/// `last_error` describes a current problem: a partition that runs again after a failure
/// no longer reports the old error (the error count keeps the history).
pub async fn a_recovered_partition_clears_its_last_error<S: ContractStore>(store: &S) {
    let p = "reporting-recovered";
    ok(store.register(p, &PROBE, &EventFilter::all(), 1).await, "register");
    ok(store.set_status(p, Partition::WHOLE, Status::Failed, Some("connection reset")).await, "set_status failed");
    let failed = state(&ok(store.states().await, "states"), p, 0).clone();
    assert_eq!(failed.last_error.as_deref(), Some("connection reset"));
    ok(store.set_status(p, Partition::WHOLE, Status::Running, None).await, "set_status running");
    let recovered = state(&ok(store.states().await, "states"), p, 0).clone();
    assert_eq!(recovered.last_error, None, "a running partition has no last error: {recovered:?}");
    assert_eq!(recovered.error_count, failed.error_count, "the error count keeps the history");
    ok(store.set_status(p, Partition::WHOLE, Status::Stopped, None).await, "set_status stopped");
    ok(store.set_status(p, Partition::WHOLE, Status::Failed, Some("disk full")).await, "set_status failed again");
    ok(store.set_status(p, Partition::WHOLE, Status::Stopped, None).await, "set_status stopped without a text");
    let stopped = state(&ok(store.states().await, "states"), p, 0).clone();
    assert_eq!(stopped.last_error.as_deref(), Some("disk full"), "a status that is not running keeps the error");
    ok(store.set_status(p, Partition::WHOLE, Status::Running, Some("rebuild failed")).await, "running, with a text");
    let noted = state(&ok(store.states().await, "states"), p, 0).clone();
    assert_eq!(noted.last_error.as_deref(), Some("rebuild failed"), "a text given with the status is recorded");
}

/// Stores whose exact lag count has a bound to set (small, so a test can pass it).
pub trait ExactLagLimit {
    fn set_exact_lag_limit(&self, events: NonZeroU32);
}

impl ExactLagLimit for PgStore {
    fn set_exact_lag_limit(&self, events: NonZeroU32) {
        PgStore::set_exact_lag_limit(self, events);
    }
}

impl ExactLagLimit for EmbeddedStore {
    fn set_exact_lag_limit(&self, events: NonZeroU32) {
        EmbeddedStore::set_exact_lag_limit(self, events);
    }
}

fn limit(events: u32) -> NonZeroU32 {
    NonZeroU32::new(events).expect("a non-zero limit")
}

/// Lag is exact while the backlog is within the store's bound, and beyond it an estimate
/// from positions, close to the truth and labelled `lag_estimated`; the cost of measuring
/// it does not grow with the backlog.
pub async fn lag_is_exact_within_the_bound_and_labelled_estimated_beyond<S: ContractStore + ExactLagLimit>(store: &S) {
    let p = "reporting-bound";
    ok(store.register(p, &PROBE, &EventFilter::all(), 1).await, "register");
    store.set_exact_lag_limit(limit(10));
    let lag = |states: Vec<projector::ProjectionState>| {
        let s = state(&states, p, 0);
        (s.lag_events, s.lag_estimated, s.status)
    };
    for n in 0..6 {
        append(store, id(41, n), "user", ExpectedVersion::Exact(0), vec![NewEvent::new("E", json!({}))]).await;
    }
    let small = lag(ok(store.states().await, "states"));
    assert_eq!(small, (6, false, Status::Running), "6 events behind, within a bound of 10: exact");
    for n in 6..50 {
        append(store, id(41, n), "user", ExpectedVersion::Exact(0), vec![NewEvent::new("E", json!({}))]).await;
    }
    let (events, estimated, status) = lag(ok(store.states().await, "states"));
    assert!(estimated, "50 events behind, over a bound of 10: the lag is labelled an estimate");
    assert!((40..=60).contains(&events), "the estimate of a 50-event lag is close: {events}");
    assert_eq!(status, Status::Running, "an estimated lag is still lag");
    store.set_exact_lag_limit(limit(50));
    assert_eq!(lag(ok(store.states().await, "states")), (50, false, Status::Running), "at the bound: exact");
    store.set_exact_lag_limit(limit(49));
    assert!(lag(ok(store.states().await, "states")).1, "one past the bound: estimated");
}
