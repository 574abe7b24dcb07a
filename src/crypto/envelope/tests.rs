//! Envelopes: round trips, the byte layout, and every way a stored one can be wrong.

use proptest::prelude::*;
use serde_json::json;

use super::*;

fn context() -> FieldContext<'static> {
    FieldContext {
        aggregate_type: "user",
        aggregate_id: Uuid::from_u128(0x6f1c_2a3e_0000_4000_8000_0000_0000_0001),
        event_type: "UserRegistered",
        version: 1,
        path: "address.street",
    }
}

fn dek() -> Dek {
    Dek::from_bytes([0x42; 32])
}

fn sealed(value: &Value) -> String {
    encrypt_field(&dek(), 7, &context(), value).unwrap()
}

fn bytes_of(envelope: &str) -> Vec<u8> {
    codec::decode(WHAT, ENVELOPE_PREFIX, envelope).unwrap()
}

#[test]
fn every_kind_of_json_value_round_trips() {
    let values = [
        json!("ada@example.com"),
        json!(""),
        json!("Zoë 😀 \u{0} \"quoted\""),
        json!(0),
        json!(-12.5),
        json!(u64::MAX),
        json!(true),
        json!(null),
        json!([1, "two", {"three": 3}]),
        json!({"street": "1 Main St", "geo": {"lat": 51.5, "lon": -0.12}}),
    ];
    for value in values {
        let envelope = sealed(&value);
        assert!(is_envelope(&envelope), "{envelope}");
        assert_eq!(decrypt_field(&dek(), &context(), &envelope).unwrap(), value);
        assert_eq!(envelope_dek_version(&envelope).unwrap(), 7);
    }
}

#[test]
fn the_bytes_follow_the_documented_layout() {
    let envelope = sealed(&json!("ada"));
    assert!(envelope.starts_with("pjx1."));
    let bytes = bytes_of(&envelope);
    assert_eq!(&bytes[..6], &[1, 1, 0, 0, 0, 7], "format, algorithm, DEK version");
    assert_eq!(bytes.len(), 6 + 12 + "\"ada\"".len() + 16);
    // The ciphertext is exactly what AES-256-GCM gives for the JSON text.
    let nonce: [u8; 12] = bytes[6..18].try_into().unwrap();
    let aad = context().associated_data(&[1, 1, 0, 0, 0, 7]);
    assert_eq!(&bytes[18..], seal(&[0x42; 32], &nonce, &aad, b"\"ada\"").unwrap().as_slice());
}

#[test]
fn two_envelopes_of_one_value_differ() {
    assert_ne!(sealed(&json!("ada")), sealed(&json!("ada")));
}

/// Every bit of every byte (header, nonce, ciphertext, tag), flipped and re-encoded.
#[test]
fn every_flipped_bit_fails_with_a_typed_error() {
    let envelope = sealed(&json!({"street": "1 Main St"}));
    let bytes = bytes_of(&envelope);
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut damaged = bytes.clone();
            damaged[i] ^= 1 << bit;
            let err = decrypt_field(&dek(), &context(), &codec::encode(ENVELOPE_PREFIX, &damaged)).unwrap_err();
            let expected = match i {
                0 => matches!(err, CryptoError::UnknownFormatVersion { .. }),
                1 => matches!(err, CryptoError::UnknownAlgorithm { .. }),
                _ => err == CryptoError::Authentication { what: WHAT },
            };
            assert!(expected, "byte {i} bit {bit}: {err:?}");
        }
    }
}

#[test]
fn another_field_event_aggregate_or_subject_fails_authentication() {
    let envelope = sealed(&json!("1 Main St"));
    let base = context();
    let moved = [
        FieldContext { aggregate_type: "account", ..base },
        FieldContext { aggregate_id: Uuid::from_u128(2), ..base },
        FieldContext { event_type: "UserMoved", ..base },
        FieldContext { version: 2, ..base },
        FieldContext { version: -1, ..base },
        FieldContext { path: "address.city", ..base },
        FieldContext { path: "address", ..base },
        FieldContext { path: "", ..base },
        // Shifting a byte between neighbouring parts must not give the same bytes.
        FieldContext { aggregate_type: "use", event_type: "rUserRegistered", ..base },
    ];
    for context in moved {
        assert_eq!(
            decrypt_field(&dek(), &context, &envelope).unwrap_err(),
            CryptoError::Authentication { what: WHAT },
            "{context:?}"
        );
    }
    assert!(decrypt_field(&dek(), &base, &envelope).is_ok());
}

#[test]
fn a_wrong_key_fails_authentication() {
    let envelope = sealed(&json!("ada"));
    let err = decrypt_field(&Dek::from_bytes([0x43; 32]), &context(), &envelope).unwrap_err();
    assert_eq!(err, CryptoError::Authentication { what: WHAT });
    assert_eq!(err.class(), crate::ErrorClass::Permanent);
}

#[test]
fn every_truncation_is_a_typed_error() {
    let envelope = sealed(&json!("ada@example.com"));
    for len in 0..envelope.len() {
        let err = decrypt_field(&dek(), &context(), &envelope[..len]).unwrap_err();
        let typed = match len {
            0 => err == CryptoError::Empty { what: WHAT },
            1..=4 => matches!(err, CryptoError::NotEncoded { .. }),
            _ => matches!(
                err,
                CryptoError::Truncated { .. } | CryptoError::Base64 { .. } | CryptoError::Authentication { .. }
            ),
        };
        assert!(typed, "{len} characters: {err:?}");
    }
    let bytes = bytes_of(&envelope);
    for len in 0..bytes.len() {
        let err = decrypt_field(&dek(), &context(), &codec::encode(ENVELOPE_PREFIX, &bytes[..len])).unwrap_err();
        let typed = match len {
            0 => matches!(err, CryptoError::Truncated { len: 0, .. }),
            1..34 => err == CryptoError::Truncated { what: WHAT, len, min: 34 },
            _ => err == CryptoError::Authentication { what: WHAT },
        };
        assert!(typed, "{len} bytes: {err:?}");
    }
}

#[test]
fn foreign_text_is_a_typed_error() {
    let body = &sealed(&json!("ada"))[5..];
    let cases = [
        ("", CryptoError::Empty { what: WHAT }),
        ("ada@example.com", CryptoError::NotEncoded { what: WHAT, prefix: ENVELOPE_PREFIX }),
        (&format!("pjx2.{body}"), CryptoError::NotEncoded { what: WHAT, prefix: ENVELOPE_PREFIX }),
        (&format!("PJX1.{body}"), CryptoError::NotEncoded { what: WHAT, prefix: ENVELOPE_PREFIX }),
        (&format!("pjx1.{body}="), CryptoError::Base64 { what: WHAT }),
        (&format!("pjx1.{}+{}", &body[..10], &body[11..]), CryptoError::Base64 { what: WHAT }),
        (&format!("pjx1.{}/{}", &body[..10], &body[11..]), CryptoError::Base64 { what: WHAT }),
        (&format!("pjx1. {body}"), CryptoError::Base64 { what: WHAT }),
        (&format!("pjx1.{body}\n"), CryptoError::Base64 { what: WHAT }),
        (&format!("pjx1.é{body}"), CryptoError::Base64 { what: WHAT }),
    ];
    for (text, expected) in cases {
        assert_eq!(decrypt_field(&dek(), &context(), text).unwrap_err(), expected, "{text:?}");
        assert!(!is_envelope(text) || expected == CryptoError::Base64 { what: WHAT }, "{text:?}");
    }
}

#[test]
fn unknown_format_and_algorithm_bytes_are_named() {
    let mut bytes = bytes_of(&sealed(&json!("ada")));
    bytes[0] = 2;
    let err = decrypt_field(&dek(), &context(), &codec::encode(ENVELOPE_PREFIX, &bytes)).unwrap_err();
    assert_eq!(err, CryptoError::UnknownFormatVersion { what: WHAT, version: 2 });
    bytes[0] = 1;
    bytes[1] = 0;
    let err = decrypt_field(&dek(), &context(), &codec::encode(ENVELOPE_PREFIX, &bytes)).unwrap_err();
    assert_eq!(err, CryptoError::UnknownAlgorithm { what: WHAT, algorithm: 0 });
}

#[test]
fn an_authentic_value_that_is_not_json_is_a_plaintext_error() {
    let header = codec::header(7);
    let nonce = [9u8; 12];
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(&nonce);
    bytes.extend(seal(&[0x42; 32], &nonce, &context().associated_data(&header), b"{not json").unwrap());
    let err = decrypt_field(&dek(), &context(), &codec::encode(ENVELOPE_PREFIX, &bytes)).unwrap_err();
    assert!(matches!(err, CryptoError::Plaintext { .. }), "{err:?}");
}

#[test]
fn is_envelope_wants_the_prefix_and_enough_base64url() {
    assert!(is_envelope(&sealed(&json!(1))));
    assert!(is_envelope(&format!("pjx1.{}", "A".repeat(46))));
    assert!(!is_envelope(&format!("pjx1.{}", "A".repeat(45))));
    assert!(!is_envelope(&format!("pjx1.{}=", "A".repeat(46))));
    assert!(!is_envelope("pjx1."));
    assert!(!is_envelope("pjx1.hello"));
    assert!(!is_envelope(""));
    assert!(!is_envelope("[redacted]"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn decrypt_field_never_panics_on_any_string(text in ".*") {
        let _ = decrypt_field(&dek(), &context(), &text);
        let _ = envelope_dek_version(&text);
        let _ = is_envelope(&text);
    }

    #[test]
    fn decrypt_field_never_panics_on_any_bytes_behind_the_prefix(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let text = codec::encode(ENVELOPE_PREFIX, &bytes);
        prop_assert!(decrypt_field(&dek(), &context(), &text).is_err());
    }

    #[test]
    fn decrypt_field_never_panics_on_base64url_noise(text in "pjx1\\.[A-Za-z0-9_-]{0,120}") {
        prop_assert!(decrypt_field(&dek(), &context(), &text).is_err());
    }
}
