//! The handlers a runner can start, by name: each is kept behind [`Deploy`], which
//! starts its workers and aligns its partitions without the caller naming its type.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::thread::JoinHandle;

use futures_util::FutureExt;
use projector::upcast::{Reading, Upcasters};
use projector::ProjectionHandler;
use tokio::sync::{watch, Notify};

use crate::metrics::Metrics;
use crate::{run_partition, Connector, WorkerExit, WorkerSettings};

/// A handler the adapter can start by name.
pub trait Deploy<C: Connector>: Send + Sync {
    fn handler_name(&self) -> &'static str;

    fn schema(&self) -> &'static projector::TableSchema;

    fn handler_filter(&self) -> projector::EventFilter;

    /// Brings every partition to one checkpoint (see `projector::runtime::align_partitions`),
    /// on a thread of its own, reading as the runners do (`reading`: the configuration's
    /// filter, upcasters and grant); every lease must be free.
    fn align(
        &self,
        connector: C,
        projection: String,
        reading: Reading,
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
        reading: Reading,
        owner: String,
        batch: usize,
    ) -> Result<projector::Checkpoint, String> {
        let handler = Arc::clone(&self.0);
        let aligned = on_own_runtime(format!("{projection}-align"), Err, move || async move {
            let store = connector.connect().await.map_err(|e| e.to_string())?;
            let (handler, store) = (&*handler, &store);
            projector::runtime::align_partitions_read(handler, store, &projection, &reading, &owner, batch)
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
            let worker = run_partition(&*handler, &connector, &settings, &metrics, wake, shutdown);
            // A panic is an exit too: caught here, it is reported like any other.
            let exit = AssertUnwindSafe(worker)
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| WorkerExit::Failed(format!("panicked: {}", panic_text(&*panic))));
            let reason = match &exit {
                WorkerExit::Stopped => "stopped on request".to_owned(),
                WorkerExit::Failed(e) => format!("failed: {e}"),
                WorkerExit::Halted(e) => format!("halted: {e}"),
            };
            // `/health` says so at once, not only when the heartbeat goes stale.
            metrics.exited(&settings.projection, settings.partition.index, &reason);
            exit
        })
    }
}

/// The message a panic carried, when it is text.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message")
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

/// The handlers a runner knows, by name, and the upcasters registered next to them.
pub struct Registry<C: Connector> {
    handlers: BTreeMap<&'static str, Arc<dyn Deploy<C>>>,
    upcasters: Upcasters,
}

impl<C: Connector> Default for Registry<C> {
    fn default() -> Self {
        Self { handlers: BTreeMap::new(), upcasters: Upcasters::new() }
    }
}

impl<C: Connector> Registry<C> {
    /// Every upcaster the runner carries; `projections.yaml` enables chains of them.
    pub fn with_upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }

    pub fn upcasters(&self) -> &Upcasters {
        &self.upcasters
    }

    pub fn with<H: ProjectionHandler>(mut self, handler: H) -> Self {
        self.handlers.insert(handler.name(), Arc::new(Entry(Arc::new(handler))));
        self
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.handlers.keys().copied().collect()
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Arc<dyn Deploy<C>>> {
        self.handlers.get(name)
    }
}
