//! The `upcasting:` section: event types whose upcaster chains run.

use super::*;

const UPCASTABLE: &[&str] = &["UserRegistered", "MemberJoined"];

const PROJECTION: &str = "projections:\n  a:\n    handler: user-profile\n    provider: local\n    \
                          config: { memory: 1MB, timeout: 1s, concurrency: 1 }\n";

fn parse(upcasting: &str) -> Result<Config, ConfigErrors> {
    Config::from_yaml_str_upcasting(&format!("{PROJECTION}{upcasting}"), "test.yaml", KNOWN, UPCASTABLE)
}

#[test]
fn the_section_is_optional_and_lists_registered_types_once() {
    assert_eq!(parse("").unwrap().upcasting, UpcastingConfig::default());
    assert_eq!(parse("upcasting:\n").unwrap().upcasting, UpcastingConfig::default());
    let config = parse("upcasting:\n  event_types: [MemberJoined, UserRegistered, MemberJoined]\n").unwrap();
    assert_eq!(config.upcasting.event_types, ["MemberJoined", "UserRegistered"]);
}

#[test]
fn an_unknown_type_is_named_at_its_place_together_with_other_errors() {
    let text = format!("{PROJECTION}    batch_size: 0\nupcasting:\n  event_types: [UserRegistered, UserSignedUp]\n");
    let errors: Vec<String> = Config::from_yaml_str_upcasting(&text, "test.yaml", KNOWN, UPCASTABLE)
        .unwrap_err()
        .errors()
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(errors[0].starts_with("test.yaml:6:17: "), "{}", errors[0]);
    assert_eq!(
        errors[1],
        "test.yaml:8:33: upcasting is enabled for event type `UserSignedUp`, but no upcaster is registered for \
         it; event types with upcasters: UserRegistered, MemberJoined"
    );
}

#[test]
fn without_registered_upcasters_any_type_is_unknown() {
    let text = format!("{PROJECTION}upcasting: {{ event_types: [UserRegistered] }}\n");
    let errors = Config::from_yaml_str(&text, "test.yaml", KNOWN).unwrap_err().to_string();
    assert!(errors.contains("`UserRegistered`, but no upcaster is registered"), "{errors}");
    assert!(errors.ends_with("event types with upcasters: none"), "{errors}");
}

#[test]
fn unknown_keys_in_the_section_are_refused() {
    let errors = parse("upcasting:\n  types: [UserRegistered]\n").unwrap_err().to_string();
    assert!(errors.contains("unknown field `types`"), "{errors}");
}
