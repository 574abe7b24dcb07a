//! `projector run`: runs the configured projections continuously until Ctrl-C or
//! SIGTERM, then drains the current batches and exits. The adapter serves `/metrics`,
//! `/health` and the alerts meanwhile.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use projector::adapter::ProjectionAdapter;
use projector::config::Config;
use projector_local::{Connector, LocalAdapter, WorkerExit};

use super::projection;
use crate::handlers;

#[derive(clap::Args)]
pub struct Args {
    /// Only these projections (default: all).
    #[arg(long = "projection", short = 'p')]
    projections: Vec<String>,
}

pub async fn execute<C: Connector>(config: Config, connector: C, args: Args) -> Result<()> {
    let only = args.projections;
    for name in &only {
        projection(&config, name)?;
    }
    // Wait for the store: a runner started before its database server keeps trying.
    let store = loop {
        match connector.connect().await {
            Ok(store) => break store,
            // A wrong URL, password or TLS setting does not fix itself.
            Err(e) if !e.is_retryable() => return Err(e).context("cannot connect to the store"),
            Err(e) => {
                eprintln!("waiting for the {}: {e}", connector.describe());
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = shutdown_signal() => return Ok(()),
                }
            }
        }
    };
    let names: Vec<String> = if only.is_empty() { config.projections.keys().cloned().collect() } else { only };
    let adapter = LocalAdapter::new(config, connector, handlers::registry::<C>());
    adapter.register_all(&store).await.context("registering projections")?;
    for name in &names {
        let d = adapter.deploy(name).await?;
        eprintln!("running {name} with {} partition(s) as {}", d.partitions, adapter.owner());
    }
    adapter.serve(store, shutdown_signal()).await;
    eprintln!("stopping: draining the current batches");
    let exits = tokio::task::block_in_place(|| adapter.stop_all());
    let failed: Vec<String> = exits
        .iter()
        .flat_map(|(name, ws)| {
            ws.iter().filter_map(move |w| match w {
                WorkerExit::Failed(e) | WorkerExit::Halted(e) => Some(format!("{name}: {e}")),
                WorkerExit::Stopped => None,
            })
        })
        .collect();
    if failed.is_empty() {
        eprintln!("stopped cleanly");
        Ok(())
    } else {
        bail!("projection(s) failed:\n  {}", failed.join("\n  "))
    }
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
