//! Field-level envelope encryption of personal data.

mod aead;
mod cache;
mod codec;
mod envelope;
pub mod error;
mod keys;
mod paths;
mod wrap;

pub use cache::{CacheLimits, DekCache};
pub use envelope::{decrypt_field, encrypt_field, envelope_dek_version, is_envelope, FieldContext, ENVELOPE_PREFIX};
pub use error::CryptoError;
pub use keys::{Dek, Kek, Keyring};
pub use paths::{
    check_encrypted_fields, decrypt_paths, encrypt_paths, redact_paths, redacted, Decrypted, EventContext, REDACTED,
};
pub use wrap::WrappedDek;
