//! The text and byte helpers shared by envelopes and wrapped keys.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::error::CryptoError;

/// Format version 1, the only one so far, of envelopes and wrapped keys alike.
pub(crate) const FORMAT_V1: u8 = 1;
/// Algorithm 1: AES-256-GCM, 96-bit nonce, 128-bit tag.
pub(crate) const ALG_AES_256_GCM: u8 = 1;
/// Format version, algorithm and a big-endian `u32` key version.
pub(crate) const HEADER_LEN: usize = 6;

pub(crate) fn header(key_version: u32) -> [u8; HEADER_LEN] {
    let v = key_version.to_be_bytes();
    [FORMAT_V1, ALG_AES_256_GCM, v[0], v[1], v[2], v[3]]
}

/// Checks whichever of the format and algorithm bytes are present, so that a value
/// from a newer format says so rather than "truncated".
pub(crate) fn check_leading(what: &'static str, bytes: &[u8]) -> Result<(), CryptoError> {
    match bytes {
        [] => Err(CryptoError::Empty { what }),
        [version, ..] if *version != FORMAT_V1 => Err(CryptoError::UnknownFormatVersion { what, version: *version }),
        [_, algorithm, ..] if *algorithm != ALG_AES_256_GCM => {
            Err(CryptoError::UnknownAlgorithm { what, algorithm: *algorithm })
        }
        _ => Ok(()),
    }
}

/// The key version in a header already checked by [`check_leading`].
pub(crate) fn key_version(header: &[u8; HEADER_LEN]) -> u32 {
    u32::from_be_bytes([header[2], header[3], header[4], header[5]])
}

pub(crate) fn encode(prefix: &str, bytes: &[u8]) -> String {
    let mut text = String::with_capacity(prefix.len() + bytes.len().div_ceil(3) * 4);
    text.push_str(prefix);
    URL_SAFE_NO_PAD.encode_string(bytes, &mut text);
    text
}

/// The bytes behind `prefix`. Only canonical unpadded base64url is accepted, so every
/// value has exactly one spelling.
pub(crate) fn decode(what: &'static str, prefix: &'static str, text: &str) -> Result<Vec<u8>, CryptoError> {
    if text.is_empty() {
        return Err(CryptoError::Empty { what });
    }
    let body = text.strip_prefix(prefix).ok_or(CryptoError::NotEncoded { what, prefix })?;
    if body.is_empty() {
        return Err(CryptoError::Truncated { what, len: 0, min: HEADER_LEN });
    }
    URL_SAFE_NO_PAD.decode(body).map_err(|_| CryptoError::Base64 { what })
}

/// Decodes a base64url key of exactly `N` bytes.
pub(crate) fn decode_key<const N: usize>(text: &str) -> Option<zeroize::Zeroizing<[u8; N]>> {
    let mut key = zeroize::Zeroizing::new([0u8; N]);
    // Decoding into a fixed buffer leaves no stray heap copy of the key to wipe.
    let mut buf = zeroize::Zeroizing::new([0u8; 64]);
    let len = URL_SAFE_NO_PAD.decode_slice(text, buf.as_mut()).ok()?;
    if len != N {
        return None;
    }
    key.copy_from_slice(&buf[..N]);
    Some(key)
}

pub(crate) fn encode_key(key: &[u8]) -> zeroize::Zeroizing<String> {
    zeroize::Zeroizing::new(URL_SAFE_NO_PAD.encode(key))
}

/// Associated data is a sequence of fields; each is length-prefixed so that no two
/// different sequences give the same bytes ("ab","c" differs from "a","bc").
pub(crate) fn put_field(aad: &mut Vec<u8>, bytes: &[u8]) {
    aad.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    aad.extend_from_slice(bytes);
}
