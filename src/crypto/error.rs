//! The one error type of field encryption, each variant with how a caller handles it.

use crate::error::ErrorClass;

/// Field encryption, key handling or an encrypted payload failed.
///
/// No message ever holds key bytes, plaintext or the rejected input itself: errors end
/// up in logs and dead letters, which are not meant to hold PII or secrets.
///
/// ### Handling
/// - Input that does not parse (`Empty`, `NotEncoded`, `Base64`, `Truncated`,
///   `Malformed`, `UnknownFormatVersion`, `UnknownAlgorithm`) and `Authentication`:
///   permanent. The stored bytes were damaged or tampered with, or the wrong key or
///   context was used; retrying gives the same answer. A reader dead-letters the event.
/// - `UnknownDekVersion`, `MissingKey`, `UnknownKekVersion`, `KekRetired`: permanent until the
///   configuration changes (a key is missing from the keyring, or was retired before
///   every wrap was moved off it).
/// - `Keyring`, `InvalidPath`: configuration or caller error, found before any data is
///   touched; fix the keyring text or the listed paths.
/// - `NotEncrypted`, `UnlistedEnvelope`, `MissingField`: the payload and its
///   `encrypted_fields` disagree. Never read such a payload as plaintext.
/// - `Plaintext`: the value decrypted but is not JSON: a writer bug; permanent.
/// - `Random`: the platform's random source failed; the only transient variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The input was the empty string.
    ///
    /// Handling: permanent; an empty value was stored where an encoded one belongs.
    #[error("{what} is empty")]
    Empty { what: &'static str },

    /// The text lacks the prefix that marks it (`pjx1.` for an envelope, `pjk1.` for a
    /// wrapped key), so it was never produced by this module.
    ///
    /// Handling: permanent; the value is not encrypted (see also `NotEncrypted`).
    #[error("{what} does not start with {prefix:?}")]
    NotEncoded { what: &'static str, prefix: &'static str },

    /// The text after the prefix is not canonical unpadded base64url.
    ///
    /// Handling: permanent; the stored text was damaged.
    #[error("{what} is not valid base64url (unpadded)")]
    Base64 { what: &'static str },

    /// Fewer bytes than the fixed header and tag take.
    ///
    /// Handling: permanent; the stored value was cut short.
    #[error("{what} is truncated: {len} bytes, at least {min} expected")]
    Truncated { what: &'static str, len: usize, min: usize },

    /// The bytes decode but do not have the shape their format fixes (a wrapped key of
    /// the wrong length).
    ///
    /// Handling: permanent; the stored value was damaged.
    #[error("{what} is malformed: {reason}")]
    Malformed { what: &'static str, reason: String },

    /// The format version byte names a format this build does not know.
    ///
    /// Handling: permanent for this build; a newer writer produced it, so upgrade the
    /// reader, or the byte was damaged.
    #[error("{what} has unknown format version {version}")]
    UnknownFormatVersion { what: &'static str, version: u8 },

    /// The algorithm byte names an algorithm this build does not know.
    ///
    /// Handling: as `UnknownFormatVersion`.
    #[error("{what} names unknown algorithm {algorithm}")]
    UnknownAlgorithm { what: &'static str, algorithm: u8 },

    /// No data-encryption key of this version exists for the subject.
    ///
    /// Handling: permanent; the key row is missing (not shredded: a shredded subject
    /// reads as redacted, not as an error).
    #[error("no data-encryption key of version {version}")]
    UnknownDekVersion { version: u32 },

    /// No data-encryption key is stored for the subject, and it was not shredded (a
    /// shredded subject reads as redacted, not as an error).
    ///
    /// Handling: permanent; the key rows were lost or deleted around the store. Restore
    /// them from a backup, or shred the subject to make the loss deliberate.
    #[error("no data-encryption key is stored for the subject, and it was not shredded")]
    MissingKey,

    /// The keyring has no key-encryption key of this version.
    ///
    /// Handling: add the missing key to the keyring; until then the wrapped keys under
    /// it cannot be opened.
    #[error("the keyring has no key-encryption key v{version}")]
    UnknownKekVersion { version: u32 },

    /// The key-encryption key is below the keyring's minimum version: it was retired
    /// and must not be used any more.
    ///
    /// Handling: permanent by policy. Rewrap every key with the old version before
    /// raising the minimum; to recover, lower `min` in the keyring text.
    #[error("key-encryption key v{version} is retired (the minimum is v{min_version})")]
    KekRetired { version: u32, min_version: u32 },

    /// The AES-GCM tag did not verify: the ciphertext, its header or its context was
    /// altered, or the key is not the one it was sealed with.
    ///
    /// Handling: permanent. Treat as tampering or a wrong key; never retry with
    /// another context to "find" the right one.
    #[error("{what} failed authentication (tampered, wrong key, or wrong context)")]
    Authentication { what: &'static str },

    /// The keyring text does not parse or breaks a rule (duplicate version, primary
    /// missing, minimum above the primary).
    ///
    /// Handling: fix the keyring text; the reason names the offending part but never
    /// a key.
    #[error("keyring: {reason}")]
    Keyring { reason: String },

    /// A field path is empty, has an empty segment, repeats, or lies inside another
    /// listed path; or the payload has a non-object where the path needs an object.
    ///
    /// Handling: fix the listed paths or the payload's shape.
    #[error("field path {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },

    /// A field listed as encrypted holds something other than an envelope.
    ///
    /// Handling: permanent; the payload may hold plaintext PII that shredding would
    /// not erase. Never read it as plaintext.
    #[error("field {path:?} is listed as encrypted but does not hold an envelope")]
    NotEncrypted { path: String },

    /// A field listed as encrypted is absent from the payload.
    ///
    /// Handling: permanent; the listing and the payload disagree.
    #[error("field {path:?} is listed as encrypted but is absent")]
    MissingField { path: String },

    /// An envelope sits at a path not listed as encrypted.
    ///
    /// Handling: permanent; the listing and the payload disagree.
    #[error("field {path:?} holds an envelope but is not listed as encrypted")]
    UnlistedEnvelope { path: String },

    /// The envelope authenticated, but its plaintext is not a JSON value.
    ///
    /// Handling: permanent; the writer sealed something other than JSON.
    #[error("decrypted value is not JSON: {reason}")]
    Plaintext { reason: String },

    /// The platform's random source failed (no `crypto.getRandomValues` in the host,
    /// an operating system error).
    ///
    /// Handling: transient; retry with backoff. Nothing was sealed.
    #[error("random source failed: {reason}")]
    Random { reason: String },
}

impl CryptoError {
    pub fn class(&self) -> ErrorClass {
        match self {
            CryptoError::Random { .. } => ErrorClass::Transient,
            _ => ErrorClass::Permanent,
        }
    }
}

impl From<getrandom::Error> for CryptoError {
    fn from(e: getrandom::Error) -> Self {
        CryptoError::Random { reason: e.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_failed_random_source_is_transient() {
        assert_eq!(CryptoError::Random { reason: "x".into() }.class(), ErrorClass::Transient);
        for e in [
            CryptoError::Authentication { what: "envelope" },
            CryptoError::KekRetired { version: 1, min_version: 2 },
            CryptoError::UnknownKekVersion { version: 9 },
            CryptoError::Truncated { what: "envelope", len: 3, min: 34 },
        ] {
            assert_eq!(e.class(), ErrorClass::Permanent, "{e}");
        }
    }
}
