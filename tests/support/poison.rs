//! Test handlers that fail on purpose: the user-profile projection and the event ledger,
//! wrapped so that events marked `"poison": true` fail permanently and events marked
//! `"flaky": true` fail transiently, until the test "fixes" the handler.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use projection_user_profile::{Profile, UserProfile};
use projector::{DomainEvent, EventFilter, HandlerError, Ordering as Order, ProjectionHandler, TableSchema};
use uuid::Uuid;

use crate::ledger::{Applied, Ledger};

/// Shared switches and observations of a [`Poisonable`] handler.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    fixed: Arc<AtomicBool>,
    /// When each flaky event was tried.
    pub flaky_calls: Arc<Mutex<Vec<Instant>>>,
}

impl Faults {
    /// From now on poison and flaky events apply like any other.
    pub fn fix(&self) {
        self.fixed.store(true, Ordering::SeqCst);
    }

    fn check(&self, event: &DomainEvent) -> Result<(), HandlerError> {
        if self.fixed.load(Ordering::SeqCst) {
            return Ok(());
        }
        let data: serde_json::Value = serde_json::from_str(event.event_data.get()).unwrap_or_default();
        if data.get("poison") == Some(&serde_json::Value::Bool(true)) {
            return Err(HandlerError::Rejected { event_id: event.event_id, reason: "poison event".into() });
        }
        if data.get("flaky") == Some(&serde_json::Value::Bool(true)) {
            self.flaky_calls.lock().expect("calls").push(Instant::now());
            return Err(HandlerError::Transient("the key service is unavailable".into()));
        }
        Ok(())
    }
}

/// A handler `H` that fails as [`Faults`] says before delegating.
#[derive(Debug, Clone)]
pub struct Poisonable<H> {
    pub inner: H,
    pub faults: Faults,
}

impl<H> Poisonable<H> {
    pub fn new(inner: H) -> Self {
        Self { inner, faults: Faults::default() }
    }
}

impl ProjectionHandler for Poisonable<UserProfile> {
    type Key = Uuid;
    type Row = Profile;
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn schema(&self) -> &'static TableSchema {
        self.inner.schema()
    }
    fn ordering(&self) -> Order {
        self.inner.ordering()
    }
    fn filter(&self) -> EventFilter {
        self.inner.filter()
    }
    fn key(&self, event: &DomainEvent) -> Option<Uuid> {
        self.inner.key(event)
    }
    fn handle(&self, row: &mut Option<Profile>, event: &DomainEvent) -> Result<(), HandlerError> {
        self.faults.check(event)?;
        self.inner.handle(row, event)
    }
}

impl ProjectionHandler for Poisonable<Ledger> {
    type Key = Uuid;
    type Row = Applied;
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn schema(&self) -> &'static TableSchema {
        self.inner.schema()
    }
    fn ordering(&self) -> Order {
        self.inner.ordering()
    }
    fn key(&self, event: &DomainEvent) -> Option<Uuid> {
        self.inner.key(event)
    }
    fn handle(&self, row: &mut Option<Applied>, event: &DomainEvent) -> Result<(), HandlerError> {
        // Touch the row before failing, so a runtime that kept a half-applied row would
        // count the event twice.
        self.inner.handle(row, event)?;
        self.faults.check(event)
    }
}
