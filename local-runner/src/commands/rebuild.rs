//! `projector rebuild`: rebuilds a projection's read model from the full history (or
//! recomputes the rows touched since a position) in one transaction, with progress.

use anyhow::Result;
use projector::config::Config;
use projector::encryption::Decryption;
use projector::upcast::Upcasters;
use projector::{
    Checkpoint, EventFilter, OnFailure, Partition, ProjectionHandler, ProjectionStore, Rebuild, RebuildOutcome,
    Rebuilds,
};
use projector_local::Connector;

use super::{connect, projection, register_all};
use crate::handlers::{self, WithHandler};
use crate::{output, say};

#[derive(clap::Args)]
pub struct Args {
    /// The projection to rebuild, as named in projections.yaml.
    projection: String,
    /// Recompute only the rows touched by events at or after this global position
    /// (the events table's `position`), instead of the full history.
    // `--from-version` was this flag's first name; scripts that use it keep working.
    #[arg(long, value_name = "POSITION", alias = "from-version")]
    from_position: Option<i64>,
    /// Print the outcome as one JSON object (shape in the README), without a progress bar.
    #[arg(long)]
    json: bool,
}

/// `rebuild --json`.
#[derive(serde::Serialize)]
struct Report<'a> {
    projection: &'a str,
    from_position: Option<i64>,
    events_read: u64,
    events_applied: u64,
    rows_written: u64,
    checkpoint: Checkpoint,
    dead_lettered: u64,
    seconds: f64,
}

pub async fn execute<C: Connector>(config: &Config, connector: &C, args: Args) -> Result<()> {
    let (name, from) = (args.projection.as_str(), args.from_position);
    let p = projection(config, name)?;
    register_all(config, connector).await?;
    let store = connect(connector).await?;
    let states: Vec<_> = store.states().await?.into_iter().filter(|s| s.projection == name).collect();
    let total: i64 = states.iter().map(|s| s.events_applied + s.lag_events).max().unwrap_or(0);
    let waiting = states.iter().any(|s| s.status == projector::Status::NeedsRebuild);
    let bar =
        if args.json { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(total.max(1) as u64) };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} [{bar:40}] {pos}/{len} events, {rate}, ETA {eta}")
            .map(|style| style.with_key("rate", crate::output::rate_key))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(format!("rebuilding {name}"));
    // The whole command's time: what a user waits for, not the rebuild's alone.
    let started = crate::cli::started();
    let upcasters = handlers::enabled_upcasters(config)?;
    let keyring = crate::keyring::for_readers(config)?;
    let job = RebuildJob {
        store: &store,
        filter: p.events.to_filter(),
        upcasters,
        decryption: crate::keyring::decryption(config, keyring.as_ref(), name)?,
        from,
        on_failure: p.on_failure,
        snapshots: p.snapshots.map(|s| s.every),
        bar: &bar,
    };
    let outcome = handlers::dispatch(&p.handler, job).await;
    bar.finish_and_clear();
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            // A projection that waits for a rebuild keeps waiting: its runners must not
            // take it back.
            if !waiting {
                let _ = mark_failed(&store, name, p.partitions, &e.to_string()).await;
            }
            return Err(e.context(format!("rebuild of {name} failed; the read model is unchanged")));
        }
    };
    let secs = started.elapsed().as_secs_f64();
    if args.json {
        return output::json(&Report {
            projection: name,
            from_position: from,
            events_read: outcome.events_read,
            events_applied: outcome.events_applied,
            rows_written: outcome.rows_written,
            checkpoint: outcome.checkpoint,
            dead_lettered: outcome.dead_lettered,
            seconds: secs,
        });
    }
    say!(
        "rebuilt {name}: {} events read, {} applied, {} rows written, checkpoint {} in {:.2}s ({})",
        outcome.events_read,
        outcome.events_applied,
        outcome.rows_written,
        outcome.checkpoint,
        secs,
        crate::output::rate(outcome.events_read as f64 / secs.max(1e-9))
    );
    if outcome.dead_lettered > 0 {
        say!(
            "{} event(s) failed and were dead-lettered; their aggregates are parked at their last good version \
             (`projector dlq list --projection {name}`)",
            outcome.dead_lettered
        );
    }
    Ok(())
}

/// The rebuild itself, with its progress shown on `bar`.
struct RebuildJob<'a, S> {
    store: &'a S,
    filter: EventFilter,
    upcasters: Upcasters,
    decryption: Decryption,
    from: Option<i64>,
    on_failure: OnFailure,
    snapshots: Option<u32>,
    bar: &'a indicatif::ProgressBar,
}

impl<S: Rebuilds> WithHandler for RebuildJob<'_, S> {
    type Output = Result<RebuildOutcome>;

    async fn run<H: ProjectionHandler>(self, handler: H) -> Result<RebuildOutcome> {
        let bar = self.bar;
        let outcome = Rebuild::new(&handler, &self.filter)
            .upcasters(self.upcasters)
            .decryption(self.decryption)
            .from_position(self.from)
            .on_failure(self.on_failure)
            .snapshots(self.snapshots)
            .run(self.store, |read: u64, _| {
                if read > bar.length().unwrap_or(0) {
                    bar.set_length(read);
                }
                bar.set_position(read)
            })
            .await?;
        Ok(outcome)
    }
}

async fn mark_failed<S: ProjectionStore>(store: &S, name: &str, partitions: u32, error: &str) -> Result<()> {
    for index in 0..partitions {
        store.set_status(name, Partition { index, count: partitions }, projector::Status::Running, Some(error)).await?;
    }
    Ok(())
}
