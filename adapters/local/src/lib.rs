//! `LocalAdapter`: runs each projection partition as a worker thread on the developer's
//! machine, against PostgreSQL or the embedded store.
//!
//! Every worker thread has its own current-thread tokio runtime and its own store, so
//! the core's futures need no `Send` bound. Partitions are owned through lease rows;
//! PostgreSQL `LISTEN projector_events` wakes idle workers, and they poll as well.

pub mod alerts;
mod connect;
pub mod http;
pub mod metrics;
mod worker;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use projector::adapter::{AdapterError, Deployment, ProjectionAdapter};
use projector::config::{Config, ProjectionConfig};
use projector::{Partition, ProjectionHandler, ProjectionState, ProjectionStore};
use tokio::sync::{watch, Notify};

pub use connect::{Connector, EmbeddedConnector, PgConnector};
pub use worker::{run_partition, WorkerExit, WorkerSettings};

use crate::metrics::Metrics;

/// A handler the adapter can start by name.
pub trait Deploy<C: Connector>: Send + Sync {
    fn handler_name(&self) -> &'static str;

    fn schema(&self) -> &'static projector::TableSchema;

    fn handler_filter(&self) -> projector::EventFilter;

    /// Brings every partition to one checkpoint (see `projector::runtime::align_partitions`),
    /// on a thread of its own; every lease must be free.
    fn align(
        &self,
        connector: C,
        projection: String,
        filter: projector::EventFilter,
        owner: String,
        batch: usize,
    ) -> Result<projector::Checkpoint, String>;

    /// Starts a worker thread for one partition.
    fn spawn(
        &self,
        connector: C,
        settings: WorkerSettings,
        metrics: Arc<Metrics>,
        wake: Arc<Notify>,
        shutdown: watch::Receiver<bool>,
    ) -> JoinHandle<WorkerExit>;
}

struct Entry<H>(Arc<H>);

impl<H: ProjectionHandler, C: Connector> Deploy<C> for Entry<H> {
    fn handler_name(&self) -> &'static str {
        self.0.name()
    }

    fn schema(&self) -> &'static projector::TableSchema {
        self.0.schema()
    }

    fn handler_filter(&self) -> projector::EventFilter {
        self.0.filter()
    }

    fn align(
        &self,
        connector: C,
        projection: String,
        filter: projector::EventFilter,
        owner: String,
        batch: usize,
    ) -> Result<projector::Checkpoint, String> {
        let handler = Arc::clone(&self.0);
        let aligned = on_own_runtime(format!("{projection}-align"), Err, move || async move {
            let store = connector.connect().await.map_err(|e| e.to_string())?;
            projector::runtime::align_partitions(&*handler, &store, &projection, &filter, &owner, batch)
                .await
                .map_err(|e| e.to_string())
        });
        aligned.join().unwrap_or_else(|_| Err("aligning partitions panicked".into()))
    }

    fn spawn(
        &self,
        connector: C,
        settings: WorkerSettings,
        metrics: Arc<Metrics>,
        wake: Arc<Notify>,
        shutdown: watch::Receiver<bool>,
    ) -> JoinHandle<WorkerExit> {
        let handler = Arc::clone(&self.0);
        let name = format!("{}-{}", settings.projection, settings.partition.index);
        on_own_runtime(name, WorkerExit::Failed, move || async move {
            run_partition(&*handler, &connector, &settings, &metrics, wake, shutdown).await
        })
    }
}

/// Runs `work` on a new thread with a current-thread tokio runtime of its own: the
/// core's futures are not `Send`, so each worker keeps its store and futures on one thread.
/// `no_runtime` turns a runtime that cannot start into the thread's result.
fn on_own_runtime<T, F, Fut>(name: String, no_runtime: fn(String) -> T, work: F) -> JoinHandle<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    std::thread::Builder::new()
        .name(name)
        .spawn(move || match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt.block_on(work()),
            Err(e) => no_runtime(format!("cannot start a runtime: {e}")),
        })
        .expect("spawning a worker thread")
}

/// The handlers a runner knows, by name.
pub struct Registry<C: Connector> {
    handlers: BTreeMap<&'static str, Arc<dyn Deploy<C>>>,
}

impl<C: Connector> Default for Registry<C> {
    fn default() -> Self {
        Self { handlers: BTreeMap::new() }
    }
}

impl<C: Connector> Registry<C> {
    pub fn with<H: ProjectionHandler>(mut self, handler: H) -> Self {
        self.handlers.insert(handler.name(), Arc::new(Entry(Arc::new(handler))));
        self
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.handlers.keys().copied().collect()
    }

    fn get(&self, name: &str) -> Option<&Arc<dyn Deploy<C>>> {
        self.handlers.get(name)
    }
}

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
        }
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

    /// Creates read-model tables and partition rows for every configured projection.
    pub async fn register_all(&self, store: &C::Store) -> Result<(), AdapterError> {
        for name in self.config.projections.keys() {
            let (p, d) = self.projection(name)?;
            let filter = d.handler_filter().and(&p.events.to_filter());
            store.register(name, d.schema(), &filter, p.partitions).await?;
        }
        Ok(())
    }

    fn start(&self, name: &str, partitions: u32) -> Result<Deployment, AdapterError> {
        let (p, d) = self.projection(name)?;
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
        running
            .workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| WorkerExit::Failed("worker panicked".into())))
            .collect()
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

    /// Keeps idle workers woken by `LISTEN projector_events` (PostgreSQL only) until shutdown.
    pub async fn listen(&self, mut shutdown: watch::Receiver<bool>) {
        let Some(url) = self.connector.listen_url().map(str::to_owned) else {
            return;
        };
        let wake = Arc::clone(&self.wake);
        loop {
            if *shutdown.borrow() {
                return;
            }
            if let Err(e) = listen_once(&url, &wake, &mut shutdown).await {
                tracing::debug!(error = %e, "LISTEN connection ended; polling until it is back");
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

async fn listen_once(
    url: &str,
    wake: &Arc<Notify>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), tokio_postgres::Error> {
    use futures_util::StreamExt;
    let (client, mut connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    let listen = client.batch_execute("LISTEN projector_events");
    tokio::pin!(listen);
    let mut listening = false;
    loop {
        tokio::select! {
            r = &mut listen, if !listening => { r?; listening = true; }
            m = messages.next() => match m {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => wake.notify_waiters(),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            },
            _ = shutdown.changed() => return Ok(()),
        }
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
        let filter = d.handler_filter().and(&p.events.to_filter());
        let schema = d.schema();
        self.stop(projection);
        // Old partitions first reach one checkpoint, so the new split starts from it
        // with nothing applied twice and nothing skipped.
        d.align(self.connector.clone(), projection.to_owned(), p.events.to_filter(), self.owner.clone(), p.batch_size)
            .map_err(AdapterError::Provider)?;
        let store = self.connector.connect().await?;
        store.register(projection, schema, &filter, partitions).await?;
        self.start(projection, partitions)
    }

    async fn monitor(&self, projection: &str) -> Result<Vec<ProjectionState>, AdapterError> {
        self.projection(projection)?;
        let store = self.connector.connect().await?;
        Ok(store.states().await?.into_iter().filter(|s| s.projection == projection).collect())
    }
}
