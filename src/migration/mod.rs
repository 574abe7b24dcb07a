//! Eager migration: rewriting stored events through the upcaster chains, with a dry
//! run, a backup of every original, verification and a rollback.
//!
//! Lazy upcasting ([`crate::upcast`]) brings an old payload up to date each time it is
//! read; a migration does it once, in the store, with the same chains. Every path that
//! folds events reads a rewritten event exactly as it read the original through the
//! chain: the rewrite keeps position, transaction id, version and timestamps, and
//! replaces type, payload and metadata with what the chain gives. So a projection whose
//! runner upcasts with the same chains sees the same events before, during and after a
//! migration, whether its checkpoint is before or past a rewritten event; nothing is
//! re-applied, nothing needs a rebuild.
//!
//! The procedure:
//! 1. [`Migration::plan`] reads every event of the migrated types and reports, per type
//!    and version, what would change, with a sample and every event the chains cannot
//!    rewrite. It writes nothing.
//! 2. [`Migration::apply`] plans, refuses to start when the plan has failures, records
//!    the migration, then rewrites in chunks: each chunk backs up its originals and
//!    rewrites them in one transaction that also moves the migration's cursor (a
//!    compare-and-set), so a chunk is written once or not at all. A run that stops (a
//!    crash, a kill) leaves every chunk either done or untouched; the next `apply` goes
//!    on from the cursor. At the end it verifies counts, checksums, and that every
//!    rewritten event is what its original upcasts to, at the chain's last version.
//! 3. [`rollback`] puts every original back, chunk by chunk, and verifies each byte.

mod apply;
mod checksum;
mod plan;
mod rewrite;
mod rollback;

pub use apply::ApplyOutcome;
pub use checksum::{canonical_text, event_hash, same_content, Checksum};
pub use plan::{MigrationPlan, PlannedChange, Sample, SampleShape};
pub use rewrite::Failure;
pub use rollback::{rollback, RollbackOutcome};

use crate::error::StoreError;
use crate::event::EventFilter;
use crate::store::migrations::MigrationStatus;
use crate::upcast::Upcasters;

/// A migration could not start, go on or finish.
///
/// ### Handling
/// - `PlanFailed`: fix the upcasters (or the events) the failures name, then plan again.
/// - `Open`, `LaterMigration`: finish or roll back the migration named first.
/// - `Moved`: another `projector migrate` works on the same migration; let it finish.
/// - `EventFailed`, `Verification`: the migration stays open with the reason recorded;
///   fix the cause and run `apply` again, or roll it back.
/// - `Store`: as [`StoreError`]; a transient one can be retried by running again.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrationError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the plan found {} event(s) the upcasters cannot rewrite; nothing was written. First: {}",
        .0.len(),
        .0.first().map(ToString::to_string).unwrap_or_default()
    )]
    PlanFailed(Vec<Failure>),
    #[error("migration {id} is {status} {reason}")]
    Open { id: i64, status: MigrationStatus, reason: String },
    #[error("no migration {0}; `projector migrate --list` shows them")]
    Unknown(i64),
    #[error(
        "migration {id} cannot be rolled back while the later migration {later} is {status}: it rewrote events \
         after this one; roll it back first (`projector migrate --rollback {later}`)"
    )]
    LaterMigration { id: i64, later: i64, status: MigrationStatus },
    #[error("migration {id} was moved on by another process meanwhile; run one `projector migrate` at a time")]
    Moved { id: i64 },
    #[error(
        "migration {id} stopped at {failure}; it stays open: fix the upcaster and run `--apply` again, or roll it back"
    )]
    EventFailed { id: i64, failure: Box<Failure> },
    #[error("migration {id} does not verify: {reason}")]
    Verification { id: i64, reason: String },
}

/// What a long migration reports as it goes (a progress bar; a pause between chunks).
pub trait MigrationProgress {
    /// The plan has read `events` events so far.
    fn scanned(&mut self, _events: u64) {}

    /// A chunk committed: `done` events of about `total` rewritten (or restored).
    fn chunk(&mut self, _done: u64, _total: u64) {}

    /// Verification has checked `events` events so far.
    fn verifying(&mut self, _events: u64) {}
}

impl MigrationProgress for () {}

/// An eager migration through a set of upcaster chains (the ones `projections.yaml`
/// enables, or some of them).
#[derive(Debug, Clone)]
pub struct Migration {
    upcasters: Upcasters,
    chunk_size: usize,
    read_size: usize,
    actor: String,
}

impl Migration {
    pub fn new(upcasters: Upcasters) -> Self {
        Self { upcasters, chunk_size: 1_000, read_size: 5_000, actor: "projector".to_owned() }
    }

    /// Events read per chunk (each chunk is one transaction).
    pub fn chunk_size(mut self, events: usize) -> Self {
        self.chunk_size = events.max(1);
        self
    }

    /// Events read per page by the plan and the verification.
    pub fn read_size(mut self, events: usize) -> Self {
        self.read_size = events.max(1);
        self
    }

    /// Who runs it (recorded with the migration).
    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = actor.into();
        self
    }

    pub fn upcasters(&self) -> &Upcasters {
        &self.upcasters
    }

    /// The stored types the migration reads: those with a step.
    pub fn event_types(&self) -> Vec<String> {
        self.upcasters.event_types().into_iter().map(str::to_owned).collect()
    }

    fn filter(&self) -> EventFilter {
        EventFilter { event_types: self.event_types(), ..EventFilter::all() }
    }
}
