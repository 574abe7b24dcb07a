//! The handlers compiled into the Worker. [`each`] is the one place that names them; a
//! projection in `PROJECTIONS` is named after its handler.

use std::time::Duration;

use futures_util::future::LocalBoxFuture;
use projector::upcast::{Reading, UpcastError, Upcaster, Upcasters};
use projector::{
    BatchRunner, CatchUpWindow, EventFilter, EventStore, Lease, OnFailure, ProjectionHandler, ProjectionStore, Rebuild,
    RebuildOutcome, Rebuilds, RetryPolicy, RuntimeError, StepOutcome, TableSchema,
};

/// Something done with every compiled-in handler in turn.
pub trait Visitor {
    fn visit<H: ProjectionHandler>(&mut self, handler: &'static H);
}

/// Shows `visitor` every handler the Worker carries. A new handler is one line here.
pub fn each(visitor: &mut impl Visitor) {
    visitor.visit(&projection_user_profile::UserProfile);
    visitor.visit(&projection_daily_activity::DailyActivity);
}

/// The upcasters registered next to the handlers (each handler crate lists its steps).
const UPCASTERS: &[&[Upcaster]] = &[projection_user_profile::UPCASTERS, projection_daily_activity::UPCASTERS];

/// Every upcaster the Worker carries, in one registry; `UPCASTING` enables chains of it.
pub fn upcasters() -> Result<Upcasters, UpcastError> {
    Upcasters::from_steps(UPCASTERS.iter().flat_map(|steps| steps.iter().copied()))
}

/// The projection names the Worker can run.
pub fn names() -> Vec<&'static str> {
    struct Names(Vec<&'static str>);
    impl Visitor for Names {
        fn visit<H: ProjectionHandler>(&mut self, handler: &'static H) {
            self.0.push(handler.name());
        }
    }
    let mut names = Names(Vec::new());
    each(&mut names);
    names.0
}

/// The read-model table and event filter of a projection, for registering it: the filter
/// its runners read with (the handler's, narrowed by `narrow`), old type names that
/// `upcasters` bring into it included.
pub fn describe(
    name: &str,
    narrow: &EventFilter,
    upcasters: &Upcasters,
) -> Option<(&'static TableSchema, EventFilter)> {
    struct Describe<'a>(&'a str, &'a EventFilter, &'a Upcasters, Option<(&'static TableSchema, EventFilter)>);
    impl Visitor for Describe<'_> {
        fn visit<H: ProjectionHandler>(&mut self, handler: &'static H) {
            if handler.name() == self.0 {
                let reading = Reading::new(handler.filter().and(self.1), self.2.clone());
                self.3 = Some((handler.schema(), reading.store_filter().clone()));
            }
        }
    }
    let mut found = Describe(name, narrow, upcasters, None);
    each(&mut found);
    found.3
}

/// How a partition's batches run: the knobs of `projections.yaml` a Worker honours.
#[derive(Debug, Clone)]
pub struct Knobs {
    pub filter: EventFilter,
    pub upcasters: Upcasters,
    pub batch_size: usize,
    pub lease_ttl: Duration,
    pub retry: RetryPolicy,
    pub on_failure: OnFailure,
    pub gap_timeout: Duration,
    pub crash_limit: u32,
    pub window: CatchUpWindow,
}

/// One leased partition being worked on, whatever its handler's type.
pub trait Partition {
    fn step(&mut self) -> LocalBoxFuture<'_, Result<StepOutcome, RuntimeError>>;
    fn lease(&self) -> &Lease;
}

impl<H, S> Partition for BatchRunner<'_, H, S>
where
    H: ProjectionHandler,
    S: EventStore + ProjectionStore,
{
    fn step(&mut self) -> LocalBoxFuture<'_, Result<StepOutcome, RuntimeError>> {
        Box::pin(BatchRunner::step(self))
    }

    fn lease(&self) -> &Lease {
        BatchRunner::lease(self)
    }
}

/// The batch runtime of the core for one leased partition of projection `lease.projection`.
pub fn runner<'s, S: EventStore + ProjectionStore>(
    store: &'s S,
    lease: Lease,
    knobs: &Knobs,
) -> Option<Box<dyn Partition + 's>> {
    struct Build<'s, 'k, S> {
        store: &'s S,
        lease: Option<Lease>,
        knobs: &'k Knobs,
        out: Option<Box<dyn Partition + 's>>,
    }
    impl<'s, S: EventStore + ProjectionStore> Visitor for Build<'s, '_, S> {
        fn visit<H: ProjectionHandler>(&mut self, handler: &'static H) {
            if self.lease.as_ref().is_some_and(|l| l.projection == handler.name()) {
                let lease = self.lease.take().expect("checked above");
                let k = self.knobs;
                let runner = BatchRunner::new(handler, self.store, &k.filter, lease)
                    .upcasters(k.upcasters.clone())
                    .batch_size(k.batch_size)
                    .lease_ttl(k.lease_ttl)
                    .retry(k.retry)
                    .on_failure(k.on_failure)
                    .gap_timeout(k.gap_timeout)
                    .crash_limit(k.crash_limit)
                    .window(k.window);
                self.out = Some(Box::new(runner));
            }
        }
    }
    let mut build = Build { store, lease: Some(lease), knobs, out: None };
    each(&mut build);
    build.out
}

/// A full rebuild of projection `name` by the core's [`Rebuild`], as `knobs` say the
/// projection runs; `None` for an unknown name.
pub fn rebuild<'s, S: Rebuilds>(
    store: &'s S,
    name: &str,
    knobs: &Knobs,
) -> Option<LocalBoxFuture<'s, Result<RebuildOutcome, RuntimeError>>> {
    struct Start<'s, 'n, 'k, S> {
        store: &'s S,
        name: &'n str,
        knobs: &'k Knobs,
        out: Option<LocalBoxFuture<'s, Result<RebuildOutcome, RuntimeError>>>,
    }
    impl<'s, S: Rebuilds> Visitor for Start<'s, '_, '_, S> {
        fn visit<H: ProjectionHandler>(&mut self, handler: &'static H) {
            if handler.name() == self.name {
                let (store, knobs) = (self.store, self.knobs.clone());
                self.out = Some(Box::pin(async move {
                    let rebuild =
                        Rebuild::new(handler, &knobs.filter).upcasters(knobs.upcasters).on_failure(knobs.on_failure);
                    rebuild.run(store, |_: u64, _: projector::Checkpoint| {}).await
                }));
            }
        }
    }
    let mut start = Start { store, name, knobs, out: None };
    each(&mut start);
    start.out
}
