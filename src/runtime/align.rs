//! Bringing every partition of a projection to one checkpoint, so the partition count
//! can change without applying an event twice or skipping one.

use std::time::Duration;

use crate::error::StoreError;
use crate::event::{Checkpoint, EventFilter};
use crate::handler::ProjectionHandler;
use crate::runtime::{BatchRunner, RuntimeError};
use crate::store::{EventStore, ProjectionStore};
use crate::upcast::Upcasters;

/// Brings every partition of a projection to one checkpoint (the furthest one), so that
/// the partition count can change without applying any event twice or skipping one.
/// Every partition's lease must be free (stop the runners first).
pub async fn align_partitions<H, S>(
    handler: &H,
    store: &S,
    projection: &str,
    filter: &EventFilter,
    owner: &str,
    batch_size: usize,
) -> Result<Checkpoint, RuntimeError>
where
    H: ProjectionHandler,
    S: EventStore + ProjectionStore,
{
    align_partitions_upcast(handler, store, projection, filter, &Upcasters::new(), owner, batch_size).await
}

/// [`align_partitions`], with every event upcast before the handler sees it, as the
/// partitions' runners do (see [`BatchRunner::upcasters`]).
pub async fn align_partitions_upcast<H, S>(
    handler: &H,
    store: &S,
    projection: &str,
    filter: &EventFilter,
    upcasters: &Upcasters,
    owner: &str,
    batch_size: usize,
) -> Result<Checkpoint, RuntimeError>
where
    H: ProjectionHandler,
    S: EventStore + ProjectionStore,
{
    let reading = crate::upcast::Reading::new(filter.clone(), upcasters.clone());
    align_partitions_read(handler, store, projection, &reading, owner, batch_size).await
}

/// [`align_partitions`] through `reading` (the configuration's filter, the enabled
/// upcasters and what the projection may decrypt), as the partitions' runners read.
pub async fn align_partitions_read<H, S>(
    handler: &H,
    store: &S,
    projection: &str,
    reading: &crate::upcast::Reading,
    owner: &str,
    batch_size: usize,
) -> Result<Checkpoint, RuntimeError>
where
    H: ProjectionHandler,
    S: EventStore + ProjectionStore,
{
    let states: Vec<_> = store.states().await?.into_iter().filter(|s| s.projection == projection).collect();
    let Some(target) = states.iter().map(|s| s.checkpoint).max() else {
        return Err(StoreError::UnknownProjection(projection.to_owned()).into());
    };
    for state in states.iter().filter(|s| s.checkpoint < target) {
        let partition = crate::Partition { index: state.partition, count: state.partitions };
        let lease = store.claim(projection, partition, owner, Duration::from_secs(60)).await?.ok_or_else(|| {
            StoreError::LeaseLost {
                projection: projection.to_owned(),
                partition: state.partition,
                owner: state.lease_owner.clone().unwrap_or_else(|| "another runner".into()),
            }
        })?;
        let mut runner = BatchRunner::new(handler, store, reading.filter(), lease)
            .upcasters(reading.upcasters().clone())
            .decryption(reading.decryption().clone())
            .batch_size(batch_size)
            .until(target);
        while runner.checkpoint() < target {
            runner.step().await?;
        }
        store.release(runner.lease()).await?;
    }
    Ok(target)
}
