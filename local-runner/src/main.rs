//! `projector`: the operator's and developer's command line.

mod backend;
mod commands;
mod output;
mod seed;
mod table;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use projector::config::Config;

use crate::backend::Backend;

/// Handlers this binary carries, by the name `projections.yaml` uses.
pub const HANDLERS: &[&str] = &["user-profile", "daily-activity"];

/// The configuration used when no `projections.yaml` is found.
const DEFAULT_CONFIG: &str = include_str!("../../projections.yaml");

#[derive(Parser)]
#[command(name = "projector", version, about = "Runs event-sourced projections over PostgreSQL or an embedded store")]
struct Cli {
    /// Projection configuration. Defaults to ./projections.yaml, or the built-in one when absent.
    #[arg(long, short, global = true, env = "PROJECTOR_CONFIG")]
    config: Option<PathBuf>,

    /// PostgreSQL URL; overrides the variable named by `database.url_env` (DATABASE_URL).
    /// Without one, the embedded store is used.
    #[arg(long, global = true)]
    database_url: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Creates or upgrades the schema and registers every configured projection.
    Init,
    /// Appends events given as JSON lines (one append per line) from a file or stdin.
    Append {
        /// File of JSON lines; `-` or absent reads stdin.
        file: Option<PathBuf>,
    },
    /// Seeds sample events if the store is empty, runs every projection to caught-up,
    /// and prints the status and sample rows.
    Demo {
        /// Users to seed.
        #[arg(long, default_value_t = 500)]
        users: u32,
    },
    /// Runs every projection continuously; Ctrl-C or SIGTERM drains the batch and exits.
    Run {
        /// Only these projections (default: all).
        #[arg(long = "projection", short = 'p')]
        projections: Vec<String>,
    },
    /// Prints each projection partition's checkpoint, lag and health.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Rebuilds a projection from the full history, in one transaction.
    Rebuild {
        projection: String,
        /// Recompute only rows touched by events at or after this global position.
        #[arg(long)]
        from_version: Option<i64>,
    },
    /// Re-partitions a projection: brings its partitions to one checkpoint, then splits
    /// its aggregates into N hash partitions. Stop its runners first.
    Scale { projection: String, partitions: u32 },
    /// Dead letters: list, inspect, and repair parked aggregates.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Shows one read-model row, optionally as it was at an instant (time travel).
    State {
        projection: String,
        /// The row key: a UUID for user-profile, DAY/EVENT_TYPE for daily-activity.
        key: String,
        /// RFC 3339 instant, e.g. 2026-01-31T12:00:00Z.
        #[arg(long)]
        at: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum DlqCommand {
    /// Lists open dead letters (with --all, closed ones too).
    List {
        #[arg(long, short = 'p')]
        projection: Option<String>,
        #[arg(long)]
        aggregate: Option<uuid::Uuid>,
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Shows one dead letter: the event, the error, attempts, failure times, actions.
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Re-applies the parked sequence through the current handler, in version order;
    /// stops at the first failure. Safe to run twice.
    Retry {
        id: i64,
        #[command(flatten)]
        repair: RepairArgs,
    },
    /// Drops the dead-lettered event and re-applies the rest of the sequence.
    Skip {
        id: i64,
        #[command(flatten)]
        repair: RepairArgs,
    },
    /// Drops the whole parked sequence and unparks the aggregate.
    Discard {
        id: i64,
        #[command(flatten)]
        repair: RepairArgs,
    },
}

#[derive(clap::Args)]
pub struct RepairArgs {
    /// Who is acting, for the audit trail.
    #[arg(long, env = "PROJECTOR_ACTOR")]
    pub actor: Option<String>,
    /// Events applied per transaction.
    #[arg(long, default_value_t = 1000)]
    pub chunk: usize,
}

fn load_config(path: Option<&PathBuf>) -> Result<Config> {
    let found = path.cloned().or_else(|| {
        let default = PathBuf::from("projections.yaml");
        default.exists().then_some(default)
    });
    match found {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("{}: cannot read configuration file", path.display()))?;
            Config::from_yaml_str(&text, &path.display().to_string(), HANDLERS).map_err(|e| anyhow::anyhow!("{e}"))
        }
        None => Config::from_yaml_str(DEFAULT_CONFIG, "<built-in projections.yaml>", HANDLERS)
            .map_err(|e| anyhow::anyhow!("{e}")),
    }
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PROJECTOR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let config = load_config(cli.config.as_ref())?;
    let backend = Backend::open(&config, cli.database_url.clone()).context("choosing the store")?;
    match cli.command {
        Command::Init => with_backend!(backend, |c| commands::init(&config, c).await),
        Command::Scale { projection, partitions } => {
            with_backend!(backend, |c| commands::scale(&config, &c, &projection, partitions).await)
        }
        Command::Dlq(command) => with_backend!(backend, |c| commands::dlq(&config, &c, command).await),
        Command::Append { file } => {
            with_backend!(backend, |c| commands::append(&c, file.as_deref()).await)
        }
        Command::Demo { users } => {
            with_backend!(backend, |c| commands::demo(&config, c, users).await)
        }
        Command::Run { projections } => {
            with_backend!(backend, |c| commands::run(config, c, projections).await)
        }
        Command::Status { json } => {
            with_backend!(backend, |c| commands::status(&config, &c, json).await)
        }
        Command::Rebuild { projection, from_version } => {
            with_backend!(backend, |c| commands::rebuild(&config, &c, &projection, from_version).await)
        }
        Command::State { projection, key, at } => {
            with_backend!(backend, |c| commands::state(&config, &c, &projection, &key, at.as_deref()).await)
        }
    }
}
