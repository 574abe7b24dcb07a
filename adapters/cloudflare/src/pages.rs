//! What the Worker's `fetch` answers, computed from the stored projection states:
//! `/health` (the local runner's health model and JSON shape), `/status` and `/metrics`
//! (Prometheus text format 0.0.4).
//!
//! A Worker keeps nothing between invocations, so a partition's heartbeat is its stored
//! `updated_at`, which every claim, commit and release moves: a partition that no
//! invocation touched within the health interval is unhealthy, as a local worker loop
//! that stopped heart-beating is. Failed and stopped partitions are unhealthy; parked
//! events are not lag and do not make a partition unhealthy.

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use projector::{HorizonHold, ProjectionState};
use serde::{Deserialize, Serialize};

/// `Content-Type` of [`metrics`].
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Health of every configured partition (the local runner's `/health` shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub healthy: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub partitions: Vec<PartitionHealth>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionHealth {
    pub projection: String,
    pub partition: u32,
    pub healthy: bool,
    pub reason: Option<String>,
}

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

/// Gauges of one state: name, help, value.
type Gauge = (&'static str, &'static str, fn(&ProjectionState, DateTime<Utc>) -> Option<f64>);

const GAUGES: [Gauge; 8] = [
    ("projector_lag_events", "Events readable after the checkpoint.", |s, _| Some(s.lag_events as f64)),
    ("projector_lag_seconds", "Age of the oldest event not yet applied; 0 when caught up.", |s, _| Some(s.lag_seconds)),
    (
        "projector_lag_estimated",
        "1 when projector_lag_events is estimated from positions (a backlog past the exact window).",
        |s, _| Some(if s.lag_estimated { 1.0 } else { 0.0 }),
    ),
    ("projector_dead_letters_open", "Open (unresolved) dead letters.", |s, _| Some(s.dead_letters as f64)),
    ("projector_dead_letter_oldest_age_seconds", "Age of the oldest open dead letter.", |s, now| {
        s.oldest_dead_letter_at.map(|at| (now - at).num_milliseconds().max(0) as f64 / 1000.0)
    }),
    ("projector_parked_aggregates", "Aggregates held back behind a dead letter.", |s, _| {
        Some(s.parked_aggregates as f64)
    }),
    ("projector_parked_events", "Events held back behind a dead letter (not counted as lag).", |s, _| {
        Some(s.parked_events as f64)
    }),
    ("projector_events_applied", "Events applied to the read model (stored count, all runners).", |s, _| {
        Some(s.events_applied as f64)
    }),
];

/// `/metrics`: the stored states as gauges, `projector_up` from [`health`], and
/// `projector_store_up` (0 with no other sample when the states cannot be read).
pub fn metrics(states: Option<&[ProjectionState]>, health: &Health, now: DateTime<Utc>) -> String {
    let mut out = String::new();
    if let Some(states) = states {
        for (name, help, value) in GAUGES {
            family(&mut out, name, help);
            for s in states {
                if let Some(v) = value(s, now) {
                    let _ = writeln!(out, "{name}{} {}", labels(&s.projection, s.partition), float(v));
                }
            }
        }
        family(&mut out, "projector_up", "1 when the partition is healthy (see /health).");
        for p in &health.partitions {
            let _ = writeln!(out, "projector_up{} {}", labels(&p.projection, p.partition), u8::from(p.healthy));
        }
    }
    family(&mut out, "projector_store_up", "1 when the projection states could be read from the store.");
    let _ = writeln!(out, "projector_store_up {}", u8::from(states.is_some()));
    out
}

fn family(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
}

fn labels(projection: &str, partition: u32) -> String {
    let escaped = projection.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    format!("{{projection=\"{escaped}\",partition=\"{partition}\"}}")
}

fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{v}")
    }
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
        let text = metrics(Some(&states), &h, now);
        assert!(text.contains("projector_lag_events{projection=\"a\\\"b\",partition=\"0\"} 3\n"), "{text}");
        assert!(text.contains("projector_up{projection=\"a\\\"b\",partition=\"0\"} 1\n"), "{text}");
        assert!(text.ends_with("projector_store_up 1\n"));
        assert_eq!(metrics(None, &unreachable("down"), now).lines().last(), Some("projector_store_up 0"));
    }
}
