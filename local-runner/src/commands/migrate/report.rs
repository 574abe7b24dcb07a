//! What `projector migrate` prints: tables and samples for people, one JSON document per
//! command with `--json`.

use anyhow::Result;
use projector::migration::{ApplyOutcome, MigrationPlan, RollbackOutcome};
use projector::store::migrations::EventMigration;

use super::Told;
use crate::{say, table};

/// `migrate --plan --json`: the plan, and the projections reading the migrated types.
#[derive(serde::Serialize)]
pub struct PlanReport<'a> {
    #[serde(flatten)]
    pub plan: &'a MigrationPlan,
    pub projections: &'a [Told],
}

/// `migrate --apply --json`.
#[derive(serde::Serialize)]
pub struct ApplyReport<'a> {
    /// The migration as recorded after verification; `null` when there was nothing to do.
    migration: Option<&'a EventMigration>,
    nothing_to_do: bool,
    resumed: bool,
    chunks: u64,
    verified: bool,
    projections: &'a [Told],
}

impl<'a> ApplyReport<'a> {
    pub fn of(outcome: &'a ApplyOutcome, projections: &'a [Told]) -> Self {
        match outcome {
            ApplyOutcome::NothingToDo(_) => ApplyReport {
                migration: None,
                nothing_to_do: true,
                resumed: false,
                chunks: 0,
                verified: false,
                projections,
            },
            ApplyOutcome::Applied { migration, resumed, chunks } => ApplyReport {
                migration: Some(migration),
                nothing_to_do: false,
                resumed: *resumed,
                chunks: *chunks,
                verified: true,
                projections,
            },
        }
    }
}

/// `migrate --rollback --json`.
#[derive(serde::Serialize)]
pub struct RollbackReport<'a> {
    migration: &'a EventMigration,
    already_rolled_back: bool,
    chunks: u64,
    verified: bool,
}

impl<'a> RollbackReport<'a> {
    pub fn of(outcome: &'a RollbackOutcome) -> Self {
        RollbackReport {
            migration: &outcome.migration,
            already_rolled_back: outcome.already,
            chunks: outcome.chunks,
            verified: true,
        }
    }
}

pub fn planned(plan: &MigrationPlan, told: &[Told]) -> Result<()> {
    say!(
        "plan for {}: {} event(s) of these types read, up to position {}",
        plan.event_types.join(", "),
        plan.events_scanned,
        plan.upto_position
    );
    say!("chains: {}", plan.upcasters.join("; "));
    if plan.changes.is_empty() {
        say!("nothing would change: every event is at its current version");
    } else {
        let rows: Vec<Vec<String>> = plan
            .changes
            .iter()
            .map(|c| {
                vec![
                    format!("{} v{}", c.event_type, c.event_version),
                    format!("{} v{}", c.target_type, c.target_version),
                    c.events.to_string(),
                ]
            })
            .collect();
        say!("{}", table::render(&["stored as", "rewritten to", "events"], &rows));
        say!("{} event(s) would change, {} are current already", plan.events_to_change, plan.events_current);
        for c in &plan.changes {
            say!(
                "sample {} v{} (event {}, position {}):",
                c.event_type,
                c.event_version,
                c.sample.event_id,
                c.sample.position
            );
            say!(
                "  before: {} {} {}",
                c.sample.before.event_type,
                c.sample.before.event_data,
                c.sample.before.metadata
            );
            say!("  after:  {} {} {}", c.sample.after.event_type, c.sample.after.event_data, c.sample.after.metadata);
        }
        say!("checksums: before {}, after {}", plan.before_checksum, plan.after_checksum);
    }
    projections(told);
    if !plan.failures.is_empty() {
        say!("{} event(s) cannot be rewritten:", plan.failures.len());
        for failure in &plan.failures {
            say!("  {failure}");
        }
    }
    Ok(())
}

pub fn nothing_to_do(plan: &MigrationPlan) -> Result<()> {
    say!(
        "nothing to migrate: the {} event(s) of {} up to position {} are at their current version",
        plan.events_scanned,
        plan.event_types.join(", "),
        plan.upto_position
    );
    Ok(())
}

pub fn applied(m: &EventMigration, resumed: bool, chunks: u64, told: &[Told]) -> Result<()> {
    let how = if resumed { "resumed and applied" } else { "applied" };
    say!(
        "{} {how}: {} event(s) rewritten ({} planned) in {chunks} chunk(s) this run; verified (checksums before {}, \
         after {})",
        super::name(m),
        m.events_rewritten,
        m.events_planned,
        m.before_checksum,
        m.after_checksum
    );
    say!("the originals are kept; `projector migrate --rollback {}` puts them back", m.id);
    projections(told);
    Ok(())
}

pub fn rolled_back(outcome: &RollbackOutcome) -> Result<()> {
    let m = &outcome.migration;
    if outcome.already {
        say!("{} was rolled back already, by {} at {}", super::name(m), by(m), at(m.rolled_back_at));
        return Ok(());
    }
    say!(
        "{} rolled back: {} original(s) restored in {} chunk(s), verified byte for byte",
        super::name(m),
        m.events_restored,
        outcome.chunks
    );
    Ok(())
}

pub fn list(migrations: &[EventMigration]) -> Result<()> {
    if migrations.is_empty() {
        say!("no migrations recorded");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = migrations
        .iter()
        .map(|m| {
            vec![
                m.id.to_string(),
                m.status.to_string(),
                m.event_types.join(","),
                m.events_planned.to_string(),
                m.events_rewritten.to_string(),
                m.events_restored.to_string(),
                m.actor.clone(),
                m.started_at.to_rfc3339(),
                at(m.applied_at),
                at(m.rolled_back_at),
                m.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let header = [
        "id",
        "status",
        "types",
        "planned",
        "rewritten",
        "restored",
        "by",
        "started",
        "applied",
        "rolled back",
        "error",
    ];
    say!("{}", table::render(&header, &rows));
    Ok(())
}

fn projections(told: &[Told]) {
    for t in told {
        say!("projection {} reads {}: {}", t.projection, t.reads.join(", "), t.note);
    }
}

fn at(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".to_owned())
}

fn by(m: &EventMigration) -> &str {
    m.rolled_back_by.as_deref().unwrap_or("?")
}
