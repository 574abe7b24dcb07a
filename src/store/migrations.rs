//! Eager migrations of stored events: what rewriting events through their upcasters
//! needs from a store (see [`crate::migration`] for the procedure).
//!
//! A migration is a row that says which chains it applies, how far it got and what it
//! rewrote, and a backup of every original it replaced. Each chunk backs up its
//! originals and rewrites them in one transaction guarded by a compare-and-set on the
//! migration's progress, so a chunk is written once or not at all, and a crash between
//! chunks leaves a store that a re-run goes on from. A rewrite replaces only
//! `event_type`, `event_data` and `metadata`: position, transaction id, version and
//! timestamps stay, so commit-safe order and every checkpoint are unaffected.

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::error::Result;

/// Where a migration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MigrationStatus {
    /// Chunks are being rewritten, or the last run stopped before it verified the
    /// result: `projector migrate --apply` goes on with it.
    Applying,
    /// Every planned event was rewritten and the result verified.
    Applied,
    /// Originals are being restored: `projector migrate --rollback` goes on with it.
    RollingBack,
    /// Every original is back in place, verified byte for byte.
    RolledBack,
}

impl MigrationStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            MigrationStatus::Applying => "applying",
            MigrationStatus::Applied => "applied",
            MigrationStatus::RollingBack => "rolling_back",
            MigrationStatus::RolledBack => "rolled_back",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Applying, Self::Applied, Self::RollingBack, Self::RolledBack].into_iter().find(|s| s.as_str() == text)
    }

    /// A migration in this state has work left (and holds off any other).
    pub const fn is_open(self) -> bool {
        matches!(self, MigrationStatus::Applying | MigrationStatus::RollingBack)
    }
}

impl std::fmt::Display for MigrationStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A recorded migration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EventMigration {
    pub id: i64,
    /// The stored event types it rewrites (those with a step in its chains).
    pub event_types: Vec<String>,
    /// Its chains, one line per step (see [`crate::upcast::Upcasters::describe`]); a
    /// resumed run must bring the same.
    pub upcasters: Vec<String>,
    pub status: MigrationStatus,
    /// The last position the plan covered: later events are not part of it.
    pub upto_position: i64,
    /// Events at or before this position have been rewritten (the apply cursor).
    pub rewritten_upto: i64,
    /// Backed-up events at or before this position have been restored.
    pub restored_upto: i64,
    /// Events the plan found to rewrite.
    pub events_planned: i64,
    pub events_rewritten: i64,
    pub events_restored: i64,
    /// The checksum of the originals rewritten so far ([`crate::migration::Checksum`]).
    pub before_checksum: String,
    /// The checksum of what they were rewritten to.
    pub after_checksum: String,
    /// Who started it.
    pub actor: String,
    pub started_at: DateTime<Utc>,
    /// When the rewrite was verified.
    pub applied_at: Option<DateTime<Utc>>,
    pub rolled_back_by: Option<String>,
    pub rolled_back_at: Option<DateTime<Utc>>,
    /// Why the last run stopped short (a failing event, a verification that did not
    /// pass); cleared when it is verified.
    pub last_error: Option<String>,
}

/// A migration to record, as its plan found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEventMigration {
    pub event_types: Vec<String>,
    pub upcasters: Vec<String>,
    pub upto_position: i64,
    pub events_planned: i64,
    pub actor: String,
}

/// The columns a migration replaces, as stored.
#[derive(Debug, Clone)]
pub struct StoredShape {
    pub event_type: String,
    pub event_data: Box<RawValue>,
    pub metadata: Box<RawValue>,
}

impl PartialEq for StoredShape {
    /// Equal as stored text (byte for byte as the store returns it).
    fn eq(&self, other: &Self) -> bool {
        self.event_type == other.event_type
            && self.event_data.get() == other.event_data.get()
            && self.metadata.get() == other.metadata.get()
    }
}

/// One event to rewrite: the stored columns it was read with (the rewrite applies only
/// while they are still the same) and their new values.
#[derive(Debug, Clone, PartialEq)]
pub struct Rewrite {
    pub position: i64,
    pub event_id: Uuid,
    pub aggregate_id: Uuid,
    pub from: StoredShape,
    pub to: StoredShape,
}

/// One chunk of a migration: the events read after the cursor `from` up to `to`, and
/// the rewrites among them.
#[derive(Debug, Clone)]
pub struct RewriteChunk<'a> {
    pub migration: i64,
    /// Where the migration's cursor must stand (the compare-and-set).
    pub from: i64,
    /// Where it stands after this chunk.
    pub to: i64,
    pub rewrites: &'a [Rewrite],
    /// The migration's checksums with this chunk's events added.
    pub before_checksum: String,
    pub after_checksum: String,
}

/// A backed-up original beside the event as it is stored now.
#[derive(Debug, Clone, PartialEq)]
pub struct MigratedEvent {
    pub position: i64,
    pub event_id: Uuid,
    pub aggregate_id: Uuid,
    pub original: StoredShape,
    /// `None` when the event row is gone (deleted around the store).
    pub current: Option<StoredShape>,
    pub encrypted_fields: Vec<String>,
}

/// A change of a migration's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationChange {
    /// `applying` → `applied`: the rewrite was verified.
    Verified,
    /// Keeps the state and records why a run stopped short.
    Failed(String),
    /// Moves the apply cursor back to `to` (events committed late, behind it, are still
    /// to rewrite); only while `applying`.
    Rewind { to: i64 },
    /// `applying` or `applied` → `rolling_back`, by `actor`.
    RollingBack { actor: String },
    /// `rolling_back` → `rolled_back`: every original was restored and verified.
    RolledBack,
}

/// Stores that can rewrite events eagerly and put the originals back.
///
/// Every method that changes something is one transaction and checks the migration's
/// state first: when it is not what the caller expects (another process moved the
/// migration on, or it was rolled back meanwhile), it writes nothing and says so
/// (`false` / `None`).
pub trait EventMigrations {
    /// Every recorded migration, oldest first.
    async fn event_migrations(&self) -> Result<Vec<EventMigration>>;

    /// Records a new migration in state `applying`. Refused while another migration
    /// is `applying` or `rolling_back` (`InvalidInput`, naming it).
    async fn begin_event_migration(&self, new: &NewEventMigration) -> Result<EventMigration>;

    /// Backs up the originals of `chunk.rewrites` (copied inside the store, never from
    /// what the caller read), rewrites them, moves the cursor to `chunk.to`, adds the
    /// rewrites to the count and stores the checksums, in one transaction. `false`,
    /// writing nothing, when the
    /// migration is not `applying` with its cursor at `chunk.from`. An event that no
    /// longer holds the columns it was read with fails the chunk (nothing is written).
    async fn rewrite_events(&self, chunk: &RewriteChunk<'_>) -> Result<bool>;

    /// Up to `limit` backed-up events of `migration` with `position > after`, in
    /// position order, each with the event as stored now.
    async fn migrated_events(&self, migration: i64, after: i64, limit: usize) -> Result<Vec<MigratedEvent>>;

    /// Puts back the originals backed up at positions `from < p <= to` (exactly
    /// `expected` of them), moves the restore cursor to `to` and counts them, in one
    /// transaction. `false`, writing nothing, when the migration is not `rolling_back`
    /// with its restore cursor at `from`.
    async fn restore_events(&self, migration: i64, from: i64, to: i64, expected: u64) -> Result<bool>;

    /// Applies `change` when the migration is in a state it applies to; `false` when it
    /// is not (nothing written).
    async fn change_event_migration(&self, migration: i64, change: &MigrationChange) -> Result<bool>;
}
