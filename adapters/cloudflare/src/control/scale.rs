//! Changing a Worker-run projection's partition count in the store, from the operator's
//! machine: every partition is first brought to one checkpoint by the core's runtime
//! (with the Worker's own handler), then the store splits the aggregates anew from it.
//! The partition count lives in the store; a Worker whose `PARTITIONS` disagrees refuses
//! to register, so the Worker is deployed again with the new count right after.

use projector::config::Config;
use projector::runtime::align_partitions_upcast;
use projector::{Checkpoint, EventStore, ProjectionHandler, ProjectionStore};

use super::ControlError;
use crate::handlers::{self, Visitor};

/// Aligns the partitions of `name` and re-splits it into `partitions`, as `owner`
/// (every lease must be free: an invocation in progress makes it fail, naming the
/// partition); returns the checkpoint every new partition starts at.
pub async fn repartition<S: EventStore + ProjectionStore>(
    store: &S,
    config: &Config,
    name: &str,
    partitions: u32,
    owner: &str,
) -> Result<Checkpoint, ControlError> {
    let p = config.projections.get(name).ok_or_else(|| ControlError::UnknownProjection(name.to_owned()))?;
    let upcasters = handlers::upcasters()
        .and_then(|all| all.enable_only(&config.upcasting.event_types))
        .map_err(|e| ControlError::Store(e.to_string()))?;
    let filter = p.events.to_filter();

    // The core needs the handler's concrete type: the visitor builds the future for it.
    let mut align = Align {
        name,
        handler: &p.handler,
        store,
        filter: &filter,
        upcasters: &upcasters,
        owner,
        batch: p.batch_size,
        out: None,
    };
    handlers::each(&mut align);
    let Some(future) = align.out else {
        return Err(ControlError::UnknownProjection(format!("{name} (no handler named {} in the Worker)", p.handler)));
    };
    let target = future.await.map_err(|e| ControlError::Store(format!("aligning the partitions of {name}: {e}")))?;
    store.repartition(name, partitions).await.map_err(|e| ControlError::Store(e.to_string()))?;
    Ok(target)
}

type Aligning<'a> = futures_util::future::LocalBoxFuture<'a, Result<Checkpoint, projector::RuntimeError>>;

struct Align<'a, S> {
    name: &'a str,
    handler: &'a str,
    store: &'a S,
    filter: &'a projector::EventFilter,
    upcasters: &'a projector::upcast::Upcasters,
    owner: &'a str,
    batch: usize,
    out: Option<Aligning<'a>>,
}

impl<'a, S: EventStore + ProjectionStore> Visitor for Align<'a, S> {
    fn visit<H: ProjectionHandler>(&mut self, handler: &'static H) {
        if handler.name() == self.handler {
            let (store, name, filter, upcasters, owner, batch) =
                (self.store, self.name, self.filter, self.upcasters, self.owner, self.batch);
            self.out = Some(Box::pin(align_partitions_upcast(handler, store, name, filter, upcasters, owner, batch)));
        }
    }
}
