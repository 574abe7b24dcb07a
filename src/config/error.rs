//! What can be wrong in a configuration file, and where: [`ConfigError`], the list of
//! them returned by the parser ([`ConfigErrors`]), and the `file:line:column` they point at.

use std::fmt;

use serde_saphyr::MessageFormatter;

use super::units::{DURATION_FORMS, SIZE_FORMS};
use super::Provider;

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
    /// `upcasting.event_types` names a type no upcaster is registered for.
    #[error(
        "{at}: upcasting is enabled for event type `{name}`, but no upcaster is registered for it; \
         event types with upcasters: {}",
        if .known.is_empty() { "none".to_owned() } else { .known.join(", ") }
    )]
    UnknownUpcastEventType { at: Position, name: String, known: Vec<String> },
    /// `provider:` is neither `local` nor `cloudflare`.
    #[error("{at}: unknown provider `{value}`, expected one of: local, cloudflare")]
    UnknownProvider { at: Position, value: String },
    /// A duration that is not `<integer><ms|s|m|h>`.
    #[error("{at}: invalid duration `{value}` for `{field}`: expected {DURATION_FORMS}")]
    InvalidDuration { at: Position, field: &'static str, value: String },
    /// A size that is not `<integer><unit>`.
    #[error("{at}: invalid size `{value}` for `{field}`: expected {SIZE_FORMS}")]
    InvalidSize { at: Position, field: &'static str, value: String },
    /// A value of another type where a whole number is expected (`batch_size: abc`).
    #[error("{at}: invalid value: expected a whole number for `{field}`, got {found}")]
    NotAWholeNumber { at: Position, field: &'static str, found: String },
    /// An integer knob outside its range (`batch_size`, `partitions`, `concurrency`).
    #[error("{at}: `{field}` must be {}, got {value}", describe_range(*.min, *.max))]
    OutOfRange { at: Position, field: &'static str, value: i64, min: i64, max: Option<i64> },
    /// A limit of the chosen provider is exceeded.
    #[error(
        "{at}: `{field}` is {value} but provider `{provider}` allows at most {limit}; \
         lower it or use `provider: local`"
    )]
    ProviderLimit { at: Position, provider: Provider, field: &'static str, value: String, limit: &'static str },
    /// A value the chosen provider cannot honour; `reason` says why and what to write.
    #[error("{at}: `{field}` {value} cannot run on provider `{provider}`: {reason}")]
    ProviderUnsupported { at: Position, provider: Provider, field: &'static str, value: String, reason: String },
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
    /// Fields are sealed, or a projection decrypts, and `encryption:` names no keyring.
    #[error(
        "{at}: {what}, but `encryption` names no keyring: add `keyring_env: <VARIABLE>` or \
         `keyring_file: <path>` under `encryption:` (the keyring text itself never goes in this file)"
    )]
    KeyringNotNamed { at: Position, what: String },
    /// Both `keyring_env` and `keyring_file`.
    #[error("{at}: `encryption` names the keyring twice: give either `keyring_env` or `keyring_file`, not both")]
    KeyringNamedTwice { at: Position },
    /// A field path that `encrypted_fields` could not hold.
    #[error("{at}: invalid field path `{path}` in {owner}: {reason}")]
    InvalidFieldPath { at: Position, owner: String, path: String, reason: String },
    /// The subject field of an event type is one of its encrypted fields.
    #[error(
        "{at}: the subject of {event_type} is the field `{field}`, which is encrypted: subject ids are \
         stored in the clear (key tables, audit rows), so name a field that is not personal data, such as a user id"
    )]
    EncryptedSubject { at: Position, event_type: String, field: String },
    /// `encryption.subjects` names an event type with no encrypted fields.
    #[error("{at}: `encryption.subjects` names {event_type}, but `encryption.fields` encrypts nothing of it")]
    SubjectWithoutFields { at: Position, event_type: String },
    /// A projection's `decrypt:` names a path no event type encrypts.
    #[error(
        "{at}: projection {projection} decrypts `{path}`, but no event type encrypts it; encrypted paths: {}",
        if .encrypted.is_empty() { "none".to_owned() } else { .encrypted.join(", ") }
    )]
    UnknownDecryptPath { at: Position, projection: String, path: String, encrypted: Vec<String> },
    /// `snapshots:` on a projection whose rows are not kept per aggregate.
    #[error(
        "{at}: `snapshots` keep a row's state every N versions of its aggregate, but handler `{handler}` folds \
         events of many aggregates into each row; remove `snapshots` from this projection"
    )]
    SnapshotsNotPerAggregate { at: Position, handler: String },
}

impl ConfigError {
    /// Where in the file the problem is.
    pub fn position(&self) -> &Position {
        match self {
            ConfigError::Syntax { at, .. }
            | ConfigError::NoProjections { at }
            | ConfigError::InvalidProjectionName { at, .. }
            | ConfigError::UnknownHandler { at, .. }
            | ConfigError::UnknownUpcastEventType { at, .. }
            | ConfigError::UnknownProvider { at, .. }
            | ConfigError::InvalidDuration { at, .. }
            | ConfigError::InvalidSize { at, .. }
            | ConfigError::NotAWholeNumber { at, .. }
            | ConfigError::OutOfRange { at, .. }
            | ConfigError::ProviderLimit { at, .. }
            | ConfigError::ProviderUnsupported { at, .. }
            | ConfigError::LeaseTtlNotAbovePollInterval { at, .. }
            | ConfigError::RetryCapBelowBase { at, .. }
            | ConfigError::InvalidValue { at, .. }
            | ConfigError::KeyringNotNamed { at, .. }
            | ConfigError::KeyringNamedTwice { at }
            | ConfigError::InvalidFieldPath { at, .. }
            | ConfigError::EncryptedSubject { at, .. }
            | ConfigError::SubjectWithoutFields { at, .. }
            | ConfigError::UnknownDecryptPath { at, .. }
            | ConfigError::SnapshotsNotPerAggregate { at, .. } => at,
        }
    }
}

/// Every problem found in a configuration file (never empty); displays one per line.
#[derive(Debug)]
pub struct ConfigErrors {
    errors: Vec<ConfigError>,
}

impl ConfigErrors {
    /// `errors` (not empty) sorted by position: the checks of one projection do not run
    /// in file order, but a reader goes through the file top to bottom.
    pub(super) fn in_file_order(mut errors: Vec<ConfigError>) -> ConfigErrors {
        errors.sort_by_key(|e| (e.position().line, e.position().column));
        ConfigErrors { errors }
    }

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
pub(super) fn shown(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() { c.escape_default().collect() } else { vec![c] };
            escaped
        })
        .collect()
}

/// Turns a serde-saphyr error into a [`ConfigError::Syntax`] with the error's own
/// line and column and its message without the location suffix or source snippet.
pub(super) fn parse_error(file: &str, err: &serde_saphyr::Error) -> ConfigError {
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
