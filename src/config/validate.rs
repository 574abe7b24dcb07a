//! From the raw YAML structures to a [`Config`]: every value is checked and every
//! problem recorded, so that one run reports all of them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_saphyr::{Location, Spanned};

use super::cloudflare;
use super::error::{shown, ConfigError, ConfigErrors, Position};
use super::raw::{
    RawAlerts, RawConfig, RawDatabase, RawEvents, RawInt, RawObservability, RawProjection, RawRetry, RawUpcasting,
};
use super::syntax::{is_env_var_name, is_http_url, is_projection_name, on_failure_from_name, parse_listen};
use super::units::{format_duration, parse_duration, parse_size};
use super::{
    AlertsConfig, Config, DatabaseConfig, EventFilterConfig, ObservabilityConfig, ProjectionConfig, Provider,
    ResourceConfig, SnapshotConfig, UpcastingConfig, DEFAULT_ALERT_RETRY, DEFAULT_BATCH_SIZE, DEFAULT_CRASH_LIMIT,
    DEFAULT_GAP_TIMEOUT, DEFAULT_LEASE_TTL, DEFAULT_ON_FAILURE, DEFAULT_PARTITIONS, DEFAULT_POLL_INTERVAL,
    DEFAULT_RETRY, MAX_BATCH_SIZE, MAX_CRASH_LIMIT, MAX_PARTITIONS, MAX_RETRIES_LIMIT, MAX_SNAPSHOT_EVERY,
};
use crate::retry::RetryPolicy;

/// Validates `raw` (`None`: an empty file), read from `source`, the text of the file
/// named `file`.
pub(super) fn validate(
    raw: Option<RawConfig>,
    source: &str,
    file: &str,
    known: &Known<'_>,
) -> Result<Config, ConfigErrors> {
    let mut validator = Validator { source, file, known, errors: Vec::new() };
    let config = validator.config(raw);
    if validator.errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors::in_file_order(validator.errors))
    }
}

/// The names the file may use that the code defines.
pub(super) struct Known<'a> {
    /// Handler names (`handler:`).
    pub(super) handlers: &'a [&'a str],
    /// Event types with registered upcasters (`upcasting.event_types`).
    pub(super) upcast_event_types: &'a [&'a str],
    /// Handlers that cannot have `snapshots`.
    pub(super) unversioned_handlers: &'a [&'a str],
}

pub(super) struct Validator<'a> {
    source: &'a str,
    file: &'a str,
    known: &'a Known<'a>,
    pub(super) errors: Vec<ConfigError>,
}

impl Validator<'_> {
    pub(super) fn at(&self, location: &Location) -> Position {
        Position { file: self.file.to_owned(), line: location.line(), column: location.column() }
    }

    /// The text of the value at `location` as the file spells it, if the parser
    /// reported where it is.
    fn written(&self, location: &Location) -> Option<&str> {
        let span = location.span();
        let start = usize::try_from(span.byte_offset()?).ok()?;
        let len = usize::try_from(span.byte_len()?).ok()?;
        self.source.get(start..start.checked_add(len)?)
    }

    pub(super) fn start_of_file(&self) -> Position {
        Position { file: self.file.to_owned(), line: 1, column: 1 }
    }

    fn config(&mut self, raw: Option<RawConfig>) -> Config {
        let (database, projections, alerts, observability, upcasting, encryption) = match raw {
            Some(raw) => (raw.database, raw.projections, raw.alerts, raw.observability, raw.upcasting, raw.encryption),
            None => (None, None, None, None, None, None),
        };
        let database = self.database(database);
        let mut out = BTreeMap::new();
        let mut grants = Vec::new();
        match projections {
            Some(projections) if !projections.value.0.is_empty() => {
                for (name, mut raw) in projections.value.0 {
                    if !is_projection_name(&name.value) {
                        self.errors.push(ConfigError::InvalidProjectionName {
                            at: self.at(&name.referenced),
                            name: shown(&name.value),
                        });
                    }
                    let (decrypt, grant) = self.grant(&name.value, raw.decrypt.take().unwrap_or_default());
                    grants.push(grant);
                    if let Some(mut projection) = self.projection(&name, raw) {
                        projection.decrypt = decrypt;
                        out.insert(name.value, projection);
                    }
                }
            }
            Some(projections) => self.errors.push(ConfigError::NoProjections { at: self.at(&projections.referenced) }),
            None => self.errors.push(ConfigError::NoProjections { at: self.start_of_file() }),
        }
        let alerts = alerts.map(|raw| self.alerts(raw));
        let observability = self.observability(observability);
        let upcasting = self.upcasting(upcasting);
        let encryption = self.encryption(encryption, &grants);
        Config { database, projections: out, alerts, observability, upcasting, encryption }
    }

    fn upcasting(&mut self, raw: Option<RawUpcasting>) -> UpcastingConfig {
        let names = raw.and_then(|raw| raw.event_types).unwrap_or_default();
        let mut event_types: Vec<String> = Vec::with_capacity(names.len());
        for name in names {
            if !self.known.upcast_event_types.contains(&name.value.as_str()) {
                self.errors.push(ConfigError::UnknownUpcastEventType {
                    at: self.at(&name.referenced),
                    name: shown(&name.value),
                    known: self.known.upcast_event_types.iter().map(|t| (*t).to_owned()).collect(),
                });
            } else if !event_types.contains(&name.value) {
                event_types.push(name.value);
            }
        }
        UpcastingConfig { event_types }
    }

    fn alerts(&mut self, raw: RawAlerts) -> AlertsConfig {
        let mut alerts = AlertsConfig::new();
        if let Some(webhook) = raw.webhook {
            if is_http_url(&webhook.value) {
                alerts.webhook = Some(webhook.value);
            } else {
                self.errors.push(ConfigError::InvalidValue {
                    at: self.at(&webhook.referenced),
                    field: "webhook",
                    value: shown(&webhook.value),
                    expected: "an http:// or https:// URL with a host \
                               (e.g. http://127.0.0.1:9000/hooks/projector)",
                });
            }
        }
        if let Some(interval) = &raw.interval {
            if let Some(interval) = self.duration("interval", interval) {
                alerts.interval = interval;
            }
        }
        alerts.dead_letter_age = raw.dead_letter_age.as_ref().and_then(|value| self.duration("dead_letter_age", value));
        alerts.dead_letters = raw
            .dead_letters
            .as_ref()
            .and_then(|value| self.integer("dead_letters", value, 1, None))
            .and_then(|n| u64::try_from(n).ok());
        alerts.lag_seconds = raw
            .lag_seconds
            .as_ref()
            .and_then(|value| self.integer("lag_seconds", value, 1, None))
            .and_then(|n| u64::try_from(n).ok());
        alerts.stalled = raw.stalled.as_ref().and_then(|value| self.duration("stalled", value));
        if let Some(retry) = self.retry(raw.retry, DEFAULT_ALERT_RETRY) {
            alerts.retry = retry;
        }
        alerts
    }

    fn observability(&mut self, raw: Option<RawObservability>) -> ObservabilityConfig {
        let mut out = ObservabilityConfig::default();
        let Some(raw) = raw else {
            return out;
        };
        if let Some(listen) = raw.listen {
            match parse_listen(&listen.value) {
                Some(addr) => out.listen = addr,
                None => self.errors.push(ConfigError::InvalidValue {
                    at: self.at(&listen.referenced),
                    field: "listen",
                    value: shown(&listen.value),
                    expected: "an IP address and port (e.g. 127.0.0.1:9464, 0.0.0.0:9464, \
                               [::1]:9464, localhost:9464) or `off`",
                }),
            }
        }
        if let Some(interval) = &raw.health_interval {
            if let Some(interval) = self.duration("health_interval", interval) {
                out.health_interval = interval;
            }
        }
        out
    }

    /// A `retry:` mapping over `defaults`; `None` if anything in it was wrong (the
    /// errors are recorded).
    fn retry(&mut self, raw: Option<RawRetry>, defaults: RetryPolicy) -> Option<RetryPolicy> {
        let Some(raw) = raw else {
            return Some(defaults);
        };
        let max_retries = match &raw.max_retries {
            Some(value) => self
                .integer("retry.max_retries", value, 0, Some(i64::from(MAX_RETRIES_LIMIT)))
                .and_then(|n| u32::try_from(n).ok()),
            None => Some(defaults.max_retries),
        };
        let base = match &raw.base {
            Some(value) => self.duration("retry.base", value),
            None => Some(defaults.base),
        };
        let cap = match &raw.cap {
            Some(value) => self.duration("retry.cap", value),
            None => Some(defaults.cap),
        };
        let (base, cap) = (base?, cap?);
        if cap < base {
            // Point at whichever of the two was written (cap if both).
            let location = raw.cap.as_ref().or(raw.base.as_ref()).map(|value| value.referenced);
            self.errors.push(ConfigError::RetryCapBelowBase {
                at: location.map_or_else(|| self.start_of_file(), |l| self.at(&l)),
                cap: format_duration(cap),
                base: format_duration(base),
            });
            return None;
        }
        Some(RetryPolicy { max_retries: max_retries?, base, cap })
    }

    fn database(&mut self, raw: Option<RawDatabase>) -> DatabaseConfig {
        let mut database = DatabaseConfig::default();
        let Some(raw) = raw else {
            return database;
        };
        if let Some(name) = raw.url_env.and_then(|name| self.env_var_name("url_env", name, URL_ENV_EXPECTED)) {
            database.url_env = name;
        }
        if let Some(path) = raw.embedded_path {
            if path.value.trim().is_empty() {
                self.errors.push(ConfigError::InvalidValue {
                    at: self.at(&path.referenced),
                    field: "embedded_path",
                    value: shown(&path.value),
                    expected: "a file path (e.g. .projector/projector.db)",
                });
            } else {
                database.embedded_path = PathBuf::from(path.value);
            }
        }
        database.listen_url_env =
            raw.listen_url_env.and_then(|name| self.env_var_name("listen_url_env", name, LISTEN_URL_ENV_EXPECTED));
        database.pooled = raw.pooled.unwrap_or(false);
        database
    }

    /// `value` if it is an environment variable name, else `None` and the error recorded.
    /// A connection string written where its variable's name belongs is not echoed: it
    /// may carry a password.
    fn env_var_name(&mut self, field: &'static str, value: Spanned<String>, expected: &'static str) -> Option<String> {
        if is_env_var_name(&value.value) {
            return Some(value.value);
        }
        let url_like = ["://", "@", "="].iter().any(|mark| value.value.contains(mark));
        self.errors.push(ConfigError::InvalidValue {
            at: self.at(&value.referenced),
            field,
            value: if url_like { "<a connection string, not shown>".to_owned() } else { shown(&value.value) },
            expected: if url_like {
                "the name of the environment variable that holds the URL, not the URL itself"
            } else {
                expected
            },
        });
        None
    }

    /// The validated projection, or `None` if anything in it was wrong (the errors are
    /// recorded).
    fn projection(&mut self, name: &Spanned<String>, raw: RawProjection) -> Option<ProjectionConfig> {
        let errors_before = self.errors.len();

        if !self.known.handlers.contains(&raw.handler.value.as_str()) {
            self.errors.push(ConfigError::UnknownHandler {
                at: self.at(&raw.handler.referenced),
                name: shown(&raw.handler.value),
                known: self.known.handlers.iter().map(|h| h.to_string()).collect(),
            });
        }
        let provider = Provider::from_name(&raw.provider.value);
        if provider.is_none() {
            self.errors.push(ConfigError::UnknownProvider {
                at: self.at(&raw.provider.referenced),
                value: shown(&raw.provider.value),
            });
        }

        let memory = self.size("memory", &raw.config.memory);
        let timeout = self.duration("timeout", &raw.config.timeout);
        let concurrency = self.integer("concurrency", &raw.config.concurrency, 1, None);
        let events = self.events(raw.events);
        let batch_size = match &raw.batch_size {
            Some(value) => self.integer("batch_size", value, 1, Some(MAX_BATCH_SIZE as i64)),
            None => Some(DEFAULT_BATCH_SIZE as i64),
        };
        let partitions = match &raw.partitions {
            Some(value) => self.integer("partitions", value, 1, Some(i64::from(MAX_PARTITIONS))),
            None => Some(i64::from(DEFAULT_PARTITIONS)),
        };
        let poll_interval = match &raw.poll_interval {
            Some(value) => self.duration("poll_interval", value),
            None => Some(DEFAULT_POLL_INTERVAL),
        };
        let lease_ttl = match &raw.lease_ttl {
            Some(value) => self.duration("lease_ttl", value),
            None => Some(DEFAULT_LEASE_TTL),
        };
        // A Worker claims its leases anew at every invocation: they need to outlive the
        // invocation (checked with the Worker's other limits), not the cron period.
        let polls = provider != Some(Provider::Cloudflare);
        if let (Some(poll), Some(ttl), true) = (poll_interval, lease_ttl, polls) {
            if ttl <= poll {
                // Point at whichever of the two was written (lease_ttl if both).
                let location = raw.lease_ttl.as_ref().or(raw.poll_interval.as_ref()).map(|value| value.referenced);
                self.errors.push(ConfigError::LeaseTtlNotAbovePollInterval {
                    at: location.map_or_else(|| self.start_of_file(), |l| self.at(&l)),
                    lease_ttl: format_duration(ttl),
                    poll_interval: format_duration(poll),
                });
            }
        }

        let gap_timeout = match &raw.gap_timeout {
            Some(value) => self.duration("gap_timeout", value),
            None => Some(DEFAULT_GAP_TIMEOUT),
        };
        let crash_limit = match &raw.crash_limit {
            Some(value) => self.integer("crash_limit", value, 1, Some(i64::from(MAX_CRASH_LIMIT))),
            None => Some(i64::from(DEFAULT_CRASH_LIMIT)),
        };
        let snapshots = match &raw.snapshots {
            Some(snapshots) => {
                if self.known.unversioned_handlers.contains(&raw.handler.value.as_str()) {
                    self.errors.push(ConfigError::SnapshotsNotPerAggregate {
                        at: self.at(&snapshots.every.referenced),
                        handler: shown(&raw.handler.value),
                    });
                }
                self.integer("snapshots.every", &snapshots.every, 1, Some(i64::from(MAX_SNAPSHOT_EVERY)))
            }
            None => None,
        };
        let retry = self.retry(raw.retry, DEFAULT_RETRY);
        let on_failure = match &raw.on_failure {
            Some(value) => {
                let parsed = on_failure_from_name(&value.value);
                if parsed.is_none() {
                    self.errors.push(ConfigError::InvalidValue {
                        at: self.at(&value.referenced),
                        field: "on_failure",
                        value: shown(&value.value),
                        expected: "one of: park, stop",
                    });
                }
                parsed
            }
            None => Some(DEFAULT_ON_FAILURE),
        };

        if provider == Some(Provider::Cloudflare) {
            let written = cloudflare::Written {
                name,
                handler: &raw.handler,
                config: &raw.config,
                poll_interval: raw.poll_interval.as_ref(),
                lease_ttl: raw.lease_ttl.as_ref(),
            };
            let values = cloudflare::Values { memory, timeout, concurrency, poll_interval, lease_ttl };
            // An unknown handler is reported already; naming the projection after it helps nobody.
            let known_handler = self.known.handlers.contains(&raw.handler.value.as_str());
            let refused = cloudflare::refusals(&written, &values, known_handler, |l| self.at(l));
            self.errors.extend(refused);
        }

        if self.errors.len() != errors_before {
            return None;
        }
        // Every `Option` below is `Some` when no error was recorded; the ranges were
        // checked, so the conversions cannot fail either.
        Some(ProjectionConfig {
            handler: raw.handler.value,
            provider: provider?,
            config: ResourceConfig {
                memory_bytes: memory?,
                timeout: timeout?,
                concurrency: u32::try_from(concurrency?).ok()?,
            },
            events,
            batch_size: usize::try_from(batch_size?).ok()?,
            partitions: u32::try_from(partitions?).ok()?,
            poll_interval: poll_interval?,
            lease_ttl: lease_ttl?,
            retry: retry?,
            on_failure: on_failure?,
            gap_timeout: gap_timeout?,
            crash_limit: u32::try_from(crash_limit?).ok()?,
            decrypt: Vec::new(),
            snapshots: snapshots.and_then(|every| Some(SnapshotConfig { every: u32::try_from(every).ok()? })),
        })
    }

    fn events(&mut self, raw: Option<RawEvents>) -> EventFilterConfig {
        let Some(raw) = raw else {
            return EventFilterConfig::default();
        };
        EventFilterConfig {
            event_types: self.names("event_types", raw.event_types.unwrap_or_default()),
            aggregate_types: self.names("aggregate_types", raw.aggregate_types.unwrap_or_default()),
        }
    }

    fn names(&mut self, field: &'static str, names: Vec<Spanned<String>>) -> Vec<String> {
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if name.value.trim().is_empty() {
                self.errors.push(ConfigError::InvalidValue {
                    at: self.at(&name.referenced),
                    field,
                    value: shown(&name.value),
                    expected: "a non-empty type name (leave the list empty to read all events)",
                });
            } else {
                out.push(name.value);
            }
        }
        out
    }

    pub(super) fn duration(&mut self, field: &'static str, value: &Spanned<String>) -> Option<Duration> {
        let parsed = parse_duration(&value.value);
        if parsed.is_none() {
            self.errors.push(ConfigError::InvalidDuration {
                at: self.at(&value.referenced),
                field,
                value: shown(&value.value),
            });
        }
        parsed
    }

    fn size(&mut self, field: &'static str, value: &Spanned<String>) -> Option<u64> {
        let parsed = parse_size(&value.value);
        if parsed.is_none() {
            self.errors.push(ConfigError::InvalidSize {
                at: self.at(&value.referenced),
                field,
                value: shown(&value.value),
            });
        }
        parsed
    }

    /// What was found where a whole number belongs: a scalar as the file spells it,
    /// otherwise what kind of value it is.
    fn found(&self, value: &Spanned<RawInt>) -> String {
        let (text, is_string) = match &value.value {
            RawInt::List => return "a list".to_owned(),
            RawInt::Mapping => return "a mapping".to_owned(),
            RawInt::Null => return "nothing".to_owned(),
            RawInt::Int(number) => (number.to_string(), false),
            RawInt::Text(text) => (text.clone(), true),
            RawInt::OtherScalar(text) => (text.clone(), false),
        };
        let written = shown(self.written(&value.referenced).unwrap_or(&text));
        // YAML reads a quoted number as a string; taking it for the number would let
        // the file mean one thing here and another to every other YAML reader.
        if is_string && text.parse::<i64>().is_ok() && written.starts_with(['"', '\'']) {
            format!("the quoted string `{written}`; write numbers without quotes")
        } else {
            format!("`{written}`")
        }
    }

    /// `value` if it is a whole number in `min..=max` (`max` defaults to `u32::MAX`, the
    /// widest type these knobs are stored in).
    pub(super) fn integer(
        &mut self,
        field: &'static str,
        value: &Spanned<RawInt>,
        min: i64,
        max: Option<i64>,
    ) -> Option<i64> {
        let number = match &value.value {
            RawInt::Int(number) => Some(*number),
            _ => None,
        };
        let Some(number) = number else {
            let found = self.found(value);
            self.errors.push(ConfigError::NotAWholeNumber { at: self.at(&value.referenced), field, found });
            return None;
        };
        let limit = max.unwrap_or(i64::from(u32::MAX));
        if (min..=limit).contains(&number) {
            return Some(number);
        }
        self.errors.push(ConfigError::OutOfRange {
            at: self.at(&value.referenced),
            field,
            value: number,
            min,
            // Only mention the implicit upper bound when it is the problem.
            max: max.or((number > limit).then_some(limit)),
        });
        None
    }
}

const URL_ENV_EXPECTED: &str =
    "an environment variable name: letters, digits and `_`, not starting with a digit (e.g. DATABASE_URL)";
const LISTEN_URL_ENV_EXPECTED: &str =
    "an environment variable name: letters, digits and `_`, not starting with a digit (e.g. DATABASE_URL_DIRECT)";
