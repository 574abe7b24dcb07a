//! Alerting: evaluates the `alerts:` conditions against the projection states every
//! `interval`, keeps one incident per (projection, condition), and notifies a webhook
//! once when an incident fires and once when it resolves.
//!
//! Conditions (each only when its threshold is configured):
//! - `dead_letters`: the projection's open dead letters (all partitions) >= threshold;
//! - `dead_letter_age`: its oldest open dead letter is older than the threshold;
//! - `lag_seconds`: one of its partitions lags more than the threshold;
//! - `stalled`: one of its partitions is `stopped` or `failed` (or was halted, see
//!   [`Metrics::stopped`]), or has lag and made no progress (no batch committed, no
//!   checkpoint move) for the threshold since the lag appeared.
//!
//! Notifications are JSON POSTs:
//! `{"status":"firing","projection":"…","partition":0,"condition":"dead_letters",
//! "values":{…},"first_seen":"2024-05-01T12:00:00Z","message":"…"}`, and the same with
//! `"status":"resolved"` and `"resolved_at"` when the condition clears. A failed delivery
//! (connection refused, timeout, non-2xx answer) is logged as a warning naming the URL
//! and the attempt, and retried on a later evaluation after a full-jitter backoff
//! (`alerts.retry`), at most `max_retries` times per notification; the two
//! notifications of one incident are delivered in order. Delivery never blocks the
//! workers: the alerter runs in its own task ([`Alerter::run`]).
//!
//! Without a `webhook`, incidents are only logged (`error` when firing, `info` when
//! resolved). `https://` webhooks use rustls with the Mozilla root certificates.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::future::join_all;
use projector::config::AlertsConfig;
use projector::retry::{Failure, RetryAction};
use projector::{Checkpoint, ErrorClass, ProjectionState, Status};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// Time limit of one webhook request (connect + answer).
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// What an incident is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    DeadLetterAge,
    DeadLetters,
    LagSeconds,
    Stalled,
}

impl Condition {
    /// The name used in notifications and in `alerts:` (`dead_letter_age`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::DeadLetterAge => "dead_letter_age",
            Condition::DeadLetters => "dead_letters",
            Condition::LagSeconds => "lag_seconds",
            Condition::Stalled => "stalled",
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `firing` or `resolved`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

/// The JSON body POSTed to the webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub status: AlertStatus,
    pub projection: String,
    /// The partition that triggered the incident (the worst one), when there is one.
    pub partition: Option<u32>,
    pub condition: Condition,
    /// The measured values and the threshold, when the incident was first seen.
    pub values: serde_json::Value,
    /// RFC 3339.
    #[serde(with = "rfc3339")]
    pub first_seen: DateTime<Utc>,
    /// RFC 3339; only in `resolved` notifications.
    #[serde(default, with = "rfc3339_option", skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<DateTime<Utc>>,
    pub message: String,
}

/// An open incident.
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    pub projection: String,
    pub condition: Condition,
    pub partition: Option<u32>,
    /// Values when first seen (what the firing notification carried).
    pub values: serde_json::Value,
    pub message: String,
    pub first_seen: DateTime<Utc>,
    id: u64,
}

/// A notification waiting for delivery.
#[derive(Debug)]
struct Delivery {
    incident: u64,
    key: (String, Condition),
    notification: Notification,
    /// Failed attempts so far.
    failures: u32,
    due: Instant,
}

/// What a condition check found for one projection.
struct Finding {
    partition: Option<u32>,
    values: serde_json::Value,
    message: String,
}

/// Progress bookkeeping of one partition, for `stalled`.
#[derive(Debug, Clone, Copy)]
struct Progress {
    checkpoint: Checkpoint,
    moved_at: Instant,
    lagging_since: Option<Instant>,
}

struct Webhook {
    url: reqwest::Url,
    client: reqwest::Client,
}

/// Evaluates alert conditions and notifies; see the module docs.
pub struct Alerter {
    config: AlertsConfig,
    webhook: Option<Webhook>,
    incidents: BTreeMap<(String, Condition), Incident>,
    outbox: VecDeque<Delivery>,
    progress: BTreeMap<(String, u32), Progress>,
    /// Open incidents whose firing notification was given up on: their resolution is
    /// not sent either.
    unannounced: BTreeSet<u64>,
    next_id: u64,
}

impl fmt::Debug for Alerter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Alerter")
            .field("config", &self.config)
            .field("incidents", &self.incidents)
            .field("pending", &self.outbox.len())
            .finish_non_exhaustive()
    }
}

impl Alerter {
    /// An alerter for `config`. A webhook URL that cannot be used (the configuration
    /// loader already checks it) is logged and incidents are then only logged.
    pub fn new(config: AlertsConfig) -> Alerter {
        let webhook = config.webhook.as_deref().and_then(|url| {
            let parsed = match reqwest::Url::parse(url) {
                Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => parsed,
                Ok(_) | Err(_) => {
                    tracing::error!(webhook = %url, "alerts: invalid webhook URL; incidents will only be logged");
                    return None;
                }
            };
            let client = reqwest::Client::builder()
                .timeout(WEBHOOK_TIMEOUT)
                .user_agent(concat!("projector-alerts/", env!("CARGO_PKG_VERSION")))
                .build();
            match client {
                Ok(client) => Some(Webhook { url: parsed, client }),
                Err(e) => {
                    tracing::error!(webhook = %url, error = %e,
                        "alerts: cannot create the HTTP client; incidents will only be logged");
                    None
                }
            }
        });
        Alerter {
            config,
            webhook,
            incidents: BTreeMap::new(),
            outbox: VecDeque::new(),
            progress: BTreeMap::new(),
            unannounced: BTreeSet::new(),
            next_id: 0,
        }
    }

    /// The configuration this alerter evaluates.
    pub fn config(&self) -> &AlertsConfig {
        &self.config
    }

    /// The open incidents, by projection then condition.
    pub fn incidents(&self) -> impl Iterator<Item = &Incident> {
        self.incidents.values()
    }

    /// Notifications not delivered yet (waiting for a retry).
    pub fn pending(&self) -> usize {
        self.outbox.len()
    }

    /// When the next pending notification may be retried, if any.
    pub fn next_due(&self) -> Option<Instant> {
        self.outbox.iter().map(|d| d.due).min()
    }

    /// One round: compares the conditions with the open incidents, records what fired
    /// or resolved, and sends the notifications that are due.
    pub async fn evaluate(&mut self, states: &[ProjectionState], metrics: &Metrics) {
        self.evaluate_at(states, metrics, Instant::now(), Utc::now()).await;
    }

    /// [`Alerter::evaluate`] at a given time (`now` for durations, `wall` for dates).
    pub async fn evaluate_at(
        &mut self,
        states: &[ProjectionState],
        metrics: &Metrics,
        now: Instant,
        wall: DateTime<Utc>,
    ) {
        self.track_progress(states, now);
        let mut projections: BTreeMap<&str, Vec<&ProjectionState>> = BTreeMap::new();
        for state in states {
            projections.entry(state.projection.as_str()).or_default().push(state);
        }
        let mut firing: BTreeMap<(String, Condition), Finding> = BTreeMap::new();
        for (projection, parts) in &projections {
            for condition in
                [Condition::DeadLetterAge, Condition::DeadLetters, Condition::LagSeconds, Condition::Stalled]
            {
                if let Some(finding) = self.check(condition, projection, parts, metrics, now, wall) {
                    firing.insert(((*projection).to_owned(), condition), finding);
                }
            }
        }

        let resolved: Vec<(String, Condition)> =
            self.incidents.keys().filter(|key| !firing.contains_key(*key)).cloned().collect();
        for key in resolved {
            let Some(incident) = self.incidents.remove(&key) else {
                continue;
            };
            tracing::info!(projection = %incident.projection, condition = %incident.condition,
                "alert resolved: {} on {} (was: {})", incident.condition, incident.projection, incident.message);
            if self.unannounced.remove(&incident.id) {
                continue;
            }
            self.enqueue(
                incident.id,
                Notification {
                    status: AlertStatus::Resolved,
                    projection: incident.projection,
                    partition: incident.partition,
                    condition: incident.condition,
                    values: incident.values,
                    first_seen: incident.first_seen,
                    resolved_at: Some(wall),
                    message: format!("resolved: {}", incident.message),
                },
                now,
            );
        }
        for (key, finding) in firing {
            if self.incidents.contains_key(&key) {
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            let incident = Incident {
                projection: key.0.clone(),
                condition: key.1,
                partition: finding.partition,
                values: finding.values,
                message: finding.message,
                first_seen: wall,
                id,
            };
            tracing::error!(projection = %incident.projection,
                partition = incident.partition.map(i64::from).unwrap_or(-1),
                condition = %incident.condition, "alert firing: {}", incident.message);
            self.enqueue(
                id,
                Notification {
                    status: AlertStatus::Firing,
                    projection: incident.projection.clone(),
                    partition: incident.partition,
                    condition: incident.condition,
                    values: incident.values.clone(),
                    first_seen: wall,
                    resolved_at: None,
                    message: incident.message.clone(),
                },
                now,
            );
            self.incidents.insert(key, incident);
        }
        self.deliver_due_at(now).await;
    }

    fn enqueue(&mut self, incident: u64, notification: Notification, now: Instant) {
        if self.webhook.is_none() {
            return;
        }
        self.outbox.push_back(Delivery {
            incident,
            key: (notification.projection.clone(), notification.condition),
            notification,
            failures: 0,
            due: now,
        });
    }

    fn track_progress(&mut self, states: &[ProjectionState], now: Instant) {
        let mut seen = BTreeMap::new();
        for s in states {
            let key = (s.projection.clone(), s.partition);
            let previous = self.progress.get(&key).copied();
            let moved_at = match previous {
                Some(p) if p.checkpoint == s.checkpoint => p.moved_at,
                _ => now,
            };
            let lagging_since =
                if s.lag_events > 0 { Some(previous.and_then(|p| p.lagging_since).unwrap_or(now)) } else { None };
            seen.insert(key, Progress { checkpoint: s.checkpoint, moved_at, lagging_since });
        }
        self.progress = seen;
    }

    fn check(
        &self,
        condition: Condition,
        projection: &str,
        parts: &[&ProjectionState],
        metrics: &Metrics,
        now: Instant,
        wall: DateTime<Utc>,
    ) -> Option<Finding> {
        let c = &self.config;
        match condition {
            Condition::DeadLetters => {
                let threshold = c.dead_letters?;
                let open: i64 = parts.iter().map(|s| s.dead_letters.max(0)).sum();
                let open = u64::try_from(open).unwrap_or(0);
                if open < threshold {
                    return None;
                }
                let worst = parts.iter().max_by_key(|s| s.dead_letters)?;
                Some(Finding {
                    partition: Some(worst.partition),
                    values: json!({ "open": open, "threshold": threshold }),
                    message: format!("projection {projection}: {open} open dead letter(s) (threshold {threshold})"),
                })
            }
            Condition::DeadLetterAge => {
                let threshold = c.dead_letter_age?;
                let (partition, oldest) = parts
                    .iter()
                    .filter_map(|s| s.oldest_dead_letter_at.map(|at| (s.partition, at)))
                    .min_by_key(|&(_, at)| at)?;
                let age = (wall - oldest).to_std().unwrap_or_default();
                (age > threshold).then(|| Finding {
                    partition: Some(partition),
                    values: json!({
                        "oldest_dead_letter_at": oldest.to_rfc3339_opts(SecondsFormat::Secs, true),
                        "age_seconds": age.as_secs(),
                        "threshold_seconds": threshold.as_secs_f64(),
                    }),
                    message: format!(
                        "projection {projection} partition {partition}: the oldest open dead letter is {} old (threshold {})",
                        human(age),
                        human(threshold)
                    ),
                })
            }
            Condition::LagSeconds => {
                let threshold = c.lag_seconds?;
                let worst = parts
                    .iter()
                    .filter(|s| s.lag_seconds.is_finite())
                    .max_by(|a, b| a.lag_seconds.total_cmp(&b.lag_seconds))?;
                (worst.lag_seconds > threshold as f64).then(|| Finding {
                    partition: Some(worst.partition),
                    values: json!({
                        "lag_seconds": worst.lag_seconds,
                        "lag_events": worst.lag_events,
                        "threshold_seconds": threshold,
                    }),
                    message: format!(
                        "projection {projection} partition {}: lag is {:.0}s, {} event(s) (threshold {threshold}s)",
                        worst.partition, worst.lag_seconds, worst.lag_events
                    ),
                })
            }
            Condition::Stalled => {
                let threshold = c.stalled?;
                parts.iter().find_map(|s| self.stalled(s, threshold, metrics, now)).map(|(partition, values, why)| {
                    Finding {
                        partition: Some(partition),
                        values,
                        message: format!("projection {projection} partition {partition} {why}"),
                    }
                })
            }
        }
    }

    fn stalled(
        &self,
        s: &ProjectionState,
        threshold: Duration,
        metrics: &Metrics,
        now: Instant,
    ) -> Option<(u32, serde_json::Value, String)> {
        if let Some(reason) = metrics.stop_reason(&s.projection, s.partition) {
            return Some((
                s.partition,
                json!({ "status": s.status.as_str(), "lag_events": s.lag_events, "reason": reason }),
                format!("is halted: {reason}"),
            ));
        }
        if matches!(s.status, Status::Stopped | Status::Failed) {
            let error = s.last_error.as_deref().unwrap_or("");
            let why = if error.is_empty() { format!("is {}", s.status) } else { format!("is {}: {error}", s.status) };
            return Some((
                s.partition,
                json!({ "status": s.status.as_str(), "lag_events": s.lag_events, "last_error": s.last_error }),
                why,
            ));
        }
        if s.lag_events <= 0 {
            return None;
        }
        let progress = self.progress.get(&(s.projection.clone(), s.partition))?;
        let since = [progress.lagging_since, Some(progress.moved_at), metrics.last_commit(&s.projection, s.partition)]
            .into_iter()
            .flatten()
            .max()?;
        let idle = now.saturating_duration_since(since);
        (idle >= threshold).then(|| {
            (
                s.partition,
                json!({
                    "status": s.status.as_str(),
                    "lag_events": s.lag_events,
                    "seconds_without_progress": idle.as_secs(),
                    "threshold_seconds": threshold.as_secs_f64(),
                }),
                format!(
                    "is not progressing: {} event(s) behind and no batch committed for {} (threshold {})",
                    s.lag_events,
                    human(idle),
                    human(threshold)
                ),
            )
        })
    }

    /// Sends the pending notifications whose retry time has come.
    pub async fn deliver_due(&mut self) {
        self.deliver_due_at(Instant::now()).await;
    }

    async fn deliver_due_at(&mut self, now: Instant) {
        let Some(webhook) = &self.webhook else {
            self.outbox.clear();
            return;
        };
        // Per incident key, only the oldest pending notification may go (in order).
        let mut blocked = Vec::new();
        let mut attempts = Vec::new();
        for (index, delivery) in self.outbox.iter().enumerate() {
            if blocked.contains(&&delivery.key) {
                continue;
            }
            blocked.push(&delivery.key);
            if delivery.due <= now {
                attempts.push(index);
            }
        }
        if attempts.is_empty() {
            return;
        }
        let results = join_all(attempts.iter().map(|&i| post(webhook, &self.outbox[i].notification))).await;

        let max_retries = self.config.retry.max_retries;
        let mut delivered = Vec::new();
        let mut abandoned = Vec::new();
        for (&index, result) in attempts.iter().zip(results) {
            let delivery = &mut self.outbox[index];
            let n = &delivery.notification;
            match result {
                Ok(()) => {
                    tracing::debug!(webhook = %webhook.url, projection = %n.projection,
                        condition = %n.condition, status = ?n.status, "alert notification delivered");
                    delivered.push(index);
                }
                Err(error) => {
                    delivery.failures += 1;
                    let attempt = delivery.failures;
                    let next = self.config.retry.next_action(Failure::Event(ErrorClass::Transient), attempt);
                    if next == RetryAction::DeadLetter {
                        tracing::error!(webhook = %webhook.url, projection = %n.projection,
                            condition = %n.condition,
                            "alert webhook {}: attempt {attempt} of {} failed: {error}; giving up on this {} notification",
                            webhook.url, max_retries + 1, status_name(n.status));
                        abandoned.push(index);
                    } else {
                        let delay = next.delay(rand::random::<f64>());
                        delivery.due = now.checked_add(delay).unwrap_or(now);
                        tracing::warn!(webhook = %webhook.url, projection = %n.projection,
                            condition = %n.condition,
                            "alert webhook {}: attempt {attempt} of {} failed: {error}; retrying the {} notification in {}",
                            webhook.url, max_retries + 1, status_name(n.status), human(delay));
                    }
                }
            }
        }
        // A firing notification given up on takes its incident's resolution with it:
        // the receiver never heard of the incident.
        let dropped_incidents: Vec<u64> = abandoned
            .iter()
            .filter(|&&i| self.outbox[i].notification.status == AlertStatus::Firing)
            .map(|&i| self.outbox[i].incident)
            .collect();
        for &id in &dropped_incidents {
            if self.incidents.values().any(|incident| incident.id == id) {
                self.unannounced.insert(id);
            }
        }
        let mut index = 0;
        self.outbox.retain(|d| {
            let keep =
                !delivered.contains(&index) && !abandoned.contains(&index) && !dropped_incidents.contains(&d.incident);
            index += 1;
            keep
        });
    }

    /// Evaluates every `interval` until `shutdown` turns true (or its sender is
    /// dropped), reading the states with `states`; a failed read is logged and the
    /// round skipped. Pending notifications are retried when due, between rounds.
    pub async fn run<F, Fut, E>(mut self, mut states: F, metrics: Arc<Metrics>, mut shutdown: watch::Receiver<bool>)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Vec<ProjectionState>, E>>,
        E: fmt::Display,
    {
        let interval = self.config.interval.max(Duration::from_millis(10));
        let mut next_round = Instant::now();
        let mut source_failing = false;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let now = Instant::now();
            if now >= next_round {
                match states().await {
                    Ok(states) => {
                        if source_failing {
                            tracing::info!("alerts: projection states readable again");
                            source_failing = false;
                        }
                        self.evaluate(&states, &metrics).await;
                    }
                    Err(e) => {
                        if !source_failing {
                            tracing::warn!(error = %e,
                                "alerts: cannot read the projection states; conditions are not evaluated until they are readable");
                            source_failing = true;
                        }
                        self.deliver_due().await;
                    }
                }
                next_round = Instant::now() + interval;
            } else {
                self.deliver_due().await;
            }
            let wake = self.next_due().map_or(next_round, |due| due.min(next_round));
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {}
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

fn status_name(status: AlertStatus) -> &'static str {
    match status {
        AlertStatus::Firing => "firing",
        AlertStatus::Resolved => "resolved",
    }
}

async fn post(webhook: &Webhook, notification: &Notification) -> Result<(), String> {
    let response =
        webhook.client.post(webhook.url.clone()).json(notification).send().await.map_err(|e| describe(&e))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the webhook answered HTTP {status}"))
    }
}

/// What went wrong, without repeating the URL: "cannot connect: Connection refused
/// (os error 111)", "no answer within 10s", ...
fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return format!("no answer within {}s", WEBHOOK_TIMEOUT.as_secs());
    }
    // The innermost cause says what happened (refused, reset, DNS, TLS, ...).
    let mut root: Option<&dyn std::error::Error> = None;
    let mut next = std::error::Error::source(error);
    while let Some(cause) = next {
        root = Some(cause);
        next = cause.source();
    }
    let kind = if error.is_connect() {
        "cannot connect"
    } else if error.is_body() || error.is_decode() {
        "bad answer"
    } else {
        "request failed"
    };
    match root {
        Some(root) => format!("{kind}: {root}"),
        None => format!("{kind}: {error}"),
    }
}

/// `2m30s`-style duration for messages.
fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 3600 {
        format!("{}h{}m", secs / 3600, secs % 3600 / 60)
    } else if secs >= 60 {
        format!("{}m{}s", secs / 60, secs % 60)
    } else if secs >= 1 {
        format!("{secs}s")
    } else {
        format!("{}ms", d.as_millis())
    }
}

mod rfc3339 {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text).map(|at| at.with_timezone(&Utc)).map_err(serde::de::Error::custom)
    }
}

mod rfc3339_option {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => super::rfc3339::serialize(at, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| {
                DateTime::parse_from_rfc3339(&text).map(|at| at.with_timezone(&Utc)).map_err(serde::de::Error::custom)
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_serialize_as_documented() {
        let first_seen = DateTime::parse_from_rfc3339("2024-05-01T12:00:00Z").unwrap().with_timezone(&Utc);
        let n = Notification {
            status: AlertStatus::Firing,
            projection: "user-profile".into(),
            partition: Some(0),
            condition: Condition::DeadLetterAge,
            values: json!({ "age_seconds": 700 }),
            first_seen,
            resolved_at: None,
            message: "m".into(),
        };
        let text = serde_json::to_string(&n).unwrap();
        assert_eq!(
            text,
            r#"{"status":"firing","projection":"user-profile","partition":0,"condition":"dead_letter_age","values":{"age_seconds":700},"first_seen":"2024-05-01T12:00:00.000Z","message":"m"}"#
        );
        let back: Notification = serde_json::from_str(&text).unwrap();
        assert_eq!(back, n);
        let resolved = Notification { status: AlertStatus::Resolved, resolved_at: Some(first_seen), ..n };
        let text = serde_json::to_string(&resolved).unwrap();
        assert!(text.contains(r#""status":"resolved""#), "{text}");
        assert!(text.contains(r#""resolved_at":"2024-05-01T12:00:00.000Z""#), "{text}");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human(Duration::from_millis(250)), "250ms");
        assert_eq!(human(Duration::from_secs(42)), "42s");
        assert_eq!(human(Duration::from_secs(150)), "2m30s");
        assert_eq!(human(Duration::from_secs(3700)), "1h1m");
    }
}
