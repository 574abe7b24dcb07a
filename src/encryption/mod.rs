//! Field encryption at work: the writer seals the configured fields of an append
//! ([`Sealer`]), every reader opens the fields its projection is granted and sees the
//! rest redacted ([`Decryption`]), and both audit what they did.
//!
//! The formats and algorithms are [`crate::crypto`]'s; the keys and the audit trail are
//! the store's ([`crate::store::keys::SubjectKeys`]).

mod open;
mod rewrap;
mod seal;
mod subject;
mod tally;

pub use open::{Clock, Decryption, Opened};
pub use rewrap::{rewrap_all, RewrapFailure, RewrapOutcome, REWRAP_PAGE};
pub use seal::{SealError, Sealer};
pub use subject::{subject_for_append, METADATA_KEY};
pub use tally::AuditTally;

/// The event `projector keys shred` appends to the erased subject's aggregate (payload
/// `{"subject": …}`, nothing personal), so that read models drop the values they hold
/// of it as they apply it, live or in a rebuild.
pub const SUBJECT_ERASED: &str = "SubjectErased";
