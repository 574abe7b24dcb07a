//! Field-level envelope encryption of personal data, and crypto-shredding.
//!
//! Each subject (a person, usually an aggregate) has its own data-encryption key
//! ([`Dek`], 256 random bits, versioned per subject). Personal fields of an event's
//! payload are sealed under it one by one as [envelopes](encrypt_field); the event
//! lists their paths in `encrypted_fields`. The DEK is stored only wrapped
//! ([`WrappedDek`]) under a key-encryption key from the [`Keyring`], which lives
//! outside the database (an environment variable or a secret file). Deleting a
//! subject's wrapped keys makes every one of its envelopes unreadable: readers then
//! see [`REDACTED`] in their place.
//!
//! This module is the pure part: formats, keys, algorithms. It does no I/O and has no
//! clock; it builds for `wasm32-unknown-unknown`, where randomness comes from the JS
//! runtime's `crypto.getRandomValues`.
//!
//! # Writing and reading
//!
//! 1. Writer: fetch or create the subject's DEK ([`Dek::generate`], store
//!    [`Keyring::wrap`]), then [`encrypt_paths`] on the payload with the event's
//!    [`EventContext`]; store the returned paths as `encrypted_fields`.
//! 2. Reader: [`decrypt_paths`] with a lookup that serves DEKs from a [`DekCache`] or
//!    unwraps them ([`Keyring::unwrap`]), answering `None` for a shredded subject or a
//!    reader without access. A payload that disagrees with its `encrypted_fields` is
//!    an error ([`check_encrypted_fields`]), never plaintext.
//! 3. Key rotation: [`Keyring::rotate`] gives the keyring text with a new primary KEK;
//!    old wraps still unwrap; [`Keyring::rewrap`] moves each to the primary; then
//!    [`Keyring::with_min_version`] retires the old KEKs.
//!
//! # Envelope layout
//!
//! `pjx1.` followed by unpadded base64url of:
//!
//! | offset | length | field |
//! |---|---|---|
//! | 0 | 1 | format version, `1` |
//! | 1 | 1 | algorithm, `1` = AES-256-GCM (96-bit nonce, 128-bit tag) |
//! | 2 | 4 | DEK version, big-endian `u32` |
//! | 6 | 12 | nonce, random per envelope |
//! | 18 | n | ciphertext of the value's compact JSON text (n bytes) |
//! | 18 + n | 16 | GCM tag |
//!
//! Associated data, each part preceded by its length as a big-endian `u64`: the
//! domain `projector/field/v1`, bytes 0..6 above, aggregate type, aggregate id (16
//! bytes), event type, the event's aggregate version (big-endian `i64`), field path.
//!
//! A wrapped DEK has the same first 18 bytes with the KEK version in place of the DEK
//! version, then the 32-byte encrypted DEK and the tag (66 bytes, text prefix `pjk1.`),
//! bound by its associated data to the KEK version and the subject id ([`WrappedDek`]).
//!
//! # Keyring text
//!
//! `v1:<key>,v2:<key>;primary=v2;min=v1`: keys as `v<N>:` and 32 bytes of unpadded
//! base64url; `primary` wraps new keys (default: the highest version); `min` is the
//! lowest version that may still unwrap (default: the lowest listed). Details in
//! [`Keyring`].

mod aead;
mod cache;
mod codec;
mod digest;
mod envelope;
pub mod error;
mod keys;
mod paths;
mod scrub;
mod wrap;

pub use cache::{CacheLimits, DekCache};
pub use digest::{DigestKey, DIGEST_PREFIX};
pub use envelope::{decrypt_field, encrypt_field, envelope_dek_version, is_envelope, FieldContext, ENVELOPE_PREFIX};
pub use error::CryptoError;
pub use keys::{Dek, Kek, Keyring};
pub use paths::{
    check_encrypted_fields, check_paths, decrypt_paths, encrypt_paths, open_paths, redact_paths, redacted,
    set_value_at, value_at, Decrypted, EventContext, REDACTED,
};
pub use scrub::{plaintext_leaves, scrub_text};
pub use wrap::WrappedDek;
