//! Where projections run: the provider-agnostic deploy / scale / monitor contract.
#![allow(async_fn_in_trait)]

use crate::state::ProjectionState;

/// A provider could not carry out an operator's request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdapterError {
    #[error("unknown projection {0}")]
    UnknownProjection(String),
    #[error("unknown handler {handler} for projection {projection}")]
    UnknownHandler { projection: String, handler: String },
    #[error(transparent)]
    Store(#[from] crate::error::StoreError),
    #[error("{0}")]
    Provider(String),
}

/// A running (or deployed) projection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub projection: String,
    pub provider: &'static str,
    pub partitions: u32,
}

/// Runs projections somewhere: as local tasks, as a Worker, ...
pub trait ProjectionAdapter {
    /// Short provider name for logs and status (`local`, `cloudflare`).
    fn provider(&self) -> &'static str;

    /// Starts (or updates) a projection as configured.
    async fn deploy(&self, projection: &str) -> Result<Deployment, AdapterError>;

    /// Splits the projection's aggregates into `partitions` hash partitions.
    async fn scale(&self, projection: &str, partitions: u32) -> Result<Deployment, AdapterError>;

    /// Current state of every partition of the projection.
    async fn monitor(&self, projection: &str) -> Result<Vec<ProjectionState>, AdapterError>;
}
