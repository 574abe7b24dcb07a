//! Process-wide counters of the local runner, rendered as Prometheus text, and the
//! health of every projection partition.
//!
//! The worker threads report what they do ([`Metrics::batch_committed`],
//! [`Metrics::retried`], [`Metrics::dead_lettered`], [`Metrics::heartbeat`],
//! [`Metrics::stopped`]); the gauges (lag, open dead letters, parked aggregates) come
//! from the [`ProjectionState`]s read from the store when the page is rendered.
//!
//! A partition is healthy when its loop heart-beat within the health interval, it was
//! not halted, and its stored status is none of `failed`, `stopped` and `needs-rebuild`. Parked events
//! are not lag and do not make a partition unhealthy.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::Utc;
use projector::config::DEFAULT_HEALTH_INTERVAL;
use projector::ProjectionState;
use serde::{Deserialize, Serialize};

/// Upper bounds (seconds) of the `projector_batch_duration_seconds` buckets; `+Inf`
/// is implied.
pub const BATCH_DURATION_BUCKETS: [f64; 14] =
    [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Health of every known partition (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// True when every partition is healthy (and the states could be read).
    pub healthy: bool,
    /// Why health could not be fully judged (e.g. the store is unreachable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub partitions: Vec<PartitionHealth>,
}

/// Health of one partition of one projection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionHealth {
    pub projection: String,
    pub partition: u32,
    pub healthy: bool,
    /// Why it is unhealthy; `None` when healthy.
    pub reason: Option<String>,
}

/// What the workers reported about one partition.
#[derive(Debug, Clone)]
struct PartitionStats {
    events: u64,
    retries: u64,
    dead_lettered: u64,
    /// Batches per bucket of [`BATCH_DURATION_BUCKETS`] (not cumulative); the last slot
    /// counts batches above the largest bound.
    buckets: [u64; BATCH_DURATION_BUCKETS.len() + 1],
    batches: u64,
    duration_sum: f64,
    last_heartbeat: Option<Instant>,
    last_commit: Option<Instant>,
    stopped: Option<String>,
    /// Why the partition's worker ended, while no new worker runs it.
    exited: Option<String>,
}

impl PartitionStats {
    fn new() -> Self {
        PartitionStats {
            events: 0,
            retries: 0,
            dead_lettered: 0,
            buckets: [0; BATCH_DURATION_BUCKETS.len() + 1],
            batches: 0,
            duration_sum: 0.0,
            last_heartbeat: None,
            last_commit: None,
            stopped: None,
            exited: None,
        }
    }
}

type Partitions = BTreeMap<String, BTreeMap<u32, PartitionStats>>;

/// A counter family: name, help, and its value in a partition's stats.
type CounterFamily = (&'static str, &'static str, fn(&PartitionStats) -> u64);

/// A gauge family read from the states: name, help, value (if any) of one state.
type GaugeFamily = (&'static str, &'static str, fn(&ProjectionState) -> Option<f64>);

/// Counters and heartbeats of the local runner; share it as `Arc<Metrics>`.
#[derive(Debug)]
pub struct Metrics {
    created: Instant,
    health_interval: Mutex<Duration>,
    partitions: Mutex<Partitions>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            created: Instant::now(),
            health_interval: Mutex::new(DEFAULT_HEALTH_INTERVAL),
            partitions: Mutex::new(BTreeMap::new()),
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
    /// Empty metrics; the health interval used by [`Metrics::render`] is the default
    /// (30s) until [`Metrics::set_health_interval`].
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    fn lock(&self) -> MutexGuard<'_, Partitions> {
        // A panic while holding the lock leaves plain counters behind; keep serving them.
        self.partitions.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn with<R>(&self, projection: &str, partition: u32, f: impl FnOnce(&mut PartitionStats) -> R) -> R {
        let mut partitions = self.lock();
        if !partitions.contains_key(projection) {
            partitions.insert(projection.to_owned(), BTreeMap::new());
        }
        let stats = partitions
            .get_mut(projection)
            .expect("inserted above")
            .entry(partition)
            .or_insert_with(PartitionStats::new);
        f(stats)
    }

    /// One batch of `events` events committed in `duration`; also a heartbeat, and
    /// clears a previous [`Metrics::stopped`] (the partition makes progress again).
    pub fn batch_committed(&self, projection: &str, partition: u32, events: u64, duration: Duration) {
        let now = Instant::now();
        let seconds = duration.as_secs_f64();
        self.with(projection, partition, |s| {
            s.events = s.events.saturating_add(events);
            s.batches = s.batches.saturating_add(1);
            s.duration_sum += seconds;
            let bucket =
                BATCH_DURATION_BUCKETS.iter().position(|&le| seconds <= le).unwrap_or(BATCH_DURATION_BUCKETS.len());
            s.buckets[bucket] = s.buckets[bucket].saturating_add(1);
            s.last_heartbeat = Some(now);
            s.last_commit = Some(now);
            s.stopped = None;
        });
    }

    /// One retry of a failing event (or batch).
    pub fn retried(&self, projection: &str, partition: u32) {
        self.with(projection, partition, |s| s.retries = s.retries.saturating_add(1));
    }

    /// `count` events sent to the dead-letter table.
    pub fn dead_lettered(&self, projection: &str, partition: u32, count: u64) {
        self.with(projection, partition, |s| s.dead_lettered = s.dead_lettered.saturating_add(count));
    }

    /// The partition's loop is alive (call it every iteration, idle or busy).
    pub fn heartbeat(&self, projection: &str, partition: u32) {
        let now = Instant::now();
        self.with(projection, partition, |s| s.last_heartbeat = Some(now));
    }

    /// The partition halted (`on_failure: stop`, or a permanent failure); it stays
    /// unhealthy with `reason` until a batch commits again, [`Metrics::resumed`] or
    /// [`Metrics::forget`].
    pub fn stopped(&self, projection: &str, partition: u32, reason: &str) {
        self.with(projection, partition, |s| s.stopped = Some(reason.to_owned()));
    }

    /// Clears [`Metrics::stopped`] and [`Metrics::exited`] (the partition was restarted)
    /// and counts as a heartbeat.
    pub fn resumed(&self, projection: &str, partition: u32) {
        let now = Instant::now();
        self.with(projection, partition, |s| {
            s.stopped = None;
            s.exited = None;
            s.last_heartbeat = Some(now);
        });
    }

    /// The partition's worker ended, for whatever `reason` (a failure, a halt, a panic):
    /// the partition is unhealthy at once, not only when its heartbeat goes stale, until
    /// [`Metrics::resumed`] or [`Metrics::forget`].
    pub fn exited(&self, projection: &str, partition: u32, reason: &str) {
        self.with(projection, partition, |s| s.exited = Some(reason.to_owned()));
    }

    /// Drops everything known about `projection` (it was undeployed or rescaled on
    /// purpose, so its silent partitions are not a health problem). Counters restart at 0.
    pub fn forget(&self, projection: &str) {
        self.lock().remove(projection);
    }

    /// When the partition last committed a batch (in this process).
    pub fn last_commit(&self, projection: &str, partition: u32) -> Option<Instant> {
        self.lock().get(projection).and_then(|p| p.get(&partition)).and_then(|s| s.last_commit)
    }

    /// Why the partition was halted, if [`Metrics::stopped`] was called.
    pub fn stop_reason(&self, projection: &str, partition: u32) -> Option<String> {
        self.lock().get(projection).and_then(|p| p.get(&partition)).and_then(|s| s.stopped.clone())
    }

    /// The partition's counters, if anything was reported for it.
    pub fn counters(&self, projection: &str, partition: u32) -> Option<Counters> {
        self.lock().get(projection).and_then(|p| p.get(&partition)).map(|s| Counters {
            events: s.events,
            batches: s.batches,
            retries: s.retries,
            dead_lettered: s.dead_lettered,
            batch_seconds: s.duration_sum,
        })
    }

    /// The heartbeat limit [`Metrics::render`] uses for `projector_up`.
    pub fn set_health_interval(&self, interval: Duration) {
        *self.health_interval.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = interval;
    }

    /// See [`Metrics::set_health_interval`].
    pub fn health_interval(&self) -> Duration {
        *self.health_interval.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Health now; `interval` is how long a loop may go without a heartbeat.
    pub fn health(&self, states: &[ProjectionState], interval: Duration) -> Health {
        self.health_at(states, interval, Instant::now())
    }

    /// [`Metrics::health`] at the instant `now` (for tests).
    pub fn health_at(&self, states: &[ProjectionState], interval: Duration, now: Instant) -> Health {
        let partitions = self.lock();
        let partitions: Vec<PartitionHealth> = keys(&partitions, states)
            .into_iter()
            .map(|(projection, partition)| {
                let stats = partitions.get(projection).and_then(|p| p.get(&partition));
                let state = states.iter().find(|s| s.projection == projection && s.partition == partition);
                let reason = self.unhealthy_reason(stats, state, interval, now);
                PartitionHealth { projection: projection.to_owned(), partition, healthy: reason.is_none(), reason }
            })
            .collect();
        Health { healthy: partitions.iter().all(|p| p.healthy), error: None, partitions }
    }

    fn unhealthy_reason(
        &self,
        stats: Option<&PartitionStats>,
        state: Option<&ProjectionState>,
        interval: Duration,
        now: Instant,
    ) -> Option<String> {
        if let Some(reason) = stats.and_then(|s| s.exited.as_ref()) {
            return Some(format!("the worker exited: {reason}"));
        }
        if let Some(reason) = stats.and_then(|s| s.stopped.as_ref()) {
            return Some(reason.clone());
        }
        if let Some(problem) = state.and_then(ProjectionState::status_problem) {
            return Some(problem);
        }
        match stats.and_then(|s| s.last_heartbeat) {
            Some(beat) => {
                let silent = now.saturating_duration_since(beat);
                (silent > interval).then(|| {
                    format!(
                        "no heartbeat for {} (limit {}): the worker loop is frozen or gone",
                        seconds(silent),
                        seconds(interval)
                    )
                })
            }
            // Known only from the store: give a starting worker one interval.
            None => (now.saturating_duration_since(self.created) > interval).then(|| {
                format!(
                    "no heartbeat since the runner started {} ago: no worker runs this partition",
                    seconds(now.saturating_duration_since(self.created))
                )
            }),
        }
    }

    /// The Prometheus text exposition (format 0.0.4) of the counters and of `states`.
    pub fn render(&self, states: &[ProjectionState]) -> String {
        self.render_at(Some(states), Instant::now())
    }

    /// The counters alone, when the states cannot be read (`projector_store_up 0`).
    pub fn render_without_states(&self) -> String {
        self.render_at(None, Instant::now())
    }

    fn render_at(&self, states: Option<&[ProjectionState]>, now: Instant) -> String {
        let all = states.unwrap_or(&[]);
        let health = self.health_at(all, self.health_interval(), now);
        let partitions = self.lock();
        let keys = keys(&partitions, all);
        let stats = |projection: &str, partition: u32| partitions.get(projection).and_then(|p| p.get(&partition));
        let state = |projection: &str, partition: u32| {
            all.iter().find(|s| s.projection == projection && s.partition == partition)
        };
        let mut out = String::new();

        let counters: [CounterFamily; 3] = [
            ("projector_events_processed_total", "Events applied to the read model, in committed batches.", |s| {
                s.events
            }),
            ("projector_retries_total", "Retries of failing events or batches.", |s| s.retries),
            ("projector_dead_letters_total", "Events sent to the dead-letter table.", |s| s.dead_lettered),
        ];
        for (name, help, value) in counters {
            family(&mut out, name, help, "counter");
            for &(projection, partition) in &keys {
                let v = stats(projection, partition).map_or(0, value);
                sample(&mut out, name, projection, partition, None, &v.to_string());
            }
        }

        if states.is_some() {
            let gauges: [GaugeFamily; 7] = [
                ("projector_dead_letters_open", "Open (unresolved) dead letters.", |s| Some(s.dead_letters as f64)),
                ("projector_dead_letter_oldest_age_seconds", "Age of the oldest open dead letter.", |s| {
                    s.oldest_dead_letter_at.map(|at| (Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0)
                }),
                ("projector_parked_aggregates", "Aggregates held back behind a dead letter.", |s| {
                    Some(s.parked_aggregates as f64)
                }),
                ("projector_parked_events", "Events held back behind a dead letter (not counted as lag).", |s| {
                    Some(s.parked_events as f64)
                }),
                ("projector_lag_events", "Events readable after the checkpoint.", |s| Some(s.lag_events as f64)),
                ("projector_lag_seconds", "Age of the oldest event not yet applied; 0 when caught up.", |s| {
                    Some(s.lag_seconds)
                }),
                (
                    "projector_lag_estimated",
                    "1 when projector_lag_events is estimated from positions (a backlog past the exact window).",
                    |s| Some(if s.lag_estimated { 1.0 } else { 0.0 }),
                ),
            ];
            for (name, help, value) in gauges {
                family(&mut out, name, help, "gauge");
                for &(projection, partition) in &keys {
                    if let Some(v) = state(projection, partition).and_then(value) {
                        sample(&mut out, name, projection, partition, None, &float(v));
                    }
                }
            }
        }

        let name = "projector_batch_duration_seconds";
        family(&mut out, name, "Time to process and commit one batch.", "histogram");
        for &(projection, partition) in &keys {
            let empty = PartitionStats::new();
            let s = stats(projection, partition).unwrap_or(&empty);
            let mut cumulative = 0u64;
            let bucket_name = format!("{name}_bucket");
            for (i, le) in BATCH_DURATION_BUCKETS.iter().enumerate() {
                cumulative = cumulative.saturating_add(s.buckets[i]);
                sample(&mut out, &bucket_name, projection, partition, Some(&float(*le)), &cumulative.to_string());
            }
            sample(&mut out, &bucket_name, projection, partition, Some("+Inf"), &s.batches.to_string());
            sample(&mut out, &format!("{name}_sum"), projection, partition, None, &float(s.duration_sum));
            sample(&mut out, &format!("{name}_count"), projection, partition, None, &s.batches.to_string());
        }

        let name = "projector_up";
        family(
            &mut out,
            name,
            "1 when the partition is healthy (its loop heart-beats, it is not stopped or failed).",
            "gauge",
        );
        for p in &health.partitions {
            let v = if p.healthy { "1" } else { "0" };
            sample(&mut out, name, &p.projection, p.partition, None, v);
        }

        let name = "projector_store_up";
        family(&mut out, name, "1 when the projection states could be read from the store.", "gauge");
        let _ = writeln!(out, "{name} {}", u8::from(states.is_some()));
        out
    }
}

/// Every (projection, partition) known from the workers or the store, in order. A
/// partition the workers reported but beyond the projection's current partition count
/// in the store (scaled down) is left out.
fn keys<'a>(partitions: &'a Partitions, states: &'a [ProjectionState]) -> Vec<(&'a str, u32)> {
    let mut keys: Vec<(&str, u32)> = states.iter().map(|s| (s.projection.as_str(), s.partition)).collect();
    for (projection, parts) in partitions {
        let count = states.iter().find(|s| &s.projection == projection).map(|s| s.partitions);
        for &partition in parts.keys() {
            if count.is_none_or(|count| partition < count) {
                keys.push((projection.as_str(), partition));
            }
        }
    }
    keys.sort_unstable();
    keys.dedup();
    keys
}

fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// A sample value as Prometheus reads it (`NaN`, `+Inf`, `-Inf`, or a decimal).
fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{v}")
    }
}

fn family(out: &mut String, name: &str, help: &str, kind: &str) {
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, projection: &str, partition: u32, le: Option<&str>, value: &str) {
    let _ = write!(out, "{name}{{projection=\"{}\",partition=\"{partition}\"", escape_label(projection));
    if let Some(le) = le {
        let _ = write!(out, ",le=\"{le}\"");
    }
    let _ = writeln!(out, "}} {value}");
}

/// Escapes a label value: backslash, double quote and line feed.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("a\nb"), "a\\nb");
    }

    #[test]
    fn floats_use_prometheus_spelling() {
        assert_eq!(float(f64::INFINITY), "+Inf");
        assert_eq!(float(f64::NEG_INFINITY), "-Inf");
        assert_eq!(float(f64::NAN), "NaN");
        assert_eq!(float(0.25), "0.25");
        assert_eq!(float(1.0), "1");
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::new();
        m.batch_committed("p", 0, 10, Duration::from_millis(3));
        m.batch_committed("p", 0, 10, Duration::from_millis(300));
        m.batch_committed("p", 0, 10, Duration::from_secs(100));
        let text = m.render(&[]);
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
