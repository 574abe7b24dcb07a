//! Mapping SQLite errors to [`StoreError`], with a message that says what failed.

use std::fmt::Display;

use projector::StoreError;
use rusqlite::ErrorCode;

/// Turns a SQLite error into the store error of its class. `context` names the
/// operation (and the file or row) that failed.
pub(crate) fn db_error(context: impl Display, e: rusqlite::Error) -> StoreError {
    match sqlite_code(&e) {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Unavailable(format!(
            "{context}: the database stayed locked by another writer past the busy timeout: {e}"
        )),
        Some(
            ErrorCode::CannotOpen
            | ErrorCode::SystemIoFailure
            | ErrorCode::DiskFull
            | ErrorCode::OutOfMemory
            | ErrorCode::FileLockingProtocolFailed
            | ErrorCode::PermissionDenied
            | ErrorCode::ReadOnly,
        ) => StoreError::Unavailable(format!("{context}: {e}")),
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            StoreError::Schema(format!("{context}: not a valid SQLite database, or a damaged one: {e}"))
        }
        Some(ErrorCode::ConstraintViolation) => StoreError::InvalidInput(format!("{context}: {e}")),
        _ => StoreError::Database(format!("{context}: {e}")),
    }
}

pub(crate) fn sqlite_code(e: &rusqlite::Error) -> Option<ErrorCode> {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => Some(f.code),
        _ => None,
    }
}

/// `result.context(|| "what was being done")`.
pub(crate) trait Context<T> {
    fn context<C: Display>(self, context: impl FnOnce() -> C) -> Result<T, StoreError>;
}

impl<T> Context<T> for rusqlite::Result<T> {
    fn context<C: Display>(self, context: impl FnOnce() -> C) -> Result<T, StoreError> {
        self.map_err(|e| db_error(context(), e))
    }
}
