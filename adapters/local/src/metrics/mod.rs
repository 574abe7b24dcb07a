//! Process-wide counters of the local runner, exposed through `prometheus-client`, and
//! the health of every projection partition.
//!
//! The worker threads report what they do ([`Metrics::batch_committed`],
//! [`Metrics::retried`], [`Metrics::dead_lettered`], [`Metrics::heartbeat`],
//! [`Metrics::stopped`]); the gauges (lag, open dead letters, parked aggregates) come
//! from the [`ProjectionState`]s read from the store when the page is encoded, with the
//! families the Worker serves too (`projector::metrics`). `process_*` metrics come from
//! the operating system at each scrape ([`process`]).
//!
//! A partition is healthy when its loop heart-beat within the health interval, it was
//! not halted, and its stored status is none of `failed`, `stopped` and `needs-rebuild`. Parked events
//! are not lag and do not make a partition unhealthy.

mod health;
mod process;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::Utc;
use projector::config::DEFAULT_HEALTH_INTERVAL;
use projector::metrics::{self as families, PartitionLabels};
use projector::ProjectionState;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub use health::{Health, PartitionHealth};
pub use process::ProcessCollector;
pub use projector::metrics::Format;

/// Upper bounds (seconds) of the `projector_batch_duration_seconds` buckets; `+Inf`
/// is implied.
pub const BATCH_DURATION_BUCKETS: [f64; 14] =
    [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// What the workers reported about one partition's life (its counters are
/// [`Instruments`]).
#[derive(Debug, Clone, Default)]
struct PartitionLife {
    /// Batches committed and their total duration, for [`Metrics::counters`] (the
    /// histogram does not tell them).
    batches: u64,
    batch_seconds: f64,
    last_heartbeat: Option<Instant>,
    last_commit: Option<Instant>,
    stopped: Option<String>,
    /// Why the partition's worker ended, while no new worker runs it.
    exited: Option<String>,
}

type Partitions = BTreeMap<String, BTreeMap<u32, PartitionLife>>;

/// The counters and the histogram the workers feed, one series per partition this
/// process reported on.
#[derive(Debug)]
struct Instruments {
    events: Family<PartitionLabels, Counter>,
    retries: Family<PartitionLabels, Counter>,
    dead_lettered: Family<PartitionLabels, Counter>,
    batch_duration: Family<PartitionLabels, Histogram>,
}

impl Instruments {
    fn new() -> Self {
        Instruments {
            events: Family::default(),
            retries: Family::default(),
            dead_lettered: Family::default(),
            batch_duration: Family::new_with_constructor(|| Histogram::new(BATCH_DURATION_BUCKETS)),
        }
    }

    /// Every family lists a partition from its first report on, at 0.
    fn start(&self, labels: &PartitionLabels) {
        for counter in [&self.events, &self.retries, &self.dead_lettered] {
            let _ = counter.get_or_create(labels);
        }
        let _ = self.batch_duration.get_or_create(labels);
    }

    fn remove(&self, labels: &PartitionLabels) {
        for counter in [&self.events, &self.retries, &self.dead_lettered] {
            counter.remove(labels);
        }
        self.batch_duration.remove(labels);
    }

    /// Adds the families to a scrape's registry (they share their values with `self`).
    fn register(&self, registry: &mut Registry) {
        // Help texts leave out the final period, and counters their `_total`: the
        // registry adds them.
        let counters = [
            (
                "projector_events_processed",
                "Events applied to the read model by this runner, in committed batches",
                &self.events,
            ),
            ("projector_retries", "Retries of failing events or batches", &self.retries),
            ("projector_dead_letters", "Events sent to the dead-letter table", &self.dead_lettered),
        ];
        for (name, help, family) in counters {
            registry.register(name, help, family.clone());
        }
        // No `# UNIT` on the histogram: OpenMetrics allows one, but some strict parsers
        // refuse it; the name says the unit.
        registry.register(
            "projector_batch_duration_seconds",
            "Time to process and commit one batch",
            self.batch_duration.clone(),
        );
    }
}

/// Counters and heartbeats of the local runner; share it as `Arc<Metrics>`.
#[derive(Debug)]
pub struct Metrics {
    created: Instant,
    health_interval: Mutex<Duration>,
    partitions: Mutex<Partitions>,
    instruments: Instruments,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            created: Instant::now(),
            health_interval: Mutex::new(DEFAULT_HEALTH_INTERVAL),
            partitions: Mutex::new(BTreeMap::new()),
            instruments: Instruments::new(),
        }
    }
}

/// A snapshot of one partition's counters (see [`Metrics::counters`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Counters {
    pub events: u64,
    pub batches: u64,
    pub retries: u64,
    pub dead_lettered: u64,
    pub batch_seconds: f64,
}

impl Metrics {
    /// Empty metrics; the health interval used by [`Metrics::encode`] is the default
    /// (30s) until [`Metrics::set_health_interval`].
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    fn lock(&self) -> MutexGuard<'_, Partitions> {
        // A panic while holding the lock leaves plain values behind; keep serving them.
        self.partitions.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the partition's life, and on its series' labels, under the lock that
    /// [`Metrics::forget`] takes, so that a partition's series come and go together.
    fn with<R>(
        &self,
        projection: &str,
        partition: u32,
        f: impl FnOnce(&mut PartitionLife, &PartitionLabels) -> R,
    ) -> R {
        let labels = PartitionLabels::new(projection, partition);
        let mut partitions = self.lock();
        if !partitions.contains_key(projection) {
            partitions.insert(projection.to_owned(), BTreeMap::new());
        }
        let parts = partitions.get_mut(projection).expect("inserted above");
        let life = parts.entry(partition).or_insert_with(|| {
            self.instruments.start(&labels);
            PartitionLife::default()
        });
        f(life, &labels)
    }

    /// One batch of `events` events committed in `duration`; also a heartbeat, and
    /// clears a previous [`Metrics::stopped`] (the partition makes progress again).
    pub fn batch_committed(&self, projection: &str, partition: u32, events: u64, duration: Duration) {
        let now = Instant::now();
        self.with(projection, partition, |life, labels| {
            self.instruments.events.get_or_create(labels).inc_by(events);
            self.instruments.batch_duration.get_or_create(labels).observe(duration.as_secs_f64());
            life.batches = life.batches.saturating_add(1);
            life.batch_seconds += duration.as_secs_f64();
            life.last_heartbeat = Some(now);
            life.last_commit = Some(now);
            life.stopped = None;
        });
    }

    /// One retry of a failing event (or batch).
    pub fn retried(&self, projection: &str, partition: u32) {
        self.with(projection, partition, |_, labels| {
            self.instruments.retries.get_or_create(labels).inc();
        });
    }

    /// `count` events sent to the dead-letter table.
    pub fn dead_lettered(&self, projection: &str, partition: u32, count: u64) {
        self.with(projection, partition, |_, labels| {
            self.instruments.dead_lettered.get_or_create(labels).inc_by(count);
        });
    }

    /// The partition's loop is alive (call it every iteration, idle or busy).
    pub fn heartbeat(&self, projection: &str, partition: u32) {
        let now = Instant::now();
        self.with(projection, partition, |life, _| life.last_heartbeat = Some(now));
    }

    /// The partition halted (`on_failure: stop`, or a permanent failure); it stays
    /// unhealthy with `reason` until a batch commits again, [`Metrics::resumed`] or
    /// [`Metrics::forget`].
    pub fn stopped(&self, projection: &str, partition: u32, reason: &str) {
        self.with(projection, partition, |life, _| life.stopped = Some(reason.to_owned()));
    }

    /// Clears [`Metrics::stopped`] and [`Metrics::exited`] (the partition was restarted)
    /// and counts as a heartbeat.
    pub fn resumed(&self, projection: &str, partition: u32) {
        let now = Instant::now();
        self.with(projection, partition, |life, _| {
            life.stopped = None;
            life.exited = None;
            life.last_heartbeat = Some(now);
        });
    }

    /// The partition's worker ended, for whatever `reason` (a failure, a halt, a panic):
    /// the partition is unhealthy at once, not only when its heartbeat goes stale, until
    /// [`Metrics::resumed`] or [`Metrics::forget`].
    pub fn exited(&self, projection: &str, partition: u32, reason: &str) {
        self.with(projection, partition, |life, _| life.exited = Some(reason.to_owned()));
    }

    /// Drops everything known about `projection` (it was undeployed or rescaled on
    /// purpose, so its silent partitions are not a health problem). Counters restart at 0.
    pub fn forget(&self, projection: &str) {
        let mut partitions = self.lock();
        if let Some(parts) = partitions.remove(projection) {
            for &partition in parts.keys() {
                self.instruments.remove(&PartitionLabels::new(projection, partition));
            }
        }
    }

    fn life(&self, projection: &str, partition: u32) -> Option<PartitionLife> {
        self.lock().get(projection).and_then(|p| p.get(&partition)).cloned()
    }

    /// When the partition last committed a batch (in this process).
    pub fn last_commit(&self, projection: &str, partition: u32) -> Option<Instant> {
        self.life(projection, partition).and_then(|life| life.last_commit)
    }

    /// Why the partition was halted, if [`Metrics::stopped`] was called.
    pub fn stop_reason(&self, projection: &str, partition: u32) -> Option<String> {
        self.life(projection, partition).and_then(|life| life.stopped)
    }

    /// The partition's counters, if anything was reported for it.
    pub fn counters(&self, projection: &str, partition: u32) -> Option<Counters> {
        let partitions = self.lock();
        let life = partitions.get(projection)?.get(&partition)?;
        let labels = PartitionLabels::new(projection, partition);
        let count = |family: &Family<PartitionLabels, Counter>| family.get(&labels).map_or(0, |c| c.get());
        Some(Counters {
            events: count(&self.instruments.events),
            batches: life.batches,
            retries: count(&self.instruments.retries),
            dead_lettered: count(&self.instruments.dead_lettered),
            batch_seconds: life.batch_seconds,
        })
    }

    /// The heartbeat limit [`Metrics::encode`] uses for `projector_up`.
    pub fn set_health_interval(&self, interval: Duration) {
        *self.health_interval.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = interval;
    }

    /// See [`Metrics::set_health_interval`].
    pub fn health_interval(&self) -> Duration {
        *self.health_interval.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The `/metrics` page in `format`: this runner's counters and batch durations, the
    /// gauges of `states`, `projector_up` per partition, `projector_store_up` (0 when
    /// `states` is `None`: they could not be read), `projector_build_info` and the
    /// `process_*` metrics.
    pub fn encode(&self, states: Option<&[ProjectionState]>, format: Format) -> Result<String, fmt::Error> {
        format.encode(&self.registry(states, Instant::now()))
    }

    fn registry(&self, states: Option<&[ProjectionState]>, now: Instant) -> Registry {
        let health = self.health_at(states.unwrap_or(&[]), self.health_interval(), now);
        let mut registry = Registry::default();
        self.instruments.register(&mut registry);
        if let Some(states) = states {
            families::register_states(&mut registry, states, Utc::now());
        }
        families::register_up(
            &mut registry,
            health.partitions.iter().map(|p| (p.projection.as_str(), p.partition, p.healthy)),
        );
        families::register_store_up(&mut registry, states.is_some());
        families::register_build_info(&mut registry, "local");
        registry.register_collector(Box::new(ProcessCollector));
        registry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prometheus(m: &Metrics) -> String {
        m.encode(Some(&[]), Format::Prometheus).unwrap()
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::new();
        m.batch_committed("p", 0, 10, Duration::from_millis(3));
        m.batch_committed("p", 0, 10, Duration::from_millis(300));
        m.batch_committed("p", 0, 10, Duration::from_secs(100));
        let text = prometheus(&m);
        let line = |le: &str| {
            let prefix =
                format!("projector_batch_duration_seconds_bucket{{projection=\"p\",partition=\"0\",le=\"{le}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .unwrap_or_else(|| panic!("no bucket {le} in\n{text}"))
                .to_owned()
        };
        assert_eq!(line("0.001"), "0");
        assert_eq!(line("0.005"), "1");
        assert_eq!(line("0.25"), "1");
        assert_eq!(line("0.5"), "2");
        assert_eq!(line("60"), "2");
        assert_eq!(line("+Inf"), "3");
        assert!(text.contains("projector_batch_duration_seconds_count{projection=\"p\",partition=\"0\"} 3\n"));
        assert_eq!(m.counters("p", 0).map(|c| (c.events, c.batches)), Some((30, 3)));
    }

    #[test]
    fn every_counter_lists_a_partition_from_its_first_report_until_it_is_forgotten() {
        let m = Metrics::new();
        m.heartbeat("p", 1);
        let text = prometheus(&m);
        for name in ["projector_events_processed_total", "projector_retries_total", "projector_dead_letters_total"] {
            assert!(text.contains(&format!("{name}{{projection=\"p\",partition=\"1\"}} 0\n")), "{name} in\n{text}");
        }
        m.forget("p");
        assert!(!prometheus(&m).contains("projection=\"p\""), "{}", prometheus(&m));
        assert_eq!(m.counters("p", 1), None);
    }

    #[test]
    fn heartbeat_silence_beyond_the_interval_is_unhealthy() {
        let m = Metrics::new();
        m.heartbeat("p", 0);
        m.heartbeat("p", 1);
        let start = Instant::now();
        let interval = Duration::from_secs(10);
        assert!(m.health_at(&[], interval, start).healthy);
        let later = start + Duration::from_secs(11);
        let health = m.health_at(&[], interval, later);
        assert!(!health.healthy);
        assert!(health.partitions.iter().all(|p| !p.healthy));
        assert!(health.partitions[0].reason.as_deref().is_some_and(|r| r.starts_with("no heartbeat for 11.")));
        m.stopped("p", 1, "stopped at event 7/3");
        let health = m.health_at(&[], interval, Instant::now());
        assert!(health.partitions[0].healthy);
        assert_eq!(health.partitions[1].reason.as_deref(), Some("stopped at event 7/3"));
        m.forget("p");
        assert_eq!(m.health_at(&[], interval, later).partitions, vec![]);
    }
}
