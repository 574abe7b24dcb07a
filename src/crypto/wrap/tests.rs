//! Wrapping under the keyring: subject binding, rotation, retirement, damaged input.

use super::*;

const SUBJECT: &str = "user:6f1c2a3e-0000-4000-8000-000000000001";

fn ring(text: &str) -> Keyring {
    Keyring::parse(text).unwrap()
}

fn same_key(a: &Dek, b: &Dek) -> bool {
    a.bytes() == b.bytes()
}

#[test]
fn a_wrapped_key_unwraps_for_its_subject_only() {
    let keyring = Keyring::generate().unwrap();
    let dek = Dek::generate().unwrap();
    let wrapped = keyring.wrap(&dek, SUBJECT).unwrap();
    assert_eq!(wrapped.kek_version(), 1);
    assert!(same_key(&keyring.unwrap(&wrapped, SUBJECT).unwrap(), &dek));
    for other in ["", "user:6f1c2a3e-0000-4000-8000-000000000002", &SUBJECT[..SUBJECT.len() - 1]] {
        assert_eq!(keyring.unwrap(&wrapped, other).unwrap_err(), CryptoError::Authentication { what: WHAT });
    }
}

#[test]
fn two_wraps_of_one_key_differ() {
    let keyring = Keyring::generate().unwrap();
    let dek = Dek::generate().unwrap();
    assert_ne!(keyring.wrap(&dek, SUBJECT).unwrap(), keyring.wrap(&dek, SUBJECT).unwrap());
}

#[test]
fn another_key_under_the_same_version_fails_authentication() {
    let wrapped = Keyring::generate().unwrap().wrap(&Dek::generate().unwrap(), SUBJECT).unwrap();
    let other = Keyring::generate().unwrap();
    assert_eq!(other.unwrap(&wrapped, SUBJECT).unwrap_err(), CryptoError::Authentication { what: WHAT });
}

#[test]
fn rotation_keeps_old_wraps_readable_rewrap_moves_them_and_retiring_refuses_them() {
    let v1 = Keyring::generate().unwrap();
    let dek = Dek::generate().unwrap();
    let old = v1.wrap(&dek, SUBJECT).unwrap();

    let v2 = ring(&v1.rotate().unwrap());
    assert_eq!(v2.primary_version(), 2);
    assert!(same_key(&v2.unwrap(&old, SUBJECT).unwrap(), &dek), "v1 wraps still unwrap after rotation");
    assert!(v2.needs_rewrap(&old));
    assert_eq!(v2.wrap(&dek, SUBJECT).unwrap().kek_version(), 2, "new wraps use the primary");

    let moved = v2.rewrap(&old, SUBJECT).unwrap();
    assert_eq!(moved.kek_version(), 2);
    assert!(!v2.needs_rewrap(&moved));
    assert!(same_key(&v2.unwrap(&moved, SUBJECT).unwrap(), &dek));
    assert!(v2.rewrap(&old, "someone else").is_err(), "rewrap checks the subject too");

    let retired = ring(&v2.with_min_version(2).unwrap());
    assert_eq!(retired.unwrap(&old, SUBJECT).unwrap_err(), CryptoError::KekRetired { version: 1, min_version: 2 });
    assert_eq!(retired.rewrap(&old, SUBJECT).unwrap_err(), CryptoError::KekRetired { version: 1, min_version: 2 });
    assert!(same_key(&retired.unwrap(&moved, SUBJECT).unwrap(), &dek));

    // A keyring that never had v2 does not know the moved wrap.
    assert_eq!(v1.unwrap(&moved, SUBJECT).unwrap_err(), CryptoError::UnknownKekVersion { version: 2 });
}

#[test]
fn text_and_bytes_round_trip() {
    let keyring = Keyring::generate().unwrap();
    let wrapped = keyring.wrap(&Dek::generate().unwrap(), SUBJECT).unwrap();
    let text = wrapped.encode();
    assert!(text.starts_with("pjk1."));
    assert_eq!(text.len(), 93);
    assert_eq!(text, wrapped.to_string());
    assert_eq!(WrappedDek::decode(&text).unwrap(), wrapped);
    assert_eq!(text.parse::<WrappedDek>().unwrap(), wrapped);
    assert_eq!(WrappedDek::from_bytes(&wrapped.to_bytes()).unwrap(), wrapped);
    assert_eq!(wrapped.to_bytes().len(), 66);
    assert_eq!(format!("{wrapped:?}"), "WrappedDek { kek_version: 1, .. }");
}

/// Every byte flipped, in every bit: either the decode or the unwrap fails, typed.
#[test]
fn every_flipped_bit_is_refused() {
    let keyring = ring(&Keyring::generate().unwrap().rotate().unwrap());
    let dek = Dek::generate().unwrap();
    let bytes = keyring.wrap(&dek, SUBJECT).unwrap().to_bytes();
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut damaged = bytes.clone();
            damaged[i] ^= 1 << bit;
            let text = codec::encode(WrappedDek::PREFIX, &damaged);
            let result = WrappedDek::decode(&text).and_then(|w| keyring.unwrap(&w, SUBJECT));
            let err = result.err().unwrap_or_else(|| panic!("byte {i} bit {bit}: unwrapped"));
            let expected = match i {
                0 => matches!(err, CryptoError::UnknownFormatVersion { .. }),
                1 => matches!(err, CryptoError::UnknownAlgorithm { .. }),
                // The version is authenticated: another listed version still fails.
                2..=5 => matches!(
                    err,
                    CryptoError::UnknownKekVersion { .. }
                        | CryptoError::KekRetired { .. }
                        | CryptoError::Authentication { .. }
                ),
                _ => err == CryptoError::Authentication { what: WHAT },
            };
            assert!(expected, "byte {i} bit {bit}: {err:?}");
        }
    }
    let mut relabelled = bytes.clone();
    relabelled[5] = 1;
    let wrapped = WrappedDek::from_bytes(&relabelled).unwrap();
    assert_eq!(wrapped.kek_version(), 1);
    assert_eq!(keyring.unwrap(&wrapped, SUBJECT).unwrap_err(), CryptoError::Authentication { what: WHAT });
}

#[test]
fn short_long_empty_and_foreign_input_are_typed_errors() {
    let wrapped = Keyring::generate().unwrap().wrap(&Dek::generate().unwrap(), SUBJECT).unwrap();
    let bytes = wrapped.to_bytes();
    for len in 1..bytes.len() {
        assert_eq!(
            WrappedDek::from_bytes(&bytes[..len]).unwrap_err(),
            CryptoError::Truncated { what: WHAT, len, min: 66 }
        );
    }
    let text = wrapped.encode();
    for len in 0..text.len() {
        assert!(WrappedDek::decode(&text[..len]).is_err(), "{len} characters decoded");
    }
    assert_eq!(WrappedDek::from_bytes(&[]).unwrap_err(), CryptoError::Empty { what: WHAT });
    assert_eq!(WrappedDek::decode("").unwrap_err(), CryptoError::Empty { what: WHAT });
    let mut long = bytes.clone();
    long.push(0);
    assert!(matches!(WrappedDek::from_bytes(&long).unwrap_err(), CryptoError::Malformed { .. }));
    assert!(matches!(WrappedDek::decode("pjx1.AQE").unwrap_err(), CryptoError::NotEncoded { .. }));
    assert_eq!(WrappedDek::decode("pjk1.AQ=").unwrap_err(), CryptoError::Base64 { what: WHAT });
    assert_eq!(WrappedDek::decode("pjk1.A+/B").unwrap_err(), CryptoError::Base64 { what: WHAT });
    assert_eq!(
        WrappedDek::from_bytes(&[2, 1]).unwrap_err(),
        CryptoError::UnknownFormatVersion { what: WHAT, version: 2 }
    );
    assert_eq!(
        WrappedDek::from_bytes(&[1, 9]).unwrap_err(),
        CryptoError::UnknownAlgorithm { what: WHAT, algorithm: 9 }
    );
}
