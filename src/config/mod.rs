//! `projections.yaml`: which projections run, on which provider, with which limits and
//! runtime knobs.
//!
//! The file is parsed with `serde-saphyr` into private "raw" structs that keep the
//! source location of every value, then validated as a whole: every problem found
//! (unknown handler, bad duration, limit exceeded, a word where a number belongs, ...)
//! is reported, not only the first, each as `file:line:column: message`. Only a file
//! that is not valid YAML, or whose shape does not match the schema (unknown key,
//! missing key, a list or mapping where a single value belongs or the reverse), stops
//! at the first error, because the parser cannot go on past it.
//!
//! ```yaml
//! database:                          # optional
//!   url_env: DATABASE_URL            # env var holding the PostgreSQL URL (default)
//!   embedded_path: .projector/projector.db   # used when that var is unset (default)
//!   pooled: false                    # true: the URL is a transaction-mode pooler
//!   listen_url_env: DATABASE_URL_DIRECT  # optional: env var holding a direct URL to
//!                                    #   LISTEN on for appends; without it a pooled
//!                                    #   database is polled only
//! projections:
//!   user-profile:                    # projection name: [a-z0-9-]+
//!     handler: user-profile          # a known handler name
//!     provider: local                # local | cloudflare (what a Worker cannot honour
//!                                    #   is refused: see [`cloudflare`])
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
//!     gap_timeout: 30s               # optional: how long an event waits for missing
//!                                    #   versions of its aggregate before it is
//!                                    #   dead-lettered (default 30s)
//!     crash_limit: 3                 # optional, 1..=100: crashes of the runner process
//!                                    #   in a row on one batch before the event that
//!                                    #   crashes it is searched for and dead-lettered
//!     snapshots: { every: 10 }       # optional, 1..=1000000: keep each row's state
//!                                    #   every N versions, for time travel (aggregate-
//!                                    #   version projections); absent = no snapshots
//! alerts:                            # optional; absent = no alerting
//!   webhook: http://127.0.0.1:9000/hooks/projector   # optional http(s) URL; absent = log only
//!   interval: 5s                     # evaluation period (default 5s)
//!   dead_letter_age: 10m             # each threshold is optional; absent = not checked
//!   dead_letters: 1                  #   open dead letters >= this count (>= 1)
//!   lag_seconds: 300                 #   a partition's lag above this many seconds (>= 1)
//!   stalled: 2m                      #   lag > 0 and no batch committed for this long
//!   retry: { max_retries: 5, base: 1s, cap: 1m }     # webhook delivery (these defaults)
//! upcasting:                         # optional: the upcaster chains that run
//!   event_types: [UserRegistered]    #   stored types with registered upcasters
//! observability:                     # optional
//!   listen: 127.0.0.1:9464           # /metrics and /health (default); `off` disables
//!   health_interval: 30s             # a partition loop silent this long is unhealthy
//! encryption:                        # optional: fields sealed at append (see `encryption`)
//!   keyring_env: PROJECTOR_KEYRING   #   where the keyring is (or keyring_file:)
//!   fields: { UserRegistered: [email, name] }
//! ```
//!
//! A projection may add `decrypt: [email]`: the encrypted fields its handler sees in
//! the clear; every other encrypted field reaches it as `"[redacted]"`.
//!
//! Whole numbers are written without quotes (`partitions: 4`; `"4"` is a string).
//! Durations are a positive integer followed by `ms`, `s`, `m` or `h`. Sizes are a
//! positive integer followed by `B`, `KB`, `MB`, `GB`, `KiB`, `MiB` or `GiB`; as for
//! memory limits elsewhere (Lambda, Workers), `KB`/`MB`/`GB` are 1024-based, so `128MB`
//! and `128MiB` are the same size.
//!
//! The module reads no file and no environment variable, so it builds for
//! `wasm32-unknown-unknown`: the caller reads the file and hands its text to
//! [`Config::from_yaml_str`], and gives [`DatabaseConfig::url`] a way to look up a
//! variable.

pub mod cloudflare;
mod encryption;
mod error;
mod raw;
mod syntax;
#[cfg(test)]
mod tests;
mod units;
mod validate;
mod validate_encryption;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

pub use self::encryption::{EncryptionConfig, KeyringSource, SubjectSource};
pub use self::error::{ConfigError, ConfigErrors, Position};
pub use self::units::{format_duration, parse_duration, parse_size};

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
/// Default for [`ProjectionConfig::gap_timeout`].
pub const DEFAULT_GAP_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for [`ProjectionConfig::crash_limit`].
pub const DEFAULT_CRASH_LIMIT: u32 = 3;
/// Largest accepted [`ProjectionConfig::crash_limit`].
pub const MAX_CRASH_LIMIT: u32 = 100;
/// Largest accepted [`SnapshotConfig::every`].
pub const MAX_SNAPSHOT_EVERY: u32 = 1_000_000;
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
pub const CLOUDFLARE_MAX_MEMORY_BYTES: u64 = cloudflare::MAX_MEMORY_BYTES;
/// Largest `config.timeout` accepted with `provider: cloudflare` (Workers limit, 5m).
pub const CLOUDFLARE_MAX_TIMEOUT: Duration = cloudflare::MAX_TIMEOUT;

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
    /// Which upcaster chains run (`upcasting:`; none when absent).
    pub upcasting: UpcastingConfig,
    /// Field encryption (`encryption:`; nothing sealed when absent).
    pub encryption: EncryptionConfig,
}

/// The optional `upcasting:` section: the event types whose registered upcaster chains
/// run, for every projection, on every path that folds events (live, rebuild, time
/// travel, repair).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpcastingConfig {
    /// Event types (as stored) whose chains are enabled; each has registered upcasters.
    pub event_types: Vec<String>,
}

/// Which event store to use: PostgreSQL when the env var named `url_env` is set,
/// the embedded store at `embedded_path` otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    /// Name of the environment variable holding the PostgreSQL URL.
    pub url_env: String,
    /// Embedded store file used when that variable is unset or empty.
    pub embedded_path: PathBuf,
    /// The URL goes through a transaction-mode pooler: runners hold no session locks, so
    /// a crashed runner's leases are taken over when they expire, not at once, and they
    /// `LISTEN` for appends only on `listen_url_env`'s URL (else they poll only).
    pub pooled: bool,
    /// Name of the environment variable holding a direct (not pooled) URL of the same
    /// database, used only to `LISTEN` for appends; `None` listens on the store's own
    /// URL, or not at all when it is `pooled`, since a transaction-mode pooler cannot
    /// carry a `LISTEN`.
    pub listen_url_env: Option<String>,
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
    /// How long an event waits for missing earlier versions of its aggregate (they may
    /// still be committing) before it is dead-lettered and its aggregate parked.
    pub gap_timeout: Duration,
    /// Crashes of the runner process in a row with the same batch in flight (1..=100)
    /// before the batch is halved to find the event that crashes it.
    pub crash_limit: u32,
    /// Encrypted fields this projection's handler sees decrypted (`decrypt:`); every
    /// other encrypted field reaches it as [`crate::crypto::REDACTED`].
    pub decrypt: Vec<String>,
    /// Snapshots of the rows for time travel (`None`: none are kept).
    pub snapshots: Option<SnapshotConfig>,
}

/// The optional `snapshots:` of a projection: the state of each aggregate's row is kept
/// every `every` versions, so that time travel starts from the latest one before the
/// instant it is asked for instead of from the first event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotConfig {
    /// 1..=1000000 versions between two snapshots of a row.
    pub every: u32,
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
        DatabaseConfig {
            url_env: DEFAULT_URL_ENV.to_owned(),
            embedded_path: PathBuf::from(DEFAULT_EMBEDDED_PATH),
            pooled: false,
            listen_url_env: None,
        }
    }
}

impl DatabaseConfig {
    /// The PostgreSQL URL held by the variable named `url_env`, as `lookup` finds it
    /// (typically `|name| std::env::var(name).ok()`); `None` when it is unset or empty,
    /// and then the embedded store is used.
    pub fn url(&self, lookup: impl Fn(&str) -> Option<String>) -> Option<String> {
        lookup(&self.url_env).filter(|url| !url.is_empty())
    }

    /// The direct URL held by the variable named `listen_url_env`, as `lookup` finds it;
    /// `Ok(None)` when no such variable is configured. A configured variable that is
    /// unset or empty is an error naming it rather than a silent fall back to the
    /// store's URL, which may be a pooler that cannot carry a `LISTEN`.
    pub fn listen_url(&self, lookup: impl Fn(&str) -> Option<String>) -> Result<Option<String>, ListenUrlUnset> {
        let Some(name) = &self.listen_url_env else {
            return Ok(None);
        };
        match lookup(name).filter(|url| !url.is_empty()) {
            Some(url) => Ok(Some(url)),
            None => Err(ListenUrlUnset { variable: name.clone() }),
        }
    }
}

/// `database.listen_url_env` names a variable that is unset or empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "database.listen_url_env names the environment variable {variable}, which is unset or empty: \
     set it to a direct (not pooled) PostgreSQL URL of the same database, or remove `listen_url_env`"
)]
pub struct ListenUrlUnset {
    /// The variable's name.
    pub variable: String,
}

impl Config {
    /// Parses and validates `text`, the contents of the file named `file` (used only in
    /// messages). `known_handlers` are the handler names a projection may use.
    ///
    /// All validation errors are returned together; a YAML syntax or schema error
    /// (unknown or missing key, a mapping where a value belongs) is returned alone.
    ///
    /// No upcaster is known here: a file with `upcasting.event_types` needs
    /// [`Config::from_yaml_str_upcasting`].
    pub fn from_yaml_str(text: &str, file: &str, known_handlers: &[&str]) -> Result<Config, ConfigErrors> {
        Self::from_yaml_str_upcasting(text, file, known_handlers, &[])
    }

    /// [`Config::from_yaml_str`], checked against everything `names` says of the code.
    pub fn from_yaml_str_names(text: &str, file: &str, names: &Names<'_>) -> Result<Config, ConfigErrors> {
        let raw = raw::parse(text).map_err(|err| error::parse_error(file, &err))?;
        let known = validate::Known {
            handlers: names.handlers,
            upcast_event_types: names.upcast_event_types,
            unversioned_handlers: names.unversioned_handlers,
        };
        validate::validate(raw, text, file, &known)
    }

    /// [`Config::from_yaml_str`], where `upcast_event_types` are the event types with
    /// registered upcasters that `upcasting.event_types` may name.
    pub fn from_yaml_str_upcasting(
        text: &str,
        file: &str,
        known_handlers: &[&str],
        upcast_event_types: &[&str],
    ) -> Result<Config, ConfigErrors> {
        let names = Names { handlers: known_handlers, upcast_event_types, unversioned_handlers: &[] };
        Self::from_yaml_str_names(text, file, &names)
    }
}

/// What the code defines that a configuration may name.
#[derive(Debug, Clone, Copy, Default)]
pub struct Names<'a> {
    /// Handler names (`handler:`).
    pub handlers: &'a [&'a str],
    /// Event types with registered upcasters (`upcasting.event_types`).
    pub upcast_event_types: &'a [&'a str],
    /// Handlers whose rows are not kept per aggregate (commutative ones), which cannot
    /// have `snapshots`.
    pub unversioned_handlers: &'a [&'a str],
}
