//! Mapping driver errors to the store's error classes.

use projector::StoreError;
use tokio_postgres::error::SqlState;

/// Transient when retrying can help: the connection is gone, the server is shutting
/// down or overloaded, or the transaction lost a serialization race.
pub(crate) fn map(e: tokio_postgres::Error) -> StoreError {
    let Some(code) = e.code() else {
        return StoreError::Unavailable(describe(&e));
    };
    let class = &code.code()[..2];
    let transient = matches!(class, "08" | "40" | "53" | "57" | "58")
        || *code == SqlState::LOCK_NOT_AVAILABLE
        || *code == SqlState::QUERY_CANCELED;
    if transient {
        StoreError::Unavailable(describe(&e))
    } else if class == "42" {
        StoreError::Schema(format!("{} (has `projector init` run?)", describe(&e)))
    } else {
        StoreError::Database(describe(&e))
    }
}

/// The server's message with its SQLSTATE, or the client-side cause.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                s.push_str(": ");
                s.push_str(detail);
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                s.push_str(": ");
                s.push_str(&cause.to_string());
                source = cause.source();
            }
            s
        }
    }
}

pub(crate) fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}
