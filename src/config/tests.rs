//! Tests of the configuration parser: the paired fixtures under `tests/config`, and
//! each rule of the schema.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::syntax::{is_http_url, on_failure_from_name, parse_listen};
use super::units::format_duration;
use super::*;
use crate::event::EventFilter;
use crate::retry::RetryPolicy;

const KNOWN: &[&str] = &["user-profile", "daily-activity"];

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/config")
}

/// The `.yaml` fixtures in `tests/config/<dir>`, as `<dir>/<file>`, sorted.
fn fixture_names(dir: &str) -> Vec<String> {
    let path = fixtures_dir().join(dir);
    let mut names: Vec<String> = std::fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", path.display()))
        .map(|entry| entry.expect("directory entry").file_name().into_string().expect("a UTF-8 file name"))
        .filter(|name| name.ends_with(".yaml"))
        .map(|name| format!("{dir}/{name}"))
        .collect();
    names.sort();
    names
}

/// Parses `tests/config/<name>`, naming the file `name` in messages, as the `.err`
/// files spell it.
/// The handlers as the fixtures see them: `daily-activity` counts across aggregates.
const NAMES: crate::config::Names<'static> =
    crate::config::Names { handlers: KNOWN, upcast_event_types: &[], unversioned_handlers: &["daily-activity"] };

fn fixture(name: &str) -> Result<Config, ConfigErrors> {
    let path = fixtures_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Config::from_yaml_str_names(&text, name, &NAMES)
}

fn errors_of(text: &str) -> Vec<String> {
    match Config::from_yaml_str(text, "test.yaml", KNOWN) {
        Ok(config) => panic!("expected errors, got {config:#?}"),
        Err(errors) => errors.errors().iter().map(|e| e.to_string()).collect(),
    }
}

/// Each `invalid/<name>.yaml` is rejected with a report containing the text of
/// `invalid/<name>.err`: one error, or several consecutive ones, one per line (each
/// complete but the last, which may stop short).
#[test]
fn invalid_fixtures_fail_with_the_expected_message() {
    let names = fixture_names("invalid");
    assert!(names.len() >= 10, "expected the invalid fixtures, found {names:?}");
    let mut failures = Vec::new();
    for name in names {
        let expected_path = fixtures_dir().join(&name).with_extension("err");
        let expected =
            std::fs::read_to_string(&expected_path).unwrap_or_else(|e| panic!("{}: {e}", expected_path.display()));
        let expected = expected.trim();
        assert!(!expected.is_empty(), "{} is empty", expected_path.display());
        match fixture(&name) {
            Ok(config) => failures.push(format!("{name} was accepted: {config:?}")),
            Err(errors) => {
                let message = errors.to_string();
                if !message.contains(expected) {
                    failures.push(format!("{name}:\n  expected a message containing: {expected}\n  got: {message}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn valid_fixtures_load() {
    let names = fixture_names("valid");
    assert!(!names.is_empty());
    for name in names {
        if let Err(errors) = fixture(&name) {
            panic!("{name} was rejected:\n{errors}");
        }
    }
}

#[test]
fn repository_projections_yaml_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("projections.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let config = Config::from_yaml_str(&text, "projections.yaml", &["user-profile", "daily-activity"])
        .unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(config.projections.keys().collect::<Vec<_>>(), ["daily-activity", "user-profile"]);
    let profile = &config.projections["user-profile"];
    assert_eq!(profile.handler, "user-profile");
    assert_eq!(profile.provider, Provider::Local);
    assert_eq!(profile.config.memory_bytes, 128 << 20);
    assert_eq!(profile.config.timeout, Duration::from_secs(30));
    assert_eq!(
        profile.events.to_filter(),
        EventFilter { event_types: vec![], aggregate_types: vec!["user".into()], skip_metadata: false }
    );
    assert_eq!(config.database, DatabaseConfig::default());
    assert_eq!(profile.retry, RetryPolicy::default());
    assert_eq!(profile.on_failure, OnFailure::Park);
    let alerts = config.alerts.as_ref().expect("alerts section");
    assert_eq!(alerts.webhook, None);
    assert_eq!(alerts.stalled, Some(Duration::from_secs(120)));
    assert_eq!(config.observability, ObservabilityConfig::default());
}

#[test]
fn defaults_apply_when_keys_are_absent() {
    let config = Config::from_yaml_str(
        "projections:\n  daily-activity:\n    handler: daily-activity\n    provider: cloudflare\n    \
         config: { memory: 64MiB, timeout: 5m, concurrency: 2 }\n",
        "test.yaml",
        KNOWN,
    )
    .unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(config.database.url_env, "DATABASE_URL");
    assert_eq!(config.database.embedded_path, PathBuf::from(".projector/projector.db"));
    assert!(!config.database.pooled, "a direct connection unless told otherwise");
    let p = &config.projections["daily-activity"];
    assert_eq!(p.provider, Provider::Cloudflare);
    assert_eq!(p.config, ResourceConfig { memory_bytes: 64 << 20, timeout: Duration::from_secs(300), concurrency: 2 });
    assert_eq!(p.events, EventFilterConfig::default());
    assert_eq!(p.events.to_filter(), EventFilter::default());
    assert_eq!(p.batch_size, 1000);
    assert_eq!(p.partitions, 1);
    assert_eq!(p.poll_interval, Duration::from_millis(250));
    assert_eq!(p.lease_ttl, Duration::from_secs(10));
}

#[test]
fn every_validation_error_is_reported() {
    let errors = errors_of(
        "projections:\n\
         \x20 a:\n\
         \x20   handler: nope\n\
         \x20   provider: cloudflare\n\
         \x20   config: { memory: 1GB, timeout: soon, concurrency: 0 }\n\
         \x20   partitions: 300\n\
         \x20 b:\n\
         \x20   handler: user-profile\n\
         \x20   provider: on-prem\n\
         \x20   config: { memory: 1 MB, timeout: 30s, concurrency: 1 }\n\
         \x20   batch_size: 0\n\
         \x20   lease_ttl: 100ms\n",
    );
    let expected = [
        "test.yaml:3:14: unknown handler `nope`, expected one of: user-profile, daily-activity",
        "test.yaml:5:23: `memory` is 1GB but provider `cloudflare` allows at most 128MB",
        "test.yaml:5:37: invalid duration `soon` for `timeout`",
        "test.yaml:5:56: `concurrency` must be at least 1, got 0",
        "test.yaml:6:17: `partitions` must be between 1 and 256, got 300",
        "test.yaml:9:15: unknown provider `on-prem`, expected one of: local, cloudflare",
        "test.yaml:10:23: invalid size `1 MB` for `memory`",
        "test.yaml:11:17: `batch_size` must be between 1 and 100000, got 0",
        "test.yaml:12:16: `lease_ttl` (100ms) must be greater than `poll_interval` (250ms)",
    ];
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    for (error, expected) in errors.iter().zip(expected) {
        assert!(error.starts_with(expected), "{error}\n  should start with {expected}");
    }
}

#[test]
fn values_of_the_wrong_type_are_reported_with_the_other_errors() {
    let errors = errors_of(
        "projections:\n\
         \x20 a:\n\
         \x20   handler: nope\n\
         \x20   provider: local\n\
         \x20   config: { memory: 1MB, timeout: 1s, concurrency: 1.5 }\n\
         \x20   batch_size: [1]\n\
         \x20   partitions: yes\n\
         \x20   retry: { max_retries: ten }\n\
         \x20 b:\n\
         \x20   handler: user-profile\n\
         \x20   provider: local\n\
         \x20   config: { memory: 1MB, timeout: 1s, concurrency: }\n\
         alerts:\n\
         \x20 dead_letters: { n: 1 }\n\
         \x20 lag_seconds: 1e3\n\
         \x20 stalled: soon\n",
    );
    let expected = [
        "test.yaml:3:14: unknown handler `nope`",
        "test.yaml:5:54: invalid value: expected a whole number for `concurrency`, got `1.5`",
        "test.yaml:6:17: invalid value: expected a whole number for `batch_size`, got a list",
        "test.yaml:7:17: invalid value: expected a whole number for `partitions`, got `yes`",
        "test.yaml:8:27: invalid value: expected a whole number for `retry.max_retries`, got `ten`",
        "test.yaml:12:52: invalid value: expected a whole number for `concurrency`, got nothing",
        "test.yaml:14:17: invalid value: expected a whole number for `dead_letters`, got a mapping",
        "test.yaml:15:16: invalid value: expected a whole number for `lag_seconds`, got `1e3`",
        "test.yaml:16:12: invalid duration `soon` for `stalled`",
    ];
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    for (error, expected) in errors.iter().zip(expected) {
        assert!(error.starts_with(expected), "{error}\n  should start with {expected}");
    }
}

#[test]
fn quoted_numbers_are_not_numbers() {
    let errors = errors_of(
        "projections:\n\
         \x20 a:\n\
         \x20   handler: user-profile\n\
         \x20   provider: local\n\
         \x20   config: { memory: 1MB, timeout: 1s, concurrency: '2' }\n\
         \x20   batch_size: \"1000\"\n\
         \x20   partitions: \"four\"\n\
         \x20   retry: { max_retries: \"3\" }\n",
    );
    let expected = [
        "test.yaml:5:54: invalid value: expected a whole number for `concurrency`, got the quoted string `'2'`; \
         write numbers without quotes",
        "test.yaml:6:17: invalid value: expected a whole number for `batch_size`, got the quoted string `\"1000\"`; \
         write numbers without quotes",
        "test.yaml:7:17: invalid value: expected a whole number for `partitions`, got `\"four\"`",
        "test.yaml:8:27: invalid value: expected a whole number for `retry.max_retries`, got the quoted string \
         `\"3\"`; write numbers without quotes",
    ];
    assert_eq!(errors, expected);
}

#[test]
fn errors_display_one_per_line() {
    let errors = Config::from_yaml_str(
        "projections:\n  a:\n    handler: x\n    provider: y\n    \
         config: { memory: 1MB, timeout: 1s, concurrency: 1 }\n",
        "f.yaml",
        KNOWN,
    )
    .unwrap_err();
    let text = errors.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("f.yaml:3:14: unknown handler `x`"));
    assert!(lines[1].starts_with("f.yaml:4:15: unknown provider `y`"));
    assert_eq!(errors.errors()[0].position(), &Position { file: "f.yaml".into(), line: 3, column: 14 });
}

#[test]
fn unknown_keys_name_the_accepted_ones() {
    let errors = errors_of(
        "projections:\n  a:\n    handler: user-profile\n    provider: local\n    \
         config: { memory: 1MB, timeout: 1s, concurrency: 1 }\n    batchsize: 10\n",
    );
    assert_eq!(errors.len(), 1);
    assert!(errors[0].starts_with("test.yaml:6:5: unknown field `batchsize`, expected one of"), "{}", errors[0]);
    assert!(errors[0].contains("batch_size"), "{}", errors[0]);
}

#[test]
fn control_characters_in_values_are_escaped() {
    let errors = errors_of(
        "projections:\n  a:\n    handler: \"x\\ny\"\n    provider: local\n    \
         config: { memory: 1MB, timeout: 1s, concurrency: 1 }\n",
    );
    assert_eq!(errors.len(), 1);
    assert!(errors[0].contains("unknown handler `x\\ny`"), "{}", errors[0]);
}

#[test]
fn durations() {
    let ok = [
        ("1ms", Duration::from_millis(1)),
        ("500ms", Duration::from_millis(500)),
        ("30s", Duration::from_secs(30)),
        ("5m", Duration::from_secs(300)),
        ("1h", Duration::from_secs(3600)),
        ("90m", Duration::from_secs(5400)),
    ];
    for (text, expected) in ok {
        assert_eq!(parse_duration(text), Some(expected), "{text}");
    }
    let bad = [
        "",
        "30",
        "s",
        "0s",
        "-1s",
        "+1s",
        "1.5s",
        "30 s",
        " 30s",
        "30s ",
        "30 seconds",
        "30S",
        "1d",
        "1m30s",
        "30sec",
        "99999999999999999999h",
        "18446744073709551615h",
    ];
    for text in bad {
        assert_eq!(parse_duration(text), None, "{text:?}");
    }
}

#[test]
fn sizes() {
    let ok = [
        ("1B", 1),
        ("512KB", 512 << 10),
        ("128MB", 128 << 20),
        ("64MiB", 64 << 20),
        ("1GB", 1 << 30),
        ("2GiB", 2 << 30),
        ("3KiB", 3 << 10),
    ];
    for (text, expected) in ok {
        assert_eq!(parse_size(text), Some(expected), "{text}");
    }
    let bad = [
        "",
        "lots",
        "128",
        "MB",
        "0MB",
        "-1MB",
        "1.5GB",
        "128 MB",
        "128mb",
        "128M",
        "1TB",
        "1kB",
        "18446744073709551615GB",
    ];
    for text in bad {
        assert_eq!(parse_size(text), None, "{text:?}");
    }
}

#[test]
fn durations_are_shown_in_their_largest_exact_unit() {
    assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
    assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    assert_eq!(format_duration(Duration::from_secs(10)), "10s");
    assert_eq!(format_duration(Duration::from_secs(120)), "2m");
    assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
}

#[test]
fn retry_alerts_and_observability_defaults() {
    let config = Config::from_yaml_str(
        "projections:\n  p:\n    handler: daily-activity\n    provider: local\n    \
         config: { memory: 64MiB, timeout: 5m, concurrency: 2 }\n",
        "test.yaml",
        KNOWN,
    )
    .unwrap_or_else(|errors| panic!("{errors}"));
    let p = &config.projections["p"];
    assert_eq!(p.retry, RetryPolicy::default());
    assert_eq!(p.retry, DEFAULT_RETRY);
    assert_eq!(p.on_failure, OnFailure::Park);
    assert_eq!(p.gap_timeout, DEFAULT_GAP_TIMEOUT);
    assert_eq!(p.crash_limit, DEFAULT_CRASH_LIMIT);
    assert_eq!(p.snapshots, None, "no snapshots unless asked for");
    assert_eq!(config.alerts, None);
    assert_eq!(
        config.observability,
        ObservabilityConfig {
            listen: Some("127.0.0.1:9464".parse().unwrap()),
            health_interval: Duration::from_secs(30),
        }
    );

    let config = Config::from_yaml_str(
        "projections:\n  p:\n    handler: daily-activity\n    provider: local\n    \
         config: { memory: 64MiB, timeout: 5m, concurrency: 2 }\n    \
         retry: { cap: 1m }\n    gap_timeout: 200ms\n    crash_limit: 5\n    snapshots: { every: 10 }\nalerts:\nobservability:\n",
        "test.yaml",
        KNOWN,
    )
    .unwrap_or_else(|errors| panic!("{errors}"));
    let p = &config.projections["p"];
    assert_eq!((p.gap_timeout, p.crash_limit), (Duration::from_millis(200), 5));
    assert_eq!(p.snapshots, Some(crate::config::SnapshotConfig { every: 10 }));
    assert_eq!(p.retry, RetryPolicy { max_retries: 3, base: Duration::from_millis(100), cap: Duration::from_secs(60) });
    // `alerts:` with nothing under it is "absent"; so is `observability:`.
    assert_eq!(config.alerts, None);
    assert_eq!(config.observability, ObservabilityConfig::default());
}

#[test]
fn alerts_and_observability_keys_parse() {
    let config = fixture("valid/alerts-and-observability.yaml").unwrap_or_else(|errors| panic!("{errors}"));
    let profile = &config.projections["user-profile"];
    assert_eq!(
        profile.retry,
        RetryPolicy { max_retries: 20, base: Duration::from_millis(100), cap: Duration::from_millis(100) }
    );
    assert_eq!(profile.on_failure, OnFailure::Stop);
    let daily = &config.projections["daily-activity"];
    assert_eq!(daily.retry.max_retries, 0);
    assert_eq!(daily.retry.base, DEFAULT_RETRY.base);
    assert_eq!(daily.on_failure, OnFailure::Park);
    assert_eq!(
        config.alerts,
        Some(AlertsConfig {
            webhook: Some("https://alerts.example.com:8443/hooks/projector?team=data".into()),
            interval: Duration::from_secs(5),
            dead_letter_age: Some(Duration::from_secs(600)),
            dead_letters: Some(1),
            lag_seconds: Some(300),
            stalled: Some(Duration::from_secs(120)),
            retry: RetryPolicy { max_retries: 5, base: Duration::from_secs(1), cap: Duration::from_secs(60) },
        })
    );
    assert_eq!(
        config.observability,
        ObservabilityConfig { listen: Some("[::1]:9464".parse().unwrap()), health_interval: Duration::from_secs(30) }
    );

    let config = fixture("valid/alerts-log-only.yaml").unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(config.alerts, Some(AlertsConfig { stalled: Some(Duration::from_secs(60)), ..AlertsConfig::default() }));
    assert_eq!(config.observability.listen, None);
}

#[test]
fn every_alerting_error_is_reported() {
    let errors = errors_of(
        "projections:\n\
         \x20 a:\n\
         \x20   handler: user-profile\n\
         \x20   provider: local\n\
         \x20   config: { memory: 1MB, timeout: 1s, concurrency: 1 }\n\
         \x20   retry: { max_retries: 99, base: 5s, cap: 1s }\n\
         \x20   on_failure: skip\n\
         alerts:\n\
         \x20 webhook: localhost:9000\n\
         \x20 interval: 5\n\
         \x20 dead_letters: 0\n\
         \x20 lag_seconds: 0\n\
         \x20 retry: { max_retries: -1, cap: 1ms }\n\
         observability:\n\
         \x20 listen: 127.0.0.1\n\
         \x20 health_interval: 0s\n",
    );
    let expected = [
        "test.yaml:6:27: `retry.max_retries` must be between 0 and 20, got 99",
        "test.yaml:6:46: `retry.cap` (1s) must be at least `retry.base` (5s)",
        "test.yaml:7:17: invalid `on_failure` value `skip`: expected one of: park, stop",
        "test.yaml:9:12: invalid `webhook` value `localhost:9000`",
        "test.yaml:10:13: invalid duration `5` for `interval`",
        "test.yaml:11:17: `dead_letters` must be at least 1, got 0",
        "test.yaml:12:16: `lag_seconds` must be at least 1, got 0",
        "test.yaml:13:25: `retry.max_retries` must be between 0 and 20, got -1",
        "test.yaml:13:34: `retry.cap` (1ms) must be at least `retry.base` (1s)",
        "test.yaml:15:11: invalid `listen` value `127.0.0.1`",
        "test.yaml:16:20: invalid duration `0s` for `health_interval`",
    ];
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    for (error, expected) in errors.iter().zip(expected) {
        assert!(error.starts_with(expected), "{error}\n  should start with {expected}");
    }
}

#[test]
fn webhook_urls() {
    let ok = [
        "http://127.0.0.1:9000/hooks/projector",
        "https://alerts.example.com/x?y=z#f",
        "http://localhost",
        "HTTPS://Example.COM:443",
        "http://[::1]:9000/hooks",
        "http://user:secret@hooks.internal:8080/",
        "http://my_host.local./p",
    ];
    for url in ok {
        assert!(is_http_url(url), "{url} should be accepted");
    }
    let bad = [
        "",
        "127.0.0.1:9000",
        "localhost:9000/hooks",
        "ftp://example.com/",
        "http://",
        "http:///hooks",
        "http://:9000/hooks",
        "http://host:/x",
        "http://host:0/x",
        "http://host:65536/x",
        "http://host:port/x",
        "http://exa mple.com/",
        "http://example.com/a b",
        "http://a..b/",
        "http://-a.com/",
        "http://[::1/x",
        "http://[nope]:80/",
        "http://[::1]x/",
        "https//example.com",
    ];
    for url in bad {
        assert!(!is_http_url(url), "{url:?} should be rejected");
    }
}

#[test]
fn listen_addresses() {
    assert_eq!(parse_listen("off"), Some(None));
    assert_eq!(parse_listen("0.0.0.0:9464"), Some(Some("0.0.0.0:9464".parse().unwrap())));
    assert_eq!(parse_listen("localhost:80"), Some(Some("127.0.0.1:80".parse().unwrap())));
    assert_eq!(parse_listen("[::]:1"), Some(Some("[::]:1".parse().unwrap())));
    for bad in ["", "Off", "9464", ":9464", "localhost", "localhost:", "localhost:x", "host:1", "127.0.0.1:99999"] {
        assert_eq!(parse_listen(bad), None, "{bad:?}");
    }
}

#[test]
fn on_failure_names() {
    assert_eq!(on_failure_from_name("park"), Some(OnFailure::Park));
    assert_eq!(on_failure_from_name("stop"), Some(OnFailure::Stop));
    assert_eq!(on_failure_from_name("Stop"), None);
    assert_eq!(OnFailure::default(), OnFailure::Park);
}

#[test]
fn provider_names() {
    assert_eq!(Provider::from_name("local"), Some(Provider::Local));
    assert_eq!(Provider::from_name("cloudflare"), Some(Provider::Cloudflare));
    assert_eq!(Provider::from_name("Cloudflare"), None);
    assert_eq!(Provider::Cloudflare.to_string(), "cloudflare");
}

#[test]
fn database_url_looks_up_the_named_variable() {
    let database = DatabaseConfig { url_env: "STORE_URL".to_owned(), ..DatabaseConfig::default() };
    let only = |value: &'static str| move |name: &str| (name == "STORE_URL").then(|| value.to_owned());
    assert_eq!(database.url(only("postgres://localhost/projector")).as_deref(), Some("postgres://localhost/projector"));
    assert_eq!(database.url(only("")), None, "an empty value means unset");
    assert_eq!(database.url(|_| None), None);
    let default = DatabaseConfig::default();
    assert_eq!(default.url(only("postgres://elsewhere")), None, "only `url_env` is looked up");
    assert_eq!(
        default.url(|name| (name == "DATABASE_URL").then(|| "postgres://db".to_owned())).as_deref(),
        Some("postgres://db")
    );
}

#[test]
fn a_pooled_database_is_read() {
    let config = Config::from_yaml_str(
        "database:\n  pooled: true\nprojections:\n  p:\n    handler: daily-activity\n    provider: local\n    \
         config: { memory: 64MiB, timeout: 5m, concurrency: 2 }\n",
        "test.yaml",
        KNOWN,
    )
    .unwrap_or_else(|errors| panic!("{errors}"));
    assert!(config.database.pooled);
}

mod encryption;
mod listen;
mod upcasting;
