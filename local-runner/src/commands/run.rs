//! `projector run`: runs the configured projections continuously until Ctrl-C or
//! SIGTERM, then drains the current batches and exits. The adapter serves `/metrics`,
//! `/health` and the alerts meanwhile.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use projector::adapter::ProjectionAdapter;
use projector::config::{Config, Provider};
use projector::store::rules;
use projector::ProjectionStore;
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
    let connector = connector.listening_on(|| config.database.listen_url(|name| std::env::var(name).ok()))?;
    if connector.listen_url().is_none() && config.database.pooled {
        eprintln!(
            "database.pooled without database.listen_url_env: no LISTEN through the pooler; \
             new events are found by polling (poll_interval)"
        );
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
    check_partition_counts(&config, &store).await?;
    let wanted: Vec<String> = if only.is_empty() { config.projections.keys().cloned().collect() } else { only };
    let (names, elsewhere): (Vec<String>, Vec<String>) =
        wanted.into_iter().partition(|name| config.projections[name].provider == Provider::Local);
    for name in &elsewhere {
        eprintln!("skipping {name}: `provider: cloudflare` runs on Cloudflare Workers, not in `projector run`");
    }
    if names.is_empty() {
        bail!("no projection to run here: every one selected has `provider: cloudflare`");
    }
    // Read before anything runs: a granted projection never starts without its keys.
    let keyring = crate::keyring::for_readers(&config)?;
    let adapter = LocalAdapter::new(config, connector, handlers::registry::<C>()).with_keyring(keyring);
    // Before anything is registered or runs: a runner that cannot be watched does not run.
    let listener = adapter
        .bind_observability()
        .await
        .context("observability.listen: cannot serve /metrics and /health (`listen: off` runs without them)")?;
    adapter.register_all(&store).await.context("registering projections")?;
    for name in &names {
        let d = adapter.deploy(name).await?;
        eprintln!("running {name} with {} partition(s) as {}", d.partitions, adapter.owner());
    }
    // `/metrics`, `/health` and the alerts keep a connection of their own.
    drop(store);
    adapter.serve_on(listener, shutdown_signal()).await;
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

/// The partition count of a registered projection is the store's: only `projector scale`
/// changes it. A runner whose `partitions:` disagrees would split the aggregates
/// differently from the runners already working, so it refuses to start, before it
/// registers anything, and the running ones keep their partitions.
pub(super) async fn check_partition_counts<S: ProjectionStore>(config: &Config, store: &S) -> Result<()> {
    let states = store.states().await.context("reading the stored partition counts (has `projector init` run?)")?;
    let stored: BTreeMap<&str, u32> = states.iter().map(|s| (s.projection.as_str(), s.partitions)).collect();
    let disagreements: Vec<String> = config
        .projections
        .iter()
        .filter_map(|(name, p)| {
            let &in_store = stored.get(name.as_str())?;
            rules::partition_count_drift(name, in_store, p.partitions)
        })
        .collect();
    if disagreements.is_empty() {
        Ok(())
    } else {
        bail!("not starting: {}", disagreements.join("\n  "))
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
