//! The alerts a Worker raises, as the JSON the local runner's webhook sends (`status`,
//! `projection`, `partition`, `condition`, `values`, `first_seen`, `message`).
//!
//! A Worker keeps nothing between invocations, so its alerts are events, not incidents:
//! one notification per invocation that dead-letters events (`dead_letters`) or finds a
//! partition stopped or failed for good (`stalled`), and one per wake message the queue
//! gave up on. There is no `resolved` notification; `/health` says when it is over.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::json;

use crate::invocation::{Ending, Report};

/// One notification (always `"status": "firing"`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    pub status: &'static str,
    pub projection: String,
    pub partition: Option<u32>,
    /// `dead_letters` or `stalled`, as the local runner names them.
    pub condition: &'static str,
    pub values: serde_json::Value,
    /// RFC 3339.
    pub first_seen: String,
    pub message: String,
}

fn firing(
    projection: &str,
    partition: Option<u32>,
    condition: &'static str,
    values: serde_json::Value,
    now: DateTime<Utc>,
    message: String,
) -> Notification {
    Notification {
        status: "firing",
        projection: projection.to_owned(),
        partition,
        condition,
        values,
        first_seen: now.to_rfc3339_opts(SecondsFormat::Millis, true),
        message,
    }
}

/// What an invocation started by `trigger` (`cron`, `wake queue`, `dead-letter queue`)
/// reports: its dead letters and the partitions it found stopped or failed for good.
pub fn from_report(report: &Report, trigger: &str, now: DateTime<Utc>) -> Vec<Notification> {
    let mut out = Vec::new();
    for p in &report.partitions {
        let (projection, partition) = (p.projection.as_str(), Some(p.partition));
        if p.dead_lettered > 0 {
            let message = format!(
                "{projection} partition {}: {} event(s) dead-lettered by the {trigger} invocation; their \
                 aggregates are parked until an operator acts (projector dlq list --projection {projection})",
                p.partition, p.dead_lettered
            );
            let values = json!({ "dead_lettered": p.dead_lettered, "checkpoint": p.checkpoint });
            out.push(firing(projection, partition, "dead_letters", values, now, message));
        }
        let problem = match &p.ending {
            Ending::Stopped { detail } => Some(detail),
            Ending::Failed { detail, permanent: true } => Some(detail),
            _ => None,
        };
        if let Some(detail) = problem {
            let message = format!("{projection} partition {}: {detail}", p.partition);
            out.push(firing(projection, partition, "stalled", json!({ "ending": p.ending }), now, message));
        }
    }
    out
}

/// A wake message the queue gave up on: the Worker could not run `projections` through
/// every delivery; `error` is what the dead-letter consumer's own attempt found, if it
/// failed as well.
pub fn wake_given_up(projections: &[&str], error: Option<&str>, now: DateTime<Utc>) -> Vec<Notification> {
    projections
        .iter()
        .map(|projection| {
            let message = match error {
                Some(e) => format!("{projection}: the wake queue gave up on a wake-up, and it still fails: {e}"),
                None => format!(
                    "{projection}: the wake queue gave up on a wake-up that failed through every delivery; \
                     the dead-letter consumer's invocation ran"
                ),
            };
            firing(projection, None, "stalled", json!({ "error": error }), now, message)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invocation::PartitionReport;

    #[test]
    fn dead_letters_and_stopped_partitions_raise_one_notification_each() {
        let now = DateTime::parse_from_rfc3339("2026-05-01T10:00:00Z").unwrap().with_timezone(&Utc);
        let part = |projection: &str, dead_lettered, ending| PartitionReport {
            projection: projection.into(),
            partition: 0,
            batches: 1,
            events_read: 3,
            events_applied: 2,
            dead_lettered,
            checkpoint: None,
            ending,
        };
        let report = Report {
            elapsed_ms: 5,
            partitions: vec![
                part("user-profile", 1, Ending::CaughtUp),
                part("daily-activity", 0, Ending::Stopped { detail: "stopped at event x: bad".into() }),
                part("other", 0, Ending::Failed { detail: "connection reset".into(), permanent: false }),
            ],
        };
        let notes = from_report(&report, "cron", now);
        assert_eq!(notes.len(), 2, "{notes:#?}");
        assert_eq!((notes[0].condition, notes[0].projection.as_str()), ("dead_letters", "user-profile"));
        assert!(notes[0].message.contains("1 event(s) dead-lettered by the cron invocation"), "{}", notes[0].message);
        assert_eq!(notes[0].values["dead_lettered"], 1);
        assert_eq!(notes[0].first_seen, "2026-05-01T10:00:00.000Z");
        assert_eq!(
            (notes[1].condition, notes[1].message.as_str()),
            ("stalled", "daily-activity partition 0: stopped at event x: bad")
        );
        let body = serde_json::to_value(&notes[0]).unwrap();
        assert_eq!(body["status"], "firing");
        assert_eq!(body["partition"], 0);
    }
}
