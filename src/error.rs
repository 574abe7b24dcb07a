//! Error types shared by every store and the runtime, each with its failure class.

use uuid::Uuid;

/// Whether retrying can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Connection lost, serialization failure, timeout: retry with backoff.
    Transient,
    /// Bad payload, handler bug, integrity failure: retrying gives the same answer.
    Permanent,
}

/// A handler could not apply an event.
///
/// ### Handling
/// `Payload`, `Rejected`, `Panicked`, `VersionsMissing`, `Oversized`, `Crashed`, `Upcast` and
/// `Encrypted` are permanent: the event goes to the dead-letter queue and parks its aggregate.
/// `Transient` asks the runtime to retry the batch.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    #[error("event {event_id} ({event_type}): payload does not fit the handler: {reason}")]
    Payload { event_id: Uuid, event_type: String, reason: String },
    #[error("event {event_id}: rejected by the handler: {reason}")]
    Rejected { event_id: Uuid, reason: String },
    #[error("transient handler failure: {0}")]
    Transient(String),
    /// The handler panicked on the event: a bug that the same event will hit again.
    #[error("event {event_id}: the handler panicked: {message}")]
    Panicked { event_id: Uuid, message: String },
    /// Versions of the event's aggregate before it are not in the store: applying it
    /// would fold over them, and they would be dropped as "already applied" if they came.
    #[error("event {event_id} (aggregate {aggregate_id} v{version}): {}", missing_versions(*.first, *.last))]
    VersionsMissing { event_id: Uuid, aggregate_id: Uuid, version: i64, first: i64, last: i64 },
    /// The stored payload is larger than the store accepts at append (a row written
    /// around the store): it is not folded.
    #[error("event {event_id}: event_data is {size} bytes, over the limit of {limit} bytes")]
    Oversized { event_id: Uuid, size: usize, limit: usize },
    /// The runner process died while applying the event, `crashes` times in a row (an
    /// abort, running out of memory, a stack overflow, a wasm trap): it is not applied.
    #[error("event {event_id}: crashed the runner {crashes} times in a row while being applied; not applied")]
    Crashed { event_id: Uuid, crashes: u32 },
    /// An upcaster failed on the event (or could not read it): the handler never sees it.
    /// The error names the event, its type and the version the failing step starts at.
    #[error(transparent)]
    Upcast(#[from] crate::upcast::UpcastError),
    /// The event's encrypted fields could not be read: the payload and its
    /// `encrypted_fields` disagree, an envelope does not open (tampered, wrong key), or the
    /// key of a subject that was not shredded is missing or retired. The handler never
    /// sees the event; nothing of it is taken for plaintext.
    #[error("event {event_id}: encrypted fields: {error}")]
    Encrypted { event_id: Uuid, error: crate::crypto::CryptoError },
}

/// "versions 2–4 missing", or "version 3 missing" for one.
fn missing_versions(first: i64, last: i64) -> String {
    if first == last {
        format!("version {first} missing")
    } else {
        format!("versions {first}\u{2013}{last} missing")
    }
}

impl HandlerError {
    pub fn class(&self) -> ErrorClass {
        match self {
            HandlerError::Transient(_) => ErrorClass::Transient,
            HandlerError::Encrypted { error, .. } => error.class(),
            _ => ErrorClass::Permanent,
        }
    }

    /// The same error with every free text (reasons, messages) passed through `f`: the
    /// reader removes decrypted values a handler quoted (see [`crate::crypto::scrub_text`]).
    pub fn map_texts(self, f: impl Fn(&str) -> String) -> HandlerError {
        use crate::upcast::UpcastError;
        match self {
            HandlerError::Payload { event_id, event_type, reason } => {
                HandlerError::Payload { event_id, event_type, reason: f(&reason) }
            }
            HandlerError::Rejected { event_id, reason } => HandlerError::Rejected { event_id, reason: f(&reason) },
            HandlerError::Transient(reason) => HandlerError::Transient(f(&reason)),
            HandlerError::Panicked { event_id, message } => HandlerError::Panicked { event_id, message: f(&message) },
            HandlerError::Upcast(UpcastError::Failed { event_id, event_type, from_version, reason }) => {
                HandlerError::Upcast(UpcastError::Failed { event_id, event_type, from_version, reason: f(&reason) })
            }
            HandlerError::Upcast(UpcastError::Unreadable { event_id, event_type, reason }) => {
                HandlerError::Upcast(UpcastError::Unreadable { event_id, event_type, reason: f(&reason) })
            }
            other => other,
        }
    }
}

/// A store operation failed.
///
/// ### Handling
/// - `Conflict`: reload the aggregate, decide again, append with the new version.
/// - `IdempotencyConflict`: the key names another request; use a fresh key, or send
///   the original request again to read its outcome.
/// - `Unavailable`: transient (connection lost, serialization failure, timeout); retry
///   with backoff (`is_retryable()`).
/// - `CheckpointMoved` / `LeaseLost`: another runner owns the partition now; stop
///   working on it and re-acquire.
/// - `Database` / `Corrupt` / `Schema` / `InvalidInput`: permanent; fix data, schema or
///   caller.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error(
        "version conflict on aggregate {aggregate_id}: expected version {expected}, \
         but the aggregate is at version {actual}"
    )]
    Conflict { aggregate_id: Uuid, expected: i64, actual: i64 },
    /// An idempotency key was used before for a different append (another aggregate,
    /// or other events): nothing was written.
    #[error("idempotency key {key:?} was already used for a different append: {reason}")]
    IdempotencyConflict { key: String, reason: String },
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database refused the statement (a constraint, a missing table, a bug).
    #[error("database error: {0}")]
    Database(String),
    #[error("event row {position} is unreadable: {reason}")]
    Corrupt { position: i64, reason: String },
    #[error("read-model row in {table}: {reason}")]
    Row { table: String, reason: String },
    #[error("schema: {0}")]
    Schema(String),
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("checkpoint of {projection} partition {partition} moved: another runner committed first")]
    CheckpointMoved { projection: String, partition: u32 },
    #[error("lease on {projection} partition {partition} is held by {owner}")]
    LeaseLost { projection: String, partition: u32, owner: String },
    #[error("unknown projection {0}")]
    UnknownProjection(String),
    #[error("no dead letter {id} for projection {projection}; `projector dlq list` shows them")]
    UnknownDeadLetter { projection: String, id: i64 },
}

impl StoreError {
    pub fn class(&self) -> ErrorClass {
        match self {
            StoreError::Unavailable(_) => ErrorClass::Transient,
            _ => ErrorClass::Permanent,
        }
    }

    pub fn is_retryable(&self) -> bool {
        self.class() == ErrorClass::Transient
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
