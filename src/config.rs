//! `projections.yaml`: which projections run, on which provider, with which limits and
//! runtime knobs.
//!
//! The file is parsed with `serde-saphyr` into private "raw" structs that keep the
//! source location of every value, then validated as a whole: every problem found
//! (unknown handler, bad duration, limit exceeded, ...) is reported, not only the first,
//! each as `file:line:column: message`. Only a file that is not valid YAML, or whose
//! shape does not match the schema (unknown key, missing key, wrong type), stops at the
//! first error, because the parser cannot go on past it.
//!
//! ```yaml
//! database:                          # optional
//!   url_env: DATABASE_URL            # env var holding the PostgreSQL URL (default)
//!   embedded_path: .projector/projector.db   # used when that var is unset (default)
//! projections:
//!   user-profile:                    # projection name: [a-z0-9-]+
//!     handler: user-profile          # a known handler name
//!     provider: local                # local | cloudflare
//!     config: { memory: 128MB, timeout: 30s, concurrency: 1 }
//!     events:                        # optional; empty or absent lists mean "all"
//!       event_types: [UserRegistered]
//!       aggregate_types: [user]
//!     batch_size: 1000               # optional, 1..=100000
//!     partitions: 1                  # optional, 1..=256
//!     poll_interval: 250ms           # optional
//!     lease_ttl: 10s                 # optional, must be > poll_interval
//!     retry:                         # optional: retries of a failing event
//!       max_retries: 3               #   0..=20 (default 3)
//!       base: 100ms                  #   first backoff ceiling (default 100ms)
//!       cap: 10s                     #   largest backoff (default 10s), >= base
//!     on_failure: park               # optional: park | stop (default park)
//! alerts:                            # optional; absent = no alerting
//!   webhook: http://127.0.0.1:9000/hooks/projector   # optional http(s) URL; absent = log only
//!   interval: 5s                     # evaluation period (default 5s)
//!   dead_letter_age: 10m             # each threshold is optional; absent = not checked
//!   dead_letters: 1                  #   open dead letters >= this count (>= 1)
//!   lag_seconds: 300                 #   a partition's lag above this many seconds (>= 1)
//!   stalled: 2m                      #   lag > 0 and no batch committed for this long
//!   retry: { max_retries: 5, base: 1s, cap: 1m }     # webhook delivery (these defaults)
//! observability:                     # optional
//!   listen: 127.0.0.1:9464           # /metrics and /health (default); `off` disables
//!   health_interval: 30s             # a partition loop silent this long is unhealthy
//! ```
//!
//! Durations are a positive integer followed by `ms`, `s`, `m` or `h`. Sizes are a
//! positive integer followed by `B`, `KB`, `MB`, `GB`, `KiB`, `MiB` or `GiB`; as for
//! memory limits elsewhere (Lambda, Workers), `KB`/`MB`/`GB` are 1024-based, so `128MB`
//! and `128MiB` are the same size.
//!
//! Parsing does no I/O, so this module builds for `wasm32-unknown-unknown`; only
//! [`Config::load`] reads a file and [`DatabaseConfig::url`] reads the environment.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::{Location, MessageFormatter, Spanned};

/// What a projection does with an event whose retries are exhausted (`on_failure:`):
/// `park` (default) or `stop`. The runtime's own type, re-exported here.
pub use crate::dead_letter::OnFailure;
use crate::event::EventFilter;
use crate::retry::RetryPolicy;

/// Default for [`DatabaseConfig::url_env`].
pub const DEFAULT_URL_ENV: &str = "DATABASE_URL";
/// Default for [`DatabaseConfig::embedded_path`].
pub const DEFAULT_EMBEDDED_PATH: &str = ".projector/projector.db";
/// Default for [`ProjectionConfig::batch_size`].
pub const DEFAULT_BATCH_SIZE: usize = 1000;
/// Largest accepted [`ProjectionConfig::batch_size`].
pub const MAX_BATCH_SIZE: usize = 100_000;
/// Default for [`ProjectionConfig::partitions`].
pub const DEFAULT_PARTITIONS: u32 = 1;
/// Largest accepted [`ProjectionConfig::partitions`].
pub const MAX_PARTITIONS: u32 = 256;
/// Default for [`ProjectionConfig::poll_interval`].
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Default for [`ProjectionConfig::lease_ttl`].
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);
/// Largest accepted `retry.max_retries` (projections and alert delivery).
pub const MAX_RETRIES_LIMIT: u32 = 20;
/// Default for [`ProjectionConfig::retry`].
pub const DEFAULT_RETRY: RetryPolicy =
    RetryPolicy { max_retries: 3, base: Duration::from_millis(100), cap: Duration::from_secs(10) };
/// Default for [`ProjectionConfig::on_failure`].
pub const DEFAULT_ON_FAILURE: OnFailure = OnFailure::Park;
/// Default for [`AlertsConfig::interval`].
pub const DEFAULT_ALERT_INTERVAL: Duration = Duration::from_secs(5);
/// Default for [`AlertsConfig::retry`] (webhook delivery).
pub const DEFAULT_ALERT_RETRY: RetryPolicy =
    RetryPolicy { max_retries: 5, base: Duration::from_secs(1), cap: Duration::from_secs(60) };
/// Default for [`ObservabilityConfig::listen`].
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 9464));
/// Default for [`ObservabilityConfig::health_interval`].
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(30);
/// Largest `config.memory` accepted with `provider: cloudflare` (Workers limit, 128MB).
pub const CLOUDFLARE_MAX_MEMORY_BYTES: u64 = 128 * 1024 * 1024;
/// Largest `config.timeout` accepted with `provider: cloudflare` (Workers limit, 5m).
pub const CLOUDFLARE_MAX_TIMEOUT: Duration = Duration::from_secs(5 * 60);

const DURATION_FORMS: &str = "a positive integer followed by ms, s, m or h (e.g. 500ms, 30s, 5m, 1h)";
const SIZE_FORMS: &str =
    "a positive integer followed by B, KB, MB, GB, KiB, MiB or GiB (e.g. 512KB, 128MB, 64MiB, 1GB)";

// ---------------------------------------------------------------------------------------
// Public configuration types
// ---------------------------------------------------------------------------------------

/// The whole validated `projections.yaml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where the event store lives (optional in the file).
    pub database: DatabaseConfig,
    /// Projections by name; never empty.
    pub projections: BTreeMap<String, ProjectionConfig>,
    /// Alerting (`alerts:`); `None` when the section is absent.
    pub alerts: Option<AlertsConfig>,
    /// The `/metrics` and `/health` endpoint (`observability:`; defaults when absent).
    pub observability: ObservabilityConfig,
}

/// Which event store to use: PostgreSQL when the env var named `url_env` is set,
/// the embedded store at `embedded_path` otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    /// Name of the environment variable holding the PostgreSQL URL.
    pub url_env: String,
    /// Embedded store file used when that variable is unset or empty.
    pub embedded_path: PathBuf,
}

/// One projection: its handler, where it runs, and the runtime knobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionConfig {
    /// Name of the handler (one of the known handlers given to the loader).
    pub handler: String,
    /// Where the handler runs.
    pub provider: Provider,
    /// Resource limits of one handler instance.
    pub config: ResourceConfig,
    /// Which events the projection reads (narrows the handler's own filter).
    pub events: EventFilterConfig,
    /// Events per batch (one read-model transaction), 1..=100000.
    pub batch_size: usize,
    /// Number of partitions processed in parallel, 1..=256.
    pub partitions: u32,
    /// How long to wait before polling again when the store had no new events.
    pub poll_interval: Duration,
    /// How long a partition lease lives without renewal; always > `poll_interval`.
    pub lease_ttl: Duration,
    /// Retries of a failing event (full-jitter backoff) before `on_failure` applies;
    /// `max_retries` is 0..=20 and `cap >= base`.
    pub retry: RetryPolicy,
    /// What happens to an event that still fails after its retries.
    pub on_failure: OnFailure,
}

/// The optional `alerts:` section: when to raise an incident, and where to send it.
///
/// Every threshold is optional; `None` means that condition is not checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertsConfig {
    /// `http://` or `https://` URL receiving one JSON POST when an incident fires and
    /// one when it resolves; `None`: incidents are only logged.
    pub webhook: Option<String>,
    /// How often the conditions are evaluated (default 5s).
    pub interval: Duration,
    /// Alert when the oldest open dead letter of a projection is older than this.
    pub dead_letter_age: Option<Duration>,
    /// Alert when a projection has at least this many open dead letters (>= 1).
    pub dead_letters: Option<u64>,
    /// Alert when a partition's lag exceeds this many seconds (>= 1).
    pub lag_seconds: Option<u64>,
    /// Alert when a projection is not progressing: lag > 0 and no batch committed for
    /// this long, or a partition is stopped or failed.
    pub stalled: Option<Duration>,
    /// Backoff for webhook delivery (default 5 retries, base 1s, cap 1m).
    pub retry: RetryPolicy,
}

impl AlertsConfig {
    /// An `alerts:` section with only the defaults: no webhook, no threshold.
    pub fn new() -> AlertsConfig {
        AlertsConfig {
            webhook: None,
            interval: DEFAULT_ALERT_INTERVAL,
            dead_letter_age: None,
            dead_letters: None,
            lag_seconds: None,
            stalled: None,
            retry: DEFAULT_ALERT_RETRY,
        }
    }
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig::new()
    }
}

/// The optional `observability:` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObservabilityConfig {
    /// Where `/metrics` and `/health` are served; `None` when `listen: off`.
    pub listen: Option<SocketAddr>,
    /// A partition whose worker loop has not heart-beaten for this long is unhealthy.
    pub health_interval: Duration,
}

impl Default for ObservabilityConfig {
    fn default() -> Self {
        ObservabilityConfig { listen: Some(DEFAULT_LISTEN), health_interval: DEFAULT_HEALTH_INTERVAL }
    }
}

/// Where a projection handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Provider {
    /// In the local runner's process.
    Local,
    /// As a Cloudflare Worker (memory <= 128MB, timeout <= 5m).
    Cloudflare,
}

impl Provider {
    /// Every provider, in the order shown in error messages.
    pub const ALL: [Provider; 2] = [Provider::Local, Provider::Cloudflare];

    /// The name used in `projections.yaml` (`local`, `cloudflare`).
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Local => "local",
            Provider::Cloudflare => "cloudflare",
        }
    }

    /// The provider spelled `name` in `projections.yaml`, if any.
    pub fn from_name(name: &str) -> Option<Provider> {
        Self::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Resource limits of one handler instance (`config:` in the file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceConfig {
    /// Memory limit in bytes (`memory: 128MB`).
    pub memory_bytes: u64,
    /// Time limit for one batch (`timeout: 30s`).
    pub timeout: Duration,
    /// Handler instances running at once, >= 1.
    pub concurrency: u32,
}

/// The optional `events:` filter; an empty list means "all".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilterConfig {
    /// Event types read; empty = all.
    pub event_types: Vec<String>,
    /// Aggregate types read; empty = all.
    pub aggregate_types: Vec<String>,
}

impl EventFilterConfig {
    /// The store-level filter this configuration describes.
    pub fn to_filter(&self) -> EventFilter {
        EventFilter {
            event_types: self.event_types.clone(),
            aggregate_types: self.aggregate_types.clone(),
            skip_metadata: false,
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig { url_env: DEFAULT_URL_ENV.to_owned(), embedded_path: PathBuf::from(DEFAULT_EMBEDDED_PATH) }
    }
}

impl DatabaseConfig {
    /// The PostgreSQL URL from the environment variable `url_env`; `None` when it is
    /// unset, empty or not Unicode (then the embedded store is used). Always `None` on
    /// targets without an environment (wasm32-unknown-unknown).
    pub fn url(&self) -> Option<String> {
        std::env::var(&self.url_env).ok().filter(|url| !url.is_empty())
    }
}

impl Config {
    /// Parses and validates `text`, the contents of the file named `file` (used only in
    /// messages). `known_handlers` are the handler names a projection may use.
    ///
    /// All validation errors are returned together; a YAML syntax or schema error
    /// (unknown key, wrong type) is returned alone.
    pub fn from_yaml_str(text: &str, file: &str, known_handlers: &[&str]) -> Result<Config, ConfigErrors> {
        let raw = match serde_saphyr::from_str::<Option<RawConfig>>(text) {
            Ok(raw) => raw,
            Err(err) => return Err(parse_error(file, &err).into()),
        };
        let mut validator = Validator { file, known_handlers, errors: Vec::new() };
        let config = validator.config(raw);
        if validator.errors.is_empty() {
            return Ok(config);
        }
        // The checks of one projection do not run in file order; report in file order.
        let mut errors = validator.errors;
        errors.sort_by_key(|e| e.position().map(|at| (at.line, at.column)));
        Err(ConfigErrors { errors })
    }

    /// Reads the file at `path` and parses it with [`Config::from_yaml_str`]; messages
    /// name the file as `path` is written.
    pub fn load(path: &Path, known_handlers: &[&str]) -> Result<Config, ConfigErrors> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Config::from_yaml_str(&text, &path.display().to_string(), known_handlers)
    }
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// A place in a configuration file; displays as `file:line:column` (1-based), or only
/// `file` when the line is unknown (0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The file name as given to the loader.
    pub file: String,
    /// 1-based line, 0 if unknown.
    pub line: u64,
    /// 1-based column (in characters), 0 if unknown.
    pub column: u64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            f.write_str(&self.file)
        } else {
            write!(f, "{}:{}:{}", self.file, self.line, self.column)
        }
    }
}

/// One problem in a configuration file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read configuration file: {source}", .path.display())]
    Read { path: PathBuf, source: std::io::Error },
    /// Not valid YAML, or not the expected shape (unknown or missing key, wrong type).
    #[error("{at}: {message}")]
    Syntax { at: Position, message: String },
    /// No projection is configured.
    #[error(
        "{at}: no projections defined; add at least one under `projections:`, e.g. \
         `my-projection: {{ handler: <name>, provider: local, config: {{ memory: 128MB, timeout: 30s, concurrency: 1 }} }}`"
    )]
    NoProjections { at: Position },
    /// A projection name outside `[a-z0-9-]+`.
    #[error(
        "{at}: invalid projection name `{name}`: use only lowercase letters, digits and `-` (e.g. `user-profile`)"
    )]
    InvalidProjectionName { at: Position, name: String },
    /// `handler:` names no known handler.
    #[error("{at}: unknown handler `{name}`, expected one of: {}", list_or_none(.known))]
    UnknownHandler { at: Position, name: String, known: Vec<String> },
    /// `provider:` is neither `local` nor `cloudflare`.
    #[error("{at}: unknown provider `{value}`, expected one of: local, cloudflare")]
    UnknownProvider { at: Position, value: String },
    /// A duration that is not `<integer><ms|s|m|h>`.
    #[error("{at}: invalid duration `{value}` for `{field}`: expected {DURATION_FORMS}")]
    InvalidDuration { at: Position, field: &'static str, value: String },
    /// A size that is not `<integer><unit>`.
    #[error("{at}: invalid size `{value}` for `{field}`: expected {SIZE_FORMS}")]
    InvalidSize { at: Position, field: &'static str, value: String },
    /// An integer knob outside its range (`batch_size`, `partitions`, `concurrency`).
    #[error("{at}: `{field}` must be {}, got {value}", describe_range(*.min, *.max))]
    OutOfRange { at: Position, field: &'static str, value: i64, min: i64, max: Option<i64> },
    /// A limit of the chosen provider is exceeded.
    #[error(
        "{at}: `{field}` is {value} but provider `{provider}` allows at most {limit}; \
         lower it or use `provider: local`"
    )]
    ProviderLimit { at: Position, provider: Provider, field: &'static str, value: String, limit: &'static str },
    /// `lease_ttl` is not greater than `poll_interval`.
    #[error(
        "{at}: `lease_ttl` ({lease_ttl}) must be greater than `poll_interval` ({poll_interval}), \
         or leases expire between two polls"
    )]
    LeaseTtlNotAbovePollInterval { at: Position, lease_ttl: String, poll_interval: String },
    /// A `retry:` whose `cap` is below its `base`.
    #[error(
        "{at}: `retry.cap` ({cap}) must be at least `retry.base` ({base}); \
         the backoff grows from base up to cap"
    )]
    RetryCapBelowBase { at: Position, cap: String, base: String },
    /// Any other bad value; `expected` says what is accepted.
    #[error("{at}: invalid `{field}` value `{value}`: expected {expected}")]
    InvalidValue { at: Position, field: &'static str, value: String, expected: &'static str },
}

impl ConfigError {
    /// Where in the file the problem is (`None` for [`ConfigError::Read`]).
    pub fn position(&self) -> Option<&Position> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Syntax { at, .. }
            | ConfigError::NoProjections { at }
            | ConfigError::InvalidProjectionName { at, .. }
            | ConfigError::UnknownHandler { at, .. }
            | ConfigError::UnknownProvider { at, .. }
            | ConfigError::InvalidDuration { at, .. }
            | ConfigError::InvalidSize { at, .. }
            | ConfigError::OutOfRange { at, .. }
            | ConfigError::ProviderLimit { at, .. }
            | ConfigError::LeaseTtlNotAbovePollInterval { at, .. }
            | ConfigError::RetryCapBelowBase { at, .. }
            | ConfigError::InvalidValue { at, .. } => Some(at),
        }
    }
}

/// Every problem found in a configuration file (never empty); displays one per line.
#[derive(Debug)]
pub struct ConfigErrors {
    errors: Vec<ConfigError>,
}

impl ConfigErrors {
    /// The problems, in file order.
    pub fn errors(&self) -> &[ConfigError] {
        &self.errors
    }

    /// The problems, in file order.
    pub fn into_errors(self) -> Vec<ConfigError> {
        self.errors
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        ConfigErrors { errors: vec![error] }
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.errors.into_iter()
    }
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "(no handlers are registered)".to_owned()
    } else {
        names.join(", ")
    }
}

fn describe_range(min: i64, max: Option<i64>) -> String {
    match max {
        Some(max) => format!("between {min} and {max}"),
        None => format!("at least {min}"),
    }
}

/// Escapes control characters so that a value from the file cannot break the
/// one-error-per-line layout.
fn shown(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() { c.escape_default().collect() } else { vec![c] };
            escaped
        })
        .collect()
}

/// Turns a serde-saphyr error into a [`ConfigError::Syntax`] with the error's own
/// line and column and its message without the location suffix or source snippet.
fn parse_error(file: &str, err: &serde_saphyr::Error) -> ConfigError {
    let at = match err.location() {
        Some(loc) => Position { file: file.to_owned(), line: loc.line(), column: loc.column() },
        None => Position { file: file.to_owned(), line: 0, column: 0 },
    };
    let mut inner = err;
    while let serde_saphyr::Error::AliasError { error, .. } | serde_saphyr::Error::WithSnippet { error, .. } = inner {
        inner = error;
    }
    let message = match inner {
        serde_saphyr::Error::DuplicateMappingKey { key: Some(key), .. } => {
            format!("duplicate key `{key}`: each key may appear only once in a mapping")
        }
        serde_saphyr::Error::InvalidScalar { ty, .. } if ty.starts_with(['i', 'u']) => {
            "invalid value: expected a whole number (e.g. 1, 1000)".to_owned()
        }
        _ => {
            let message = serde_saphyr::DefaultMessageFormatter.format_message(inner);
            // The parser's wording for the most common YAML slip, a key indented
            // differently from its siblings, does not say what to fix.
            if message.starts_with("mapping values are not allowed") {
                format!(
                    "{message} (check the indentation: keys of one mapping must start in \
                     the same column)"
                )
            } else {
                message.into_owned()
            }
        }
    };
    ConfigError::Syntax { at, message: shown(&message) }
}

// ---------------------------------------------------------------------------------------
// Durations and sizes
// ---------------------------------------------------------------------------------------

/// Parses `<positive integer><unit>` with unit `ms`, `s`, `m` or `h` (e.g. `250ms`,
/// `30s`, `5m`, `1h`). No spaces, signs, fractions or other units; `None` otherwise.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let (number, unit) = split_number(text)?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    number.checked_mul(millis_per_unit).map(Duration::from_millis)
}

/// Parses `<positive integer><unit>` with unit `B`, `KB`, `MB`, `GB`, `KiB`, `MiB` or
/// `GiB` into bytes; `KB`/`MB`/`GB` are 1024-based like `KiB`/`MiB`/`GiB` (`128MB` =
/// `128MiB` = 134217728). `None` for anything else.
pub fn parse_size(text: &str) -> Option<u64> {
    let (number, unit) = split_number(text)?;
    let bytes_per_unit: u64 = match unit {
        "B" => 1,
        "KB" | "KiB" => 1 << 10,
        "MB" | "MiB" => 1 << 20,
        "GB" | "GiB" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(bytes_per_unit)
}

/// Splits `123unit` into a positive integer and its unit.
fn split_number(text: &str) -> Option<(u64, &str)> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().ok()?;
    (number > 0).then_some((number, unit))
}

/// `1h`, `5m`, `30s` or `250ms`: the largest unit that shows `duration` exactly.
fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if millis > 0 && millis.is_multiple_of(size) {
            return format!("{}{unit}", millis / size);
        }
    }
    format!("{millis}ms")
}

// ---------------------------------------------------------------------------------------
// Raw (as written) structures, with source locations
// ---------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    database: Option<RawDatabase>,
    projections: Option<Spanned<Entries<RawProjection>>>,
    alerts: Option<RawAlerts>,
    observability: Option<RawObservability>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    url_env: Option<Spanned<String>>,
    embedded_path: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProjection {
    handler: Spanned<String>,
    provider: Spanned<String>,
    config: RawResources,
    events: Option<RawEvents>,
    batch_size: Option<Spanned<i64>>,
    partitions: Option<Spanned<i64>>,
    poll_interval: Option<Spanned<String>>,
    lease_ttl: Option<Spanned<String>>,
    retry: Option<RawRetry>,
    on_failure: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    max_retries: Option<Spanned<i64>>,
    base: Option<Spanned<String>>,
    cap: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlerts {
    webhook: Option<Spanned<String>>,
    interval: Option<Spanned<String>>,
    dead_letter_age: Option<Spanned<String>>,
    dead_letters: Option<Spanned<i64>>,
    lag_seconds: Option<Spanned<i64>>,
    stalled: Option<Spanned<String>>,
    retry: Option<RawRetry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawObservability {
    listen: Option<Spanned<String>>,
    health_interval: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResources {
    memory: Spanned<String>,
    timeout: Spanned<String>,
    concurrency: Spanned<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvents {
    event_types: Option<Vec<Spanned<String>>>,
    aggregate_types: Option<Vec<Spanned<String>>>,
}

/// A mapping kept as a list of entries in file order, with the location of each key
/// (a `BTreeMap` would lose both). `null` (a key with nothing under it) is empty.
/// Duplicate keys are rejected by the parser.
struct Entries<V>(Vec<(Spanned<String>, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Entries<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor<V>(PhantomData<V>);

        impl<'de, V: Deserialize<'de>> Visitor<'de> for EntriesVisitor<V> {
            type Value = Entries<V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping")
            }

            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Entries(Vec::new()))
            }

            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Entries(Vec::new()))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }

        deserializer.deserialize_any(EntriesVisitor(PhantomData))
    }
}

// ---------------------------------------------------------------------------------------
// Validation: raw -> public, collecting every error
// ---------------------------------------------------------------------------------------

struct Validator<'a> {
    file: &'a str,
    known_handlers: &'a [&'a str],
    errors: Vec<ConfigError>,
}

impl Validator<'_> {
    fn at(&self, location: &Location) -> Position {
        Position { file: self.file.to_owned(), line: location.line(), column: location.column() }
    }

    fn start_of_file(&self) -> Position {
        Position { file: self.file.to_owned(), line: 1, column: 1 }
    }

    fn config(&mut self, raw: Option<RawConfig>) -> Config {
        let (database, projections, alerts, observability) = match raw {
            Some(raw) => (raw.database, raw.projections, raw.alerts, raw.observability),
            None => (None, None, None, None),
        };
        let database = self.database(database);
        let mut out = BTreeMap::new();
        match projections {
            Some(projections) if !projections.value.0.is_empty() => {
                for (name, raw) in projections.value.0 {
                    if !is_projection_name(&name.value) {
                        self.errors.push(ConfigError::InvalidProjectionName {
                            at: self.at(&name.referenced),
                            name: shown(&name.value),
                        });
                    }
                    if let Some(projection) = self.projection(raw) {
                        out.insert(name.value, projection);
                    }
                }
            }
            Some(projections) => self.errors.push(ConfigError::NoProjections { at: self.at(&projections.referenced) }),
            None => self.errors.push(ConfigError::NoProjections { at: self.start_of_file() }),
        }
        let alerts = alerts.map(|raw| self.alerts(raw));
        let observability = self.observability(observability);
        Config { database, projections: out, alerts, observability }
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
        if let Some(url_env) = raw.url_env {
            if is_env_var_name(&url_env.value) {
                database.url_env = url_env.value;
            } else {
                self.errors.push(ConfigError::InvalidValue {
                    at: self.at(&url_env.referenced),
                    field: "url_env",
                    value: shown(&url_env.value),
                    expected: "an environment variable name: letters, digits and `_`, \
                               not starting with a digit (e.g. DATABASE_URL)",
                });
            }
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
        database
    }

    /// The validated projection, or `None` if anything in it was wrong (the errors are
    /// recorded).
    fn projection(&mut self, raw: RawProjection) -> Option<ProjectionConfig> {
        let errors_before = self.errors.len();

        if !self.known_handlers.contains(&raw.handler.value.as_str()) {
            self.errors.push(ConfigError::UnknownHandler {
                at: self.at(&raw.handler.referenced),
                name: shown(&raw.handler.value),
                known: self.known_handlers.iter().map(|h| h.to_string()).collect(),
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
        if provider == Some(Provider::Cloudflare) {
            if memory.is_some_and(|m| m > CLOUDFLARE_MAX_MEMORY_BYTES) {
                self.errors.push(ConfigError::ProviderLimit {
                    at: self.at(&raw.config.memory.referenced),
                    provider: Provider::Cloudflare,
                    field: "memory",
                    value: shown(&raw.config.memory.value),
                    limit: "128MB",
                });
            }
            if timeout.is_some_and(|t| t > CLOUDFLARE_MAX_TIMEOUT) {
                self.errors.push(ConfigError::ProviderLimit {
                    at: self.at(&raw.config.timeout.referenced),
                    provider: Provider::Cloudflare,
                    field: "timeout",
                    value: shown(&raw.config.timeout.value),
                    limit: "5m",
                });
            }
        }

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
        if let (Some(poll), Some(ttl)) = (poll_interval, lease_ttl) {
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

    fn duration(&mut self, field: &'static str, value: &Spanned<String>) -> Option<Duration> {
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

    /// `value` if it is in `min..=max` (`max` defaults to `u32::MAX`, the widest type
    /// these knobs are stored in).
    fn integer(&mut self, field: &'static str, value: &Spanned<i64>, min: i64, max: Option<i64>) -> Option<i64> {
        let limit = max.unwrap_or(i64::from(u32::MAX));
        if (min..=limit).contains(&value.value) {
            return Some(value.value);
        }
        self.errors.push(ConfigError::OutOfRange {
            at: self.at(&value.referenced),
            field,
            value: value.value,
            min,
            // Only mention the implicit upper bound when it is the problem.
            max: max.or((value.value > limit).then_some(limit)),
        });
        None
    }
}

fn is_projection_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The `on_failure:` choice spelled `name` (`park`, `stop`).
fn on_failure_from_name(name: &str) -> Option<OnFailure> {
    match name {
        "park" => Some(OnFailure::Park),
        "stop" => Some(OnFailure::Stop),
        _ => None,
    }
}

/// `off` (`Some(None)`), `IP:port`, `[IPv6]:port` or `localhost:port`; `None` otherwise.
fn parse_listen(text: &str) -> Option<Option<SocketAddr>> {
    if text == "off" {
        return Some(None);
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(Some(addr));
    }
    let port = text.strip_prefix("localhost:")?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port: u16 = port.parse().ok()?;
    Some(Some(SocketAddr::from((Ipv4Addr::LOCALHOST, port))))
}

/// An absolute `http://` or `https://` URL with a host (a DNS name, an IPv4 address or
/// a bracketed IPv6 address), an optional port, and no whitespace.
fn is_http_url(url: &str) -> bool {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let lower = url.to_ascii_lowercase();
    let Some(scheme_len) = ["http://", "https://"].into_iter().find(|scheme| lower.starts_with(scheme)).map(str::len)
    else {
        return false;
    };
    let rest = &url[scheme_len..];
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // Credentials (`user:password@`) may precede the host.
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host_ok, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        let Some((host, after)) = bracketed.split_once(']') else {
            return false;
        };
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return false,
            },
        };
        (host.parse::<Ipv6Addr>().is_ok(), port)
    } else {
        let (host, port) = match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        let ok = !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        (ok, port)
    };
    let port_ok = port.is_none_or(|port| {
        !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok_and(|p| p > 0)
    });
    host_ok && port_ok
}

fn is_env_var_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: &[&str] = &["user-profile", "daily-activity"];

    fn fixtures_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/config")
    }

    fn yaml_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
            .map(|entry| entry.expect("directory entry").path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
            .collect();
        files.sort();
        files
    }

    fn errors_of(text: &str) -> Vec<String> {
        match Config::from_yaml_str(text, "test.yaml", KNOWN) {
            Ok(config) => panic!("expected errors, got {config:#?}"),
            Err(errors) => errors.errors().iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn invalid_fixtures_fail_with_the_expected_message() {
        let files = yaml_files(&fixtures_dir().join("invalid"));
        assert!(files.len() >= 10, "expected the invalid fixtures, found {files:?}");
        let mut failures = Vec::new();
        for file in files {
            let expected_path = file.with_extension("err");
            let expected =
                std::fs::read_to_string(&expected_path).unwrap_or_else(|e| panic!("{}: {e}", expected_path.display()));
            let expected = expected.trim();
            assert!(!expected.is_empty(), "{} is empty", expected_path.display());
            match Config::load(&file, KNOWN) {
                Ok(config) => failures.push(format!("{} was accepted: {config:?}", file.display())),
                Err(errors) => {
                    let message = errors.to_string();
                    if !message.contains(expected) {
                        failures.push(format!(
                            "{}:\n  expected a message containing: {expected}\n  got: {message}",
                            file.display()
                        ));
                    }
                }
            }
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    #[test]
    fn valid_fixtures_load() {
        let files = yaml_files(&fixtures_dir().join("valid"));
        assert!(!files.is_empty());
        for file in files {
            if let Err(errors) = Config::load(&file, KNOWN) {
                panic!("{} was rejected:\n{errors}", file.display());
            }
        }
    }

    #[test]
    fn repository_projections_yaml_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("projections.yaml");
        let config =
            Config::load(&path, &["user-profile", "daily-activity"]).unwrap_or_else(|errors| panic!("{errors}"));
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
            "projections:\n  p:\n    handler: daily-activity\n    provider: cloudflare\n    \
             config: { memory: 64MiB, timeout: 5m, concurrency: 2 }\n",
            "test.yaml",
            KNOWN,
        )
        .unwrap_or_else(|errors| panic!("{errors}"));
        assert_eq!(config.database.url_env, "DATABASE_URL");
        assert_eq!(config.database.embedded_path, PathBuf::from(".projector/projector.db"));
        let p = &config.projections["p"];
        assert_eq!(p.provider, Provider::Cloudflare);
        assert_eq!(
            p.config,
            ResourceConfig { memory_bytes: 64 << 20, timeout: Duration::from_secs(300), concurrency: 2 }
        );
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
        assert_eq!(errors.errors()[0].position(), Some(&Position { file: "f.yaml".into(), line: 3, column: 14 }));
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
    fn an_unreadable_file_names_its_path() {
        let path = fixtures_dir().join("does-not-exist.yaml");
        let errors = Config::load(&path, KNOWN).unwrap_err();
        let message = errors.to_string();
        assert!(message.starts_with(&path.display().to_string()), "{message}");
        assert!(message.contains("cannot read configuration file"), "{message}");
        assert!(matches!(errors.errors(), [ConfigError::Read { .. }]));
        assert_eq!(errors.errors()[0].position(), None);
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
             retry: { cap: 1m }\nalerts:\nobservability:\n",
            "test.yaml",
            KNOWN,
        )
        .unwrap_or_else(|errors| panic!("{errors}"));
        let p = &config.projections["p"];
        assert_eq!(
            p.retry,
            RetryPolicy { max_retries: 3, base: Duration::from_millis(100), cap: Duration::from_secs(60) }
        );
        // `alerts:` with nothing under it is "absent"; so is `observability:`.
        assert_eq!(config.alerts, None);
        assert_eq!(config.observability, ObservabilityConfig::default());
    }

    #[test]
    fn alerts_and_observability_keys_parse() {
        let path = fixtures_dir().join("valid/alerts-and-observability.yaml");
        let config = Config::load(&path, KNOWN).unwrap_or_else(|errors| panic!("{errors}"));
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
            ObservabilityConfig {
                listen: Some("[::1]:9464".parse().unwrap()),
                health_interval: Duration::from_secs(30),
            }
        );

        let path = fixtures_dir().join("valid/alerts-log-only.yaml");
        let config = Config::load(&path, KNOWN).unwrap_or_else(|errors| panic!("{errors}"));
        assert_eq!(
            config.alerts,
            Some(AlertsConfig { stalled: Some(Duration::from_secs(60)), ..AlertsConfig::default() })
        );
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
    fn database_url_reads_the_named_variable() {
        // A variable name no other test uses, so setting it cannot race.
        let name = "PROJECTOR_CONFIG_TEST_DATABASE_URL";
        let database = DatabaseConfig { url_env: name.to_owned(), ..DatabaseConfig::default() };
        std::env::remove_var(name);
        assert_eq!(database.url(), None);
        std::env::set_var(name, "");
        assert_eq!(database.url(), None);
        std::env::set_var(name, "postgres://localhost/projector");
        assert_eq!(database.url().as_deref(), Some("postgres://localhost/projector"));
        std::env::remove_var(name);
    }
}
