//! Alerting: evaluates the `alerts:` conditions against the projection states every
//! `interval`, keeps one incident per (projection, condition), and notifies a webhook
//! once when an incident fires and once when it resolves.
//!
//! Three parts: `conditions` decides what fires (no I/O), `incidents` turns that into
//! incidents opening and resolving, and `delivery` logs them and POSTs them; [`Alerter`]
//! runs the three.
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

mod conditions;
mod delivery;
mod incidents;
mod resolution;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use projector::config::AlertsConfig;
use projector::ProjectionState;
use tokio::sync::watch;

pub use conditions::Condition;
pub use delivery::{AlertStatus, Notification, WEBHOOK_TIMEOUT};
pub use incidents::Incident;

use crate::metrics::Metrics;

/// Evaluates alert conditions and notifies; see the module docs.
pub struct Alerter {
    config: AlertsConfig,
    progress: conditions::Progress,
    incidents: incidents::Incidents,
    delivery: delivery::Delivery,
}

impl fmt::Debug for Alerter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Alerter")
            .field("config", &self.config)
            .field("incidents", &self.incidents)
            .field("pending", &self.delivery.pending())
            .finish_non_exhaustive()
    }
}

impl Alerter {
    /// An alerter for `config`. A webhook URL that cannot be used (the configuration
    /// loader already checks it) is logged and incidents are then only logged.
    pub fn new(config: AlertsConfig) -> Alerter {
        let delivery = delivery::Delivery::new(config.webhook.as_deref(), config.retry);
        Alerter { config, progress: Default::default(), incidents: Default::default(), delivery }
    }

    /// The configuration this alerter evaluates.
    pub fn config(&self) -> &AlertsConfig {
        &self.config
    }

    /// The open incidents, by projection then condition.
    pub fn incidents(&self) -> impl Iterator<Item = &Incident> {
        self.incidents.open()
    }

    /// Notifications not delivered yet (waiting for a retry).
    pub fn pending(&self) -> usize {
        self.delivery.pending()
    }

    /// When the next pending notification may be retried, if any.
    pub fn next_due(&self) -> Option<Instant> {
        self.delivery.next_due()
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
        self.progress.observe(states, now);
        let firing = conditions::firing(&self.config, states, &self.progress, metrics, now, wall);
        let config = &self.config;
        let transitions =
            self.incidents.update(firing, wall, |incident| resolution::values(config, incident, states, wall));
        self.delivery.announce(transitions, now);
        self.delivery.deliver_due(now).await;
    }

    /// Sends the pending notifications whose retry time has come.
    pub async fn deliver_due(&mut self) {
        self.delivery.deliver_due(Instant::now()).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(human(Duration::from_millis(250)), "250ms");
        assert_eq!(human(Duration::from_secs(42)), "42s");
        assert_eq!(human(Duration::from_secs(150)), "2m30s");
        assert_eq!(human(Duration::from_secs(3700)), "1h1m");
    }
}
