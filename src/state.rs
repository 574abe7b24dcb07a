//! Per-projection, per-partition state as operators see it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::Checkpoint;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Running,
    CaughtUp,
    Stopped,
    Failed,
    Rebuilding,
    /// The read-model table is missing (or does not match the handler's schema) while
    /// the checkpoint is past the start: no runner claims the projection's partitions
    /// until `projector rebuild` fills the table anew.
    NeedsRebuild,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::CaughtUp => "caught-up",
            Status::Stopped => "stopped",
            Status::Failed => "failed",
            Status::Rebuilding => "rebuilding",
            Status::NeedsRebuild => "needs-rebuild",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "running" => Status::Running,
            "caught-up" => Status::CaughtUp,
            "stopped" => Status::Stopped,
            "failed" => Status::Failed,
            "rebuilding" => Status::Rebuilding,
            "needs-rebuild" => Status::NeedsRebuild,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One partition of one projection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectionState {
    pub projection: String,
    pub partition: u32,
    pub partitions: u32,
    pub checkpoint: Checkpoint,
    /// Timestamp of the last applied event.
    pub last_event_at: Option<DateTime<Utc>>,
    /// Events readable after the checkpoint (for this projection's filter and partition).
    pub lag_events: i64,
    /// `lag_events` is an estimate: the backlog is larger than the store counts exactly
    /// ([`rules::lag_from_window`](crate::store::rules::lag_from_window)).
    #[serde(default)]
    pub lag_estimated: bool,
    /// Age of the oldest event not yet applied; 0 when caught up.
    pub lag_seconds: f64,
    pub status: Status,
    pub events_applied: i64,
    pub error_count: i64,
    pub last_error: Option<String>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    /// Open dead letters of this partition's aggregates.
    pub dead_letters: i64,
    pub oldest_dead_letter_at: Option<DateTime<Utc>>,
    /// Aggregates waiting behind a dead letter, and the events they hold back (already
    /// passed by the checkpoint; reported as parked, not as lag).
    pub parked_aggregates: i64,
    pub parked_events: i64,
}

impl ProjectionState {
    /// Why this partition's stored status makes it unhealthy, or `None`: failed, stopped
    /// or waiting for a rebuild. The one status rule behind every `/health` (the local
    /// runner adds its heartbeat, the Worker the age of the last claim or commit).
    pub fn status_problem(&self) -> Option<String> {
        let with = |what: &str, detail: Option<&String>, otherwise: &str| match detail {
            Some(detail) => format!("status {what}: {detail}"),
            None => format!("status {what}{otherwise}"),
        };
        match self.status {
            Status::Failed => Some(with("failed", self.last_error.as_ref(), "")),
            Status::Stopped => Some("status stopped".to_owned()),
            Status::NeedsRebuild => Some(with("needs-rebuild", self.last_error.as_ref(), ": run `projector rebuild`")),
            _ => None,
        }
    }
}

/// The `/health` answer of every provider: each configured partition, healthy or why
/// not, and why health could not be judged at all (e.g. the store is unreachable).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// True when every partition is healthy (and the states could be read).
    pub healthy: bool,
    /// Why health could not be fully judged.
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
