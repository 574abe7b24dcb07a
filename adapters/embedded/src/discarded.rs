//! Operator decisions that outlive their repair: the events taken out of a projection
//! (`discarded_events`), and what a replay of the projection leaves out.

use chrono::Utc;
use projector::{DeadLetterStatus, DiscardedEvent, Exclusions, Partition, StoreError};
use rusqlite::{params, Connection};
use uuid::Uuid;

use crate::codec::{format_ts, format_uuid};
use crate::dead_letters;
use crate::error::Context;

const DISCARD_EVENT: &str = include_str!("../sql/discard_event.sql");
const DISCARDED_EVENTS: &str = include_str!("../sql/discarded_events.sql");

/// The events taken out of `projection` (of one aggregate, when given).
pub(crate) fn discarded_events(
    conn: &Connection,
    projection: &str,
    aggregate: Option<Uuid>,
) -> Result<Vec<DiscardedEvent>, StoreError> {
    let context = || format!("read the events taken out of {projection}");
    let rows: Vec<(String, String, i64, i64, String)> = conn
        .prepare_cached(DISCARDED_EVENTS)
        .and_then(|mut s| {
            s.query_map(params![projection, aggregate.as_ref().map(format_uuid)], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect()
        })
        .context(context)?;
    let bad = |what: String| StoreError::Database(format!("{}: {what}", context()));
    rows.into_iter()
        .map(|(event_id, aggregate_id, version, dead_letter_id, decision)| {
            let uuid = |s: &str| Uuid::parse_str(s).map_err(|e| bad(format!("{s:?} is not a uuid: {e}")));
            Ok(DiscardedEvent {
                event_id: uuid(&event_id)?,
                aggregate_id: uuid(&aggregate_id)?,
                version,
                dead_letter_id,
                decision: DeadLetterStatus::parse(&decision)
                    .ok_or_else(|| bad(format!("unknown decision {decision:?}")))?,
            })
        })
        .collect()
}

/// Records events taken out of `projection` (inside the caller's transaction).
pub(crate) fn discard_events(conn: &Connection, projection: &str, events: &[DiscardedEvent]) -> Result<(), StoreError> {
    let now = format_ts(Utc::now());
    for e in events {
        conn.prepare_cached(DISCARD_EVENT)
            .and_then(|mut s| {
                s.execute(params![
                    projection,
                    format_uuid(&e.event_id),
                    format_uuid(&e.aggregate_id),
                    e.version,
                    e.dead_letter_id,
                    e.decision.as_str(),
                    now
                ])
            })
            .context(|| format!("record that event {} is out of {projection}", e.event_id))?;
    }
    Ok(())
}

/// What a replay of `projection` leaves out.
pub(crate) fn exclusions(conn: &Connection, projection: &str) -> Result<Exclusions, StoreError> {
    let discarded = discarded_events(conn, projection, None)?;
    let parked = dead_letters::parked_set(conn, projection, Partition::WHOLE, 0)?;
    Ok(Exclusions::new(discarded, parked.by_aggregate.into_values()))
}
