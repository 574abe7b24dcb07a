//! `projector run`: runs the configured projections continuously until Ctrl-C or
//! SIGTERM, then drains the current batches and exits.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use chrono::Utc;
use projector::adapter::ProjectionAdapter;
use projector::config::Config;
use projector::{ProjectionState, ProjectionStore};
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
    // Wait for the store: a runner started before its database keeps trying.
    let store = loop {
        match connector.connect().await {
            Ok(store) => break store,
            Err(e) => {
                eprintln!("waiting for the {}: {e}", connector.describe());
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = shutdown_signal() => return Ok(()),
                }
            }
        }
    };
    let adapter = LocalAdapter::new(config.clone(), connector.clone(), handlers::registry::<C>());
    adapter.register_all(&store).await.context("registering projections")?;
    let names: Vec<String> = if only.is_empty() { config.projections.keys().cloned().collect() } else { only };
    for name in &names {
        let d = adapter.deploy(name).await?;
        eprintln!("running {name} with {} partition(s) as {}", d.partitions, adapter.owner());
    }

    // Observability: /metrics, /health and alerts read the projections' state through
    // one shared store connection.
    let store = std::sync::Arc::new(store);
    let metrics = adapter.metrics();
    // What this runner answers for: its projections' partitions that it leases, or that
    // nobody holds a live lease on (another runner reports its own).
    let (ours, me) = (names.clone(), adapter.owner().to_owned());
    let states = move || {
        let (store, ours, me) = (std::sync::Arc::clone(&store), ours.clone(), me.clone());
        async move {
            let now = Utc::now();
            let mine = |s: &ProjectionState| {
                ours.contains(&s.projection)
                    && match (&s.lease_owner, s.lease_expires_at) {
                        (Some(owner), Some(until)) => owner == &me || until < now,
                        _ => true,
                    }
            };
            store.states().await.map(|all| all.into_iter().filter(mine).collect::<Vec<_>>()).map_err(|e| e.to_string())
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let http = {
        let (metrics, states, stop) = (std::sync::Arc::clone(&metrics), states.clone(), stop_rx.clone());
        let (listen, interval) = (config.observability.listen, config.observability.health_interval);
        async move {
            if let Some(addr) = listen {
                match projector_local::http::serve(addr, metrics, states, interval, stop).await {
                    Ok(()) => {}
                    Err(e) => eprintln!("warning: /metrics and /health are not served on {addr}: {e}"),
                }
            }
            std::future::pending::<()>().await
        }
    };
    let alerts = {
        let (metrics, states, stop) = (std::sync::Arc::clone(&metrics), states.clone(), stop_rx.clone());
        let alerts = config.alerts.clone();
        async move {
            if let Some(alerts) = alerts {
                projector_local::alerts::Alerter::new(alerts).run(states, metrics, stop).await;
            }
            std::future::pending::<()>().await
        }
    };
    let listen = adapter.listen(stop_rx);
    let shutdown = shutdown_signal();
    tokio::pin!(listen, shutdown, http, alerts);
    let mut listening = true;
    let mut check = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = &mut listen, if listening => listening = false,
            _ = &mut http => {}
            _ = &mut alerts => {}
            _ = check.tick() => if adapter.all_finished() { break },
        }
    }
    let _ = stop_tx.send(true);
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
