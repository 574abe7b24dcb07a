//! Sealing and opening fields by path, redaction, and payloads that disagree with
//! their listing.

use serde_json::json;

use super::*;

const DEK_VERSION: u32 = 3;

fn event() -> EventContext<'static> {
    EventContext {
        aggregate_type: "user",
        aggregate_id: Uuid::from_u128(0x6f1c_2a3e_0000_4000_8000_0000_0000_0001),
        event_type: "UserRegistered",
        version: 4,
    }
}

fn dek() -> Dek {
    Dek::from_bytes([0x24; 32])
}

fn payload() -> Value {
    json!({
        "email": "ada@example.com",
        "name": "Ada",
        "plan": "free",
        "age": 36,
        "address": {"street": "1 Main St", "city": "London", "geo": {"lat": 51.5}},
        "tags": ["a", "b"]
    })
}

fn sealed(paths: &[&str]) -> (Value, Vec<String>) {
    let mut value = payload();
    let listed = encrypt_paths(&mut value, paths, &event(), &dek(), DEK_VERSION).unwrap();
    (value, listed)
}

fn key_for(version: u32) -> Result<Option<Dek>, CryptoError> {
    Ok((version == DEK_VERSION).then(dek))
}

#[test]
fn fields_round_trip_in_place_and_the_rest_is_untouched() {
    let (mut value, listed) = sealed(&["email", "age", "address.street", "address.geo", "tags"]);
    assert_eq!(listed, ["email", "age", "address.street", "address.geo", "tags"]);
    for path in ["email", "age", "tags"] {
        assert!(is_envelope(value[path].as_str().unwrap()), "{path}");
    }
    assert!(is_envelope(value["address"]["street"].as_str().unwrap()));
    assert!(is_envelope(value["address"]["geo"].as_str().unwrap()));
    assert_eq!(value["name"], "Ada");
    assert_eq!(value["address"]["city"], "London");
    check_encrypted_fields(&value, &listed).unwrap();

    let outcome = decrypt_paths(&mut value, &listed, &event(), key_for).unwrap();
    assert_eq!(outcome.decrypted, listed);
    assert!(outcome.redacted.is_empty());
    assert_eq!(value, payload());
}

#[test]
fn a_field_is_bound_to_its_own_path_and_event() {
    let (mut value, listed) = sealed(&["email", "name"]);
    let email = value["email"].clone();
    value["name"] = email;
    let err = decrypt_paths(&mut value.clone(), &listed, &event(), key_for).unwrap_err();
    assert_eq!(err, CryptoError::Authentication { what: "envelope" });
    let later = EventContext { version: 5, ..event() };
    let (value, listed) = sealed(&["email"]);
    let err = decrypt_paths(&mut value.clone(), &listed, &later, key_for).unwrap_err();
    assert_eq!(err, CryptoError::Authentication { what: "envelope" });
}

#[test]
fn absent_fields_are_skipped_and_not_listed() {
    let (value, listed) = sealed(&["phone", "email", "address.zip", "billing.street"]);
    assert_eq!(listed, ["email"]);
    assert!(value.get("phone").is_none());
    let mut with_null = json!({"email": null, "address": null});
    let listed = encrypt_paths(&mut with_null, &["email", "address.street"], &event(), &dek(), 1).unwrap();
    assert_eq!(listed, ["email"], "a null value is sealed, a null parent has nothing under it");
}

#[test]
fn a_key_the_reader_lacks_reads_as_redacted() {
    let (mut value, listed) = sealed(&["email", "address.street"]);
    let mut asked = Vec::new();
    let outcome = decrypt_paths(&mut value, &listed, &event(), |v| {
        asked.push(v);
        Ok(None)
    })
    .unwrap();
    assert_eq!(asked, [DEK_VERSION], "one question per version");
    assert_eq!(outcome.redacted, listed);
    assert_eq!(value["email"], REDACTED);
    assert_eq!(value["address"]["street"], json!("[redacted]"));
    assert_eq!(value["name"], "Ada");
}

#[test]
fn redact_paths_needs_no_key() {
    let (mut value, listed) = sealed(&["email"]);
    redact_paths(&mut value, &listed).unwrap();
    assert_eq!(value["email"], redacted());
    assert_eq!(
        redact_paths(&mut payload(), &["email"]).unwrap_err(),
        CryptoError::NotEncrypted { path: "email".into() }
    );
}

#[test]
fn a_failure_leaves_the_payload_as_it_was() {
    let (value, listed) = sealed(&["email", "name"]);
    let mut damaged = value.clone();
    let name = damaged["name"].as_str().unwrap().to_owned();
    let flipped = if &name[40..41] == "A" { "B" } else { "A" };
    damaged["name"] = json!(format!("{}{flipped}{}", &name[..40], &name[41..]));
    let before = damaged.clone();
    assert!(decrypt_paths(&mut damaged, &listed, &event(), key_for).is_err());
    assert_eq!(damaged, before, "the email was not opened alone");

    let mut value = payload();
    let err = encrypt_paths(&mut value, &["email", "plan.tier"], &event(), &dek(), 1).unwrap_err();
    assert!(matches!(err, CryptoError::InvalidPath { .. }), "{err:?}");
    assert_eq!(value, payload(), "the email was not sealed alone");
}

#[test]
fn key_lookup_errors_propagate() {
    let (mut value, listed) = sealed(&["email"]);
    let err = decrypt_paths(&mut value, &listed, &event(), |version| Err(CryptoError::UnknownDekVersion { version }))
        .unwrap_err();
    assert_eq!(err, CryptoError::UnknownDekVersion { version: DEK_VERSION });
}

#[test]
fn a_listed_field_that_is_not_an_envelope_is_an_error() {
    let (value, _) = sealed(&["email"]);
    assert_eq!(
        check_encrypted_fields(&value, &["email", "name"]).unwrap_err(),
        CryptoError::NotEncrypted { path: "name".into() }
    );
    assert_eq!(
        check_encrypted_fields(&value, &["email", "phone"]).unwrap_err(),
        CryptoError::MissingField { path: "phone".into() }
    );
    let mut redacted_payload = value.clone();
    redacted_payload["email"] = redacted();
    assert_eq!(
        check_encrypted_fields(&redacted_payload, &["email"]).unwrap_err(),
        CryptoError::NotEncrypted { path: "email".into() }
    );
    let mut plain = payload();
    let err = decrypt_paths(&mut plain, &["email"], &event(), key_for).unwrap_err();
    assert_eq!(err, CryptoError::NotEncrypted { path: "email".into() }, "never read as plaintext");
}

#[test]
fn an_envelope_at_an_unlisted_path_is_an_error() {
    let (value, _) = sealed(&["email", "address.street"]);
    assert_eq!(
        check_encrypted_fields(&value, &["email"]).unwrap_err(),
        CryptoError::UnlistedEnvelope { path: "address.street".into() }
    );
    let envelope = value["email"].clone();
    let nested = json!({"email": envelope.clone(), "contacts": [{"email": envelope.clone()}]});
    assert_eq!(
        check_encrypted_fields(&nested, &["email"]).unwrap_err(),
        CryptoError::UnlistedEnvelope { path: "contacts[0].email".into() }
    );
    let empty: &[&str] = &[];
    assert_eq!(
        check_encrypted_fields(&json!({"a": {"b": [1, envelope]}}), empty).unwrap_err(),
        CryptoError::UnlistedEnvelope { path: "a.b[1]".into() }
    );
    check_encrypted_fields(&payload(), empty).unwrap();
}

#[test]
fn a_payload_that_already_holds_an_envelope_is_not_sealed_again() {
    let (mut value, _) = sealed(&["email"]);
    let err = encrypt_paths(&mut value, &["email"], &event(), &dek(), 1).unwrap_err();
    assert_eq!(err, CryptoError::UnlistedEnvelope { path: "email".into() });
}

#[test]
fn malformed_path_lists_are_refused() {
    let cases: &[&[&str]] = &[
        &[""],
        &["address."],
        &[".email"],
        &["address..street"],
        &["email", "email"],
        &["address", "address.street"],
        &["address.street", "address"],
        &["plan.tier"],
        &["tags.first"],
    ];
    for paths in cases {
        let err = check_encrypted_fields(&payload(), paths).unwrap_err();
        assert!(matches!(err, CryptoError::InvalidPath { .. }), "{paths:?}: {err:?}");
        let err = encrypt_paths(&mut payload(), paths, &event(), &dek(), 1).unwrap_err();
        assert!(matches!(err, CryptoError::InvalidPath { .. }), "{paths:?}: {err:?}");
    }
    let err = encrypt_paths(&mut json!(["email"]), &["email"], &event(), &dek(), 1).unwrap_err();
    assert!(err.to_string().contains("the payload is not an object"), "{err}");
    // Keys that merely share a prefix do not overlap.
    encrypt_paths(&mut json!({"addr": 1, "address": 2}), &["addr", "address"], &event(), &dek(), 1).unwrap();
}

#[test]
fn a_deep_payload_is_walked_without_recursion() {
    let mut deep = json!("leaf");
    for _ in 0..100_000 {
        deep = Value::Array(vec![deep]);
    }
    let empty: &[&str] = &[];
    check_encrypted_fields(&deep, empty).unwrap();
    // Dropping such a value recurses inside serde_json; take it apart by hand.
    let mut current = deep;
    while let Value::Array(mut items) = current {
        current = items.pop().unwrap_or(Value::Null);
    }
}

#[test]
fn the_event_context_comes_from_a_stored_event() {
    let stored = crate::DomainEvent {
        position: 1,
        transaction_id: 1,
        event_id: Uuid::nil(),
        aggregate_id: event().aggregate_id,
        aggregate_type: "user".into(),
        event_type: "UserRegistered".into(),
        event_data: serde_json::value::RawValue::from_string("{}".into()).unwrap(),
        metadata: serde_json::value::RawValue::from_string("{}".into()).unwrap(),
        version: 4,
        timestamp: chrono::DateTime::UNIX_EPOCH,
        encrypted_fields: vec![],
    };
    assert_eq!(EventContext::of(&stored), event());
    assert_eq!(event().field("email").path, "email");
}
