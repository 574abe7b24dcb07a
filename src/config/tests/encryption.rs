//! The `encryption:` section and the projections' `decrypt:` grants.

use super::*;

const PROJECTION: &str = "projections:\n  a:\n    handler: user-profile\n    provider: local\n    \
                          config: { memory: 1MB, timeout: 1s, concurrency: 1 }\n";

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    Config::from_yaml_str(&format!("{PROJECTION}{text}"), "test.yaml", KNOWN)
}

#[test]
fn without_the_section_nothing_is_sealed_and_no_keyring_is_needed() {
    let config = parse("").unwrap();
    assert_eq!(config.encryption, EncryptionConfig::default());
    assert!(config.projections["a"].decrypt.is_empty());
}

#[test]
fn fields_subjects_grants_and_cache_are_read() {
    let config = parse(
        "    decrypt: [email, address.street]\n\
         encryption:\n  keyring_file: /run/secrets/keyring\n  fields:\n    UserRegistered: [email, address.street]\n    \
         OrderPlaced: [email]\n  subjects:\n    OrderPlaced: customer_id\n  cache: { max_age: 1m, max_uses: 5, max_entries: 9 }\n",
    )
    .unwrap();
    let e = &config.encryption;
    assert_eq!(e.keyring, Some(KeyringSource::File("/run/secrets/keyring".into())));
    assert_eq!(e.fields_of("UserRegistered"), ["email", "address.street"]);
    assert_eq!(e.fields_of("UserRenamed"), [] as [String; 0]);
    assert_eq!(e.subject_of("OrderPlaced"), &SubjectSource::Field("customer_id".into()));
    assert_eq!(e.subject_of("UserRegistered"), &SubjectSource::AggregateId);
    assert_eq!((e.cache.max_age, e.cache.max_uses, e.cache.max_entries), (Duration::from_secs(60), 5, 9));
    assert_eq!(config.projections["a"].decrypt, ["email", "address.street"]);
}

#[test]
fn a_grant_needs_a_keyring() {
    let errors =
        errors_of(&format!("{PROJECTION}    decrypt: [email]\nencryption:\n  fields:\n    UserRegistered: [email]\n"));
    assert!(
        errors.iter().any(|e| e.contains("projection a decrypts fields, but `encryption` names no keyring")),
        "{errors:?}"
    );
}

#[test]
fn a_keyring_written_into_the_file_is_never_echoed() {
    let secret = "v1:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk";
    let errors = errors_of(&format!("{PROJECTION}encryption:\n  keyring_env: \"{secret}\"\n"));
    assert!(errors.iter().all(|e| !e.contains("QUJD")), "{errors:?}");
    assert!(errors[0].contains("never the keyring itself"), "{errors:?}");
}

/// The repository's `projections.yaml` shows the section commented out (the demo needs no
/// keyring); uncommented, it is valid as written.
#[test]
fn the_commented_example_in_the_repository_file_is_valid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("projections.yaml");
    let text = std::fs::read_to_string(path).expect("projections.yaml");
    let mut out = Vec::new();
    let mut in_section = false;
    for line in text.lines() {
        in_section = in_section || line.starts_with("# encryption:");
        if in_section && line.starts_with("# ") {
            out.push(line[2..].to_owned());
        } else if line.trim_start().starts_with("# decrypt:") {
            out.push(line.replacen("# decrypt:", "decrypt:", 1));
        } else {
            out.push(line.to_owned());
        }
    }
    let config = Config::from_yaml_str(&out.join("\n"), "projections.yaml", KNOWN).expect("the example is valid");
    assert_eq!(config.encryption.keyring, Some(KeyringSource::Env("PROJECTOR_KEYRING".into())));
    assert_eq!(config.projections["user-profile"].decrypt, ["email", "name"]);
    assert_eq!(config.encryption.fields_of("UserRegistered"), ["email", "name"]);
}
