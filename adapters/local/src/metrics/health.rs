//! `/health`: whether each known partition is healthy, from what its worker reported
//! and its stored state (see the parent module for the rule).

use std::time::{Duration, Instant};

use projector::ProjectionState;

use super::{Metrics, PartitionLife, Partitions};

pub use projector::{Health, PartitionHealth};

impl Metrics {
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
                let life = partitions.get(projection).and_then(|p| p.get(&partition));
                let state = states.iter().find(|s| s.projection == projection && s.partition == partition);
                let reason = self.unhealthy_reason(life, state, interval, now);
                PartitionHealth { projection: projection.to_owned(), partition, healthy: reason.is_none(), reason }
            })
            .collect();
        Health { healthy: partitions.iter().all(|p| p.healthy), error: None, partitions }
    }

    fn unhealthy_reason(
        &self,
        life: Option<&PartitionLife>,
        state: Option<&ProjectionState>,
        interval: Duration,
        now: Instant,
    ) -> Option<String> {
        if let Some(reason) = life.and_then(|s| s.exited.as_ref()) {
            return Some(format!("the worker exited: {reason}"));
        }
        if let Some(reason) = life.and_then(|s| s.stopped.as_ref()) {
            return Some(reason.clone());
        }
        if let Some(problem) = state.and_then(ProjectionState::status_problem) {
            return Some(problem);
        }
        match life.and_then(|s| s.last_heartbeat) {
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
