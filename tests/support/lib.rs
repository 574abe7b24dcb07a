//! Shared test support.

pub mod contract;
pub mod ledger;
pub mod pg;
