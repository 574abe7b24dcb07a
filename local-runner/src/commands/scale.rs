//! `projector scale`: re-partitions a stopped projection. Its partitions first reach one
//! checkpoint, then its aggregates are split anew from there.

use anyhow::{bail, Context, Result};
use chrono::Utc;
use projector::config::{Config, Provider};
use projector::upcast::Reading;
use projector::EventStore;
use projector::{Checkpoint, ProjectionHandler, ProjectionState, ProjectionStore};
use projector_local::Connector;

use super::{connect, projection};
use crate::handlers::{self, WithHandler};
use crate::{output, say};

#[derive(clap::Args)]
pub struct Args {
    /// The projection to re-partition, as named in projections.yaml.
    projection: String,
    /// The new number of hash partitions (1 to 256).
    partitions: u32,
    /// Print what was done as one JSON object (shape in the README).
    #[arg(long)]
    json: bool,
}

/// `scale --json`.
#[derive(serde::Serialize)]
struct Report<'a> {
    projection: &'a str,
    partitions_before: usize,
    partitions: u32,
    checkpoint: Checkpoint,
    configured_partitions: u32,
}

pub async fn execute<C: Connector>(config: &Config, connector: &C, args: Args) -> Result<()> {
    let (name, partitions) = (args.projection.as_str(), args.partitions);
    let p = projection(config, name)?;
    if !(1..=256).contains(&partitions) {
        bail!("partitions must be between 1 and 256, not {partitions}");
    }
    let store = connect(connector).await?;
    let states: Vec<ProjectionState> = store.states().await?.into_iter().filter(|s| s.projection == name).collect();
    let before = states.len();
    if before == 0 {
        bail!("projection {name} is not registered yet; run `projector init` first");
    }
    let now = Utc::now();
    if let Some(held) = states.iter().find(|s| s.lease_owner.is_some() && s.lease_expires_at.is_some_and(|t| t > now)) {
        bail!(
            "{name} partition {} is leased by {} until {}; stop its runners first",
            held.partition,
            held.lease_owner.as_deref().unwrap_or("?"),
            held.lease_expires_at.map(|t| t.to_rfc3339()).unwrap_or_default()
        );
    }
    let owner = format!("scale-{}", std::process::id());
    let keyring = crate::keyring::for_readers(config)?;
    let reading = Reading::new(p.events.to_filter(), handlers::enabled_upcasters(config)?)
        .decrypting(crate::keyring::decryption(config, keyring.as_ref(), name)?);
    let job =
        Repartition { store: &store, name, reading: &reading, owner: &owner, batch_size: p.batch_size, partitions };
    let target = handlers::dispatch(&p.handler, job).await?;
    if args.json {
        return output::json(&Report {
            projection: name,
            partitions_before: before,
            partitions,
            checkpoint: target,
            configured_partitions: p.partitions,
        });
    }
    say!("{name}: {before} -> {partitions} partition(s), all starting at checkpoint {target}");
    if p.partitions != partitions {
        say!("set `partitions: {partitions}` for {name} in projections.yaml before starting the runners");
    }
    if p.provider == Provider::Cloudflare {
        // Its Worker registers with the count it was deployed with, and is refused until then.
        say!("{name} runs on Cloudflare Workers: then `projector deploy --provider cloudflare --projection {name}`");
    }
    Ok(())
}

/// Brings every partition to one checkpoint, then registers the new partition count
/// from there; returns that checkpoint.
struct Repartition<'a, S> {
    store: &'a S,
    name: &'a str,
    reading: &'a Reading,
    owner: &'a str,
    batch_size: usize,
    partitions: u32,
}

impl<S: EventStore + ProjectionStore> WithHandler for Repartition<'_, S> {
    type Output = Result<Checkpoint>;

    async fn run<H: ProjectionHandler>(self, handler: H) -> Result<Checkpoint> {
        let Repartition { store, name, reading, owner, batch_size, partitions } = self;
        let target = projector::runtime::align_partitions_read(&handler, store, name, reading, owner, batch_size)
            .await
            .with_context(|| format!("aligning the partitions of {name} (are its runners stopped?)"))?;
        store.repartition(name, partitions).await?;
        Ok(target)
    }
}
