//! `LocalAdapter`: runs each projection partition as a worker thread on the developer's
//! machine, against PostgreSQL or the embedded store.
//!
//! Every worker thread has its own current-thread tokio runtime and its own store, so
//! the core's futures need no `Send` bound. Partitions are owned through lease rows;
//! PostgreSQL `LISTEN projector_events` wakes idle workers, and they poll as well.
//!
//! A runner builds a [`LocalAdapter`] with the [`Registry`] of handlers it carries,
//! registers and deploys its projections, then calls [`LocalAdapter::serve`] until it is
//! told to stop, and drains the workers with [`LocalAdapter::stop_all`]. Meanwhile
//! `/metrics`, `/health` and the alerts read the projections' state through a connection
//! of their own that is reopened whenever it is lost.

pub mod alerts;
mod connect;
pub mod http;
pub mod metrics;
mod observer;
mod registry;
mod serve;
mod worker;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use projector::adapter::{AdapterError, Deployment, ProjectionAdapter};
use projector::config::{Config, ProjectionConfig};
use projector::crypto::Keyring;
use projector::encryption::Decryption;
use projector::upcast::{Reading, Upcasters};
use projector::{CatchUpWindow, Partition, ProjectionState, ProjectionStore};
use tokio::sync::{watch, Notify};

pub use connect::{Connector, EmbeddedConnector, PgConnector, OBSERVER_APPLICATION_NAME};
pub use registry::{Deploy, Registry};
pub use serve::ServeEnd;
pub use worker::{run_partition, WorkerExit, WorkerSettings};

use crate::metrics::Metrics;

struct Running {
    shutdown: watch::Sender<bool>,
    workers: Vec<JoinHandle<WorkerExit>>,
}

/// Runs projections locally. See the crate docs.
pub struct LocalAdapter<C: Connector> {
    config: Config,
    connector: C,
    registry: Registry<C>,
    owner: String,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
    running: Mutex<HashMap<String, Running>>,
    /// Opens the fields projections are granted (`decrypt:`); `None`: none may be.
    keyring: Option<Keyring>,
}

/// A runner id unique to this process: host, pid and a random suffix.
pub fn runner_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "local".into());
    format!("{host}-{}-{:04x}", std::process::id(), rand::random::<u16>())
}

impl<C: Connector> LocalAdapter<C> {
    pub fn new(config: Config, connector: C, registry: Registry<C>) -> Self {
        Self {
            config,
            connector,
            registry,
            owner: runner_id(),
            wake: Arc::new(Notify::new()),
            metrics: Metrics::new(),
            running: Mutex::new(HashMap::new()),
            keyring: None,
        }
    }

    /// The keyring that opens the fields projections are granted (`decrypt:` in
    /// `projections.yaml`); without it a projection with a grant does not start.
    pub fn with_keyring(mut self, keyring: Option<Keyring>) -> Self {
        self.keyring = keyring;
        self
    }

    /// What projection `name` may decrypt, with this adapter's keyring.
    fn decryption(&self, name: &str, p: &ProjectionConfig) -> Result<Decryption, AdapterError> {
        if p.decrypt.is_empty() {
            return Ok(Decryption::none());
        }
        let keyring = self.keyring.clone().ok_or_else(|| {
            AdapterError::Provider(format!(
                "projection {name} decrypts fields ({}), but no keyring was given to the runner",
                p.decrypt.join(", ")
            ))
        })?;
        Ok(Decryption::granted(keyring, p.decrypt.iter().cloned(), &self.config.encryption, name, chrono::Utc::now))
    }

    /// Counters and heart-beats of this runner's workers (for `/metrics`, `/health`, alerts).
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    fn projection(&self, name: &str) -> Result<(&ProjectionConfig, &Arc<dyn Deploy<C>>), AdapterError> {
        let p = self.config.projections.get(name).ok_or_else(|| AdapterError::UnknownProjection(name.to_owned()))?;
        let d = self
            .registry
            .get(&p.handler)
            .ok_or_else(|| AdapterError::UnknownHandler { projection: name.to_owned(), handler: p.handler.clone() })?;
        Ok((p, d))
    }

    /// The upcaster chains `projections.yaml` enables, out of the registered ones.
    fn upcasters(&self) -> Result<Upcasters, AdapterError> {
        self.registry
            .upcasters()
            .enable_only(&self.config.upcasting.event_types)
            .map_err(|e| AdapterError::Provider(e.to_string()))
    }

    /// Creates read-model tables and partition rows for every configured projection.
    pub async fn register_all(&self, store: &C::Store) -> Result<(), AdapterError> {
        let upcasters = self.upcasters()?;
        for name in self.config.projections.keys() {
            let (p, d) = self.projection(name)?;
            // What the runners ask the store for (old types that upcast into the filter
            // included), so that lag counts them.
            let reading = Reading::new(d.handler_filter().and(&p.events.to_filter()), upcasters.clone());
            store.register(name, d.schema(), reading.store_filter(), p.partitions).await?;
        }
        Ok(())
    }

    fn start(&self, name: &str, partitions: u32) -> Result<Deployment, AdapterError> {
        let (p, d) = self.projection(name)?;
        let upcasters = self.upcasters()?;
        let decryption = self.decryption(name, p)?;
        let (tx, rx) = watch::channel(false);
        let workers = (0..partitions)
            .map(|index| {
                let settings = WorkerSettings {
                    projection: name.to_owned(),
                    filter: p.events.to_filter(),
                    partition: Partition { index, count: partitions },
                    batch_size: p.batch_size,
                    poll_interval: p.poll_interval,
                    lease_ttl: p.lease_ttl,
                    owner: self.owner.clone(),
                    retry: p.retry,
                    on_failure: p.on_failure,
                    gap_timeout: p.gap_timeout,
                    crash_limit: p.crash_limit,
                    snapshots: p.snapshots.map(|s| s.every),
                    upcasters: upcasters.clone(),
                    window: CatchUpWindow::for_memory(p.config.memory_bytes),
                    decryption: decryption.clone(),
                };
                d.spawn(self.connector.clone(), settings, Arc::clone(&self.metrics), Arc::clone(&self.wake), rx.clone())
            })
            .collect();
        self.running.lock().expect("running map").insert(name.to_owned(), Running { shutdown: tx, workers });
        Ok(Deployment { projection: name.to_owned(), provider: "local", partitions })
    }

    /// Stops one projection's workers after their current batch; returns how each ended.
    pub fn stop(&self, name: &str) -> Vec<WorkerExit> {
        let running = self.running.lock().expect("running map").remove(name);
        let Some(running) = running else {
            return Vec::new();
        };
        let _ = running.shutdown.send(true);
        let exits = running
            .workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| WorkerExit::Failed("worker panicked".into())))
            .collect();
        // Stopped on purpose: its ended workers are not a health problem.
        self.metrics.forget(name);
        exits
    }

    /// Stops everything (Ctrl-C / SIGTERM): each worker drains its batch and releases its lease.
    pub fn stop_all(&self) -> BTreeMap<String, Vec<WorkerExit>> {
        let names: Vec<String> = self.running.lock().expect("running map").keys().cloned().collect();
        names.into_iter().map(|n| (n.clone(), self.stop(&n))).collect()
    }

    /// True when every worker thread of every projection has ended (all failed).
    pub fn all_finished(&self) -> bool {
        self.running.lock().expect("running map").values().all(|r| r.workers.iter().all(|w| w.is_finished()))
    }
}

impl<C: Connector> ProjectionAdapter for LocalAdapter<C> {
    fn provider(&self) -> &'static str {
        "local"
    }

    async fn deploy(&self, projection: &str) -> Result<Deployment, AdapterError> {
        let (p, _) = self.projection(projection)?;
        let partitions = p.partitions;
        self.stop(projection);
        self.start(projection, partitions)
    }

    async fn scale(&self, projection: &str, partitions: u32) -> Result<Deployment, AdapterError> {
        let (p, d) = self.projection(projection)?;
        if partitions == 0 {
            return Err(AdapterError::Provider("partitions must be at least 1".into()));
        }
        self.stop(projection);
        // Old partitions first reach one checkpoint, so the new split starts from it
        // with nothing applied twice and nothing skipped.
        let reading = Reading::new(p.events.to_filter(), self.upcasters()?).decrypting(self.decryption(projection, p)?);
        d.align(self.connector.clone(), projection.to_owned(), reading, self.owner.clone(), p.batch_size)
            .map_err(AdapterError::Provider)?;
        let store = self.connector.connect().await?;
        store.repartition(projection, partitions).await?;
        self.start(projection, partitions)
    }

    async fn monitor(&self, projection: &str) -> Result<Vec<ProjectionState>, AdapterError> {
        self.projection(projection)?;
        let store = self.connector.connect().await?;
        Ok(store.states().await?.into_iter().filter(|s| s.projection == projection).collect())
    }
}
