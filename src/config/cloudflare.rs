//! What Cloudflare Workers can honour of a projection's settings, written once: the
//! limits validation checks for `provider: cloudflare` (reported with `file:line:column`),
//! and how the settings map onto a Worker (its name and queues, the cron schedule, the
//! CPU limit, the lease time), which the deployment renders.
//!
//! One Worker runs one projection. It is woken by a cron trigger, whose finest period is
//! a minute (`poll_interval`), and by its wake queue; `timeout` bounds one invocation;
//! `concurrency` is how many invocations the wake queue may run at once; `memory` is at
//! most the isolate's 128MB.

use std::time::Duration;

use serde_saphyr::{Location, Spanned};

use super::error::{shown, ConfigError, Position};
use super::raw::RawResources;
use super::{ProjectionConfig, Provider};

/// Largest `config.memory`: a Worker isolate has 128MB.
pub const MAX_MEMORY_BYTES: u64 = 128 * 1024 * 1024;
/// Largest `config.timeout`: the CPU limit a Worker can be given (`[limits] cpu_ms`).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// The CPU limit a Worker has without `[limits] cpu_ms` (a longer one needs Workers Paid).
pub const DEFAULT_CPU_LIMIT: Duration = Duration::from_secs(30);
/// Largest `config.concurrency`: a queue consumer's `max_concurrency`.
pub const MAX_CONCURRENCY: u32 = 250;
/// The finest period of a cron trigger.
pub const FINEST_SCHEDULE: Duration = Duration::from_secs(60);
/// Longest projection name: a queue name (`projector-<name>-wake`) has at most 63 characters.
pub const MAX_NAME_LEN: usize = 63 - WORKER_PREFIX.len() - WAKE_SUFFIX.len();

const WORKER_PREFIX: &str = "projector-";
const WAKE_SUFFIX: &str = "-wake";
const DEAD_LETTER_SUFFIX: &str = "-dlq";

/// The Worker that runs `projection`.
pub fn worker_name(projection: &str) -> String {
    format!("{WORKER_PREFIX}{projection}")
}

/// The queue that wakes `projection`'s Worker (appends, retries).
pub fn wake_queue(projection: &str) -> String {
    format!("{WORKER_PREFIX}{projection}{WAKE_SUFFIX}")
}

/// The queue Cloudflare moves a wake message to once its retries are spent.
pub fn dead_letter_queue(projection: &str) -> String {
    format!("{WORKER_PREFIX}{projection}{DEAD_LETTER_SUFFIX}")
}

/// The cron expression that runs a Worker every `poll_interval`: whole minutes that
/// divide an hour, or whole hours that divide a day (a cron cannot keep any other period
/// across the hour or the day). An interval under a minute, as the default `250ms`, runs
/// every minute, the finest a cron can; validation refuses one written for a Worker.
/// `None` for a period no cron expression keeps.
pub fn cron_schedule(poll_interval: Duration) -> Option<String> {
    if poll_interval <= FINEST_SCHEDULE {
        return Some("* * * * *".to_owned());
    }
    let seconds = poll_interval.as_secs();
    if poll_interval.subsec_nanos() != 0 || !seconds.is_multiple_of(60) {
        return None;
    }
    let minutes = seconds / 60;
    if minutes < 60 {
        return 60u64.is_multiple_of(minutes).then(|| format!("*/{minutes} * * * *"));
    }
    if !minutes.is_multiple_of(60) {
        return None;
    }
    match minutes / 60 {
        1 => Some("0 * * * *".to_owned()),
        24 => Some("0 0 * * *".to_owned()),
        hours if hours < 24 && 24u64.is_multiple_of(hours) => Some(format!("0 */{hours} * * *")),
        _ => None,
    }
}

/// The periods [`cron_schedule`] keeps, for messages.
pub const SCHEDULES: &str = "1m, 2m, 3m, 4m, 5m, 6m, 10m, 12m, 15m, 20m, 30m, 1h, 2h, 3h, 4h, 6h, 8h, 12h or 24h";

/// The `[limits] cpu_ms` a Worker needs for `timeout`: `None` within the default limit.
pub fn cpu_limit(timeout: Duration) -> Option<Duration> {
    (timeout > DEFAULT_CPU_LIMIT).then_some(timeout)
}

/// How long the Worker's leases last: `lease_ttl` when it outlives an invocation
/// (`timeout`), else `None` and the Worker derives one that does. Validation refuses a
/// `lease_ttl` written for a Worker that does not.
pub fn lease_ttl(projection: &ProjectionConfig) -> Option<Duration> {
    (projection.lease_ttl > projection.config.timeout).then_some(projection.lease_ttl)
}

/// A `provider: cloudflare` projection as written: where each refusal points.
pub(super) struct Written<'r> {
    pub(super) name: &'r Spanned<String>,
    pub(super) handler: &'r Spanned<String>,
    pub(super) config: &'r RawResources,
    pub(super) poll_interval: Option<&'r Spanned<String>>,
    pub(super) lease_ttl: Option<&'r Spanned<String>>,
}

/// Its parsed values (`None`: the value did not parse, and that was reported).
pub(super) struct Values {
    pub(super) memory: Option<u64>,
    pub(super) timeout: Option<Duration>,
    pub(super) concurrency: Option<i64>,
    pub(super) poll_interval: Option<Duration>,
    pub(super) lease_ttl: Option<Duration>,
}

/// Everything a Worker cannot honour of the projection, each at the value it is about
/// (`at` turns a location into a position); the handler rule only when the handler is
/// known.
pub(super) fn refusals(
    raw: &Written<'_>,
    values: &Values,
    known_handler: bool,
    at: impl Fn(&Location) -> Position,
) -> Vec<ConfigError> {
    let mut out = Vec::new();
    let mut refuse = |location: &Location, field: &'static str, value: &str, reason: String| {
        out.push(ConfigError::ProviderUnsupported {
            at: at(location),
            provider: Provider::Cloudflare,
            field,
            value: shown(value),
            reason,
        });
    };
    let name = raw.name;
    if let Some(reason) = rules::name(&name.value) {
        refuse(&name.referenced, "name", &name.value, reason);
    }
    if let Some(reason) = rules::handler(&name.value, &raw.handler.value).filter(|_| known_handler) {
        refuse(&raw.handler.referenced, "handler", &raw.handler.value, reason);
    }
    if let (Some(written), Some(poll)) = (raw.poll_interval, values.poll_interval) {
        if let Some(reason) = rules::poll_interval(poll) {
            refuse(&written.referenced, "poll_interval", &written.value, reason);
        }
    }
    if let (Some(written), Some(ttl), Some(timeout)) = (raw.lease_ttl, values.lease_ttl, values.timeout) {
        if let Some(reason) = rules::lease_ttl(ttl, timeout) {
            refuse(&written.referenced, "lease_ttl", &written.value, reason);
        }
    }
    let mut limit = |location: &Location, field: &'static str, value: &str, limit: &'static str| {
        out.push(ConfigError::ProviderLimit {
            at: at(location),
            provider: Provider::Cloudflare,
            field,
            value: shown(value),
            limit,
        });
    };
    let config = raw.config;
    if values.memory.is_some_and(|m| m > MAX_MEMORY_BYTES) {
        limit(&config.memory.referenced, "memory", &config.memory.value, "128MB");
    }
    if values.timeout.is_some_and(|t| t > MAX_TIMEOUT) {
        limit(&config.timeout.referenced, "timeout", &config.timeout.value, "5m");
    }
    if let Some(concurrency) = values.concurrency.filter(|&c| c > i64::from(MAX_CONCURRENCY)) {
        limit(&config.concurrency.referenced, "concurrency", &concurrency.to_string(), "250");
    }
    out
}

/// Why a Worker cannot run a projection named `name` as written, per rule; each is
/// reported at the value it is about.
mod rules {
    use super::*;

    pub(super) fn name(name: &str) -> Option<String> {
        (name.len() > MAX_NAME_LEN).then(|| {
            format!(
                "a Worker's queue names ({}) have at most 63 characters: use a name of at most {MAX_NAME_LEN} \
                 (this one has {})",
                wake_queue("<name>"),
                name.len()
            )
        })
    }

    pub(super) fn handler(name: &str, handler: &str) -> Option<String> {
        (name != handler)
            .then(|| format!("a Worker runs a projection named after its handler: name the projection `{handler}`"))
    }

    pub(super) fn poll_interval(written: Duration) -> Option<String> {
        if written < FINEST_SCHEDULE {
            return Some(
                "a Worker is woken by a cron trigger at most once a minute (and by its wake queue): \
                 write 1m or more, or leave `poll_interval` out to run every minute"
                    .to_owned(),
            );
        }
        cron_schedule(written).is_none().then(|| format!("no cron schedule keeps that period: use {SCHEDULES}"))
    }

    pub(super) fn lease_ttl(written: Duration, timeout: Duration) -> Option<String> {
        (written <= timeout).then(|| {
            format!(
                "a Worker's lease must outlive its invocation (`timeout` {}): write more, or leave \
                 `lease_ttl` out for the Worker's own (twice the timeout and 5s)",
                super::super::units::format_duration(timeout)
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_schedules_keep_periods_that_divide_an_hour_or_a_day() {
        let s = |secs| cron_schedule(Duration::from_secs(secs));
        assert_eq!(cron_schedule(Duration::from_millis(250)).as_deref(), Some("* * * * *"));
        assert_eq!(s(60).as_deref(), Some("* * * * *"));
        assert_eq!(s(5 * 60).as_deref(), Some("*/5 * * * *"));
        assert_eq!(s(30 * 60).as_deref(), Some("*/30 * * * *"));
        assert_eq!(s(3600).as_deref(), Some("0 * * * *"));
        assert_eq!(s(6 * 3600).as_deref(), Some("0 */6 * * *"));
        assert_eq!(s(24 * 3600).as_deref(), Some("0 0 * * *"));
        for period in [90, 7 * 60, 45 * 60, 90 * 60, 5 * 3600, 48 * 3600] {
            assert_eq!(s(period), None, "{period}s");
        }
        let listed: Vec<&str> = SCHEDULES.split([',', ' ']).filter(|w| w.ends_with(['m', 'h'])).collect();
        for period in listed {
            let parsed = super::super::parse_duration(period).expect(period);
            assert!(cron_schedule(parsed).is_some(), "{period} is listed but has no schedule");
        }
    }

    #[test]
    fn names_fit_the_queue_name_limit() {
        assert_eq!(MAX_NAME_LEN, 48);
        assert_eq!(wake_queue(&"a".repeat(MAX_NAME_LEN)).len(), 63);
        assert!(dead_letter_queue(&"a".repeat(MAX_NAME_LEN)).len() <= 63);
        assert!(rules::name(&"a".repeat(MAX_NAME_LEN)).is_none());
        assert!(rules::name(&"a".repeat(MAX_NAME_LEN + 1)).is_some());
    }

    #[test]
    fn a_longer_timeout_than_the_default_cpu_limit_needs_one() {
        assert_eq!(cpu_limit(Duration::from_secs(30)), None);
        assert_eq!(cpu_limit(Duration::from_secs(31)), Some(Duration::from_secs(31)));
    }
}
