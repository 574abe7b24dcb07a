//! Operator decisions that outlive their repair: the events taken out of a projection
//! (`discarded_events`), what a replay of the projection leaves out, and the letters a
//! rebuild sends.

use std::sync::LazyLock;

use postgres_types::Type;
use projector::{DeadLetter, DeadLetterStatus, DiscardedEvent, Exclusions, Parked, StoreError};
use tokio_postgres::Client;
use uuid::Uuid;

use crate::dead_letters::{letters_cte, LetterArrays, PARK_AGGREGATES};
use crate::error::map;

const DISCARD_EVENTS: &str = include_str!("../sql/discard_events.sql");
const DISCARDED_EVENTS: &str = include_str!("../sql/discarded_events.sql");
const PROJECTION_PARKED: &str = include_str!("../sql/projection_parked.sql");
const REBUILD_DEAD_LETTERS: &str = include_str!("../sql/rebuild_dead_letters.sql");

/// [`REBUILD_DEAD_LETTERS`] with the letter insert (arrays from `$2`) and the parkings in place.
static REBUILD_LETTERS: LazyLock<String> = LazyLock::new(|| {
    let (letters, parkings) = ("-- dead letters\n", "-- parkings\n");
    assert!(REBUILD_DEAD_LETTERS.contains(letters) && REBUILD_DEAD_LETTERS.contains(parkings));
    REBUILD_DEAD_LETTERS.replacen(letters, &letters_cte(2), 1).replacen(parkings, PARK_AGGREGATES, 1)
});

/// The events taken out of `projection` (of one aggregate, when given).
pub(crate) async fn discarded_events(
    client: &Client,
    projection: &str,
    aggregate: Option<Uuid>,
) -> Result<Vec<DiscardedEvent>, StoreError> {
    let rows = client
        .query_typed(DISCARDED_EVENTS, &[(&projection, Type::TEXT), (&aggregate, Type::UUID)])
        .await
        .map_err(map)?;
    rows.iter()
        .map(|r| {
            let decision: String = r.get(4);
            Ok(DiscardedEvent {
                event_id: r.get(0),
                aggregate_id: r.get(1),
                version: r.get(2),
                dead_letter_id: r.get(3),
                decision: DeadLetterStatus::parse(&decision).ok_or_else(|| {
                    StoreError::Database(format!("discarded event of {projection}: unknown decision {decision:?}"))
                })?,
            })
        })
        .collect()
}

/// Records events taken out of `projection` (inside the caller's transaction).
pub(crate) async fn discard_events(
    client: &Client,
    projection: &str,
    events: &[DiscardedEvent],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    let aggregates: Vec<Uuid> = events.iter().map(|e| e.aggregate_id).collect();
    let versions: Vec<i64> = events.iter().map(|e| e.version).collect();
    let letters: Vec<i64> = events.iter().map(|e| e.dead_letter_id).collect();
    let decisions: Vec<&str> = events.iter().map(|e| e.decision.as_str()).collect();
    client
        .query_typed(
            DISCARD_EVENTS,
            &[
                (&projection, Type::TEXT),
                (&ids, Type::UUID_ARRAY),
                (&aggregates, Type::UUID_ARRAY),
                (&versions, Type::INT8_ARRAY),
                (&letters, Type::INT8_ARRAY),
                (&decisions, Type::TEXT_ARRAY),
            ],
        )
        .await
        .map_err(map)?;
    Ok(())
}

/// What a replay of `projection` leaves out.
pub(crate) async fn exclusions(client: &Client, projection: &str) -> Result<Exclusions, StoreError> {
    let discarded = discarded_events(client, projection, None).await?;
    let parked: Vec<Parked> = client
        .query_typed(PROJECTION_PARKED, &[(&projection, Type::TEXT)])
        .await
        .map_err(map)?
        .iter()
        .map(|r| Parked { aggregate_id: r.get(0), from_version: r.get(1), dead_letter_id: r.get(2) })
        .collect();
    Ok(Exclusions::new(discarded, parked))
}

/// Stores the letters of events that failed in a rebuild and parks their aggregates.
pub(crate) async fn rebuild_letters(
    client: &Client,
    projection: &str,
    letters: &[DeadLetter],
) -> Result<(), StoreError> {
    if letters.is_empty() {
        return Ok(());
    }
    let arrays = LetterArrays::new(letters);
    let mut params: Vec<(&(dyn postgres_types::ToSql + Sync), Type)> = vec![(&projection, Type::TEXT)];
    arrays.push(&mut params);
    let stored = client.query_typed(&REBUILD_LETTERS, &params).await.map_err(map)?;
    if stored.is_empty() {
        return Err(StoreError::UnknownProjection(projection.to_owned()));
    }
    Ok(())
}
