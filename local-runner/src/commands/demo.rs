//! `projector demo`: seeds sample events into an empty store, runs every projection to
//! caught-up in this process, and prints the status and a few rows of each read model.

use anyhow::{anyhow, Context, Result};
use projector::config::{Config, ProjectionConfig};
use projector::encryption::Decryption;
use projector::upcast::Upcasters;
use projector::{
    BatchRunner, Checkpoint, EventFilter, EventStore, Partition, ProjectionHandler, ProjectionStore, RowKey, Value,
};
use projector_local::Connector;

use super::{connect, register_all, status};
use crate::handlers::{self, WithHandler};
use crate::{say, seed, table};

#[derive(clap::Args)]
pub struct Args {
    /// Users to seed.
    #[arg(long, default_value_t = 500)]
    users: u32,
}

pub async fn execute<C: Connector>(config: &Config, connector: &C, args: Args) -> Result<()> {
    let users = args.users;
    connector.migrate().await?;
    let store = connect(connector).await?;
    let existing = store.read_all(Checkpoint::START, &EventFilter::all(), Partition::WHOLE, 1).await?;
    if existing.is_empty() {
        let requests = seed::requests(users);
        let n: usize = requests.iter().map(|r| r.events.len()).sum();
        for request in requests {
            store.append(request).await.context("seeding sample events")?;
        }
        say!("seeded {n} sample events for {users} users into the {}", connector.describe());
    } else {
        say!("the {} already holds events; not seeding", connector.describe());
    }
    register_all(config, connector).await?;
    let owner = format!("demo-{}", std::process::id());
    let upcasters = handlers::enabled_upcasters(config)?;
    let keyring = crate::keyring::for_readers(config)?;
    for (name, p) in &config.projections {
        let decryption = crate::keyring::decryption(config, keyring.as_ref(), name)?;
        let catch_up = CatchUp { store: &store, name, p, upcasters: &upcasters, decryption, owner: &owner };
        let applied = handlers::dispatch(&p.handler, catch_up).await?;
        say!("{name}: caught up ({applied} event(s) applied now)");
    }
    say!();
    status::print_table(&store.states().await?);
    for (name, p) in &config.projections {
        say!();
        handlers::dispatch(&p.handler, SampleRows { store: &store, name }).await?;
    }
    Ok(())
}

/// Runs every partition of one projection to caught-up in this task.
struct CatchUp<'a, S> {
    store: &'a S,
    name: &'a str,
    p: &'a ProjectionConfig,
    upcasters: &'a Upcasters,
    decryption: Decryption,
    owner: &'a str,
}

impl<S: EventStore + ProjectionStore> WithHandler for CatchUp<'_, S> {
    type Output = Result<u64>;

    async fn run<H: ProjectionHandler>(self, handler: H) -> Result<u64> {
        let CatchUp { store, name, p, upcasters, decryption, owner } = self;
        let handler = &handler;
        let mut applied = 0;
        for index in 0..p.partitions {
            let partition = Partition { index, count: p.partitions };
            let lease = store
                .claim(name, partition, owner, p.lease_ttl)
                .await?
                .ok_or_else(|| anyhow!("{name} partition {partition} is leased by a running runner; stop it first"))?;
            let mut runner = BatchRunner::new(handler, store, &p.events.to_filter(), lease)
                .upcasters(upcasters.clone())
                .decryption(decryption.clone())
                .snapshots(p.snapshots.map(|s| s.every))
                .batch_size(p.batch_size);
            applied += runner.catch_up().await.with_context(|| format!("projection {name}"))?.events_applied;
            store.release(runner.lease()).await?;
        }
        Ok(applied)
    }
}

/// Prints a few rows of a projection's read model.
struct SampleRows<'a, S> {
    store: &'a S,
    name: &'a str,
}

impl<S: EventStore + ProjectionStore> WithHandler for SampleRows<'_, S> {
    type Output = Result<()>;

    async fn run<H: ProjectionHandler>(self, handler: H) -> Result<()> {
        let SampleRows { store, name } = self;
        let handler = &handler;
        let events = store.read_all(Checkpoint::START, &handler.filter(), Partition::WHOLE, 500).await?;
        let mut keys: Vec<H::Key> = Vec::new();
        for e in &events {
            if let Some(k) = handler.key(e) {
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
            if keys.len() == 5 {
                break;
            }
        }
        let key_values: Vec<Vec<Value>> = keys
            .iter()
            .map(|k| {
                let mut v = Vec::new();
                k.to_values(&mut v);
                v
            })
            .collect();
        let rows = store.load_rows(handler.schema(), &key_values).await?;
        let schema = handler.schema();
        let header: Vec<&str> = schema.all_columns().map(|c| c.name).collect();
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                r.iter()
                    .map(|v| match v.to_json() {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    })
                    .collect()
            })
            .collect();
        say!("{name} (table {}), sample rows:", schema.name);
        say!("{}", table::render(&header, &cells));
        Ok(())
    }
}
