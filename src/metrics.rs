//! The metric families every provider serves on `/metrics`, defined once: the gauges
//! read from the stored projection states, `projector_up`, `projector_store_up` and
//! `projector_build_info`, and the exposition format a scraper asked for (Prometheus text
//! 0.0.4 or OpenMetrics 1.0). Built on `prometheus-client`, with no I/O, so the local
//! runner and the Worker expose the same names, help texts and types.
//!
//! A provider builds one [`Registry`] per scrape: its own instruments (the local
//! runner's counters and histogram), then [`register_states`], [`register_up`],
//! [`register_store_up`] and [`register_build_info`], and encodes it with
//! [`Format::encode`].

use std::fmt;
use std::sync::atomic::AtomicU64;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::{prometheus_text, text, EncodeLabelSet};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::ProjectionState;

/// The labels of every per-partition series: `{projection="…",partition="0"}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub projection: String,
    pub partition: u32,
}

impl PartitionLabels {
    pub fn new(projection: &str, partition: u32) -> Self {
        PartitionLabels { projection: projection.to_owned(), partition }
    }
}

/// A gauge of seconds (fractional).
type SecondsGauge = Gauge<f64, AtomicU64>;

/// A count read from one partition's state.
type CountGauge = (&'static str, &'static str, fn(&ProjectionState) -> i64);

/// A duration in seconds read from one partition's state at `now`, when it has one.
/// Names leave out the `_seconds` suffix: the unit adds it.
type SecondsGaugeFamily = (&'static str, &'static str, fn(&ProjectionState, DateTime<Utc>) -> Option<f64>);

// Help texts leave out the final period: the registry adds it.
const COUNTS: [CountGauge; 6] = [
    ("projector_lag_events", "Events readable after the checkpoint", |s| s.lag_events),
    (
        "projector_lag_estimated",
        "1 when projector_lag_events is estimated from positions (a backlog past the exact window)",
        |s| i64::from(s.lag_estimated),
    ),
    ("projector_dead_letters_open", "Open (unresolved) dead letters", |s| s.dead_letters),
    ("projector_parked_aggregates", "Aggregates held back behind a dead letter", |s| s.parked_aggregates),
    ("projector_parked_events", "Events held back behind a dead letter (not counted as lag)", |s| s.parked_events),
    ("projector_events_applied", "Events applied to the read model (stored count, all runners)", |s| s.events_applied),
];

const SECONDS: [SecondsGaugeFamily; 2] = [
    ("projector_lag", "Age of the oldest event not yet applied; 0 when caught up", |s, _| Some(s.lag_seconds)),
    ("projector_dead_letter_oldest_age", "Age of the oldest open dead letter", |s, now| {
        s.oldest_dead_letter_at.map(|at| (now - at).num_milliseconds().max(0) as f64 / 1000.0)
    }),
];

/// Registers the gauges read from `states` (lag, dead letters, parked aggregates and
/// events, events applied), one series per partition; `now` dates the ages.
pub fn register_states(registry: &mut Registry, states: &[ProjectionState], now: DateTime<Utc>) {
    for (name, help, value) in COUNTS {
        let family = Family::<PartitionLabels, Gauge>::default();
        for s in states {
            family.get_or_create(&PartitionLabels::new(&s.projection, s.partition)).set(value(s));
        }
        registry.register(name, help, family);
    }
    for (name, help, value) in SECONDS {
        let family = Family::<PartitionLabels, SecondsGauge>::default();
        for s in states {
            if let Some(v) = value(s, now) {
                family.get_or_create(&PartitionLabels::new(&s.projection, s.partition)).set(v);
            }
        }
        registry.register_with_unit(name, help, Unit::Seconds, family);
    }
}

/// Registers `projector_up`: 1 for each healthy partition, 0 for each unhealthy one, as
/// `/health` judges them.
pub fn register_up<'a>(registry: &mut Registry, partitions: impl IntoIterator<Item = (&'a str, u32, bool)>) {
    let family = Family::<PartitionLabels, Gauge>::default();
    for (projection, partition, healthy) in partitions {
        family.get_or_create(&PartitionLabels::new(projection, partition)).set(i64::from(healthy));
    }
    registry.register("projector_up", "1 when the partition is healthy, as /health judges it", family);
}

/// Registers `projector_store_up`: whether the projection states could be read.
pub fn register_store_up(registry: &mut Registry, up: bool) {
    let gauge = Gauge::<i64>::default();
    gauge.set(i64::from(up));
    registry.register("projector_store_up", "1 when the projection states could be read from the store", gauge);
}

/// Registers `projector_build_info{version="…",provider="…"} 1`.
pub fn register_build_info(registry: &mut Registry, provider: &'static str) {
    let labels = [("version", env!("CARGO_PKG_VERSION")), ("provider", provider)];
    registry.register("projector_build", "The Projector build that serves these metrics", Info::new(labels));
}

/// `Content-Type` of the Prometheus text format.
pub const PROMETHEUS_CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// `Content-Type` of the OpenMetrics text format.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The exposition format of a `/metrics` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4: counters' `TYPE` names end in `_total`, no `# EOF`.
    Prometheus,
    /// OpenMetrics 1.0 text: units, `info` metrics, and a closing `# EOF`.
    OpenMetrics,
}

impl Format {
    /// The format a scraper's `Accept` header (all its values, comma-joined) prefers:
    /// OpenMetrics when `application/openmetrics-text` weighs more than `text/plain`
    /// (by `q`, the most specific range deciding), Prometheus text otherwise (no header,
    /// `*/*`, a tie).
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Prometheus;
        };
        let openmetrics = quality(accept, "application", "openmetrics-text");
        let prometheus = quality(accept, "text", "plain");
        if openmetrics > prometheus {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => PROMETHEUS_CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }

    /// The registry's metrics in this format.
    pub fn encode(self, registry: &Registry) -> Result<String, fmt::Error> {
        let mut out = String::new();
        match self {
            Format::Prometheus => prometheus_text::encode(&mut out, registry)?,
            Format::OpenMetrics => text::encode(&mut out, registry)?,
        }
        Ok(out)
    }
}

/// The `q` an `Accept` header gives `kind/subtype`: that of its most specific matching
/// range (exact, then `kind/*`, then `*/*`); 0 when none matches.
fn quality(accept: &str, kind: &str, subtype: &str) -> f32 {
    let mut best: Option<(u8, f32)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let Some((k, s)) = parts.next().and_then(|media| media.split_once('/')) else {
            continue;
        };
        let specificity = match (k.trim(), s.trim()) {
            (k, s) if k.eq_ignore_ascii_case(kind) && s.eq_ignore_ascii_case(subtype) => 2,
            (k, "*") if k.eq_ignore_ascii_case(kind) => 1,
            ("*", "*") => 0,
            _ => continue,
        };
        let q = parts
            .filter_map(|p| p.split_once('='))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("q"))
            .map_or(1.0, |(_, v)| v.trim().parse::<f32>().unwrap_or(0.0));
        if best.is_none_or(|(seen, _)| specificity > seen) {
            best = Some((specificity, q));
        }
    }
    best.map_or(0.0, |(_, q)| q)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Checkpoint, Status};

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    fn state(projection: &str) -> ProjectionState {
        ProjectionState {
            projection: projection.into(),
            partition: 0,
            partitions: 1,
            checkpoint: Checkpoint::START,
            last_event_at: None,
            lag_events: 3,
            lag_estimated: false,
            lag_seconds: 1.5,
            status: Status::Running,
            events_applied: 7,
            error_count: 0,
            last_error: None,
            lease_owner: None,
            lease_expires_at: None,
            updated_at: now(),
            dead_letters: 0,
            oldest_dead_letter_at: None,
            parked_aggregates: 0,
            parked_events: 0,
        }
    }

    #[test]
    fn the_scraper_gets_openmetrics_only_when_it_prefers_it() {
        let negotiate = |accept| Format::negotiate(Some(accept));
        assert_eq!(Format::negotiate(None), Format::Prometheus);
        assert_eq!(negotiate("*/*"), Format::Prometheus);
        assert_eq!(negotiate("text/plain"), Format::Prometheus);
        assert_eq!(negotiate("application/openmetrics-text"), Format::OpenMetrics);
        // What Prometheus sends by default, and with text first in `scrape_protocols`.
        assert_eq!(
            negotiate(
                "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,\
                 text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
            ),
            Format::OpenMetrics
        );
        assert_eq!(
            negotiate("text/plain;version=0.0.4;q=0.5,application/openmetrics-text;version=1.0.0;q=0.4,*/*;q=0.1"),
            Format::Prometheus
        );
        assert_eq!(negotiate("application/*;q=0.9, text/plain;q=0.8"), Format::OpenMetrics);
        assert_eq!(negotiate("application/openmetrics-text;q=0, */*"), Format::Prometheus);
        assert_eq!(negotiate("text/html,application/xhtml+xml,*/*;q=0.8"), Format::Prometheus);
    }

    #[test]
    fn both_formats_carry_the_same_families() {
        let mut registry = Registry::default();
        let states = [state("a\"b")];
        register_states(&mut registry, &states, now());
        register_up(&mut registry, [("a\"b", 0, true)]);
        register_store_up(&mut registry, true);
        register_build_info(&mut registry, "local");

        let text = Format::Prometheus.encode(&registry).unwrap();
        assert!(text.contains("projector_lag_events{projection=\"a\\\"b\",partition=\"0\"} 3\n"), "{text}");
        assert!(text.contains("# TYPE projector_lag_seconds gauge\n"), "{text}");
        assert!(text.contains("projector_lag_seconds{projection=\"a\\\"b\",partition=\"0\"} 1.5\n"), "{text}");
        assert!(text.contains("projector_up{projection=\"a\\\"b\",partition=\"0\"} 1\n"), "{text}");
        assert!(text.contains("projector_store_up 1\n"), "{text}");
        let build = format!("projector_build_info{{version=\"{}\",provider=\"local\"}} 1\n", env!("CARGO_PKG_VERSION"));
        assert!(text.contains(&build), "{text}");
        assert!(!text.contains("# EOF"), "{text}");

        let open = Format::OpenMetrics.encode(&registry).unwrap();
        assert!(open.ends_with("# EOF\n"), "{open}");
        assert!(open.contains("# UNIT projector_lag_seconds seconds\n"), "{open}");
        assert!(open.contains("# TYPE projector_build info\n"), "{open}");
        assert!(open.contains(&build), "{open}");
    }
}
