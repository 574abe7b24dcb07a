//! The `encryption:` section: which fields of which event types are sealed at append,
//! whose key seals them, where the keyring comes from, and how long opened keys stay
//! cached. What each projection may decrypt is its own `decrypt:` list
//! ([`super::ProjectionConfig::decrypt`]).
//!
//! ```yaml
//! encryption:
//!   keyring_env: PROJECTOR_KEYRING   # the variable holding the keyring text, or
//!   # keyring_file: /run/secrets/projector-keyring   # a file holding it (not both)
//!   fields:                          # event type (as stored) -> paths sealed at append
//!     UserRegistered: [email, name, address.street]
//!     EmailChanged: [email]
//!   subjects:                        # optional: event type -> payload field holding the
//!     OrderPlaced: customer_id       #   subject id (default: the aggregate id)
//!   cache: { max_age: 5m, max_uses: 10000, max_entries: 1000 }   # opened keys (defaults)
//! ```
//!
//! The keyring itself never appears in this file: the file names where it is.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::crypto::CacheLimits;

/// Where the keyring text is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyringSource {
    /// An environment variable holding the text (`keyring_env:`).
    Env(String),
    /// A file holding the text (`keyring_file:`), readable by the runner only.
    File(PathBuf),
}

impl std::fmt::Display for KeyringSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyringSource::Env(name) => write!(f, "the environment variable {name}"),
            KeyringSource::File(path) => write!(f, "the file {}", path.display()),
        }
    }
}

/// Whose key seals an event's fields.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SubjectSource {
    /// The event's aggregate id (the default).
    #[default]
    AggregateId,
    /// A top-level payload field holding the subject id (a string or a whole number);
    /// never one of the encrypted fields.
    Field(String),
}

/// The validated `encryption:` section; empty (nothing sealed, no keyring) when absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncryptionConfig {
    pub keyring: Option<KeyringSource>,
    /// Paths sealed at append, by event type as stored.
    pub fields: BTreeMap<String, Vec<String>>,
    /// Subject of each event type not keyed by its aggregate id.
    pub subjects: BTreeMap<String, SubjectSource>,
    /// How long, how often and how many opened data keys a reader keeps.
    pub cache: CacheLimits,
}

impl EncryptionConfig {
    /// The paths sealed for `event_type` (empty: none).
    pub fn fields_of(&self, event_type: &str) -> &[String] {
        self.fields.get(event_type).map_or(&[], Vec::as_slice)
    }

    /// Whose key seals `event_type`'s fields.
    pub fn subject_of(&self, event_type: &str) -> &SubjectSource {
        static DEFAULT: SubjectSource = SubjectSource::AggregateId;
        self.subjects.get(event_type).unwrap_or(&DEFAULT)
    }

    /// Whether any event type has fields sealed at append.
    pub fn seals_anything(&self) -> bool {
        self.fields.values().any(|paths| !paths.is_empty())
    }
}
