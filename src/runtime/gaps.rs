//! Versions missing before events of a batch: the direct read that fills a gap, and
//! what is left missing after it (an event written around the store, or versions whose
//! transaction has not committed yet).

use uuid::Uuid;

use crate::error::{HandlerError, StoreError};
use crate::event::DomainEvent;
use crate::fold::{ApplyError, Fold};
use crate::handler::ProjectionHandler;
use crate::store::{rules, EventStore, ReadBound};
use crate::upcast::Reading;

/// What reading a batch's gaps found.
#[derive(Debug, Default)]
pub(super) struct GapReads {
    /// The missing events that were found (upcast, and matching the filter), to apply
    /// in order.
    pub events: Vec<DomainEvent>,
    /// Those of `events` an upcaster failed on (see [`Reading::prepare`]).
    pub failed: Vec<(Uuid, HandlerError)>,
    /// Gaps the direct read could not fill, in batch order.
    pub unfilled: Vec<Unfilled>,
    /// Audit rows of the decrypts of `events`.
    pub audit: Vec<crate::store::keys::AuditRecord>,
}

/// An event of the batch with versions of its aggregate still missing before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Unfilled {
    pub aggregate_id: Uuid,
    /// The event's own version.
    pub version: i64,
    pub first_missing: i64,
    pub last_missing: i64,
}

impl Unfilled {
    /// The failure to record (and, once waited out, to dead-letter) for `event`.
    pub fn failure(&self, projection: &'static str, event: &DomainEvent) -> Box<ApplyError> {
        Box::new(ApplyError {
            projection,
            event_id: event.event_id,
            position: event.position,
            aggregate_id: event.aggregate_id,
            version: event.version,
            error: HandlerError::VersionsMissing {
                event_id: event.event_id,
                aggregate_id: event.aggregate_id,
                version: event.version,
                first: self.first_missing,
                last: self.last_missing,
            },
        })
    }
}

/// Reads the versions missing before events of the batch (see [`Fold::gaps_except`]).
/// Versions the projection's filter leaves out count as present: only versions absent
/// from the store are missing.
pub(super) async fn read_gaps<H: ProjectionHandler, S: EventStore>(
    store: &S,
    fold: &Fold<'_, H>,
    events: &[DomainEvent],
    reading: &Reading,
    held: impl Fn(&DomainEvent) -> bool,
) -> Result<GapReads, StoreError> {
    let mut out = GapReads::default();
    for gap in fold.gaps_except(events, held) {
        let found =
            store.read_aggregate(gap.aggregate_id, ReadBound::Versions { after: gap.after, upto: gap.upto }).await?;
        if let Some((first, last)) = rules::missing_versions(gap.after, gap.upto, found.iter().map(|e| e.version)) {
            out.unfilled.push(Unfilled {
                aggregate_id: gap.aggregate_id,
                version: gap.upto.saturating_add(1),
                first_missing: first,
                last_missing: last,
            });
        }
        let prepared = reading.prepare(&mut &*store, found).await?;
        out.events.extend(prepared.events);
        out.failed.extend(prepared.failed);
        out.audit.extend(prepared.audit);
    }
    Ok(out)
}
