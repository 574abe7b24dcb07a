//! The rules every store applies, written once: input checks, the idempotency decision,
//! the rescale rule, why a batch commit was refused, status from lag, how a rebuild
//! counts, the parked set from stored rows; and (in `stored`) the limits on stored
//! events and the batch a crashed runner left in flight; and (in `takeover`) when a claim
//! may take over a lease whose owner is gone; and (in `lag`) lag from a bounded window;
//! and (in `idempotency`) the answer to a repeated idempotency key; and (in `migrations`)
//! which state changes an eager migration may go through.
//!
//! Pure functions over plain data: a store reads what a rule needs, asks the rule, and
//! translates the answer to its own SQL. None of this does I/O.

use chrono::{DateTime, Utc};

use crate::dead_letter::{Parked, ParkedSet};
use crate::error::{Result, StoreError};
use crate::event::{Checkpoint, Partition};
use crate::read_model::TableSchema;
use crate::state::Status;
use crate::store::{AppendRequest, BatchCommit, ExpectedVersion};

mod idempotency;
mod lag;
mod migrations;
mod stored;
mod takeover;
pub use idempotency::*;
pub use lag::*;
pub use migrations::*;
pub use stored::*;
pub use takeover::*;

/// The store's own tables: no read model may take one of these names.
pub const RESERVED_TABLES: &[&str] = &[
    "events",
    "idempotency_keys",
    "projections",
    "projection_state",
    "schema_migrations",
    "event_failures",
    "dead_letters",
    "parked_aggregates",
    "dead_letter_actions",
    "subject_keys",
    "erased_subjects",
    "crypto_audit",
    "discarded_events",
    "event_migrations",
    "event_migration_backups",
    "snapshots",
];

/// Name prefixes that belong to a database engine or to the store.
pub const RESERVED_PREFIXES: &[&str] = &["sqlite_", "pg_", "projector_"];

/// PostgreSQL truncates identifiers past 63 bytes; longer names would silently collide.
pub const MAX_IDENTIFIER_LEN: usize = 63;

fn invalid(message: String) -> StoreError {
    StoreError::InvalidInput(message)
}

/// A projection name: 1 to 63 characters of `[a-z0-9_-]`, as `projections.yaml` allows.
pub fn check_projection_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(invalid("a projection needs a name".into()));
    }
    if name.len() > MAX_IDENTIFIER_LEN
        || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err(invalid(format!(
            "projection name {name:?}: use 1 to {MAX_IDENTIFIER_LEN} characters of a-z, 0-9, '-' and '_'"
        )));
    }
    Ok(())
}

/// A plain SQL identifier: `[a-z_][a-z0-9_]*`, at most 63 bytes, so it needs no quoting
/// and means the same in every dialect.
fn check_identifier(what: &str, name: &str) -> Result<()> {
    let mut bytes = name.bytes();
    let plain = matches!(bytes.next(), Some(b'a'..=b'z' | b'_'))
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !plain || name.len() > MAX_IDENTIFIER_LEN {
        return Err(invalid(format!(
            "{what} {name:?}: use a lower-case identifier of at most {MAX_IDENTIFIER_LEN} characters \
             ([a-z_][a-z0-9_]*)"
        )));
    }
    Ok(())
}

/// A read-model table a handler declares: a plain, unreserved name, a key, and columns
/// with plain, distinct names.
pub fn check_table(table: &TableSchema) -> Result<()> {
    let bad = |reason: String| invalid(format!("read-model table {:?}: {reason}", table.name));
    check_identifier("read-model table", table.name)?;
    if RESERVED_TABLES.contains(&table.name) || RESERVED_PREFIXES.iter().any(|p| table.name.starts_with(p)) {
        return Err(bad("the name is reserved for the store's own tables".into()));
    }
    if table.key.is_empty() {
        return Err(bad("the table has no key columns".into()));
    }
    let mut seen = std::collections::BTreeSet::new();
    for column in table.all_columns() {
        check_identifier(&format!("column of read-model table {}", table.name), column.name)?;
        if !seen.insert(column.name) {
            return Err(bad(format!("column {:?} appears twice", column.name)));
        }
    }
    Ok(())
}

/// What `register` takes: a valid name, table and partition count.
pub fn check_registration(projection: &str, table: &TableSchema, partitions: u32) -> Result<()> {
    check_projection_name(projection)?;
    check_table(table)?;
    check_partitions(projection, partitions)
}

/// A partition count the tables can keep.
pub fn check_partitions(projection: &str, partitions: u32) -> Result<()> {
    if partitions == 0 || partitions > i32::MAX as u32 {
        return Err(invalid(format!("projection {projection}: partitions must be between 1 and {}", i32::MAX)));
    }
    Ok(())
}

/// A lease needs an owner: an empty one could never be told apart from "nobody".
pub fn check_owner(projection: &str, partition: Partition, owner: &str) -> Result<()> {
    if owner.is_empty() {
        return Err(invalid(format!("claim {projection} partition {partition}: the lease owner is empty")));
    }
    Ok(())
}

/// The default largest `event_data` one event may carry, as serialized JSON.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1 << 20;

/// An append must name its aggregate and event types, carry events whose payloads are
/// JSON objects no larger than `max_payload_bytes`, and a non-negative expected version.
pub fn check_append(request: &AppendRequest, max_payload_bytes: usize) -> Result<()> {
    let aggregate = request.aggregate_id;
    if aggregate.is_nil() {
        return Err(invalid("append: the aggregate id is the nil UUID; give each aggregate its own id".into()));
    }
    if request.aggregate_type.trim().is_empty() {
        return Err(invalid(format!("append to aggregate {aggregate}: the aggregate type is empty")));
    }
    if request.events.is_empty() {
        return Err(invalid(format!("append to aggregate {aggregate}: no events given")));
    }
    if let ExpectedVersion::Exact(v) = request.expected_version {
        if v < 0 {
            return Err(invalid(format!(
                "append to aggregate {aggregate}: expected version {v} is invalid (0 means a new aggregate)"
            )));
        }
    }
    for (i, event) in request.events.iter().enumerate() {
        let which = || format!("append to aggregate {aggregate}, event {} ({:?})", i + 1, event.event_type);
        if event.event_type.trim().is_empty() {
            return Err(invalid(format!("{}: the event type is empty", which())));
        }
        if event.event_id.is_some_and(|id| id.is_nil()) {
            return Err(invalid(format!("{}: the event id is the nil UUID", which())));
        }
        if !event.event_data.is_object() {
            return Err(invalid(format!(
                "{}: event_data must be a JSON object, not {}",
                which(),
                json_kind(&event.event_data)
            )));
        }
        let size = serialized_len(&event.event_data);
        if size > max_payload_bytes {
            return Err(invalid(format!(
                "{}: event_data is {size} bytes, over the limit of {max_payload_bytes} bytes",
                which()
            )));
        }
        // A payload that disagrees with its listing would be read as plaintext or fail
        // every reader: refused here, at the one door every writer goes through.
        crate::crypto::check_encrypted_fields(&event.event_data, &event.encrypted_fields)
            .map_err(|e| invalid(format!("{}: {e}", which())))?;
    }
    Ok(())
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// The length of `value` as compact JSON, counted without building the text.
fn serialized_len(value: &serde_json::Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a `Value` to a sink that never fails cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// What a batch commit can be checked for before it is sent: the checkpoint moves
/// forward and the partition exists within its count.
pub fn check_commit(commit: &BatchCommit<'_>) -> Result<()> {
    let lease = commit.lease;
    if commit.to < commit.from {
        return Err(invalid(format!(
            "commit {} partition {}: the checkpoint would move back from {} to {}",
            lease.projection, lease.partition, commit.from, commit.to
        )));
    }
    if lease.partition.index >= lease.partition.count {
        return Err(invalid(format!("commit {}: there is no partition {}", lease.projection, lease.partition)));
    }
    Ok(())
}

/// The error for a partition row that does not exist: the projection is unknown
/// (`registered_partitions` is `None`) or has fewer partitions.
pub fn missing_partition(projection: &str, registered_partitions: Option<u32>, partition: Partition) -> StoreError {
    match registered_partitions {
        None => StoreError::UnknownProjection(projection.to_owned()),
        Some(n) => invalid(format!("projection {projection} has {n} partitions; there is no partition {partition}")),
    }
}

/// A claim names the partition count it was split for; a runner configured for another
/// count would read a different split and skip or repeat events.
pub fn check_partition_count(projection: &str, stored: u32, partition: Partition) -> Result<()> {
    if stored != partition.count {
        return Err(invalid(format!(
            "projection {projection} is split into {stored} partitions in the store, not {}; \
             `projector scale {projection} {}` changes the count",
            partition.count, partition.count
        )));
    }
    Ok(())
}

/// What a store found after a batch commit's compare-and-set matched no row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedCommit {
    /// The table the projection is registered with (`None`: no such projection).
    pub registered_table: Option<String>,
    /// The partition count it is registered with.
    pub registered_partitions: Option<u32>,
    /// The partition's row, if it exists: its lease owner.
    pub partition_owner: Option<Option<String>>,
}

/// Why a batch commit's compare-and-set matched nothing, from what the store found.
pub fn diagnose_refused_commit(commit: &BatchCommit<'_>, found: RefusedCommit) -> StoreError {
    let lease = commit.lease;
    let projection = lease.projection.clone();
    let Some(table) = found.registered_table else {
        return StoreError::UnknownProjection(projection);
    };
    if table != commit.table.name {
        return invalid(format!("commit {projection}: the projection writes table {table}, not {}", commit.table.name));
    }
    let Some(owner) = found.partition_owner else {
        return missing_partition(&projection, found.registered_partitions, lease.partition);
    };
    if owner.as_deref() != Some(lease.owner.as_str()) {
        return StoreError::LeaseLost {
            projection,
            partition: lease.partition.index,
            owner: owner.unwrap_or_else(|| "nobody".to_owned()),
        };
    }
    StoreError::CheckpointMoved { projection, partition: lease.partition.index }
}

/// How registering a projection treats its existing partition rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rescale {
    /// The rows match the partition count: keep them (and their checkpoints).
    Keep,
    /// Replace every row with `partitions` rows, all starting at `start`.
    Reset { start: Checkpoint },
}

/// One stored partition row, as the rescale rule reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionRow {
    pub index: u32,
    pub count: u32,
    pub checkpoint: Checkpoint,
}

/// The partition count lives in the store: registering keeps it, and a registration
/// that asks for another count (a runner configured for it) is refused, naming both and
/// the command that changes it. Only [`rescale`] (by `projector scale`) changes it.
pub fn check_registered_partitions(projection: &str, existing: &[PartitionRow], partitions: u32) -> Result<()> {
    let Some(stored) = existing.first().map(|row| row.count) else {
        return Ok(());
    };
    if existing.iter().all(|row| row.count == partitions) {
        return Ok(());
    }
    Err(invalid(partition_count_drift(projection, stored, partitions).unwrap_or_else(|| {
        format!("projection {projection}: its partitions disagree on their count; `projector scale` resets it")
    })))
}

/// What to tell an operator whose configured partition count is not the store's, or
/// `None` when they agree. Only `projector scale` changes a stored count.
pub fn partition_count_drift(projection: &str, stored: u32, configured: u32) -> Option<String> {
    (stored != configured).then(|| {
        format!(
            "projection {projection}: the configuration says `partitions: {configured}` but the store has \
             {stored}; to change the count stop its runners and run `projector scale {projection} {configured}`, \
             or set `partitions: {stored}`"
        )
    })
}

/// How a read-model table a registration finds compares with the handler's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableFit {
    /// The table is there with every column the schema needs (nullable columns it lacks
    /// are added).
    Fits,
    /// The table does not exist.
    Missing,
    /// The table lacks columns it cannot be given: key or non-nullable ones.
    Lacks(Vec<String>),
}

/// How the stored table (its column names; none when it does not exist) fits `table`.
pub fn table_fit(table: &TableSchema, existing_columns: &[String]) -> TableFit {
    if existing_columns.is_empty() {
        return TableFit::Missing;
    }
    let lacking: Vec<String> = table
        .all_columns()
        .filter(|c| !c.nullable || table.key.contains(c))
        .filter(|c| !existing_columns.iter().any(|name| name.eq_ignore_ascii_case(c.name)))
        .map(|c| c.name.to_owned())
        .collect();
    if lacking.is_empty() {
        TableFit::Fits
    } else {
        TableFit::Lacks(lacking)
    }
}

/// A projection whose rows are gone (its table missing, or not matching the schema)
/// while a checkpoint is past the start needs a rebuild: an empty table created under
/// that checkpoint would look caught up while it holds nothing. Returns why, for the
/// partitions' `last_error`; `None` when the table can be (created and) used.
pub fn needs_rebuild(table: &TableSchema, fit: &TableFit, existing: &[PartitionRow]) -> Option<String> {
    let past_start = existing.iter().any(|row| row.checkpoint > Checkpoint::START);
    let why = match fit {
        TableFit::Fits => return None,
        _ if !past_start => return None,
        TableFit::Missing => format!("read-model table {} is missing", table.name),
        TableFit::Lacks(columns) => {
            format!("read-model table {} lacks the column(s) {}", table.name, columns.join(", "))
        }
    };
    Some(format!("{why} while the checkpoint is past the start; run `projector rebuild`"))
}

/// A projection that waits for a rebuild is not re-split: the new partition rows would
/// start as running over a table that is gone.
pub fn check_repartition(projection: &str, waits_for_rebuild: bool) -> Result<()> {
    if waits_for_rebuild {
        return Err(invalid(format!(
            "projection {projection} waits for a rebuild (its read-model table is gone or does not match); run \
             `projector rebuild {projection}` before changing its partitions"
        )));
    }
    Ok(())
}

/// Changing the partition count re-splits the aggregates, which is only safe when every
/// partition stands at the same checkpoint (`projector scale` aligns them first).
pub fn rescale(projection: &str, existing: &[PartitionRow], partitions: u32) -> Result<Rescale> {
    let Some(first) = existing.first() else {
        return Ok(Rescale::Reset { start: Checkpoint::START });
    };
    let complete = existing.len() == partitions as usize
        && existing.iter().all(|row| row.count == partitions && row.index < partitions);
    if complete {
        return Ok(Rescale::Keep);
    }
    if existing.iter().any(|row| row.checkpoint != first.checkpoint) {
        let at: Vec<String> = existing.iter().map(|row| format!("{}: {}", row.index, row.checkpoint)).collect();
        return Err(invalid(format!(
            "projection {projection}: rescaling from {} to {partitions} partitions needs every partition at the \
             same checkpoint, but they are at {}; run `projector scale` (which aligns them) or rebuild the \
             projection",
            first.count,
            at.join(", ")
        )));
    }
    Ok(Rescale::Reset { start: first.checkpoint })
}

/// How long the oldest unapplied event has waited, in seconds: from when the store
/// recorded it (its own clock) to `now`. Never negative: a clock step backwards, or a
/// write recorded a moment after `now` was read, is no lag.
pub fn lag_seconds(now: DateTime<Utc>, oldest_recorded_at: Option<DateTime<Utc>>) -> f64 {
    oldest_recorded_at.map_or(0.0, |t| ((now - t).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6).max(0.0))
}

impl Status {
    /// The status to report for a stored status and the lag just measured: running and
    /// caught up differ only by lag, which changes with every append.
    pub fn with_lag(self, lag_events: i64) -> Status {
        match self {
            Status::Running | Status::CaughtUp if lag_events == 0 => Status::CaughtUp,
            Status::Running | Status::CaughtUp => Status::Running,
            other => other,
        }
    }

    /// Whether recording this status without an error text clears the stored one: a
    /// partition that runs again has recovered, and `last_error` speaks of a current
    /// problem only. A text given with the status is always recorded.
    pub fn clears_last_error(self) -> bool {
        matches!(self, Status::Running | Status::CaughtUp)
    }

    /// Whether recording this status (with this error text) counts one more error.
    pub fn counts_as_error(self, error: Option<&str>) -> bool {
        self == Status::Failed || error.is_some()
    }
}

/// The part of a rebuild's applied count a partition's row adds: a rebuild counts its
/// events once for the projection, on partition 0, so the sum over partitions is right.
pub fn rebuild_applied_share(partition: u32, events_applied: u64) -> i64 {
    if partition == 0 {
        i64::try_from(events_applied).unwrap_or(i64::MAX)
    } else {
        0
    }
}

impl ParkedSet {
    /// The parked set of a partition from its stored rows (aggregate, from which
    /// version, dead letter) read together with `epoch`.
    pub fn from_rows(epoch: i64, rows: impl IntoIterator<Item = Parked>) -> ParkedSet {
        ParkedSet { by_aggregate: rows.into_iter().map(|p| (p.aggregate_id, p)).collect(), epoch }
    }
}

#[cfg(test)]
mod tests;
