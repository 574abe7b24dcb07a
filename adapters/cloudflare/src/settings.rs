//! The Worker's settings, read from its variables (`[vars]` in `wrangler.toml`, secrets,
//! or `--var` locally). Every value is checked before any work starts; a bad one is an
//! error naming the variable and what it holds.

use std::time::Duration;

use crate::handlers;

/// The variables the Worker reads, and what each holds.
pub mod var {
    /// PostgreSQL URL (a secret in production): `postgres://user:password@host:port/db`.
    pub const DATABASE_URL: &str = "DATABASE_URL";
    /// Comma-separated projections to run; each is named after its compiled-in handler.
    pub const PROJECTIONS: &str = "PROJECTIONS";
    /// Hash partitions per projection (must agree with the store; default 1).
    pub const PARTITIONS: &str = "PARTITIONS";
    /// Events read per batch (default 1000).
    pub const BATCH_SIZE: &str = "BATCH_SIZE";
    /// Wall-clock budget of one invocation, in milliseconds (default 30000).
    pub const INVOCATION_BUDGET_MS: &str = "INVOCATION_BUDGET_MS";
    /// Share of that budget an invocation spends on batches before it commits and stops
    /// (0 < share <= 1; default 0.5): the rest is the margin for the last batch, releasing
    /// leases and answering.
    pub const BUDGET_SHARE: &str = "BUDGET_SHARE";
    /// How long a partition may go without a claim or commit before `/health` reports
    /// it, in seconds (default 180: three missed one-minute crons).
    pub const HEALTH_INTERVAL_S: &str = "HEALTH_INTERVAL_S";
    /// Comma-separated event types whose registered upcaster chains run (default none),
    /// as `upcasting.event_types` in `projections.yaml`.
    pub const UPCASTING: &str = "UPCASTING";
    /// Bearer token that `POST /rebuild/<projection>` requires (a secret).
    pub const REBUILD_TOKEN: &str = "REBUILD_TOKEN";
}

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
}

impl Settings {
    /// Reads every setting through `lookup` (a variable's value, `None` when unset).
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings, SettingsError> {
        let projections = lookup(var::PROJECTIONS)
            .ok_or(SettingsError::Missing {
                name: var::PROJECTIONS,
                expected: "a comma-separated list of projections, e.g. user-profile,daily-activity",
            })
            .and_then(|v| parse_projections(&v))?;
        let partitions = number(&lookup, var::PARTITIONS, 1u32, 1..=1024)?;
        let batch_size = number(&lookup, var::BATCH_SIZE, 1000usize, 1..=100_000)?;
        let budget_ms = number(&lookup, var::INVOCATION_BUDGET_MS, 30_000u64, 1..=900_000)?;
        let health_s = number(&lookup, var::HEALTH_INTERVAL_S, 180u64, 1..=86_400)?;
        let budget_share = match lookup(var::BUDGET_SHARE) {
            None => 0.5,
            Some(v) => match v.trim().parse::<f64>() {
                Ok(share) if share > 0.0 && share <= 1.0 => share,
                _ => {
                    return Err(SettingsError::Invalid {
                        name: var::BUDGET_SHARE,
                        value: v,
                        expected: "a share of the invocation budget, 0 < share <= 1 (e.g. 0.5)".into(),
                    })
                }
            },
        };
        let upcasting = match lookup(var::UPCASTING) {
            None => Vec::new(),
            Some(v) => parse_upcasting(&v)?,
        };
        Ok(Settings {
            upcasting,
            projections,
            partitions,
            batch_size,
            invocation_budget: Duration::from_millis(budget_ms),
            budget_share,
            health_interval: Duration::from_secs(health_s),
        })
    }

    /// The upcaster chains `UPCASTING` enables.
    pub fn upcasters(&self) -> projector::upcast::Upcasters {
        handlers::upcasters()
            .and_then(|all| all.enable_only(&self.upcasting))
            .expect("UPCASTING was checked against the registered upcasters when read")
    }

    /// The time an invocation spends on batches: `budget_share` of its budget.
    pub fn work_budget(&self) -> Duration {
        self.invocation_budget.mul_f64(self.budget_share)
    }

    /// Leases outlive the invocation that holds them, so nobody takes a partition while
    /// its batch is still committing; a crashed invocation's lease frees itself after it.
    pub fn lease_ttl(&self) -> Duration {
        self.invocation_budget * 2 + Duration::from_secs(5)
    }
}

fn parse_projections(value: &str) -> Result<Vec<&'static str>, SettingsError> {
    let known = handlers::names();
    let mut out: Vec<&'static str> = Vec::new();
    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let Some(handler) = known.iter().find(|k| **k == name) else {
            return Err(SettingsError::Invalid {
                name: var::PROJECTIONS,
                value: value.to_owned(),
                expected: format!("a list of known projections: {name} is not one of {}", known.join(", ")),
            });
        };
        if !out.contains(handler) {
            out.push(handler);
        }
    }
    if out.is_empty() {
        return Err(SettingsError::Invalid {
            name: var::PROJECTIONS,
            value: value.to_owned(),
            expected: format!("a non-empty list of projections among {}", known.join(", ")),
        });
    }
    Ok(out)
}

fn parse_upcasting(value: &str) -> Result<Vec<String>, SettingsError> {
    let invalid = |expected: String| SettingsError::Invalid { name: var::UPCASTING, value: value.to_owned(), expected };
    let all =
        handlers::upcasters().map_err(|e| invalid(format!("usable: the registered upcasters are refused: {e}")))?;
    let known = all.event_types();
    let mut out: Vec<String> = Vec::new();
    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if !known.contains(&name) {
            let known = if known.is_empty() { "none".to_owned() } else { known.join(", ") };
            return Err(invalid(format!(
                "a list of event types with registered upcasters: {name} has none (event types with upcasters: {known})"
            )));
        }
        if !out.iter().any(|n| n == name) {
            out.push(name.to_owned());
        }
    }
    Ok(out)
}

fn number<T>(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, SettingsError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let Some(value) = lookup(name) else {
        return Ok(default);
    };
    match value.trim().parse::<T>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(SettingsError::Invalid {
            name,
            value,
            expected: format!("a whole number from {} to {}", range.start(), range.end()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn defaults_fill_everything_but_the_projections() {
        let s = Settings::from_vars(vars(&[("PROJECTIONS", "daily-activity, user-profile,")])).unwrap();
        assert_eq!(s.projections, vec!["daily-activity", "user-profile"]);
        assert_eq!((s.partitions, s.batch_size), (1, 1000));
        assert_eq!(s.work_budget(), Duration::from_secs(15));
        assert!(s.lease_ttl() > s.invocation_budget);
    }

    #[test]
    fn missing_projections_are_named() {
        let e = Settings::from_vars(vars(&[])).unwrap_err();
        assert!(e.to_string().starts_with("variable PROJECTIONS is not set"), "{e}");
    }

    #[test]
    fn an_unknown_projection_is_named_with_the_known_ones() {
        let e = Settings::from_vars(vars(&[("PROJECTIONS", "user-profile,orders")])).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("orders is not one of user-profile, daily-activity"), "{text}");
    }

    #[test]
    fn upcasting_names_only_types_with_registered_upcasters() {
        let s = Settings::from_vars(vars(&[("PROJECTIONS", "user-profile"), ("UPCASTING", " ")])).unwrap();
        assert!(s.upcasting.is_empty() && s.upcasters().is_empty());
        let e = Settings::from_vars(vars(&[("PROJECTIONS", "user-profile"), ("UPCASTING", "UserRegistered")]))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("variable UPCASTING = \"UserRegistered\" is not"), "{e}");
        assert!(e.contains("UserRegistered has none (event types with upcasters: none)"), "{e}");
    }

    #[test]
    fn bad_numbers_and_shares_name_their_variable() {
        let e = Settings::from_vars(vars(&[("PROJECTIONS", "user-profile"), ("BATCH_SIZE", "0")])).unwrap_err();
        assert_eq!(e.to_string(), "variable BATCH_SIZE = \"0\" is not a whole number from 1 to 100000");
        let e = Settings::from_vars(vars(&[("PROJECTIONS", "user-profile"), ("BUDGET_SHARE", "1.5")])).unwrap_err();
        assert!(e.to_string().starts_with("variable BUDGET_SHARE = \"1.5\" is not a share"), "{e}");
    }
}
