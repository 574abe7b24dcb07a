//! Shared test support.

pub mod contract;
pub mod failures;
pub mod ledger;
pub mod pg;
pub mod poison;
