//! What the Worker's `fetch` answers, computed from the stored projection states:
//! `/health` (the local runner's health model and JSON shape), `/status` and `/metrics`
//! (Prometheus text, or OpenMetrics when the scraper asks for it).
//!
//! A Worker keeps nothing between invocations, so a partition's heartbeat is its stored
//! `updated_at`, which every claim, commit and release moves: a partition that no
//! invocation touched within the health interval is unhealthy, as a local worker loop
//! that stopped heart-beating is. Failed and stopped partitions are unhealthy; parked
//! events are not lag and do not make a partition unhealthy.

use std::time::Duration;

use chrono::{DateTime, Utc};
use projector::metrics::{self, Format};
use projector::{HorizonHold, ProjectionState};
use prometheus_client::registry::Registry;
use serde::Serialize;

pub use projector::{Health, PartitionHealth};

/// Health of `projections` from their states at `now`.
pub fn health(projections: &[&str], states: &[ProjectionState], interval: Duration, now: DateTime<Utc>) -> Health {
    let mut partitions = Vec::new();
    for &projection in projections {
        let mine: Vec<&ProjectionState> = states.iter().filter(|s| s.projection == projection).collect();
        if mine.is_empty() {
            partitions.push(PartitionHealth {
                projection: projection.to_owned(),
                partition: 0,
                healthy: false,
                reason: Some("not registered: no scheduled invocation has run it yet".to_owned()),
            });
        }
        for state in mine {
            let reason = unhealthy_reason(state, interval, now);
            partitions.push(PartitionHealth {
                projection: projection.to_owned(),
                partition: state.partition,
                healthy: reason.is_none(),
                reason,
            });
        }
    }
    Health { healthy: partitions.iter().all(|p| p.healthy), error: None, partitions }
}

/// Health when the states cannot be read.
pub fn unreachable(error: &str) -> Health {
    Health { healthy: false, error: Some(format!("cannot read the projection states: {error}")), partitions: vec![] }
}

fn unhealthy_reason(state: &ProjectionState, interval: Duration, now: DateTime<Utc>) -> Option<String> {
    if let Some(problem) = state.status_problem() {
        return Some(problem);
    }
    let silent = (now - state.updated_at).to_std().unwrap_or_default();
    (silent > interval).then(|| {
        format!(
            "no claim or commit for {:.1}s (limit {:.1}s): no scheduled invocation runs this partition",
            silent.as_secs_f64(),
            interval.as_secs_f64()
        )
    })
}

/// `/status`: every partition's state and who holds the read horizon back.
#[derive(Debug, Serialize)]
pub struct StatusPage<'a> {
    pub projections: &'a [ProjectionState],
    pub horizon_hold: Option<&'a HorizonHold>,
}

/// `/metrics` in `format`: the stored states as gauges, `projector_up` from [`health`]
/// (both only when the states could be read), `projector_store_up` and
/// `projector_build_info`; the families are the core's (`projector::metrics`), shared with
/// the local runner.
pub fn metrics(
    states: Option<&[ProjectionState]>,
    health: &Health,
    now: DateTime<Utc>,
    format: Format,
) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    if let Some(states) = states {
        metrics::register_states(&mut registry, states, now);
        metrics::register_up(
            &mut registry,
            health.partitions.iter().map(|p| (p.projection.as_str(), p.partition, p.healthy)),
        );
    }
    metrics::register_store_up(&mut registry, states.is_some());
    metrics::register_build_info(&mut registry, "cloudflare");
    format.encode(&registry)
}

#[cfg(test)]
mod tests {
    use projector::{Checkpoint, Status};

    use super::*;

    fn state(projection: &str, status: Status, updated_at: DateTime<Utc>) -> ProjectionState {
        ProjectionState {
            projection: projection.into(),
            partition: 0,
            partitions: 1,
            checkpoint: Checkpoint::START,
            last_event_at: None,
            lag_events: 3,
            lag_estimated: false,
            lag_seconds: 1.5,
            status,
            events_applied: 7,
            error_count: 0,
            last_error: Some("boom".into()),
            lease_owner: None,
            lease_expires_at: None,
            updated_at,
            dead_letters: 0,
            oldest_dead_letter_at: None,
            parked_aggregates: 0,
            parked_events: 0,
        }
    }

    #[test]
    fn a_partition_untouched_for_longer_than_the_interval_is_unhealthy() {
        let now = Utc::now();
        let interval = Duration::from_secs(60);
        let fresh = [state("a", Status::Running, now - chrono::Duration::seconds(59))];
        assert!(health(&["a"], &fresh, interval, now).healthy);
        let stale = [state("a", Status::CaughtUp, now - chrono::Duration::seconds(61))];
        let h = health(&["a"], &stale, interval, now);
        assert!(!h.healthy);
        assert!(h.partitions[0].reason.as_deref().unwrap().starts_with("no claim or commit for 61.0s"));
    }

    #[test]
    fn failed_stopped_and_unregistered_partitions_are_unhealthy() {
        let now = Utc::now();
        let states = [state("a", Status::Failed, now), state("b", Status::Stopped, now)];
        let h = health(&["a", "b", "c"], &states, Duration::from_secs(60), now);
        let reasons: Vec<_> = h.partitions.iter().map(|p| p.reason.clone().unwrap_or_default()).collect();
        assert_eq!(reasons[0], "status failed: boom");
        assert_eq!(reasons[1], "status stopped");
        assert!(reasons[2].starts_with("not registered"));
    }

    #[test]
    fn a_partition_waiting_for_a_rebuild_is_unhealthy() {
        let now = Utc::now();
        let mut waiting = state("a", Status::NeedsRebuild, now);
        waiting.last_error = Some("table user_profile is missing".into());
        let h = health(&["a"], &[waiting], Duration::from_secs(60), now);
        assert!(!h.healthy);
        assert_eq!(h.partitions[0].reason.as_deref(), Some("status needs-rebuild: table user_profile is missing"));
    }

    #[test]
    fn metrics_show_gauges_health_and_the_store() {
        let now = Utc::now();
        let states = [state("a\"b", Status::Running, now)];
        let h = health(&["a\"b"], &states, Duration::from_secs(60), now);
        let text = metrics(Some(&states), &h, now, Format::Prometheus).unwrap();
        assert!(text.contains("projector_lag_events{projection=\"a\\\"b\",partition=\"0\"} 3\n"), "{text}");
        assert!(text.contains("projector_events_applied{projection=\"a\\\"b\",partition=\"0\"} 7\n"), "{text}");
        assert!(text.contains("projector_up{projection=\"a\\\"b\",partition=\"0\"} 1\n"), "{text}");
        assert!(text.contains("projector_store_up 1\n"), "{text}");
        assert!(text.contains("provider=\"cloudflare\"} 1\n"), "{text}");
        let down = metrics(None, &unreachable("down"), now, Format::Prometheus).unwrap();
        assert!(down.contains("projector_store_up 0\n"), "{down}");
        assert!(!down.contains("projector_up"), "{down}");
        let open = metrics(Some(&states), &h, now, Format::OpenMetrics).unwrap();
        assert!(open.ends_with("# EOF\n"), "{open}");
    }
}
