//! Keyring text, key generation, and that no `Debug` output shows key bytes.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use zeroize::ZeroizeOnDrop;

use super::*;

const K1: [u8; 32] = [0x11; 32];
const K2: [u8; 32] = [0xa7; 32];

fn b64(key: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(key)
}

fn reason(result: Result<Keyring, CryptoError>) -> String {
    match result {
        Err(CryptoError::Keyring { reason }) => reason,
        other => panic!("expected a keyring error, got {other:?}"),
    }
}

#[test]
fn the_text_form_round_trips() {
    let ring = Keyring::parse(&format!("v1:{},v2:{};primary=v2;min=v1", b64(&K1), b64(&K2))).unwrap();
    assert_eq!(ring.versions().collect::<Vec<_>>(), [1, 2]);
    assert_eq!((ring.primary_version(), ring.min_version()), (2, 1));
    assert_eq!(ring.kek(1).unwrap().bytes(), &K1);
    assert_eq!(ring.primary().bytes(), &K2);
    let again = Keyring::parse(&ring.to_text()).unwrap();
    assert_eq!(again.to_text(), ring.to_text());
    assert_eq!(*ring.to_text(), format!("v1:{},v2:{};primary=v2;min=v1", b64(&K1), b64(&K2)));
}

#[test]
fn primary_defaults_to_the_highest_version_and_min_to_the_lowest() {
    let ring: Keyring = format!("v7:{},v3:{}", b64(&K1), b64(&K2)).parse().unwrap();
    assert_eq!((ring.primary_version(), ring.min_version()), (7, 3));
}

#[test]
fn whitespace_and_a_final_newline_are_ignored() {
    let text = format!(" v1 : {} ,\n v2:{} ; primary = v1 ;min=v1\n", b64(&K1), b64(&K2));
    let ring = Keyring::parse(&text).unwrap();
    assert_eq!((ring.primary_version(), ring.min_version()), (1, 1));
}

#[test]
fn malformed_keyrings_are_refused_with_a_reason() {
    let (k1, k2) = (b64(&K1), b64(&K2));
    let cases = [
        (String::new(), "entry 1"),
        ("  \n".to_owned(), "entry 1"),
        (format!("v1:{k1},"), "entry 2"),
        (format!("1:{k1}"), "entry 1: version"),
        (format!("v0:{k1}"), "entry 1: version"),
        (format!("v+1:{k1}"), "entry 1: version"),
        (format!("v-1:{k1}"), "entry 1: version"),
        (format!("v4294967296:{k1}"), "entry 1: version"),
        (format!("v1:{}", &k1[..42]), "v1: key"),
        (format!("v1:{k1}A"), "v1: key"),
        (format!("v1:{}", URL_SAFE.encode(K1)), "v1: key"),
        (format!("v1:{}", STANDARD.encode([0xfb; 32])), "v1: key"),
        ("v1:".to_owned(), "v1: key"),
        (format!("v1:{k1},v1:{k2}"), "v1 is listed twice"),
        (format!("v1:{k1};primary=v2"), "primary v2 is not listed"),
        (format!("v1:{k1},v2:{k2};primary=v1;min=v2"), "min v2"),
        (format!("v1:{k1};min=v0"), "option min"),
        (format!("v1:{k1};primary"), "option primary"),
        (format!("v1:{k1};primary=1"), "option primary"),
        (format!("v1:{k1};primary=v1;primary=v1"), "given twice"),
        (format!("v1:{k1};oldest=v1"), "unknown option"),
        (format!("v1:{k1};"), "unknown option"),
    ];
    for (text, expected) in cases {
        let reason = reason(Keyring::parse(&text));
        assert!(reason.contains(expected), "{text:?}: {reason:?} does not say {expected:?}");
        assert!(!reason.contains(&k1) && !reason.contains(&k2), "{reason:?} shows a key");
    }
}

#[test]
fn a_bad_key_entry_does_not_echo_the_key_text() {
    let almost = format!("{}!", &b64(&K1)[..42]);
    let err = Keyring::parse(&format!("v1:{almost}")).unwrap_err();
    assert!(!err.to_string().contains(&almost[..20]), "{err}");
}

#[test]
fn retired_and_unknown_versions_are_typed_errors() {
    let ring = Keyring::parse(&format!("v1:{},v2:{};min=v2", b64(&K1), b64(&K2))).unwrap();
    assert_eq!(ring.kek(1).unwrap_err(), CryptoError::KekRetired { version: 1, min_version: 2 });
    assert_eq!(ring.kek(0).unwrap_err(), CryptoError::UnknownKekVersion { version: 0 });
    assert_eq!(ring.kek(3).unwrap_err(), CryptoError::UnknownKekVersion { version: 3 });
    assert_eq!(ring.kek(2).unwrap().version(), 2);
}

#[test]
fn rotation_adds_a_fresh_primary_and_keeps_the_rest() {
    let ring = Keyring::parse(&format!("v1:{},v2:{};primary=v1;min=v1", b64(&K1), b64(&K2))).unwrap();
    let rotated = Keyring::parse(&ring.rotate().unwrap()).unwrap();
    assert_eq!(rotated.versions().collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!((rotated.primary_version(), rotated.min_version()), (3, 1));
    assert_eq!(rotated.kek(1).unwrap().bytes(), &K1);
    assert_eq!(rotated.kek(2).unwrap().bytes(), &K2);
    assert_ne!(rotated.primary().bytes(), &K1);
    assert_ne!(rotated.primary().bytes(), &K2);
}

#[test]
fn rotation_stops_at_the_last_version() {
    let ring = Keyring::parse(&format!("v4294967295:{}", b64(&K1))).unwrap();
    assert!(matches!(ring.rotate().unwrap_err(), CryptoError::Keyring { .. }));
}

#[test]
fn the_minimum_can_be_raised_up_to_the_primary_only() {
    let ring = Keyring::parse(&format!("v1:{},v2:{}", b64(&K1), b64(&K2))).unwrap();
    let raised = Keyring::parse(&ring.with_min_version(2).unwrap()).unwrap();
    assert_eq!(raised.min_version(), 2);
    assert!(matches!(ring.with_min_version(3).unwrap_err(), CryptoError::Keyring { .. }));
    assert!(matches!(ring.with_min_version(0).unwrap_err(), CryptoError::Keyring { .. }));
}

#[test]
fn a_generated_keyring_has_one_primary_key() {
    let ring = Keyring::generate().unwrap();
    assert_eq!(ring.versions().collect::<Vec<_>>(), [1]);
    assert_eq!((ring.primary_version(), ring.min_version()), (1, 1));
    assert!(Kek::new(0, K1).is_err());
}

/// Every spelling of the key that a careless `Debug` could produce.
fn spellings(key: &[u8; 32]) -> Vec<String> {
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    vec![
        URL_SAFE_NO_PAD.encode(key),
        STANDARD_NO_PAD.encode(key),
        hex.to_uppercase(),
        hex,
        format!("{:?}", &key[..4]).trim_end_matches(']').to_owned(),
        format!("{:x?}", &key[..4]).trim_end_matches(']').to_owned(),
    ]
}

#[test]
fn debug_never_shows_key_bytes() {
    let dek = Dek::generate().unwrap();
    let ring = Keyring::parse(&Keyring::generate().unwrap().rotate().unwrap()).unwrap();
    let outputs = [
        (format!("{dek:?} {dek:#?}"), spellings(dek.bytes())),
        (format!("{:?} {:#?}", ring.primary(), ring.primary()), spellings(ring.primary().bytes())),
        (
            format!("{ring:?} {ring:#?}"),
            ring.versions().flat_map(|v| spellings(ring.kek(v).unwrap().bytes())).collect(),
        ),
    ];
    for (output, secrets) in outputs {
        assert!(output.contains("<hidden>") || output.contains("Keyring"), "{output}");
        for secret in secrets {
            assert!(!output.contains(&secret), "{output} contains {secret}");
        }
    }
    assert!(format!("{ring:?}").contains("versions: [1, 2]"));
}

#[test]
fn keys_are_wiped_on_drop() {
    fn wiped_on_drop<T: ZeroizeOnDrop>() {}
    wiped_on_drop::<Dek>();
    wiped_on_drop::<Kek>();
}
