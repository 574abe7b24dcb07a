//! Known-answer vectors (the GCM specification, Wycheproof) and nonce uniqueness.

use std::collections::HashSet;

use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    bytes.try_into().unwrap()
}

/// Test cases 13 to 16 of McGrew and Viega, "The Galois/Counter Mode of Operation",
/// the ones with a 256-bit key and a 96-bit IV (16 also has associated data).
#[test]
fn gcm_specification_vectors_for_256_bit_keys() {
    let k15 = "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308";
    let p15 = "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72
               1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255";
    let c15 = "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa
               8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad";
    let cases = [
        // (key, iv, aad, plaintext, ciphertext, tag)
        (
            "00".repeat(32),
            "000000000000000000000000",
            String::new(),
            String::new(),
            String::new(),
            "530f8afbc74536b9a963b4f1c4cb738b",
        ),
        (
            "00".repeat(32),
            "000000000000000000000000",
            String::new(),
            "00".repeat(16),
            "cea7403d4d606b6e074ec5d3baf39d18".to_owned(),
            "d0d1c8a799996bf0265b98b5d48ab919",
        ),
        (
            k15.to_owned(),
            "cafebabefacedbaddecaf888",
            String::new(),
            p15.to_owned(),
            c15.to_owned(),
            "b094dac5d93471bdec1a502270e3cc6c",
        ),
        (
            k15.to_owned(),
            "cafebabefacedbaddecaf888",
            "feedfacedeadbeeffeedfacedeadbeefabaddad2".to_owned(),
            hex(p15)[..60].iter().map(|b| format!("{b:02x}")).collect(),
            hex(c15)[..60].iter().map(|b| format!("{b:02x}")).collect(),
            "76fc6ece0f4e1768cddf8853bb2d551b",
        ),
    ];
    for (i, (key, iv, aad, pt, ct, tag)) in cases.iter().enumerate() {
        let (key, iv, aad, pt) = (array(&hex(key)), array(&hex(iv)), hex(aad), hex(pt));
        let mut expected = hex(ct);
        expected.extend(hex(tag));
        let sealed = seal(&key, &iv, &aad, &pt).unwrap();
        assert_eq!(sealed, expected, "case {i}: seal");
        assert_eq!(open(&key, &iv, &aad, &sealed).unwrap().as_slice(), pt.as_slice(), "case {i}: open");
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(open(&key, &iv, &aad, &tampered).is_none(), "case {i}: tampered tag");
    }
}

/// Every Wycheproof AES-GCM case with a 256-bit key, 96-bit IV and 128-bit tag: valid
/// cases seal and open to the expected bytes, invalid ones never open.
#[test]
fn wycheproof_aes_256_gcm() {
    use wycheproof::aead::{TestName, TestSet};
    use wycheproof::TestResult;

    let set = TestSet::load(TestName::AesGcm).unwrap();
    let (mut valid, mut invalid) = (0, 0);
    for group in set.test_groups.iter().filter(|g| g.key_size == 256 && g.nonce_size == 96 && g.tag_size == 128) {
        for test in &group.tests {
            let key: [u8; KEY_LEN] = array(&test.key);
            let nonce: [u8; NONCE_LEN] = array(&test.nonce);
            let mut sealed = test.ct.to_vec();
            sealed.extend_from_slice(&test.tag);
            let opened = open(&key, &nonce, &test.aad, &sealed);
            match test.result {
                TestResult::Valid | TestResult::Acceptable => {
                    assert_eq!(
                        opened.as_deref().map(Vec::as_slice),
                        Some(test.pt.as_slice()),
                        "tcId {}: {}",
                        test.tc_id,
                        test.comment
                    );
                    assert_eq!(seal(&key, &nonce, &test.aad, &test.pt).unwrap(), sealed, "tcId {}", test.tc_id);
                    valid += 1;
                }
                TestResult::Invalid => {
                    assert!(opened.is_none(), "tcId {} opened: {}", test.tc_id, test.comment);
                    invalid += 1;
                }
            }
        }
    }
    // The vectors ship inside the crate: a change of version that dropped them must
    // not turn this test into a no-op.
    assert!(valid >= 30 && invalid >= 20, "only {valid} valid and {invalid} invalid cases");
}

#[test]
fn a_sealed_input_shorter_than_a_tag_does_not_open() {
    let key = [7u8; KEY_LEN];
    let nonce = [1u8; NONCE_LEN];
    for len in 0..TAG_LEN {
        assert!(open(&key, &nonce, b"", &vec![0u8; len]).is_none());
    }
}

/// A million nonces from the generator, none repeated. Takes about a second in a
/// debug build, so it runs with the others.
#[test]
fn a_million_nonces_do_not_repeat() {
    const COUNT: usize = 1_000_000;
    let mut seen = HashSet::with_capacity(COUNT);
    for _ in 0..COUNT {
        assert!(seen.insert(random_nonce().unwrap()), "a nonce repeated");
    }
    assert_eq!(seen.len(), COUNT);
}

#[test]
fn random_keys_differ() {
    assert_ne!(*random_key().unwrap(), *random_key().unwrap());
}
