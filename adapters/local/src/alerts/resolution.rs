//! The values a resolved incident reports: its condition measured on the states at the
//! moment it stopped firing, in the shape its firing notification had, so a receiver
//! sees what the values came down to (and the threshold beside them). No I/O.

use chrono::{DateTime, SecondsFormat, Utc};
use projector::config::AlertsConfig;
use projector::ProjectionState;
use serde_json::json;

use super::conditions::Condition;
use super::incidents::Incident;

/// `incident`'s condition measured on `states` at `wall`. A projection no longer in
/// `states` measures as nothing open and nothing behind.
pub(crate) fn values(
    config: &AlertsConfig,
    incident: &Incident,
    states: &[ProjectionState],
    wall: DateTime<Utc>,
) -> serde_json::Value {
    let parts: Vec<&ProjectionState> = states.iter().filter(|s| s.projection == incident.projection).collect();
    match incident.condition {
        Condition::DeadLetters => {
            let open: i64 = parts.iter().map(|s| s.dead_letters.max(0)).sum();
            json!({ "open": open, "threshold": config.dead_letters })
        }
        Condition::DeadLetterAge => {
            let oldest = parts.iter().filter_map(|s| s.oldest_dead_letter_at).min();
            let age = oldest.map_or(0, |at| (wall - at).to_std().unwrap_or_default().as_secs());
            json!({
                "oldest_dead_letter_at": oldest.map(|at| at.to_rfc3339_opts(SecondsFormat::Secs, true)),
                "age_seconds": age,
                "threshold_seconds": config.dead_letter_age.map(|t| t.as_secs_f64()),
            })
        }
        Condition::LagSeconds => {
            let worst = parts
                .iter()
                .filter(|s| s.lag_seconds.is_finite())
                .max_by(|a, b| a.lag_seconds.total_cmp(&b.lag_seconds));
            json!({
                "lag_seconds": worst.map_or(0.0, |s| s.lag_seconds),
                "lag_events": worst.map_or(0, |s| s.lag_events),
                "threshold_seconds": config.lag_seconds,
            })
        }
        Condition::Stalled => {
            let part = parts.iter().find(|s| Some(s.partition) == incident.partition);
            json!({
                "status": part.map(|s| s.status.as_str()),
                "lag_events": part.map_or(0, |s| s.lag_events),
                "threshold_seconds": config.stalled.map(|t| t.as_secs_f64()),
            })
        }
    }
}
