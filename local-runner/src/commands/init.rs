//! `projector init`: creates or upgrades the schema and registers every configured
//! projection.

use anyhow::{Context, Result};
use projector::config::Config;
use projector_local::Connector;
use serde::Serialize;

use super::register_all;
use crate::{output, say};

#[derive(clap::Args)]
pub struct Args {
    /// Print what was done as one JSON object (shape in the README).
    #[arg(long)]
    json: bool,
}

/// `init --json`.
#[derive(Serialize)]
struct Report {
    store: String,
    migrations_applied: Vec<String>,
    projections: Vec<String>,
}

pub async fn execute<C: Connector>(config: &Config, connector: &C, args: Args) -> Result<()> {
    let applied = connector.migrate().await.with_context(|| format!("migrating the {}", connector.describe()))?;
    let report = Report {
        store: connector.describe(),
        migrations_applied: applied.iter().map(ToString::to_string).collect(),
        projections: config.projections.keys().cloned().collect(),
    };
    if !args.json {
        // Said before registering: a registration that fails leaves the migrations done.
        for name in &report.migrations_applied {
            say!("applied migration {name}");
        }
    }
    register_all(config, connector).await?;
    if args.json {
        return output::json(&report);
    }
    say!(
        "{} ready: {} projection(s) registered ({})",
        report.store,
        report.projections.len(),
        report.projections.join(", ")
    );
    Ok(())
}
