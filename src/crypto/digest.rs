//! Keyed digests of personal values: equal for equal plaintexts, and meaningless to
//! anyone without the subject's data key.
//!
//! A writer needs to recognise a repeated request (an idempotency key sent again)
//! although every envelope it seals has a fresh nonce, and must not store a plain hash
//! of personal data for that: an unkeyed hash of an e-mail address is found again by
//! hashing candidate addresses. A [`DigestKey`] is derived from the subject's [`Dek`]
//! (HMAC-SHA-256 of a fixed label under the DEK), so its digests are as unlinkable as
//! the envelopes once the subject is shredded, and stay the same across KEK rotations
//! (a rewrap keeps the DEK).

use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::codec::{encode, put_field};
use super::keys::Dek;

type HmacSha256 = Hmac<Sha256>;

/// Marks a digest in text.
pub const DIGEST_PREFIX: &str = "pjd1.";

const KEY_LABEL: &[u8] = b"projector/digest-key/v1";
const DOMAIN: &[u8] = b"projector/field-digest/v1";

/// The key of one subject's digests, derived from its data key; wiped when dropped.
pub struct DigestKey {
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for DigestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DigestKey(<hidden>)")
    }
}

impl DigestKey {
    /// The digest key of `dek`'s subject.
    pub fn of(dek: &Dek) -> DigestKey {
        let mut mac = new_mac(dek.bytes());
        mac.update(KEY_LABEL);
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&mac.finalize().into_bytes());
        DigestKey { key }
    }

    /// The digest of the value at `path`: `pjd1.` and 32 bytes of unpadded base64url.
    /// Objects are read with their keys sorted, so a value has one digest however its
    /// keys were ordered.
    pub fn digest(&self, path: &str, value: &Value) -> String {
        let mut message = Zeroizing::new(Vec::new());
        put_field(&mut message, DOMAIN);
        put_field(&mut message, path.as_bytes());
        let mut json = Zeroizing::new(Vec::new());
        canonical_json(value, &mut json);
        put_field(&mut message, &json);
        let mut mac = new_mac(self.key.as_slice());
        mac.update(&message);
        encode(DIGEST_PREFIX, &mac.finalize().into_bytes())
    }
}

fn new_mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length; 32 bytes is never refused.
    <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC accepts any key length")
}

/// Compact JSON with object keys in sorted order, whatever the map type keeps.
fn canonical_json(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(Value::String(key.clone()).to_string().as_bytes());
                out.push(b':');
                canonical_json(&map[key], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical_json(item, out);
            }
            out.push(b']');
        }
        scalar => out.extend_from_slice(scalar.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn key(byte: u8) -> DigestKey {
        DigestKey::of(&Dek::from_bytes([byte; 32]))
    }

    #[test]
    fn equal_values_have_equal_digests_under_one_key_only() {
        let a = key(1).digest("email", &json!("ada@example.com"));
        assert_eq!(a, key(1).digest("email", &json!("ada@example.com")));
        assert!(a.starts_with(DIGEST_PREFIX) && a.len() == DIGEST_PREFIX.len() + 43, "{a}");
        assert_ne!(a, key(2).digest("email", &json!("ada@example.com")), "another subject's key");
        assert_ne!(a, key(1).digest("mail", &json!("ada@example.com")), "another path");
        assert_ne!(a, key(1).digest("email", &json!("bob@example.com")), "another value");
        assert!(!a.contains("ada"), "{a}");
    }

    #[test]
    fn key_order_does_not_change_an_objects_digest() {
        let one: Value = serde_json::from_str(r#"{"street":"Main","no":1}"#).unwrap();
        let two: Value = serde_json::from_str(r#"{"no":1,"street":"Main"}"#).unwrap();
        assert_eq!(key(3).digest("address", &one), key(3).digest("address", &two));
    }

    #[test]
    fn the_key_is_not_the_data_key_and_is_never_shown() {
        let dek = Dek::from_bytes([7; 32]);
        let derived = DigestKey::of(&dek);
        assert_ne!(&*derived.key, dek.bytes());
        assert_eq!(format!("{derived:?}"), "DigestKey(<hidden>)");
    }
}
