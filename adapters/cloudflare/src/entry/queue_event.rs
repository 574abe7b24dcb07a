//! The queue consumer: batches from the wake queue, and from its dead-letter queue
//! (`DEAD_LETTER_QUEUE`). What each message means and becomes is decided in
//! [`crate::queue`]; this is the glue to `worker`'s queue API.

use worker::{
    console_error, event, Context, Env, Message as Delivery, MessageBatch, MessageExt, QueueRetryOptionsBuilder,
};

use super::{after, invoke, notify, settings};
use crate::alerts;
use crate::invocation::Retries;
use crate::queue::{self, Disposition, Message};
use crate::settings::Settings;

/// How long a batch waits before it comes back when the Worker's own variables are wrong:
/// only a new deployment mends them.
const MISCONFIGURED_DELAY_SECONDS: u32 = 300;

#[event(queue)]
async fn consume(batch: MessageBatch<serde_json::Value>, env: Env, _ctx: Context) -> worker::Result<()> {
    let name = batch.queue();
    let deliveries = batch.messages()?;
    let bodies: Vec<Option<Message>> = deliveries
        .iter()
        .map(|d| {
            let body = serde_json::from_value::<Message>(d.body().clone());
            if let Err(e) = &body {
                console_error!(
                    "queue {name}: message {} is not a wake-up or a retry ({e}); dropped: {}",
                    d.id(),
                    d.body()
                );
            }
            body.ok()
        })
        .collect();
    let settings = match settings(&env) {
        Ok(s) => s,
        Err(e) => {
            console_error!("queue {name}: not run: {e}");
            let later = Disposition::Retry { delay_seconds: MISCONFIGURED_DELAY_SECONDS };
            apply(&deliveries, &vec![later; deliveries.len()]);
            return Ok(());
        }
    };
    if settings.dead_letter_queue.as_deref() == Some(name.as_str()) {
        given_up(&env, &settings, &bodies).await;
        apply(&deliveries, &vec![Disposition::Ack; deliveries.len()]);
        return Ok(());
    }
    let trigger = format!("wake queue ({name})");
    let dispositions = match invoke(&env, &settings, &Retries::Configured).await {
        Ok(report) => after(&env, &settings, &trigger, &report, &bodies, true).await.dispositions,
        Err(e) => {
            console_error!("{trigger}: {e}; the batch comes back after the backoff");
            queue::unrun(&bodies, &settings)
        }
    };
    apply(&deliveries, &dispositions);
    Ok(())
}

/// The messages the wake queue gave up on: one invocation as configured, then, for
/// each retry whose partition still waits on its event, that partition with its retries
/// spent, so the event is dead-lettered now; a wake-up given up on raises an alert. Every
/// message is then acknowledged: the events table, not the queue, holds what is left.
async fn given_up(env: &worker::Env, settings: &Settings, bodies: &[Option<Message>]) {
    let trigger = "dead-letter queue";
    let report = match invoke(env, settings, &Retries::Configured).await {
        Ok(report) => report,
        Err(e) => {
            console_error!("{trigger}: {e}");
            notify(settings, alerts::wake_given_up(&settings.projections, Some(&e), chrono::Utc::now())).await;
            return;
        }
    };
    after(env, settings, trigger, &report, bodies, false).await;
    if bodies.contains(&Some(Message::Wake)) {
        notify(settings, alerts::wake_given_up(&settings.projections, None, chrono::Utc::now())).await;
    }
    let mut forced: Vec<&Message> = Vec::new();
    for body in bodies.iter().flatten() {
        let Message::Retry { projection, partition, event_id } = body else { continue };
        let still_waits = report.partitions.iter().any(|p| {
            p.projection == *projection && p.partition == *partition && p.ending.waiting_for() == Some(*event_id)
        });
        if !still_waits || forced.contains(&body) {
            continue;
        }
        forced.push(body);
        let spent = Retries::SpentFor { projection: projection.clone(), partition: *partition };
        match invoke(env, settings, &spent).await {
            Ok(report) => {
                after(env, settings, trigger, &report, &[], false).await;
            }
            Err(e) => console_error!("{trigger}: {projection} partition {partition}: {e}"),
        }
    }
}

fn apply(deliveries: &[Delivery<serde_json::Value>], dispositions: &[Disposition]) {
    for (delivery, disposition) in deliveries.iter().zip(dispositions) {
        match *disposition {
            Disposition::Ack => delivery.ack(),
            Disposition::Retry { delay_seconds } => {
                delivery.retry_with_options(&QueueRetryOptionsBuilder::new().with_delay_seconds(delay_seconds).build())
            }
        }
    }
}
