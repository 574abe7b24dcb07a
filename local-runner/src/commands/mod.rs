//! The subcommands, one module each, generic over the store behind a [`Connector`];
//! here is what several of them share: reaching the store, finding a configured
//! projection, registering the projections.

mod append;
mod completions;
mod demo;
mod deploy;
mod dlq;
mod init;
mod keys;
mod migrate;
mod monitor;
mod rebuild;
mod run;
mod scale;
mod state;
mod status;

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use projector::config::{Config, ProjectionConfig, Provider};
use projector_local::{Connector, LocalAdapter};

use crate::handlers;

#[derive(Subcommand)]
pub enum Command {
    /// Creates or upgrades the schema and registers every configured projection.
    Init(init::Args),
    /// Appends events given as JSON lines (one append per line) from a file or stdin.
    Append(append::Args),
    /// Seeds sample events if the store is empty, runs every projection to caught-up,
    /// and prints the status and sample rows.
    Demo(demo::Args),
    /// Runs every `provider: local` projection continuously; Ctrl-C or SIGTERM drains the
    /// batch and exits.
    Run(run::Args),
    /// Deploys projections to their provider: one Cloudflare Worker per `provider:
    /// cloudflare` projection (rendered from projections.yaml, deployed with wrangler), or,
    /// for `local`, readies the store for `projector run` (starts nothing).
    Deploy(deploy::Args),
    /// Reads a running deployment: each Worker's /health and /status, or the local
    /// runner's /health and the store; exits non-zero when something is unhealthy.
    Monitor(monitor::Args),
    /// Prints each projection partition's checkpoint, lag and health.
    Status(status::Args),
    /// Rebuilds a projection from the full history, in one transaction.
    Rebuild(rebuild::Args),
    /// Re-partitions a projection: brings its partitions to one checkpoint, then splits
    /// its aggregates into N hash partitions. Stop its runners first.
    Scale(scale::Args),
    /// Dead letters: list, inspect, and repair parked aggregates.
    #[command(subcommand)]
    Dlq(dlq::Command),
    /// Shows one read-model row, optionally as it was at an instant (time travel).
    State(state::Args),
    /// Field encryption keys: init, rotate, rewrap, retire, and crypto-shredding.
    #[command(subcommand)]
    Keys(keys::Command),
    /// Rewrites stored events through the enabled upcaster chains (eager migration):
    /// plan, apply, roll back, list.
    Migrate(migrate::Args),
    /// Writes the shell completion script for `projector` to stdout (see the README for
    /// where each shell looks for it).
    Completions(completions::Args),
}

impl Command {
    pub async fn execute<C: Connector>(self, config: Config, connector: C) -> Result<()> {
        match self {
            Command::Init(args) => init::execute(&config, &connector, args).await,
            Command::Append(args) => append::execute(&config, &connector, args).await,
            Command::Demo(args) => demo::execute(&config, &connector, args).await,
            Command::Run(args) => run::execute(config, connector, args).await,
            Command::Deploy(args) => deploy::local(&config, &connector, args).await,
            Command::Monitor(args) => monitor::local(&config, &connector, args).await,
            Command::Status(args) => status::execute(&config, &connector, args).await,
            Command::Rebuild(args) => rebuild::execute(&config, &connector, args).await,
            Command::Scale(args) => scale::execute(&config, &connector, args).await,
            Command::Dlq(command) => dlq::execute(&config, &connector, command).await,
            Command::State(args) => state::execute(&config, &connector, args).await,
            Command::Keys(command) => command.execute(&config, &connector).await,
            Command::Migrate(args) => migrate::execute(&config, &connector, args).await,
            Command::Completions(args) => completions::execute(&args),
        }
    }
}

impl Command {
    /// The answer of a command that needs neither configuration nor store.
    pub fn standalone(&self) -> Option<Result<()>> {
        match self {
            Command::Completions(args) => Some(completions::execute(args)),
            Command::Keys(command) => command.standalone(),
            _ => None,
        }
    }

    /// The answer of a command that needs the configuration but no store (deploying or
    /// reading Workers); `Err(self)` for every other command.
    pub async fn without_backend(self, config: Config, database_url: Option<String>) -> Result<Result<()>, Command> {
        match self {
            Command::Deploy(args) if args.provider == "local" && !args.needs_store() => {
                Ok(deploy::local_plan(&config, args))
            }
            Command::Deploy(args) if !args.needs_store() => Ok(deploy::cloudflare(config, database_url, args).await),
            Command::Monitor(args) if !args.needs_store() => Ok(monitor::cloudflare(config, args).await),
            command => Err(command),
        }
    }

    /// The answer of a command that only reads, when the embedded store's file at `path`
    /// does not exist yet; `None` for commands that open (and so create) it.
    pub fn without_store(&self, path: &Path) -> Option<Result<()>> {
        match self {
            Command::Status(args) => Some(status::without_store(args, path)),
            _ => None,
        }
    }
}

async fn connect<C: Connector>(connector: &C) -> Result<C::Store> {
    // The store's error names the database (password masked) and the cause.
    connector.connect().await.context("cannot connect to the store")
}

fn projection<'c>(config: &'c Config, name: &str) -> Result<&'c ProjectionConfig> {
    config.projections.get(name).ok_or_else(|| {
        let known: Vec<&str> = config.projections.keys().map(String::as_str).collect();
        anyhow!("unknown projection {name:?}; configured projections: {}", known.join(", "))
    })
}

/// The projections a command works on: those `names` names (each must have `provider`),
/// or every one with `provider`; never none.
fn with_provider(config: &Config, names: &[String], provider: Provider) -> Result<Vec<String>> {
    for name in names {
        let p = projection(config, name)?;
        if p.provider != provider {
            bail!("projection {name} has `provider: {}`, not {provider}", p.provider);
        }
    }
    let chosen: Vec<String> = if names.is_empty() {
        config.projections.iter().filter(|(_, p)| p.provider == provider).map(|(n, _)| n.clone()).collect()
    } else {
        names.to_vec()
    };
    if chosen.is_empty() {
        bail!("no projection in the configuration has `provider: {provider}`");
    }
    Ok(chosen)
}

async fn register_all<C: Connector>(config: &Config, connector: &C) -> Result<()> {
    let store = connect(connector).await?;
    let adapter = LocalAdapter::new(config.clone(), connector.clone(), handlers::registry::<C>());
    adapter.register_all(&store).await.context("registering projections")?;
    Ok(())
}
