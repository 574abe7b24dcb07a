//! Envelopes: one field's JSON value, encrypted, as a self-describing string.
//!
//! An envelope is `pjx1.` followed by unpadded base64url of these bytes:
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
//! At least 34 bytes, so at least 51 characters with the prefix. The plaintext is the
//! field's JSON value, so strings, numbers, booleans, `null`, arrays and objects all
//! come back as they went in.
//!
//! The associated data is the following parts, each preceded by its length as a
//! big-endian `u64`: the domain `projector/field/v1`, bytes 0..6 above (format,
//! algorithm and DEK version: the header cannot be altered), the aggregate type, the
//! aggregate id (16 bytes), the event type, the event's aggregate version (big-endian
//! `i64`), and the field's path. An envelope copied to another field, event, aggregate
//! or subject therefore fails with [`CryptoError::Authentication`].

use serde_json::Value;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::aead::{open, random_nonce, seal, NONCE_LEN, TAG_LEN};
use super::codec::{self, put_field, HEADER_LEN};
use super::error::CryptoError;
use super::keys::Dek;

/// Marks an envelope inside JSON.
pub const ENVELOPE_PREFIX: &str = "pjx1.";

const WHAT: &str = "envelope";
const DOMAIN: &[u8] = b"projector/field/v1";
const MIN_LEN: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;
/// Characters of unpadded base64url for [`MIN_LEN`] bytes.
const MIN_BODY_CHARS: usize = (MIN_LEN * 4).div_ceil(3);

/// Where a field sits: what its envelope is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldContext<'a> {
    pub aggregate_type: &'a str,
    pub aggregate_id: Uuid,
    pub event_type: &'a str,
    /// The aggregate's version after the event ([`crate::DomainEvent::version`]), not
    /// the payload's schema version: it is what tells two events of one type on one
    /// aggregate apart. A writer encrypts once that version is known.
    pub version: i64,
    /// The field's path in the payload, as listed in `encrypted_fields` (`email`,
    /// `address.street`).
    pub path: &'a str,
}

impl FieldContext<'_> {
    fn associated_data(&self, header: &[u8; HEADER_LEN]) -> Vec<u8> {
        let text = self.aggregate_type.len() + self.event_type.len() + self.path.len();
        let mut aad = Vec::with_capacity(DOMAIN.len() + HEADER_LEN + 16 + 8 + text + 7 * 8);
        put_field(&mut aad, DOMAIN);
        put_field(&mut aad, header);
        put_field(&mut aad, self.aggregate_type.as_bytes());
        put_field(&mut aad, self.aggregate_id.as_bytes());
        put_field(&mut aad, self.event_type.as_bytes());
        put_field(&mut aad, &self.version.to_be_bytes());
        put_field(&mut aad, self.path.as_bytes());
        aad
    }
}

/// Seals `plaintext` for the field at `context` under `dek`, which is version
/// `dek_version` of the subject's keys.
pub fn encrypt_field(
    dek: &Dek,
    dek_version: u32,
    context: &FieldContext<'_>,
    plaintext: &Value,
) -> Result<String, CryptoError> {
    let json =
        Zeroizing::new(serde_json::to_vec(plaintext).map_err(|e| CryptoError::Plaintext { reason: e.to_string() })?);
    let header = codec::header(dek_version);
    let nonce = random_nonce()?;
    let sealed = seal(dek.bytes(), &nonce, &context.associated_data(&header), &json)?;
    let mut bytes = Vec::with_capacity(HEADER_LEN + NONCE_LEN + sealed.len());
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(&nonce);
    bytes.extend_from_slice(&sealed);
    Ok(codec::encode(ENVELOPE_PREFIX, &bytes))
}

/// Opens an envelope sealed for the field at `context`. Every way the text can be
/// wrong is a typed error; a wrong key or context is
/// [`CryptoError::Authentication`].
pub fn decrypt_field(dek: &Dek, context: &FieldContext<'_>, envelope: &str) -> Result<Value, CryptoError> {
    let bytes = codec::decode(WHAT, ENVELOPE_PREFIX, envelope)?;
    let (header, nonce, sealed) = split(&bytes)?;
    let json = open(dek.bytes(), nonce, &context.associated_data(header), sealed)
        .ok_or(CryptoError::Authentication { what: WHAT })?;
    serde_json::from_slice(&json).map_err(|e| CryptoError::Plaintext { reason: e.to_string() })
}

/// The DEK version an envelope names, read without a key, so the caller can fetch it.
/// The version is authenticated only when the envelope is opened.
pub fn envelope_dek_version(envelope: &str) -> Result<u32, CryptoError> {
    let bytes = codec::decode(WHAT, ENVELOPE_PREFIX, envelope)?;
    let (header, _, _) = split(&bytes)?;
    Ok(codec::key_version(header))
}

/// Whether `text` looks like an envelope: the prefix, then at least as many base64url
/// characters as the shortest envelope has. Cheap: nothing is decoded.
pub fn is_envelope(text: &str) -> bool {
    text.strip_prefix(ENVELOPE_PREFIX).is_some_and(|body| {
        body.len() >= MIN_BODY_CHARS && body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

type Parts<'a> = (&'a [u8; HEADER_LEN], &'a [u8; NONCE_LEN], &'a [u8]);

fn split(bytes: &[u8]) -> Result<Parts<'_>, CryptoError> {
    codec::check_leading(WHAT, bytes)?;
    let truncated = || CryptoError::Truncated { what: WHAT, len: bytes.len(), min: MIN_LEN };
    if bytes.len() < MIN_LEN {
        return Err(truncated());
    }
    let (header, rest) = bytes.split_first_chunk::<HEADER_LEN>().ok_or_else(truncated)?;
    let (nonce, sealed) = rest.split_first_chunk::<NONCE_LEN>().ok_or_else(truncated)?;
    Ok((header, nonce, sealed))
}

#[cfg(test)]
mod tests;
