#![doc = include_str!("../README.md")]

pub mod adapter;
pub mod config;
pub mod crypto;
pub mod dead_letter;
pub mod encryption;
pub mod error;
pub mod event;
pub mod fold;
pub mod handler;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod migration;
pub mod read_model;
pub mod repair;
pub mod retry;
pub mod runtime;
pub mod state;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod upcast;

pub use crypto::CryptoError;
pub use dead_letter::{
    DeadLetter, DeadLetterFilter, DeadLetterQueue, DeadLetterStatus, DiscardedEvent, Exclusions, OnFailure,
    OperatorAction, Parked, ParkedSet,
};
pub use error::{ErrorClass, HandlerError, StoreError};
pub use event::{Checkpoint, DomainEvent, EventFilter, Metadata, NewEvent, Partition};
pub use handler::{Ordering, ProjectionHandler};
pub use read_model::{Column, ColumnType, Merge, Record, RowError, RowKey, RowReader, TableSchema, Value};
pub use retry::RetryPolicy;
pub use runtime::{BatchRunner, CatchUpWindow, Rebuild, RebuildOutcome, RuntimeError, StepOutcome};
pub use state::{Health, PartitionHealth, ProjectionState, Status};
pub use store::keys::{
    AuditEntry, AuditOperation, AuditRecord, KeyLookup, Provisioned, Shredded, SubjectKey, SubjectKeys,
};
pub use store::{
    AppendOutcome, AppendRequest, AppendWith, BatchCommit, EventStore, ExpectedVersion, FailureRecord, HorizonHold,
    InFlight, Lease, ProjectionStore, ReadBound, RebuildSession, Rebuilds, RepairSession, Repairs, RowChanges,
};
