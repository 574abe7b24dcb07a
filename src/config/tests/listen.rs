//! `database.listen_url_env`: the direct URL that wake-ups are listened for on.

use super::*;

const PROJECTION: &str = "projections:\n  p:\n    handler: daily-activity\n    provider: local\n    \
                          config: { memory: 64MiB, timeout: 5m, concurrency: 2 }\n";

fn parse(database: &str) -> Result<Config, ConfigErrors> {
    Config::from_yaml_str(&format!("{database}{PROJECTION}"), "test.yaml", KNOWN)
}

#[test]
fn the_key_is_optional_and_names_a_variable() {
    assert_eq!(parse("").unwrap().database.listen_url_env, None);
    assert_eq!(parse("database:\n  pooled: true\n").unwrap().database.listen_url_env, None);
    let config = parse("database:\n  url_env: POOLED_URL\n  pooled: true\n  listen_url_env: DIRECT_URL\n").unwrap();
    assert_eq!(config.database.listen_url_env.as_deref(), Some("DIRECT_URL"));
    assert_eq!(config.database.url_env, "POOLED_URL");
    assert!(config.database.pooled);
}

#[test]
fn a_bad_variable_name_is_reported_at_its_place_together_with_other_errors() {
    let text = format!("database:\n  listen_url_env: direct-url\n  url_env: 1URL\n{PROJECTION}    batch_size: 0\n");
    let errors: Vec<String> =
        Config::from_yaml_str(&text, "test.yaml", KNOWN).unwrap_err().errors().iter().map(|e| e.to_string()).collect();
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(errors.iter().any(|e| e.starts_with("test.yaml:3:12: invalid `url_env` value `1URL`")), "{errors:#?}");
    assert!(errors.iter().any(|e| e.starts_with("test.yaml:9:17: ")), "{errors:#?}");
    assert!(
        errors.contains(
            &"test.yaml:2:19: invalid `listen_url_env` value `direct-url`: expected an environment variable name: \
              letters, digits and `_`, not starting with a digit (e.g. DATABASE_URL_DIRECT)"
                .to_owned()
        ),
        "{errors:#?}"
    );
}

#[test]
fn a_url_written_for_its_variable_is_refused_without_being_echoed() {
    for (key, column) in [("listen_url_env", 19), ("url_env", 12)] {
        let errors = parse(&format!("database:\n  {key}: postgres://u:secret@h/db\n")).unwrap_err().to_string();
        assert!(errors.contains(&format!("test.yaml:2:{column}: invalid `{key}` value")), "{errors}");
        assert!(errors.contains("not the URL itself"), "{errors}");
        assert!(!errors.contains("secret") && !errors.contains("postgres://"), "{errors}");
    }
}

#[test]
fn the_listen_url_is_looked_up_in_the_named_variable() {
    let database = DatabaseConfig { listen_url_env: Some("DIRECT_URL".to_owned()), ..DatabaseConfig::default() };
    let only = |value: &'static str| move |name: &str| (name == "DIRECT_URL").then(|| value.to_owned());
    assert_eq!(database.listen_url(only("postgres://direct/db")), Ok(Some("postgres://direct/db".to_owned())));
    assert_eq!(
        DatabaseConfig::default().listen_url(only("postgres://direct/db")),
        Ok(None),
        "nothing is looked up unless configured"
    );
}

#[test]
fn an_unset_or_empty_listen_variable_is_an_error_naming_it() {
    let database = DatabaseConfig { listen_url_env: Some("DIRECT_URL".to_owned()), ..DatabaseConfig::default() };
    let set_elsewhere = |name: &str| (name == "DATABASE_URL").then(|| "postgres://u:secret@pooler/db".to_owned());
    for lookup in [&set_elsewhere as &dyn Fn(&str) -> Option<String>, &|_: &str| Some(String::new())] {
        let error = database.listen_url(lookup).unwrap_err();
        assert_eq!(error, ListenUrlUnset { variable: "DIRECT_URL".to_owned() });
        let message = error.to_string();
        assert!(message.contains("DIRECT_URL") && message.contains("unset or empty"), "{message}");
        assert!(!message.contains("secret") && !message.contains("postgres://"), "{message}");
    }
}
