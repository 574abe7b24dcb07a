//! The Cloudflare Workers provider: the Worker that runs the core's batch runtime over
//! the PostgreSQL store at the edge.
//!
//! - `scheduled` (cron): one [`invocation`] — lease the configured projections'
//!   partitions, run batches until caught up or a share of the invocation's budget is
//!   spent, release the leases.
//! - `fetch`: `GET /health`, `GET /status`, `GET /metrics` ([`pages`]) and
//!   `POST /rebuild/<projection>`, which needs the `REBUILD_TOKEN` bearer token ([`auth`]).
//!
//! The same handler crates, store and runtime run here as in the local runner; only the
//! transport differs (`worker::Socket` instead of TCP on tokio). Settings come from the
//! Worker's variables ([`settings`]). Everything but the entry points is plain Rust that
//! also builds natively, where its unit tests run.
//!
//! - `queue`: the wake queue and its dead-letter queue ([`queue`]; alerts in [`alerts`]).
//!
//! Natively, [`control`] is the operator's side: `CloudflareWorkerAdapter` renders each
//! projection's Worker configuration, deploys it with wrangler, re-partitions it in the
//! store and reads its `/health` and `/status`.

pub mod alerts;
pub mod auth;
pub mod budget;
pub mod handlers;
pub mod invocation;
pub mod pages;
pub mod queue;
pub mod settings;

#[cfg(not(target_arch = "wasm32"))]
pub mod control;
#[cfg(target_arch = "wasm32")]
mod entry;
