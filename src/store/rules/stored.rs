//! The rules for events as they are stored, whoever wrote them: the last version an
//! append may write, missing versions and how long to wait for them, payloads over the
//! limit, and the batch a crashed runner left in flight.

use uuid::Uuid;

use super::{invalid, serialized_len};
use crate::error::{HandlerError, Result, StoreError};
use crate::event::{Checkpoint, DomainEvent};
use crate::store::{FailureRecord, InFlight, Lease};

/// The last version an append of `count` events after `current` writes, or a refusal
/// when it would pass the largest version a store can hold (a version written around
/// the store can be that far ahead).
pub fn last_appended_version(aggregate: Uuid, current: i64, count: usize) -> Result<i64> {
    i64::try_from(count).ok().and_then(|n| current.checked_add(n)).ok_or_else(|| {
        invalid(format!(
            "append to aggregate {aggregate}: it is at version {current}, and {count} more event(s) would pass the \
             largest version {}; this aggregate cannot take more events",
            i64::MAX
        ))
    })
}

/// A stored event whose `event_data` is over `max_payload_bytes` (measured as compact
/// JSON, as at append) is refused before any handler sees it: such a row was written
/// around the store's append check.
pub fn check_stored_payload(event: &DomainEvent, max_payload_bytes: usize) -> Result<(), HandlerError> {
    let text = event.event_data.get();
    // A store may hand back spaced-out JSON (PostgreSQL's jsonb): only text over the
    // limit is measured again, compactly.
    if text.len() <= max_payload_bytes {
        return Ok(());
    }
    let size = serde_json::from_str::<serde_json::Value>(text).map_or(text.len(), |value| serialized_len(&value));
    if size <= max_payload_bytes {
        return Ok(());
    }
    Err(HandlerError::Oversized { event_id: event.event_id, size, limit: max_payload_bytes })
}

/// The versions in `after+1..=upto` that `found` (versions read from the store, in any
/// order) does not have, as the first and last missing one; `None` when none is missing.
pub fn missing_versions(after: i64, upto: i64, found: impl IntoIterator<Item = i64>) -> Option<(i64, i64)> {
    if upto <= after {
        return None;
    }
    let mut found: Vec<i64> = found.into_iter().filter(|v| *v > after && *v <= upto).collect();
    found.sort_unstable();
    found.dedup();
    let mut first = after + 1;
    for v in &found {
        if *v != first {
            break;
        }
        first += 1;
    }
    if first > upto {
        return None;
    }
    let mut last = upto;
    for v in found.iter().rev() {
        if *v != last {
            break;
        }
        last -= 1;
    }
    Some((first, last))
}

/// Whether an event waiting for missing versions has waited `timeout` by the attempt
/// history's clock: then it is dead-lettered instead of waiting on.
pub fn gap_waited_out(record: &FailureRecord, timeout: std::time::Duration) -> bool {
    let waited = (record.last_failed_at - record.first_failed_at).to_std().unwrap_or_default();
    waited >= timeout
}

/// The consecutive crashes of a partition as a new lease holder sees them: a batch still
/// recorded in flight at the claim is one more (its runner died applying it).
pub fn crashes_at_claim(lease: &Lease) -> u32 {
    lease.crashes.saturating_add(u32::from(lease.in_flight.is_some()))
}

/// The error for recording a batch in flight under a lease the caller no longer holds.
pub fn in_flight_refused(lease: &Lease) -> StoreError {
    StoreError::LeaseLost {
        projection: lease.projection.clone(),
        partition: lease.partition.index,
        owner: format!("another owner than {} (the lease expired)", lease.owner),
    }
}

/// What a runner does about the batch a runner died applying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPlan {
    /// Nothing suspect: batches as configured.
    Normal,
    /// Batches of at most `limit` events (half the batch that crashed) until the
    /// checkpoint reaches `until`, the end of that batch: each crash halves the suspect
    /// range until one event is left.
    Probe { limit: usize, until: Checkpoint },
    /// The batch that crashed `crash_limit` times or more held one event: it is
    /// dead-lettered unapplied.
    Isolated,
}

/// The plan for a partition whose last batch `in_flight` (if any) was never committed,
/// after `crashes` consecutive crashes.
pub fn crash_plan(in_flight: Option<InFlight>, crashes: u32, crash_limit: u32) -> CrashPlan {
    match in_flight {
        Some(batch) if crashes >= crash_limit.max(1) => {
            if batch.events <= 1 {
                CrashPlan::Isolated
            } else {
                CrashPlan::Probe { limit: (batch.events / 2) as usize, until: batch.to }
            }
        }
        _ => CrashPlan::Normal,
    }
}
