//! `projector status`: each projection partition's checkpoint, lag and health, as a
//! table or JSON, and the transaction holding the read horizon back, if any.

use anyhow::{Context, Result};
use projector::config::Config;
use projector::{ProjectionState, ProjectionStore};
use projector_local::Connector;

use super::connect;
use crate::{output, say, table};

#[derive(clap::Args)]
pub struct Args {
    /// Print the partition states as JSON (a list; shape in the README) instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn execute<C: Connector>(config: &Config, connector: &C, args: Args) -> Result<()> {
    let json = args.json;
    let store = connect(connector).await?;
    let states: Vec<ProjectionState> = store
        .states()
        .await
        .context("reading projection state (has `projector init` run?)")?
        .into_iter()
        .filter(|s| config.projections.contains_key(&s.projection))
        .collect();
    let hold = store.horizon_hold().await.context("reading the read horizon")?;
    if json {
        output::json(&states)?;
    } else if states.is_empty() {
        say!("no projection is registered yet; run `projector init`");
    } else {
        print_table(&states);
    }
    if let (Some(h), false) = (&hold, json) {
        let since = h.transaction_started_at.map_or_else(|| "unknown".to_owned(), |t| t.to_rfc3339());
        say!(
            "\nread horizon held back by backend {} ({}), in a transaction since {since}: {} committed event(s) \
             wait for it to end",
            h.pid,
            h.description,
            h.events_waiting
        );
    }
    Ok(())
}

/// What `status` says before the embedded store's file exists (it does not create it).
pub fn without_store(args: &Args, path: &std::path::Path) -> Result<()> {
    if args.json {
        say!("[]");
    } else {
        say!("no store at {} yet; run `projector init`", path.display());
    }
    Ok(())
}

/// One line per projection partition.
pub fn print_table(states: &[ProjectionState]) {
    let rows: Vec<Vec<String>> = states
        .iter()
        .map(|s| {
            vec![
                s.projection.clone(),
                format!("{}/{}", s.partition, s.partitions),
                s.status.to_string(),
                s.checkpoint.to_string(),
                // `~`: estimated from positions, the backlog being past the exact count.
                if s.lag_estimated { format!("~{}", s.lag_events) } else { s.lag_events.to_string() },
                format!("{:.1}", s.lag_seconds),
                s.events_applied.to_string(),
                s.dead_letters.to_string(),
                format!("{}/{}", s.parked_aggregates, s.parked_events),
                s.error_count.to_string(),
                s.lease_owner.clone().unwrap_or_else(|| "-".into()),
                s.last_error.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    say!(
        "{}",
        table::render(
            &[
                "projection",
                "partition",
                "status",
                "checkpoint",
                "lag",
                "lag_s",
                "applied",
                "dead",
                "parked",
                "errors",
                "owner",
                "last_error",
            ],
            &rows
        )
    );
}
