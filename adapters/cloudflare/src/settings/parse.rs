//! Reading one variable: each function names the variable and what it must hold when the
//! value is wrong.

use std::time::Duration;

use projector::{OnFailure, RetryPolicy};

use super::{var, SettingsError};
use crate::handlers;

pub(super) fn projections(value: &str) -> Result<Vec<&'static str>, SettingsError> {
    let known = handlers::names();
    let mut out: Vec<&'static str> = Vec::new();
    for name in list(value) {
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

pub(super) fn upcasting(value: &str) -> Result<Vec<String>, SettingsError> {
    let invalid = |expected: String| SettingsError::Invalid { name: var::UPCASTING, value: value.to_owned(), expected };
    let all =
        handlers::upcasters().map_err(|e| invalid(format!("usable: the registered upcasters are refused: {e}")))?;
    let known = all.event_types();
    let mut out: Vec<String> = Vec::new();
    for name in list(value) {
        if !known.contains(&name.as_str()) {
            let known = if known.is_empty() { "none".to_owned() } else { known.join(", ") };
            return Err(invalid(format!(
                "a list of event types with registered upcasters: {name} has none (event types with upcasters: {known})"
            )));
        }
        if !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

/// The non-empty items of a comma-separated list, trimmed.
pub(super) fn list(value: &str) -> Vec<String> {
    value.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned).collect()
}

pub(super) fn number<T>(
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

pub(super) fn share(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: f64,
) -> Result<f64, SettingsError> {
    let Some(value) = lookup(name) else {
        return Ok(default);
    };
    match value.trim().parse::<f64>() {
        Ok(share) if share > 0.0 && share <= 1.0 => Ok(share),
        _ => Err(SettingsError::Invalid {
            name,
            value,
            expected: "a share of the invocation budget, 0 < share <= 1 (e.g. 0.5)".into(),
        }),
    }
}

pub(super) fn retry(lookup: &impl Fn(&str) -> Option<String>) -> Result<RetryPolicy, SettingsError> {
    let defaults = RetryPolicy::default();
    let max_retries = number(lookup, var::MAX_RETRIES, defaults.max_retries, 0..=20)?;
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let base = number(lookup, var::RETRY_BASE_MS, millis(defaults.base), 1..=u64::from(u32::MAX))?;
    let cap = number(lookup, var::RETRY_CAP_MS, millis(defaults.cap), 1..=u64::from(u32::MAX))?;
    if cap < base {
        return Err(SettingsError::Invalid {
            name: var::RETRY_CAP_MS,
            value: cap.to_string(),
            expected: format!("at least {} = {base}: the backoff grows from base up to cap", var::RETRY_BASE_MS),
        });
    }
    Ok(RetryPolicy { max_retries, base: Duration::from_millis(base), cap: Duration::from_millis(cap) })
}

pub(super) fn on_failure(lookup: &impl Fn(&str) -> Option<String>) -> Result<OnFailure, SettingsError> {
    match lookup(var::ON_FAILURE).as_deref().map(str::trim) {
        None | Some("park") => Ok(OnFailure::Park),
        Some("stop") => Ok(OnFailure::Stop),
        Some(other) => Err(SettingsError::Invalid {
            name: var::ON_FAILURE,
            value: other.to_owned(),
            expected: "park or stop".into(),
        }),
    }
}

/// An `http(s)://` URL with a host; `None` for an empty value (no webhook).
pub(super) fn webhook(value: &str) -> Result<Option<String>, SettingsError> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    let host = value.strip_prefix("https://").or_else(|| value.strip_prefix("http://"));
    match host {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(Some(value.to_owned())),
        _ => Err(SettingsError::Invalid {
            name: var::ALERT_WEBHOOK,
            value: value.to_owned(),
            expected: "an http:// or https:// URL with a host".into(),
        }),
    }
}
