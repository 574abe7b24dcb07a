//! Wrapped data-encryption keys: a DEK sealed under a KEK, bound to its subject.

use std::fmt;

use super::aead::{open, random_nonce, seal, KEY_LEN, NONCE_LEN, TAG_LEN};
use super::codec::{self, put_field, HEADER_LEN};
use super::error::CryptoError;
use super::keys::{Dek, Kek, Keyring};

const WHAT: &str = "wrapped key";
const DOMAIN: &[u8] = b"projector/wrapped-dek/v1";
const SEALED_LEN: usize = KEY_LEN + TAG_LEN;
const LEN: usize = HEADER_LEN + NONCE_LEN + SEALED_LEN;

/// A [`Dek`] sealed under one KEK of a [`Keyring`]: safe to store next to the data.
///
/// # Byte layout
///
/// | offset | length | field |
/// |---|---|---|
/// | 0 | 1 | format version, `1` |
/// | 1 | 1 | algorithm, `1` = AES-256-GCM |
/// | 2 | 4 | KEK version, big-endian `u32` |
/// | 6 | 12 | nonce, random |
/// | 18 | 32 | the DEK, encrypted |
/// | 50 | 16 | GCM tag |
///
/// 66 bytes; as text, `pjk1.` followed by their unpadded base64url (93 characters in
/// all). The associated data is `projector/wrapped-dek/v1`, then bytes 0..6 (so the
/// format, algorithm and KEK version cannot be altered), then the subject id, each
/// part preceded by its length as a big-endian `u64`. A wrap copied to another subject
/// does not unwrap.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedDek {
    kek_version: u32,
    nonce: [u8; NONCE_LEN],
    sealed: [u8; SEALED_LEN],
}

impl WrappedDek {
    /// Marks the text form.
    pub const PREFIX: &'static str = "pjk1.";

    /// The KEK it was sealed under.
    pub fn kek_version(&self) -> u32 {
        self.kek_version
    }

    /// The bytes of the layout above.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(LEN);
        bytes.extend_from_slice(&codec::header(self.kek_version));
        bytes.extend_from_slice(&self.nonce);
        bytes.extend_from_slice(&self.sealed);
        bytes
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<WrappedDek, CryptoError> {
        codec::check_leading(WHAT, bytes)?;
        if bytes.len() > LEN {
            let reason = format!("{} bytes, {LEN} expected", bytes.len());
            return Err(CryptoError::Malformed { what: WHAT, reason });
        }
        let truncated = || CryptoError::Truncated { what: WHAT, len: bytes.len(), min: LEN };
        let (header, rest) = bytes.split_first_chunk::<HEADER_LEN>().ok_or_else(truncated)?;
        let (nonce, sealed) = rest.split_first_chunk::<NONCE_LEN>().ok_or_else(truncated)?;
        let sealed: [u8; SEALED_LEN] = sealed.try_into().map_err(|_| truncated())?;
        Ok(WrappedDek { kek_version: codec::key_version(header), nonce: *nonce, sealed })
    }

    /// `pjk1.` and the bytes in unpadded base64url.
    pub fn encode(&self) -> String {
        codec::encode(Self::PREFIX, &self.to_bytes())
    }

    pub fn decode(text: &str) -> Result<WrappedDek, CryptoError> {
        WrappedDek::from_bytes(&codec::decode(WHAT, Self::PREFIX, text)?)
    }
}

impl fmt::Debug for WrappedDek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedDek").field("kek_version", &self.kek_version).finish_non_exhaustive()
    }
}

impl fmt::Display for WrappedDek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

impl std::str::FromStr for WrappedDek {
    type Err = CryptoError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        WrappedDek::decode(text)
    }
}

fn associated_data(kek_version: u32, subject: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(DOMAIN.len() + HEADER_LEN + subject.len() + 24);
    put_field(&mut aad, DOMAIN);
    put_field(&mut aad, &codec::header(kek_version));
    put_field(&mut aad, subject.as_bytes());
    aad
}

fn wrap_with(kek: &Kek, dek: &Dek, subject: &str) -> Result<WrappedDek, CryptoError> {
    let nonce = random_nonce()?;
    let sealed = seal(kek.bytes(), &nonce, &associated_data(kek.version(), subject), dek.bytes())?;
    let sealed = sealed
        .try_into()
        .map_err(|_| CryptoError::Malformed { what: WHAT, reason: "the sealed key has an unexpected length".into() })?;
    Ok(WrappedDek { kek_version: kek.version(), nonce, sealed })
}

impl Keyring {
    /// Seals `dek` for `subject` under the primary KEK.
    pub fn wrap(&self, dek: &Dek, subject: &str) -> Result<WrappedDek, CryptoError> {
        wrap_with(self.primary(), dek, subject)
    }

    /// Opens a wrap made for `subject`. Fails with `KekRetired` below the minimum
    /// version, `UnknownKekVersion` for a KEK not in the keyring, `Authentication`
    /// for another subject, a damaged wrap or a different key under the same version.
    pub fn unwrap(&self, wrapped: &WrappedDek, subject: &str) -> Result<Dek, CryptoError> {
        let kek = self.kek(wrapped.kek_version)?;
        let aad = associated_data(wrapped.kek_version, subject);
        let plain = open(kek.bytes(), &wrapped.nonce, &aad, &wrapped.sealed)
            .ok_or(CryptoError::Authentication { what: WHAT })?;
        let key: [u8; KEY_LEN] = plain
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::Malformed { what: WHAT, reason: "the opened key is not 32 bytes".into() })?;
        Ok(Dek::from_bytes(key))
    }

    /// The same DEK, sealed anew under the primary KEK (even if already there: the
    /// nonce is fresh). Use [`Keyring::needs_rewrap`] to skip those.
    pub fn rewrap(&self, wrapped: &WrappedDek, subject: &str) -> Result<WrappedDek, CryptoError> {
        self.wrap(&self.unwrap(wrapped, subject)?, subject)
    }

    /// Whether the wrap is under a KEK other than the primary.
    pub fn needs_rewrap(&self, wrapped: &WrappedDek) -> bool {
        wrapped.kek_version != self.primary_version()
    }
}

#[cfg(test)]
mod tests;
