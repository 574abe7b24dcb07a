//! The Worker's queues, as decisions: what a message on the wake queue means, and what
//! becomes of each message once an invocation has run.
//!
//! Cloudflare Queues deliver at least once, unordered, in batches. Nothing here relies
//! on the order or on a single delivery: a message only makes an invocation run, and an
//! invocation reads the events table in commit order and applies each aggregate in
//! version order, committing rows and checkpoint together. A duplicate or late message
//! finds its work done and changes nothing.
//!
//! - A [`Message::Wake`] (an application after appending, `POST /wake`) runs an
//!   invocation now instead of at the next cron tick, and the consumer queues another
//!   wake-up while invocations end with their budget spent ([`carry_on`]), so a backlog
//!   is worked through at once rather than one budget per cron tick.
//! - A partition that ends its turn waiting (an event failed transiently with retries
//!   left, or waits for missing versions) gets a [`Message::Retry`] naming the event,
//!   delayed by the backoff; on delivery the invocation runs again, and the message is
//!   retried (delayed again) while the partition still waits on the same event, or
//!   acknowledged once it moved on (applied, or dead-lettered by the core).
//! - Once a message has been retried `max_retries` times, the queue moves it to the
//!   dead-letter queue. The Worker handles that batch with the retry budget spent
//!   ([`crate::invocation::Retries::Spent`]): the event that still fails, or still waits,
//!   is dead-lettered now through the batch commit — the letter in the dead-letter
//!   table, its aggregate parked from its version — and the alert fires.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::invocation::{Ending, Report};
use crate::settings::Settings;

/// The longest delay Cloudflare Queues accept for a message, in seconds (12 hours).
pub const MAX_DELAY_SECONDS: u32 = 12 * 60 * 60;

/// The body of a message on the wake queue (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Message {
    /// Catch up now.
    Wake,
    /// Run again: `partition` of `projection` waits on `event_id`.
    Retry { projection: String, partition: u32, event_id: Uuid },
}

/// What becomes of one delivered message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Ack,
    /// Deliver it again after this many seconds (one more of the queue's retries).
    Retry {
        delay_seconds: u32,
    },
}

/// The outcome of a batch: a disposition per message, and new retry messages to send.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Settled {
    pub dispositions: Vec<Disposition>,
    pub send: Vec<(Message, u32)>,
}

/// How long a waiting partition should wait before it runs again, in whole seconds
/// (the queue's unit): the core's backoff for a transient failure (`unit` drawn from
/// `[0, 1)`, full jitter), and for missing versions a share of `gap_timeout` such that
/// the queue's retries span it. `None` when the partition does not wait.
pub fn retry_delay(ending: &Ending, settings: &Settings, unit: f64) -> Option<u32> {
    let millis = match ending {
        Ending::RetryLater { max_delay_ms, .. } => (*max_delay_ms as f64 * unit.clamp(0.0, 1.0)) as u64,
        Ending::WaitingForVersions { .. } => {
            let deliveries = u128::from(settings.retry.max_retries) + 1;
            u64::try_from(settings.gap_timeout.as_millis() / deliveries).unwrap_or(u64::MAX)
        }
        _ => return None,
    };
    Some(seconds(millis))
}

/// `millis` as whole seconds, rounded up, within what the queue accepts.
fn seconds(millis: u64) -> u32 {
    u32::try_from(millis.div_ceil(1000)).unwrap_or(u32::MAX).min(MAX_DELAY_SECONDS)
}

/// After an invocation that ran: each wake is done; each retry is retried while its
/// partition still waits on its event, else done; a waiting partition no message covers
/// gets a new retry message. `messages` holds `None` for a body that is not a
/// [`Message`]: it is acknowledged (and logged by the caller), since no delivery can
/// make it readable. `delay` gives a waiting partition's delay (see [`retry_delay`]).
pub fn settle(messages: &[Option<Message>], report: &Report, delay: impl Fn(&Ending) -> Option<u32>) -> Settled {
    let waiting: Vec<(Message, u32)> = report
        .partitions
        .iter()
        .filter_map(|p| {
            let event_id = p.ending.waiting_for()?;
            let message = Message::Retry { projection: p.projection.clone(), partition: p.partition, event_id };
            Some((message, delay(&p.ending)?))
        })
        .collect();
    let mut covered = vec![false; waiting.len()];
    let dispositions = messages
        .iter()
        .map(|message| {
            let Some(message @ Message::Retry { .. }) = message else {
                return Disposition::Ack;
            };
            match waiting.iter().position(|(w, _)| w == message) {
                // Two copies of one retry (a duplicate delivery): the queue keeps one.
                Some(i) if !covered[i] => {
                    covered[i] = true;
                    Disposition::Retry { delay_seconds: waiting[i].1 }
                }
                _ => Disposition::Ack,
            }
        })
        .collect();
    let send = waiting.into_iter().zip(covered).filter(|(_, c)| !c).map(|(w, _)| w).collect();
    Settled { dispositions, send }
}

/// The wake-up that carries a queue-started catch-up on: one when any partition ended
/// its turn with the budget spent (work is left), none otherwise. Every invocation
/// progresses by at least one batch per partition, so the chain ends.
pub fn carry_on(report: &Report) -> Option<(Message, u32)> {
    report.partitions.iter().any(|p| p.ending == Ending::BudgetSpent).then_some((Message::Wake, 0))
}

/// When the invocation could not run at all (the store unreachable, registration
/// refused): every readable message is delivered again after `retry.cap`, so that the
/// queue's retries, then its dead-letter queue, take over.
pub fn unrun(messages: &[Option<Message>], settings: &Settings) -> Vec<Disposition> {
    let delay_seconds = seconds(u64::try_from(settings.retry.cap.as_millis()).unwrap_or(u64::MAX));
    messages.iter().map(|m| if m.is_some() { Disposition::Retry { delay_seconds } } else { Disposition::Ack }).collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::invocation::PartitionReport;

    fn event(n: u64) -> Uuid {
        Uuid::from_u64_pair(0xe7, n)
    }

    fn partition(projection: &str, partition: u32, ending: Ending) -> PartitionReport {
        PartitionReport {
            projection: projection.into(),
            partition,
            batches: 1,
            events_read: 1,
            events_applied: 0,
            dead_lettered: 0,
            checkpoint: None,
            ending,
        }
    }

    fn retry_later(n: u64) -> Ending {
        Ending::RetryLater { event_id: event(n), error: "boom".into(), max_delay_ms: 4000 }
    }

    fn retry(projection: &str, partition: u32, n: u64) -> Message {
        Message::Retry { projection: projection.into(), partition, event_id: event(n) }
    }

    fn settings(vars: &[(&str, &str)]) -> Settings {
        let mut all = vec![("PROJECTIONS", "user-profile,daily-activity")];
        all.extend_from_slice(vars);
        Settings::from_vars(|name| all.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())).unwrap()
    }

    #[test]
    fn messages_are_json_with_a_kind() {
        let wake: Message = serde_json::from_str(r#"{"kind":"wake"}"#).unwrap();
        assert_eq!(wake, Message::Wake);
        let text = serde_json::to_string(&retry("user-profile", 1, 7)).unwrap();
        assert_eq!(
            text,
            format!(r#"{{"kind":"retry","projection":"user-profile","partition":1,"event_id":"{}"}}"#, event(7))
        );
        assert!(serde_json::from_str::<Message>(r#"{"kind":"sleep"}"#).is_err());
    }

    #[test]
    fn a_waiting_partition_gets_one_retry_message_and_everything_else_is_acknowledged() {
        let report = Report {
            elapsed_ms: 1,
            partitions: vec![
                partition("user-profile", 0, retry_later(1)),
                partition("daily-activity", 0, Ending::CaughtUp),
            ],
        };
        let messages = [Some(Message::Wake), None, Some(Message::Wake)];
        let settled = settle(&messages, &report, |_| Some(3));
        assert_eq!(settled.dispositions, [Disposition::Ack; 3]);
        assert_eq!(settled.send, [(retry("user-profile", 0, 1), 3)]);
    }

    #[test]
    fn a_retry_is_retried_while_its_event_waits_and_acknowledged_once_the_partition_moved_on() {
        let report = Report {
            elapsed_ms: 1,
            partitions: vec![
                partition("user-profile", 0, retry_later(1)),
                partition("user-profile", 1, Ending::CaughtUp),
                partition("daily-activity", 0, Ending::WaitingForVersions { event_id: event(3), error: "gap".into() }),
            ],
        };
        let messages = [
            Some(retry("user-profile", 0, 1)),
            // A duplicate delivery of the same retry.
            Some(retry("user-profile", 0, 1)),
            // Its event was applied: nothing waits on it.
            Some(retry("user-profile", 1, 2)),
            // The partition waits, but on another event now.
            Some(retry("daily-activity", 0, 9)),
        ];
        let settled = settle(&messages, &report, |e| Some(if e.waiting_for() == Some(event(1)) { 5 } else { 60 }));
        assert_eq!(
            settled.dispositions,
            [Disposition::Retry { delay_seconds: 5 }, Disposition::Ack, Disposition::Ack, Disposition::Ack]
        );
        assert_eq!(settled.send, [(retry("daily-activity", 0, 3), 60)]);
    }

    #[test]
    fn a_wake_up_carries_on_while_work_is_left() {
        let spent = Report {
            elapsed_ms: 1,
            partitions: vec![
                partition("user-profile", 0, Ending::BudgetSpent),
                partition("user-profile", 1, Ending::BudgetSpent),
                partition("daily-activity", 0, Ending::CaughtUp),
            ],
        };
        assert_eq!(carry_on(&spent), Some((Message::Wake, 0)));
        let done = Report { elapsed_ms: 1, partitions: vec![partition("user-profile", 0, Ending::CaughtUp)] };
        assert_eq!(carry_on(&done), None);
    }

    #[test]
    fn delays_follow_the_backoff_and_spread_a_gap_wait_over_the_retries() {
        let s = settings(&[("MAX_RETRIES", "3"), ("GAP_TIMEOUT_MS", "120000")]);
        assert_eq!(retry_delay(&retry_later(1), &s, 0.0), Some(0));
        assert_eq!(retry_delay(&retry_later(1), &s, 0.5), Some(2));
        assert_eq!(retry_delay(&retry_later(1), &s, 0.99), Some(4));
        let gap = Ending::WaitingForVersions { event_id: event(1), error: "gap".into() };
        assert_eq!(retry_delay(&gap, &s, 0.3), Some(30));
        assert_eq!(retry_delay(&Ending::CaughtUp, &s, 0.3), None);
        let long = settings(&[("MAX_RETRIES", "0"), ("GAP_TIMEOUT_MS", "4000000000")]);
        assert_eq!(retry_delay(&gap, &long, 0.3), Some(MAX_DELAY_SECONDS));
    }

    #[test]
    fn a_batch_that_could_not_run_comes_back_after_the_longest_backoff() {
        let s = settings(&[("RETRY_CAP_MS", "2500")]);
        assert_eq!(s.retry.cap, Duration::from_millis(2500));
        let out = unrun(&[Some(Message::Wake), None], &s);
        assert_eq!(out, [Disposition::Retry { delay_seconds: 3 }, Disposition::Ack]);
    }
}
