//! Which alert conditions hold: from the projection states, what this runner's workers
//! reported ([`Metrics`]) and the `alerts:` thresholds to the set of firing
//! (projection, condition) pairs, each with its worst partition, values and message.
//! No I/O: the clock comes in as arguments.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use projector::config::AlertsConfig;
use projector::{Checkpoint, ProjectionState, Status};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::human;
use crate::metrics::Metrics;

/// What an incident is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    DeadLetterAge,
    DeadLetters,
    LagSeconds,
    Stalled,
}

impl Condition {
    /// Every condition, in the order incidents are listed.
    pub const ALL: [Condition; 4] =
        [Condition::DeadLetterAge, Condition::DeadLetters, Condition::LagSeconds, Condition::Stalled];

    /// The name used in notifications and in `alerts:` (`dead_letter_age`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::DeadLetterAge => "dead_letter_age",
            Condition::DeadLetters => "dead_letters",
            Condition::LagSeconds => "lag_seconds",
            Condition::Stalled => "stalled",
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A condition that holds for one projection.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Finding {
    /// The partition that triggered it (the worst one).
    pub partition: Option<u32>,
    /// The measured values and the threshold.
    pub values: serde_json::Value,
    pub message: String,
}

/// The firing conditions, by projection and condition.
pub(crate) type Firing = BTreeMap<(String, Condition), Finding>;

/// When each partition's checkpoint last moved and since when it lags: what `stalled`
/// needs to remember between evaluations.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    partitions: BTreeMap<(String, u32), PartitionProgress>,
}

#[derive(Debug, Clone, Copy)]
struct PartitionProgress {
    checkpoint: Checkpoint,
    moved_at: Instant,
    lagging_since: Option<Instant>,
}

impl Progress {
    /// Records the states seen at `now`; partitions no longer in `states` are forgotten.
    pub fn observe(&mut self, states: &[ProjectionState], now: Instant) {
        let mut seen = BTreeMap::new();
        for s in states {
            let key = (s.projection.clone(), s.partition);
            let previous = self.partitions.get(&key).copied();
            let moved_at = match previous {
                Some(p) if p.checkpoint == s.checkpoint => p.moved_at,
                _ => now,
            };
            let lagging_since =
                if s.lag_events > 0 { Some(previous.and_then(|p| p.lagging_since).unwrap_or(now)) } else { None };
            seen.insert(key, PartitionProgress { checkpoint: s.checkpoint, moved_at, lagging_since });
        }
        self.partitions = seen;
    }
}

/// The conditions that hold for `states` at `now` (durations) and `wall` (dates).
/// `progress` should have observed `states` already.
pub(crate) fn firing(
    config: &AlertsConfig,
    states: &[ProjectionState],
    progress: &Progress,
    metrics: &Metrics,
    now: Instant,
    wall: DateTime<Utc>,
) -> Firing {
    let mut projections: BTreeMap<&str, Vec<&ProjectionState>> = BTreeMap::new();
    for state in states {
        projections.entry(state.projection.as_str()).or_default().push(state);
    }
    let context = Context { config, progress, metrics, now, wall };
    let mut firing = Firing::new();
    for (projection, parts) in &projections {
        for condition in Condition::ALL {
            if let Some(finding) = context.check(condition, projection, parts) {
                firing.insert(((*projection).to_owned(), condition), finding);
            }
        }
    }
    firing
}

/// What the checks read besides the partitions of the projection at hand.
struct Context<'a> {
    config: &'a AlertsConfig,
    progress: &'a Progress,
    metrics: &'a Metrics,
    now: Instant,
    wall: DateTime<Utc>,
}

impl Context<'_> {
    fn check(&self, condition: Condition, projection: &str, parts: &[&ProjectionState]) -> Option<Finding> {
        let (c, wall) = (self.config, self.wall);
        match condition {
            Condition::DeadLetters => {
                let threshold = c.dead_letters?;
                let open: i64 = parts.iter().map(|s| s.dead_letters.max(0)).sum();
                let open = u64::try_from(open).unwrap_or(0);
                if open < threshold {
                    return None;
                }
                let worst = parts.iter().max_by_key(|s| s.dead_letters)?;
                Some(Finding {
                    partition: Some(worst.partition),
                    values: json!({ "open": open, "threshold": threshold }),
                    message: format!("projection {projection}: {open} open dead letter(s) (threshold {threshold})"),
                })
            }
            Condition::DeadLetterAge => {
                let threshold = c.dead_letter_age?;
                let (partition, oldest) = parts
                    .iter()
                    .filter_map(|s| s.oldest_dead_letter_at.map(|at| (s.partition, at)))
                    .min_by_key(|&(_, at)| at)?;
                let age = (wall - oldest).to_std().unwrap_or_default();
                (age > threshold).then(|| Finding {
                partition: Some(partition),
                values: json!({
                    "oldest_dead_letter_at": oldest.to_rfc3339_opts(SecondsFormat::Secs, true),
                    "age_seconds": age.as_secs(),
                    "threshold_seconds": threshold.as_secs_f64(),
                }),
                message: format!(
                    "projection {projection} partition {partition}: the oldest open dead letter is {} old (threshold {})",
                    human(age),
                    human(threshold)
                ),
            })
            }
            Condition::LagSeconds => {
                let threshold = c.lag_seconds?;
                let worst = parts
                    .iter()
                    .filter(|s| s.lag_seconds.is_finite())
                    .max_by(|a, b| a.lag_seconds.total_cmp(&b.lag_seconds))?;
                (worst.lag_seconds > threshold as f64).then(|| Finding {
                    partition: Some(worst.partition),
                    values: json!({
                        "lag_seconds": worst.lag_seconds,
                        "lag_events": worst.lag_events,
                        "threshold_seconds": threshold,
                    }),
                    message: format!(
                        "projection {projection} partition {}: lag is {:.0}s, {} event(s) (threshold {threshold}s)",
                        worst.partition, worst.lag_seconds, worst.lag_events
                    ),
                })
            }
            Condition::Stalled => {
                let threshold = c.stalled?;
                parts.iter().find_map(|s| self.stalled(s, threshold)).map(|(partition, values, why)| Finding {
                    partition: Some(partition),
                    values,
                    message: format!("projection {projection} partition {partition} {why}"),
                })
            }
        }
    }

    fn stalled(&self, s: &ProjectionState, threshold: Duration) -> Option<(u32, serde_json::Value, String)> {
        let (progress, metrics, now) = (self.progress, self.metrics, self.now);
        if let Some(reason) = metrics.stop_reason(&s.projection, s.partition) {
            return Some((
                s.partition,
                json!({ "status": s.status.as_str(), "lag_events": s.lag_events, "reason": reason }),
                format!("is halted: {reason}"),
            ));
        }
        if matches!(s.status, Status::Stopped | Status::Failed | Status::NeedsRebuild) {
            let error = s.last_error.as_deref().unwrap_or("");
            let why = if error.is_empty() { format!("is {}", s.status) } else { format!("is {}: {error}", s.status) };
            return Some((
                s.partition,
                json!({ "status": s.status.as_str(), "lag_events": s.lag_events, "last_error": s.last_error }),
                why,
            ));
        }
        if s.lag_events <= 0 {
            return None;
        }
        let progress = progress.partitions.get(&(s.projection.clone(), s.partition))?;
        let since = [progress.lagging_since, Some(progress.moved_at), metrics.last_commit(&s.projection, s.partition)]
            .into_iter()
            .flatten()
            .max()?;
        let idle = now.saturating_duration_since(since);
        (idle >= threshold).then(|| {
            (
                s.partition,
                json!({
                    "status": s.status.as_str(),
                    "lag_events": s.lag_events,
                    "seconds_without_progress": idle.as_secs(),
                    "threshold_seconds": threshold.as_secs_f64(),
                }),
                format!(
                    "is not progressing: {} event(s) behind and no batch committed for {} (threshold {})",
                    s.lag_events,
                    human(idle),
                    human(threshold)
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn state(projection: &str, partition: u32) -> ProjectionState {
        ProjectionState {
            projection: projection.to_owned(),
            partition,
            partitions: 2,
            checkpoint: Checkpoint { transaction_id: 10, position: 100 },
            last_event_at: None,
            lag_events: 0,
            lag_estimated: false,
            lag_seconds: 0.0,
            status: Status::CaughtUp,
            events_applied: 100,
            error_count: 0,
            last_error: None,
            lease_owner: None,
            lease_expires_at: None,
            updated_at: Utc::now(),
            dead_letters: 0,
            oldest_dead_letter_at: None,
            parked_aggregates: 0,
            parked_events: 0,
        }
    }

    /// Observes `states` at `now`, then evaluates them.
    struct Clock {
        config: AlertsConfig,
        progress: Progress,
        metrics: Arc<Metrics>,
        start: Instant,
        wall: DateTime<Utc>,
    }

    impl Clock {
        fn new(config: AlertsConfig) -> Clock {
            Clock {
                config,
                progress: Progress::default(),
                metrics: Metrics::new(),
                start: Instant::now(),
                wall: Utc::now(),
            }
        }

        /// The firing conditions `after` the start.
        fn at(&mut self, after: Duration, states: &[ProjectionState]) -> Firing {
            let now = self.start + after;
            let wall = self.wall + chrono::Duration::from_std(after).unwrap();
            self.progress.observe(states, now);
            firing(&self.config, states, &self.progress, &self.metrics, now, wall)
        }
    }

    fn keys(firing: &Firing) -> Vec<(&str, &str)> {
        firing.keys().map(|(p, c)| (p.as_str(), c.as_str())).collect()
    }

    #[test]
    fn nothing_fires_without_thresholds() {
        let mut clock = Clock::new(AlertsConfig::default());
        let mut s = state("p", 0);
        s.dead_letters = 9;
        s.oldest_dead_letter_at = Some(clock.wall - chrono::Duration::days(1));
        s.lag_events = 100;
        s.lag_seconds = 1e6;
        s.status = Status::Failed;
        clock.metrics.stopped("p", 0, "halted");
        assert!(clock.at(Duration::ZERO, &[s.clone()]).is_empty());
        assert!(clock.at(Duration::from_secs(3600), &[s]).is_empty());
    }

    #[test]
    fn dead_letters_count_over_all_partitions_and_name_the_worst() {
        let config = AlertsConfig { dead_letters: Some(3), ..AlertsConfig::default() };
        let mut clock = Clock::new(config);
        let mut states = [state("p", 0), state("p", 1), state("q", 0)];
        states[0].dead_letters = 1;
        states[1].dead_letters = 1;
        states[2].dead_letters = 2;
        assert!(clock.at(Duration::ZERO, &states).is_empty(), "2 < 3 in p, 2 < 3 in q");
        states[1].dead_letters = 2;
        let firing = clock.at(Duration::ZERO, &states);
        assert_eq!(keys(&firing), [("p", "dead_letters")]);
        let finding = &firing[&("p".to_owned(), Condition::DeadLetters)];
        assert_eq!(finding.partition, Some(1));
        assert_eq!(finding.values, json!({ "open": 3, "threshold": 3 }));
        assert_eq!(finding.message, "projection p: 3 open dead letter(s) (threshold 3)");
    }

    #[test]
    fn dead_letter_age_is_the_oldest_letter_past_the_threshold() {
        let config = AlertsConfig { dead_letter_age: Some(Duration::from_secs(600)), ..AlertsConfig::default() };
        let mut clock = Clock::new(config);
        let mut states = [state("p", 0), state("p", 1)];
        states[0].oldest_dead_letter_at = Some(clock.wall - chrono::Duration::seconds(60));
        states[1].oldest_dead_letter_at = Some(clock.wall - chrono::Duration::seconds(300));
        assert!(clock.at(Duration::from_secs(300), &states).is_empty(), "exactly the threshold is not over it");
        let firing = clock.at(Duration::from_secs(301), &states);
        assert_eq!(keys(&firing), [("p", "dead_letter_age")]);
        let finding = &firing[&("p".to_owned(), Condition::DeadLetterAge)];
        assert_eq!(finding.partition, Some(1));
        assert_eq!(finding.values["age_seconds"], 601);
        assert_eq!(finding.values["threshold_seconds"], 600.0);
        assert!(finding.message.contains("is 10m1s old (threshold 10m0s)"), "{}", finding.message);
    }

    #[test]
    fn lag_seconds_fires_above_the_threshold_on_the_worst_partition() {
        let config = AlertsConfig { lag_seconds: Some(60), ..AlertsConfig::default() };
        let mut clock = Clock::new(config);
        let mut states = [state("p", 0), state("p", 1)];
        states[0].lag_seconds = 60.0;
        states[1].lag_seconds = f64::INFINITY;
        assert!(clock.at(Duration::ZERO, &states).is_empty(), "60s is not over 60s; an unknown lag is ignored");
        states[0].lag_seconds = 61.0;
        states[0].lag_events = 7;
        let firing = clock.at(Duration::ZERO, &states);
        let finding = &firing[&("p".to_owned(), Condition::LagSeconds)];
        assert_eq!(finding.partition, Some(0));
        assert_eq!(finding.values, json!({ "lag_seconds": 61.0, "lag_events": 7, "threshold_seconds": 60 }));
        assert_eq!(finding.message, "projection p partition 0: lag is 61s, 7 event(s) (threshold 60s)");
    }

    #[test]
    fn stalled_needs_lag_without_progress_for_the_threshold() {
        let config = AlertsConfig { stalled: Some(Duration::from_secs(120)), ..AlertsConfig::default() };
        let mut clock = Clock::new(config);
        let mut states = [state("p", 0)];
        assert!(clock.at(Duration::ZERO, &states).is_empty());
        // No lag: idle for ever is fine.
        assert!(clock.at(Duration::from_secs(600), &states).is_empty());
        // Lag appears at 600s; the clock starts then, not at the last checkpoint move.
        states[0].lag_events = 10;
        assert!(clock.at(Duration::from_secs(600), &states).is_empty());
        assert!(clock.at(Duration::from_secs(719), &states).is_empty());
        let firing = clock.at(Duration::from_secs(720), &states);
        let finding = &firing[&("p".to_owned(), Condition::Stalled)];
        assert_eq!(finding.values["seconds_without_progress"], 120);
        assert_eq!(
            finding.message,
            "projection p partition 0 is not progressing: 10 event(s) behind and no batch committed for 2m0s \
             (threshold 2m0s)"
        );
        // The checkpoint moves: progress, the clock restarts.
        states[0].checkpoint.position += 1;
        assert!(clock.at(Duration::from_secs(721), &states).is_empty());
        assert!(clock.at(Duration::from_secs(840), &states).is_empty());
        assert!(!clock.at(Duration::from_secs(841), &states).is_empty());
    }

    #[test]
    fn a_committed_batch_is_progress_too() {
        let config = AlertsConfig { stalled: Some(Duration::from_millis(50)), ..AlertsConfig::default() };
        let mut clock = Clock::new(config);
        let mut states = [state("p", 0)];
        states[0].lag_events = 10;
        // The metrics clock is the real one: let the evaluations' `start` lie 10s back.
        clock.start = Instant::now() - Duration::from_secs(10);
        assert!(clock.at(Duration::ZERO, &states).is_empty());
        assert!(!clock.at(Duration::from_secs(1), &states).is_empty());
        // A batch commits now, at `start + 10s`: no time without progress since then.
        clock.metrics.batch_committed("p", 0, 5, Duration::from_millis(1));
        assert!(clock.at(Duration::from_secs(10), &states).is_empty());
    }

    #[test]
    fn stopped_failed_halted_and_waiting_partitions_are_stalled_at_once() {
        let config = AlertsConfig { stalled: Some(Duration::from_secs(3600)), ..AlertsConfig::default() };
        let mut clock = Clock::new(config);
        let mut states = [state("p", 0), state("q", 0), state("r", 0), state("s", 0)];
        states[0].status = Status::Stopped;
        states[0].last_error = Some("bad payload".into());
        states[1].status = Status::Failed;
        clock.metrics.stopped("r", 0, "stopped at event 3/4");
        states[3].status = Status::NeedsRebuild;
        states[3].last_error = Some("read-model table t is missing".into());
        let firing = clock.at(Duration::ZERO, &states);
        assert_eq!(keys(&firing), [("p", "stalled"), ("q", "stalled"), ("r", "stalled"), ("s", "stalled")]);
        let message = |p: &str| firing[&(p.to_owned(), Condition::Stalled)].message.clone();
        assert_eq!(message("p"), "projection p partition 0 is stopped: bad payload");
        assert_eq!(message("q"), "projection q partition 0 is failed");
        assert_eq!(message("r"), "projection r partition 0 is halted: stopped at event 3/4");
        assert_eq!(message("s"), "projection s partition 0 is needs-rebuild: read-model table t is missing");
        assert_eq!(firing[&("r".to_owned(), Condition::Stalled)].values["reason"], "stopped at event 3/4");
    }

    #[test]
    fn every_condition_of_a_projection_fires_together() {
        let config = AlertsConfig {
            dead_letters: Some(1),
            dead_letter_age: Some(Duration::from_secs(1)),
            lag_seconds: Some(1),
            stalled: Some(Duration::from_secs(1)),
            ..AlertsConfig::default()
        };
        let mut clock = Clock::new(config);
        let mut s = state("p", 0);
        s.dead_letters = 1;
        s.oldest_dead_letter_at = Some(clock.wall);
        s.lag_events = 1;
        s.lag_seconds = 2.0;
        clock.at(Duration::ZERO, &[s.clone()]);
        let firing = clock.at(Duration::from_secs(2), &[s]);
        assert_eq!(
            keys(&firing),
            [("p", "dead_letter_age"), ("p", "dead_letters"), ("p", "lag_seconds"), ("p", "stalled")]
        );
    }
}
