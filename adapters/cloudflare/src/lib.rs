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

pub mod alerts;
pub mod auth;
pub mod budget;
pub mod handlers;
pub mod invocation;
pub mod pages;
pub mod queue;
pub mod settings;

#[cfg(target_arch = "wasm32")]
mod entry;
