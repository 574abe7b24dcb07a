//! Delivery of incident transitions: a log line each (`error` when an incident fires,
//! `info` when it resolves) and, with a webhook, a JSON POST each, retried after a
//! full-jitter backoff until it succeeds or the retry policy gives up. The notifications
//! of one (projection, condition) go out in order; a firing notification given up on
//! takes its incident's resolution with it, since the receiver never heard of it.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use projector::retry::{Failure, RetryAction};
use projector::{ErrorClass, RetryPolicy};
use serde::{Deserialize, Serialize};

use super::conditions::Condition;
use super::human;
use super::incidents::Transition;

/// Time limit of one webhook request (connect + answer).
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// `firing` or `resolved`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

impl AlertStatus {
    fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// The JSON body POSTed to the webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub status: AlertStatus,
    pub projection: String,
    /// The partition that triggered the incident (the worst one), when there is one.
    pub partition: Option<u32>,
    pub condition: Condition,
    /// The measured values and the threshold: when the incident was first seen in a
    /// `firing` notification, when it resolved in a `resolved` one.
    pub values: serde_json::Value,
    /// RFC 3339.
    #[serde(with = "rfc3339")]
    pub first_seen: DateTime<Utc>,
    /// RFC 3339; only in `resolved` notifications.
    #[serde(default, with = "rfc3339_option", skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<DateTime<Utc>>,
    pub message: String,
}

struct Webhook {
    url: reqwest::Url,
    client: reqwest::Client,
}

impl Webhook {
    /// `None` (logged) when the URL or the HTTP client cannot be used; the configuration
    /// loader already checks the URL.
    fn new(url: &str) -> Option<Webhook> {
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
    }

    async fn post(&self, notification: &Notification) -> Result<(), String> {
        let response = self.client.post(self.url.clone()).json(notification).send().await.map_err(|e| describe(&e))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the webhook answered HTTP {status}"))
        }
    }
}

/// A notification waiting for delivery.
#[derive(Debug)]
struct Pending {
    incident: u64,
    key: (String, Condition),
    notification: Notification,
    /// Failed attempts so far.
    failures: u32,
    due: Instant,
}

/// The log and the webhook outbox.
pub(crate) struct Delivery {
    webhook: Option<Webhook>,
    retry: RetryPolicy,
    outbox: VecDeque<Pending>,
    /// Open incidents whose firing notification was given up on: their resolution is
    /// not sent either.
    unannounced: BTreeSet<u64>,
}

impl Delivery {
    /// Logs only without a `webhook`; `retry` paces and bounds the attempts of each POST.
    pub fn new(webhook: Option<&str>, retry: RetryPolicy) -> Delivery {
        Delivery {
            webhook: webhook.and_then(Webhook::new),
            retry,
            outbox: VecDeque::new(),
            unannounced: BTreeSet::new(),
        }
    }

    /// Notifications not delivered yet (waiting for a retry).
    pub fn pending(&self) -> usize {
        self.outbox.len()
    }

    /// When the next pending notification may be tried, if any.
    pub fn next_due(&self) -> Option<Instant> {
        self.outbox.iter().map(|d| d.due).min()
    }

    /// Logs each transition and queues its notification, due at `now`.
    pub fn announce(&mut self, transitions: Vec<Transition>, now: Instant) {
        for transition in transitions {
            let incident = transition.incident();
            match &transition {
                Transition::Fired(_) => {
                    tracing::error!(projection = %incident.projection,
                        partition = incident.partition.map(i64::from).unwrap_or(-1),
                        condition = %incident.condition, "alert firing: {}", incident.message);
                }
                Transition::Resolved { .. } => {
                    tracing::info!(projection = %incident.projection, condition = %incident.condition,
                        "alert resolved: {} on {} (was: {})", incident.condition, incident.projection, incident.message);
                    if self.unannounced.remove(&incident.id()) {
                        continue;
                    }
                }
            }
            if self.webhook.is_none() {
                continue;
            }
            let notification = transition.notification();
            self.outbox.push_back(Pending {
                incident: incident.id(),
                key: (notification.projection.clone(), notification.condition),
                notification,
                failures: 0,
                due: now,
            });
        }
    }

    /// Sends the pending notifications whose time has come, at most one per (projection,
    /// condition) at a time, and reschedules or gives up on those that fail.
    pub async fn deliver_due(&mut self, now: Instant) {
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
        let results = join_all(attempts.iter().map(|&i| webhook.post(&self.outbox[i].notification))).await;

        let max_retries = self.retry.max_retries;
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
                    let next = self.retry.next_action(Failure::Event(ErrorClass::Transient), attempt);
                    if next == RetryAction::DeadLetter {
                        tracing::error!(webhook = %webhook.url, projection = %n.projection,
                            condition = %n.condition,
                            "alert webhook {}: attempt {attempt} of {} failed: {error}; giving up on this {} notification",
                            webhook.url, max_retries + 1, n.status.as_str());
                        abandoned.push(index);
                    } else {
                        let delay = next.delay(rand::random::<f64>());
                        delivery.due = now.checked_add(delay).unwrap_or(now);
                        tracing::warn!(webhook = %webhook.url, projection = %n.projection,
                            condition = %n.condition,
                            "alert webhook {}: attempt {attempt} of {} failed: {error}; retrying the {} notification in {}",
                            webhook.url, max_retries + 1, n.status.as_str(), human(delay));
                    }
                }
            }
        }
        // A firing notification given up on takes its incident's resolution with it: a
        // queued one is dropped, a later one (the incident is still open) never queued.
        let unheard: Vec<u64> = abandoned
            .iter()
            .filter(|&&i| self.outbox[i].notification.status == AlertStatus::Firing)
            .map(|&i| self.outbox[i].incident)
            .collect();
        for &id in &unheard {
            let resolution_queued =
                self.outbox.iter().any(|d| d.incident == id && d.notification.status == AlertStatus::Resolved);
            if !resolution_queued {
                self.unannounced.insert(id);
            }
        }
        let mut index = 0;
        self.outbox.retain(|d| {
            let keep = !delivered.contains(&index) && !abandoned.contains(&index) && !unheard.contains(&d.incident);
            index += 1;
            keep
        });
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
    use serde_json::json;

    use super::super::conditions::{Finding, Firing};
    use super::super::incidents::Incidents;
    use super::*;

    fn firing(projection: &str) -> Firing {
        let finding = Finding { partition: Some(0), values: json!({}), message: "m".into() };
        [((projection.to_owned(), Condition::DeadLetters), finding)].into_iter().collect()
    }

    /// Nothing listens on port 1 of the loopback: every POST is refused at once.
    fn refused(max_retries: u32) -> Delivery {
        let retry = RetryPolicy { max_retries, base: Duration::from_millis(1), cap: Duration::from_millis(1) };
        Delivery::new(Some("http://127.0.0.1:1/hooks"), retry)
    }

    #[test]
    fn without_a_webhook_nothing_waits() {
        let mut incidents = Incidents::default();
        let mut delivery = Delivery::new(None, RetryPolicy::default());
        let now = Instant::now();
        delivery.announce(incidents.update(firing("p"), Utc::now(), |_| serde_json::Value::Null), now);
        delivery.announce(incidents.update(Firing::new(), Utc::now(), |_| serde_json::Value::Null), now);
        assert_eq!((delivery.pending(), delivery.next_due()), (0, None));
    }

    #[tokio::test]
    async fn a_firing_notification_given_up_takes_its_queued_resolution_along() {
        let mut incidents = Incidents::default();
        let mut delivery = refused(1);
        let now = Instant::now();
        delivery.announce(incidents.update(firing("p"), Utc::now(), |_| serde_json::Value::Null), now);
        delivery.deliver_due(now).await;
        assert_eq!(delivery.pending(), 1, "retried later");
        delivery.announce(incidents.update(Firing::new(), Utc::now(), |_| serde_json::Value::Null), now);
        assert_eq!(delivery.pending(), 2, "the resolution waits behind the firing notification");
        delivery.deliver_due(now + Duration::from_secs(1)).await;
        assert_eq!(delivery.pending(), 0, "both dropped");
        // A new incident of the same condition is announced as usual.
        delivery.announce(incidents.update(firing("p"), Utc::now(), |_| serde_json::Value::Null), now);
        assert_eq!(delivery.pending(), 1);
    }

    #[tokio::test]
    async fn a_firing_notification_given_up_silences_the_later_resolution() {
        let mut incidents = Incidents::default();
        let mut delivery = refused(0);
        let now = Instant::now();
        delivery.announce(incidents.update(firing("p"), Utc::now(), |_| serde_json::Value::Null), now);
        delivery.deliver_due(now).await;
        assert_eq!(delivery.pending(), 0, "given up after one attempt");
        delivery.announce(incidents.update(Firing::new(), Utc::now(), |_| serde_json::Value::Null), now);
        assert_eq!(delivery.pending(), 0, "the receiver never heard of the incident");
        delivery.announce(incidents.update(firing("p"), Utc::now(), |_| serde_json::Value::Null), now);
        assert_eq!(delivery.pending(), 1, "the next incident is announced");
    }

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
}
