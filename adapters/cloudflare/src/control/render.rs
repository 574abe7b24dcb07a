//! One Worker's `wrangler.toml`, rendered from a projection of `projections.yaml`: its
//! name, cron trigger, CPU limit, wake and dead-letter queues, and the variables that
//! carry every knob the Worker honours (see [`crate::settings::var`]). What a Worker
//! cannot honour was refused when the file was validated
//! ([`projector::config::cloudflare`]); the mapping itself is written there once.

use std::fmt::Write as _;
use std::time::Duration;

use projector::config::{cloudflare, format_duration, Config, ProjectionConfig, Provider};
use projector::OnFailure;

use crate::settings::var;

/// `compatibility_date` of rendered Workers: the one the Worker is built and tested with.
pub const COMPATIBILITY_DATE: &str = "2026-04-26";

/// A Worker's health interval: three missed schedules, and never under three minutes
/// (the Worker's default), so one slow tick is not an outage.
pub fn health_interval(poll_interval: Duration) -> Duration {
    (poll_interval.max(cloudflare::FINEST_SCHEDULE) * 3).max(Duration::from_secs(180))
}

/// Why a projection cannot be rendered as a Worker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    #[error("unknown projection {name}; configured projections: {known}")]
    UnknownProjection { name: String, known: String },
    #[error("projection {name} has `provider: {provider}`; only `provider: cloudflare` projections deploy as Workers")]
    NotCloudflare { name: String, provider: Provider },
    #[error("projection {name}: `poll_interval` has no cron schedule (validation should have refused it)")]
    NoSchedule { name: String },
}

/// What to render around the projection's own settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The Worker's entry module, as `main` (relative to the rendered file's directory).
    pub main: String,
    /// Overrides `partitions:` (a `scale` that just changed the stored count).
    pub partitions: Option<u32>,
}

/// The `wrangler.toml` of projection `name` in `config`.
pub fn wrangler_toml(config: &Config, name: &str, target: &Target) -> Result<String, RenderError> {
    let p = projection(config, name)?;
    let schedule = cloudflare::cron_schedule(p.poll_interval).ok_or(RenderError::NoSchedule { name: name.into() })?;
    let mut out = String::new();
    let _ = writeln!(out, "# The Worker that runs projection {name}, rendered from projections.yaml by");
    let _ = writeln!(out, "# `projector deploy --provider cloudflare`: edit projections.yaml, not this file.");
    let _ = writeln!(out, "# Secrets: DATABASE_URL, REBUILD_TOKEN (`projector deploy` uploads them when set).");
    line(&mut out, "name", &string(&cloudflare::worker_name(name)));
    line(&mut out, "main", &string(&target.main));
    line(&mut out, "compatibility_date", &string(COMPATIBILITY_DATE));

    let _ = writeln!(out, "\n# poll_interval: {}", format_duration(p.poll_interval));
    let _ = writeln!(out, "[triggers]");
    line(&mut out, "crons", &format!("[{}]", string(&schedule)));
    if let Some(cpu) = cloudflare::cpu_limit(p.config.timeout) {
        let _ = writeln!(out, "\n# config.timeout, above the default 30s CPU limit (Workers Paid)\n[limits]");
        line(&mut out, "cpu_ms", &cpu.as_millis().to_string());
    }

    let _ = writeln!(out, "\n[vars]");
    for (key, value) in vars(config, name, p, target) {
        line(&mut out, key, &string(&value));
    }

    let (wake, dead) = (cloudflare::wake_queue(name), cloudflare::dead_letter_queue(name));
    let _ = writeln!(out, "\n# Wake-ups and the Worker's own delayed retries (at least once, unordered).");
    let _ = writeln!(out, "[[queues.producers]]");
    line(&mut out, "binding", &string(var::WAKE_BINDING));
    line(&mut out, "queue", &string(&wake));
    let _ = writeln!(out, "\n# retry.max_retries; config.concurrency");
    let _ = writeln!(out, "[[queues.consumers]]");
    line(&mut out, "queue", &string(&wake));
    line(&mut out, "max_batch_size", "100");
    line(&mut out, "max_batch_timeout", "1");
    line(&mut out, "max_retries", &p.retry.max_retries.to_string());
    line(&mut out, "max_concurrency", &p.config.concurrency.to_string());
    line(&mut out, "dead_letter_queue", &string(&dead));
    let _ = writeln!(out, "\n# What the wake queue gave up on: its event is dead-lettered, the alert fires.");
    let _ = writeln!(out, "[[queues.consumers]]");
    line(&mut out, "queue", &string(&dead));
    line(&mut out, "max_batch_size", "100");
    line(&mut out, "max_batch_timeout", "1");
    line(&mut out, "max_concurrency", "1");
    Ok(out)
}

fn projection<'c>(config: &'c Config, name: &str) -> Result<&'c ProjectionConfig, RenderError> {
    let p = config.projections.get(name).ok_or_else(|| RenderError::UnknownProjection {
        name: name.into(),
        known: config.projections.keys().cloned().collect::<Vec<_>>().join(", "),
    })?;
    match p.provider {
        Provider::Cloudflare => Ok(p),
        provider => Err(RenderError::NotCloudflare { name: name.into(), provider }),
    }
}

/// The Worker's variables for projection `name`, in a fixed order.
fn vars(config: &Config, name: &str, p: &ProjectionConfig, target: &Target) -> Vec<(&'static str, String)> {
    let millis = |d: Duration| d.as_millis().to_string();
    let mut vars = vec![
        (var::PROJECTIONS, name.to_owned()),
        (var::PARTITIONS, target.partitions.unwrap_or(p.partitions).to_string()),
        (var::BATCH_SIZE, p.batch_size.to_string()),
        (var::INVOCATION_BUDGET_MS, millis(p.config.timeout)),
        (var::BUDGET_SHARE, "0.5".to_owned()),
        (var::HEALTH_INTERVAL_S, health_interval(p.poll_interval).as_secs().to_string()),
        (var::MEMORY_BYTES, p.config.memory_bytes.to_string()),
        (var::MAX_RETRIES, p.retry.max_retries.to_string()),
        (var::RETRY_BASE_MS, millis(p.retry.base)),
        (var::RETRY_CAP_MS, millis(p.retry.cap)),
        (var::ON_FAILURE, on_failure(p.on_failure).to_owned()),
        (var::GAP_TIMEOUT_MS, millis(p.gap_timeout)),
        (var::CRASH_LIMIT, p.crash_limit.to_string()),
    ];
    if !p.events.event_types.is_empty() {
        vars.push((var::EVENT_TYPES, p.events.event_types.join(",")));
    }
    if !p.events.aggregate_types.is_empty() {
        vars.push((var::AGGREGATE_TYPES, p.events.aggregate_types.join(",")));
    }
    if let Some(ttl) = cloudflare::lease_ttl(p) {
        vars.push((var::LEASE_TTL_MS, millis(ttl)));
    }
    if !config.upcasting.event_types.is_empty() {
        vars.push((var::UPCASTING, config.upcasting.event_types.join(",")));
    }
    if let Some(webhook) = config.alerts.as_ref().and_then(|a| a.webhook.as_ref()) {
        vars.push((var::ALERT_WEBHOOK, webhook.clone()));
    }
    vars.push((var::DEAD_LETTER_QUEUE, cloudflare::dead_letter_queue(name)));
    vars
}

fn on_failure(on_failure: OnFailure) -> &'static str {
    match on_failure {
        OnFailure::Park => "park",
        OnFailure::Stop => "stop",
    }
}

fn line(out: &mut String, key: &str, value: &str) {
    let _ = writeln!(out, "{key} = {value}");
}

/// A TOML basic string.
fn string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Config {
        Config::from_yaml_str(yaml, "test.yaml", &["user-profile", "daily-activity"]).unwrap_or_else(|e| panic!("{e}"))
    }

    const YAML: &str = "
projections:
  user-profile:
    handler: user-profile
    provider: cloudflare
    config: { memory: 64MB, timeout: 2m, concurrency: 4 }
    events: { aggregate_types: [user] }
    partitions: 4
    poll_interval: 5m
    lease_ttl: 10m
    retry: { max_retries: 5, base: 1s, cap: 1m }
    on_failure: stop
    gap_timeout: 2m
    crash_limit: 2
  daily-activity:
    handler: daily-activity
    provider: local
    config: { memory: 64MB, timeout: 30s, concurrency: 1 }
alerts:
  webhook: https://hooks.example.com/projector
";

    fn target() -> Target {
        Target { main: "../../adapters/cloudflare/build/index.js".into(), partitions: None }
    }

    #[test]
    fn a_worker_carries_every_knob_of_its_projection() {
        let toml = wrangler_toml(&config(YAML), "user-profile", &target()).unwrap();
        for expected in [
            "name = \"projector-user-profile\"\n",
            "main = \"../../adapters/cloudflare/build/index.js\"\n",
            "[triggers]\ncrons = [\"*/5 * * * *\"]\n",
            "[limits]\ncpu_ms = 120000\n",
            "PROJECTIONS = \"user-profile\"\n",
            "PARTITIONS = \"4\"\n",
            "INVOCATION_BUDGET_MS = \"120000\"\n",
            "HEALTH_INTERVAL_S = \"900\"\n",
            "MEMORY_BYTES = \"67108864\"\n",
            "MAX_RETRIES = \"5\"\nRETRY_BASE_MS = \"1000\"\nRETRY_CAP_MS = \"60000\"\n",
            "ON_FAILURE = \"stop\"\nGAP_TIMEOUT_MS = \"120000\"\nCRASH_LIMIT = \"2\"\n",
            "AGGREGATE_TYPES = \"user\"\n",
            "LEASE_TTL_MS = \"600000\"\n",
            "ALERT_WEBHOOK = \"https://hooks.example.com/projector\"\n",
            "DEAD_LETTER_QUEUE = \"projector-user-profile-dlq\"\n",
            "[[queues.producers]]\nbinding = \"WAKE\"\nqueue = \"projector-user-profile-wake\"\n",
            "queue = \"projector-user-profile-wake\"\nmax_batch_size = 100\nmax_batch_timeout = 1\nmax_retries = 5\n\
             max_concurrency = 4\ndead_letter_queue = \"projector-user-profile-dlq\"\n",
            "queue = \"projector-user-profile-dlq\"\n",
        ] {
            assert!(toml.contains(expected), "missing {expected:?} in\n{toml}");
        }
        assert!(!toml.contains("EVENT_TYPES"), "no event type filter was written:\n{toml}");
    }

    #[test]
    fn defaults_run_every_minute_within_the_default_cpu_limit() {
        let yaml = "projections:\n  daily-activity:\n    handler: daily-activity\n    provider: cloudflare\n    \
                    config: { memory: 128MB, timeout: 30s, concurrency: 1 }\n";
        let toml = wrangler_toml(&config(yaml), "daily-activity", &target()).unwrap();
        assert!(toml.contains("crons = [\"* * * * *\"]\n"), "{toml}");
        assert!(toml.contains("HEALTH_INTERVAL_S = \"180\"\n"), "{toml}");
        assert!(!toml.contains("[limits]") && !toml.contains("LEASE_TTL_MS"), "{toml}");
        let scaled = wrangler_toml(&config(yaml), "daily-activity", &Target { partitions: Some(8), ..target() });
        assert!(scaled.unwrap().contains("PARTITIONS = \"8\"\n"));
    }

    #[test]
    fn only_cloudflare_projections_render() {
        let config = config(YAML);
        let local = wrangler_toml(&config, "daily-activity", &target()).unwrap_err();
        assert_eq!(
            local.to_string(),
            "projection daily-activity has `provider: local`; only `provider: cloudflare` projections deploy as Workers"
        );
        let unknown = wrangler_toml(&config, "orders", &target()).unwrap_err();
        assert_eq!(
            unknown.to_string(),
            "unknown projection orders; configured projections: daily-activity, user-profile"
        );
    }

    #[test]
    fn strings_are_toml_escaped() {
        assert_eq!(string("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
    }
}
