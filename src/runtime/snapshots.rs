//! Captured rows as the snapshots a store keeps.

use crate::fold::Captured;
use crate::handler::ProjectionHandler;
use crate::store::snapshots::{encode_row, row_key, Snapshot};

/// The snapshots of `captured` rows of `handler`'s projection, folded through `chains`.
pub(crate) fn snapshots_of<H: ProjectionHandler>(handler: &H, chains: &str, captured: Vec<Captured>) -> Vec<Snapshot> {
    let schema = handler.schema();
    captured
        .into_iter()
        .map(|c| Snapshot {
            projection: handler.name().to_owned(),
            row_key: row_key(&c.key),
            version: c.version,
            aggregate_id: c.aggregate_id,
            at: c.at,
            handler_version: handler.version(),
            upcasters: chains.to_owned(),
            row: encode_row(schema, &c.row),
        })
        .collect()
}
