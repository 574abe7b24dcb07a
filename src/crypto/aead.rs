//! AES-256-GCM (96-bit nonce, 128-bit tag) and the random source for keys and nonces.
//!
//! Every seal in this module uses a fresh random nonce. With 96 random bits the chance
//! of a repeat under one key stays below 2^-32 for up to 2^32 seals (NIST SP 800-38D,
//! 8.3); keys here are per subject, so no key comes anywhere near that count.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::Aes256Gcm;
use zeroize::Zeroizing;

use super::error::CryptoError;

pub(crate) const KEY_LEN: usize = 32;
pub(crate) const NONCE_LEN: usize = 12;
pub(crate) const TAG_LEN: usize = 16;

/// Encrypts `plaintext`; the result is the ciphertext followed by the 16-byte tag.
pub(crate) fn seal(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let cipher = Aes256Gcm::new(key.into());
    // The only failure is a plaintext over GCM's 64 GiB limit; say so instead of panicking.
    cipher
        .encrypt(nonce.into(), Payload { msg: plaintext, aad })
        .map_err(|_| CryptoError::Malformed { what: "plaintext", reason: "longer than AES-GCM can seal".into() })
}

/// Decrypts and verifies ciphertext-and-tag. `None` when the tag does not verify or
/// the input is shorter than a tag; the plaintext is wiped when dropped.
pub(crate) fn open(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    sealed: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    if sealed.len() < TAG_LEN {
        return None;
    }
    let cipher = Aes256Gcm::new(key.into());
    cipher.decrypt(nonce.into(), Payload { msg: sealed, aad }).ok().map(Zeroizing::new)
}

/// A fresh 96-bit nonce from the platform's random source.
pub(crate) fn random_nonce() -> Result<[u8; NONCE_LEN], CryptoError> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce)?;
    Ok(nonce)
}

/// A fresh 256-bit key from the platform's random source.
pub(crate) fn random_key() -> Result<Zeroizing<[u8; KEY_LEN]>, CryptoError> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    getrandom::fill(key.as_mut())?;
    Ok(key)
}

#[cfg(test)]
mod tests;
