//! `projections.yaml` as written: the serde structures the YAML is read into, before
//! validation, keeping the source location of every value.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::Spanned;

/// Reads `text` into the raw structures; `None` for a file with no document (empty, or
/// only comments). Stops at the first syntax or schema error.
pub(super) fn parse(text: &str) -> Result<Option<RawConfig>, serde_saphyr::Error> {
    serde_saphyr::from_str(text)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) database: Option<RawDatabase>,
    pub(super) projections: Option<Spanned<Entries<RawProjection>>>,
    pub(super) alerts: Option<RawAlerts>,
    pub(super) observability: Option<RawObservability>,
    pub(super) upcasting: Option<RawUpcasting>,
    pub(super) encryption: Option<Spanned<RawEncryption>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEncryption {
    pub(super) keyring_env: Option<Spanned<String>>,
    pub(super) keyring_file: Option<Spanned<String>>,
    pub(super) fields: Option<Entries<Vec<Spanned<String>>>>,
    pub(super) subjects: Option<Entries<Spanned<String>>>,
    pub(super) cache: Option<RawDekCache>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDekCache {
    pub(super) max_age: Option<Spanned<String>>,
    pub(super) max_uses: Option<Spanned<RawInt>>,
    pub(super) max_entries: Option<Spanned<RawInt>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpcasting {
    pub(super) event_types: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDatabase {
    pub(super) url_env: Option<Spanned<String>>,
    pub(super) embedded_path: Option<Spanned<String>>,
    pub(super) pooled: Option<bool>,
    pub(super) listen_url_env: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProjection {
    pub(super) handler: Spanned<String>,
    pub(super) provider: Spanned<String>,
    pub(super) config: RawResources,
    pub(super) events: Option<RawEvents>,
    pub(super) batch_size: Option<Spanned<RawInt>>,
    pub(super) partitions: Option<Spanned<RawInt>>,
    pub(super) poll_interval: Option<Spanned<String>>,
    pub(super) lease_ttl: Option<Spanned<String>>,
    pub(super) retry: Option<RawRetry>,
    pub(super) on_failure: Option<Spanned<String>>,
    pub(super) gap_timeout: Option<Spanned<String>>,
    pub(super) crash_limit: Option<Spanned<RawInt>>,
    pub(super) decrypt: Option<Vec<Spanned<String>>>,
    pub(super) snapshots: Option<RawSnapshots>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSnapshots {
    pub(super) every: Spanned<RawInt>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetry {
    pub(super) max_retries: Option<Spanned<RawInt>>,
    pub(super) base: Option<Spanned<String>>,
    pub(super) cap: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAlerts {
    pub(super) webhook: Option<Spanned<String>>,
    pub(super) interval: Option<Spanned<String>>,
    pub(super) dead_letter_age: Option<Spanned<String>>,
    pub(super) dead_letters: Option<Spanned<RawInt>>,
    pub(super) lag_seconds: Option<Spanned<RawInt>>,
    pub(super) stalled: Option<Spanned<String>>,
    pub(super) retry: Option<RawRetry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawObservability {
    pub(super) listen: Option<Spanned<String>>,
    pub(super) health_interval: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawResources {
    pub(super) memory: Spanned<String>,
    pub(super) timeout: Spanned<String>,
    pub(super) concurrency: Spanned<RawInt>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEvents {
    pub(super) event_types: Option<Vec<Spanned<String>>>,
    pub(super) aggregate_types: Option<Vec<Spanned<String>>>,
}

/// A mapping kept as a list of entries in file order, with the location of each key
/// (a `BTreeMap` would lose both). `null` (a key with nothing under it) is empty.
/// Duplicate keys are rejected by the parser.
pub(super) struct Entries<V>(pub(super) Vec<(Spanned<String>, V)>);

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

/// A whole-number knob as written. It is read as whatever the YAML holds, so that a
/// value of another type is reported by validation together with every other
/// problem, instead of stopping the parse at the first one.
#[derive(Debug, PartialEq)]
pub(super) enum RawInt {
    /// A plain number that fits an `i64`.
    Int(i64),
    /// A string: plain text that is not a number (`abc`), or any quoted scalar (`"4"`).
    Text(String),
    /// Another scalar: a fraction, a number beyond `i64`, a boolean. Shown as written,
    /// this is only the fallback rendering.
    OtherScalar(String),
    /// A sequence.
    List,
    /// A mapping.
    Mapping,
    /// `null`, `~`, or nothing after the key.
    Null,
}

impl<'de> Deserialize<'de> for RawInt {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RawIntVisitor;

        impl<'de> Visitor<'de> for RawIntVisitor {
            type Value = RawInt;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number")
            }

            fn visit_bool<E>(self, value: bool) -> Result<RawInt, E> {
                Ok(RawInt::OtherScalar(value.to_string()))
            }

            fn visit_i64<E>(self, value: i64) -> Result<RawInt, E> {
                Ok(RawInt::Int(value))
            }

            fn visit_u64<E>(self, value: u64) -> Result<RawInt, E> {
                Ok(i64::try_from(value).map_or_else(|_| RawInt::OtherScalar(value.to_string()), RawInt::Int))
            }

            fn visit_f64<E>(self, value: f64) -> Result<RawInt, E> {
                Ok(RawInt::OtherScalar(value.to_string()))
            }

            fn visit_str<E>(self, value: &str) -> Result<RawInt, E> {
                Ok(RawInt::Text(value.to_owned()))
            }

            fn visit_unit<E>(self) -> Result<RawInt, E> {
                Ok(RawInt::Null)
            }

            fn visit_none<E>(self) -> Result<RawInt, E> {
                Ok(RawInt::Null)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawInt, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(RawInt::List)
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawInt, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(RawInt::Mapping)
            }
        }

        deserializer.deserialize_any(RawIntVisitor)
    }
}
