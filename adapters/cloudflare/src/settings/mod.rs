//! The Worker's settings, read from its variables (`[vars]` in `wrangler.toml`, secrets,
//! or `--var` locally). Every value is checked before any work starts; a bad one is an
//! error naming the variable and what it holds.

use std::time::Duration;

use projector::{CatchUpWindow, EventFilter, OnFailure, RetryPolicy};

use crate::handlers::{self, Knobs};
use crate::invocation::Retries;

mod parse;
#[cfg(test)]
mod tests;
pub mod var;

/// A variable that is missing or does not hold what it must.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    #[error("variable {name} is not set: {expected}")]
    Missing { name: &'static str, expected: &'static str },
    #[error("variable {name} = {value:?} is not {expected}")]
    Invalid { name: &'static str, value: String, expected: String },
}

/// What one invocation runs and within which limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub projections: Vec<&'static str>,
    pub partitions: u32,
    pub batch_size: usize,
    pub invocation_budget: Duration,
    pub budget_share: f64,
    pub health_interval: Duration,
    /// Event types whose upcaster chains run (each has registered upcasters).
    pub upcasting: Vec<String>,
    /// Narrows what every projection reads (`EVENT_TYPES`, `AGGREGATE_TYPES`).
    pub filter: EventFilter,
    pub retry: RetryPolicy,
    pub on_failure: OnFailure,
    pub gap_timeout: Duration,
    pub crash_limit: u32,
    /// How much a catch-up far behind folds before it commits.
    pub window: CatchUpWindow,
    /// `LEASE_TTL_MS`, when set; see [`Settings::lease_ttl`].
    pub lease_ttl: Option<Duration>,
    pub alert_webhook: Option<String>,
    pub dead_letter_queue: Option<String>,
}

impl Settings {
    /// Reads every setting through `lookup` (a variable's value, `None` when unset).
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings, SettingsError> {
        let projections = lookup(var::PROJECTIONS)
            .ok_or(SettingsError::Missing {
                name: var::PROJECTIONS,
                expected: "a comma-separated list of projections, e.g. user-profile,daily-activity",
            })
            .and_then(|v| parse::projections(&v))?;
        let partitions = parse::number(&lookup, var::PARTITIONS, 1u32, 1..=1024)?;
        let batch_size = parse::number(&lookup, var::BATCH_SIZE, 1000usize, 1..=100_000)?;
        let budget_ms = parse::number(&lookup, var::INVOCATION_BUDGET_MS, 30_000u64, 1..=900_000)?;
        let health_s = parse::number(&lookup, var::HEALTH_INTERVAL_S, 180u64, 1..=86_400)?;
        let budget_share = parse::share(&lookup, var::BUDGET_SHARE, 0.5)?;
        let upcasting = match lookup(var::UPCASTING) {
            None => Vec::new(),
            Some(v) => parse::upcasting(&v)?,
        };
        let filter = EventFilter {
            event_types: lookup(var::EVENT_TYPES).map(|v| parse::list(&v)).unwrap_or_default(),
            aggregate_types: lookup(var::AGGREGATE_TYPES).map(|v| parse::list(&v)).unwrap_or_default(),
            skip_metadata: false,
        };
        let retry = parse::retry(&lookup)?;
        let on_failure = parse::on_failure(&lookup)?;
        let gap_ms = parse::number(&lookup, var::GAP_TIMEOUT_MS, 30_000u64, 0..=u64::from(u32::MAX))?;
        let crash_limit = parse::number(&lookup, var::CRASH_LIMIT, 3u32, 1..=100)?;
        let window = match lookup(var::MEMORY_BYTES) {
            None => CatchUpWindow::OFF,
            Some(_) => CatchUpWindow::for_memory(parse::number(&lookup, var::MEMORY_BYTES, 0u64, 1..=1 << 30)?),
        };
        let lease_ttl = match lookup(var::LEASE_TTL_MS) {
            None => None,
            Some(_) => {
                let floor = budget_ms.saturating_add(1);
                let ms = parse::number(&lookup, var::LEASE_TTL_MS, 0u64, floor..=u64::from(u32::MAX))?;
                Some(Duration::from_millis(ms))
            }
        };
        let alert_webhook = lookup(var::ALERT_WEBHOOK).map(|v| parse::webhook(&v)).transpose()?.flatten();
        let dead_letter_queue = lookup(var::DEAD_LETTER_QUEUE).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        Ok(Settings {
            upcasting,
            projections,
            partitions,
            batch_size,
            invocation_budget: Duration::from_millis(budget_ms),
            budget_share,
            health_interval: Duration::from_secs(health_s),
            filter,
            retry,
            on_failure,
            gap_timeout: Duration::from_millis(gap_ms),
            crash_limit,
            window,
            lease_ttl,
            alert_webhook,
            dead_letter_queue,
        })
    }

    /// The upcaster chains `UPCASTING` enables.
    pub fn upcasters(&self) -> projector::upcast::Upcasters {
        handlers::upcasters()
            .and_then(|all| all.enable_only(&self.upcasting))
            .expect("UPCASTING was checked against the registered upcasters when read")
    }

    /// How the batches of an invocation run, with `retries` patience for failing events.
    pub fn knobs(&self, retries: &Retries) -> Knobs {
        let (retry, gap_timeout) = match retries {
            Retries::Configured => (self.retry, self.gap_timeout),
            Retries::SpentFor { .. } => (RetryPolicy { max_retries: 0, ..self.retry }, Duration::ZERO),
        };
        Knobs {
            filter: self.filter.clone(),
            upcasters: self.upcasters(),
            batch_size: self.batch_size,
            lease_ttl: self.lease_ttl(),
            retry,
            on_failure: self.on_failure,
            gap_timeout,
            crash_limit: self.crash_limit,
            window: self.window,
        }
    }

    /// The time an invocation spends on batches: `budget_share` of its budget.
    pub fn work_budget(&self) -> Duration {
        self.invocation_budget.mul_f64(self.budget_share)
    }

    /// Leases outlive the invocation that holds them, so nobody takes a partition while
    /// its batch is still committing; a crashed invocation's lease frees itself after it.
    /// `LEASE_TTL_MS` when set (it was checked to be longer than the budget), else twice
    /// the budget and 5 s.
    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl.unwrap_or(self.invocation_budget * 2 + Duration::from_secs(5))
    }
}
