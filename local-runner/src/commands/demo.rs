//! `projector demo`: seeds sample events into an empty store, runs every projection to
//! caught-up in this process, and prints the status and a few rows of each read model.
//!
//! A store it seeds also shows field encryption: email and name are sealed under a
//! keyring made for this run alone (kept in memory, never written), `user-profile`
//! reads them decrypted, and one user is then crypto-shredded, so the row shows the
//! redaction. The keyring is gone when the demo ends: a later run (or `projector run`)
//! reads those fields as `"[redacted]"`.

use anyhow::{anyhow, Context, Result};
use projector::config::{Config, ProjectionConfig};
use projector::crypto::Keyring;
use projector::encryption::{Decryption, Sealer};
use projector::store::keys::SubjectKeys;
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
    // Sealing only what this run seeds: its keyring is gone when it ends.
    let mut sealed: Option<(Config, Keyring)> = None;
    if existing.is_empty() {
        let (demo, keyring) = with_encryption(config)?;
        let actor = crate::keyring::actor("demo");
        let sealer = Sealer::new(&keyring, &demo.encryption, &actor);
        let requests = seed::requests(users);
        let n: usize = requests.iter().map(|r| r.events.len()).sum();
        for request in requests {
            sealer.append(&store, request).await.context("seeding sample events")?;
        }
        say!("seeded {n} sample events for {users} users into the {}", connector.describe());
        say!("email and name are sealed under a keyring made for this demo (in memory only)");
        sealed = Some((demo, keyring));
    } else {
        say!("the {} already holds events; not seeding", connector.describe());
    }
    let (config, keyring) = match &sealed {
        Some((demo, keyring)) => (demo, Some(keyring.clone())),
        None => (config, crate::keyring::for_readers(config)?),
    };
    register_all(config, connector).await?;
    let owner = format!("demo-{}", std::process::id());
    let upcasters = handlers::enabled_upcasters(config)?;
    let catch_up_all = || async {
        for (name, p) in &config.projections {
            let decryption = crate::keyring::decryption(config, keyring.as_ref(), name)?;
            let catch_up = CatchUp { store: &store, name, p, upcasters: &upcasters, decryption, owner: &owner };
            let applied = handlers::dispatch(&p.handler, catch_up).await?;
            say!("{name}: caught up ({applied} event(s) applied now)");
        }
        anyhow::Ok(())
    };
    catch_up_all().await?;
    say!();
    status::print_table(&store.states().await?);
    for (name, p) in &config.projections {
        say!();
        handlers::dispatch(&p.handler, SampleRows { store: &store, name }).await?;
    }
    if sealed.is_some() {
        let first = store.read_all(Checkpoint::START, &EventFilter::all(), Partition::WHOLE, 1).await?;
        let user = first.first().map(|e| e.aggregate_id).context("the seeded store holds no event")?;
        let subject = user.to_string();
        store.shred_subject(&subject, &crate::keyring::actor("demo")).await?;
        super::keys::append_erased(&store, &subject, None, Some("user")).await?;
        say!();
        say!("shredding user {subject} (as `projector keys shred {subject}` does): its keys are deleted and SubjectErased is appended");
        catch_up_all().await?;
        for (name, p) in config.projections.iter().filter(|(_, p)| p.handler == "user-profile") {
            say!();
            handlers::dispatch(&p.handler, SampleRows { store: &store, name }).await?;
        }
    }
    Ok(())
}

/// `config` with email and name of the user events sealed and granted to every
/// `user-profile` projection, and a fresh keyring for them.
fn with_encryption(config: &Config) -> Result<(Config, Keyring)> {
    let mut demo = config.clone();
    for (event_type, paths) in
        [("UserRegistered", &["email", "name"][..]), ("UserEmailChanged", &["email"]), ("UserRenamed", &["name"])]
    {
        demo.encryption.fields.insert(event_type.to_owned(), paths.iter().map(|p| (*p).to_owned()).collect());
    }
    for p in demo.projections.values_mut().filter(|p| p.handler == "user-profile") {
        p.decrypt = vec!["email".to_owned(), "name".to_owned()];
    }
    let keyring = Keyring::generate().context("generating the demo's key-encryption key")?;
    Ok((demo, keyring))
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
