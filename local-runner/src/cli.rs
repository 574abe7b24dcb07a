//! The command line itself: global options, logging, and handing the chosen subcommand
//! its configuration and store.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use projector::config::{Config, Names};
use projector_local::Connector;

use crate::backend::Backend;
use crate::commands::Command;
use crate::handlers;

/// The configuration used when no `projections.yaml` is found.
const DEFAULT_CONFIG: &str = include_str!("../../projections.yaml");

#[derive(Parser)]
#[command(name = "projector", version, about = "Runs event-sourced projections over PostgreSQL or an embedded store")]
pub struct Cli {
    /// Projection configuration. Defaults to ./projections.yaml, or the built-in one when absent.
    #[arg(long, short, global = true, env = "PROJECTOR_CONFIG")]
    config: Option<PathBuf>,

    /// PostgreSQL URL; overrides the variable named by `database.url_env` (DATABASE_URL).
    /// Without one, the embedded store is used.
    #[arg(long, global = true)]
    database_url: Option<String>,

    /// More log lines with each -v (info, debug, trace), fewer with each -q (errors only,
    /// none). Without them, PROJECTOR_LOG or RUST_LOG decide, else warnings and errors.
    #[command(flatten)]
    verbosity: clap_verbosity_flag::Verbosity<clap_verbosity_flag::WarnLevel>,

    #[command(subcommand)]
    command: Command,
}

fn load_config(path: Option<&PathBuf>) -> Result<Config> {
    let found = path.cloned().or_else(|| {
        let default = PathBuf::from("projections.yaml");
        default.exists().then_some(default)
    });
    let handlers = handlers::names();
    let unversioned = handlers::unversioned();
    let upcasters = handlers::upcasters()?;
    let upcastable = upcasters.event_types();
    let names = Names { handlers: &handlers, upcast_event_types: &upcastable, unversioned_handlers: &unversioned };
    let parse =
        |text: &str, file: &str| Config::from_yaml_str_names(text, file, &names).map_err(|e| anyhow::anyhow!("{e}"));
    match found {
        Some(path) => {
            tracing::info!("configuration from {}", path.display());
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("{}: cannot read configuration file", path.display()))?;
            parse(&text, &path.display().to_string())
        }
        None => {
            tracing::info!("configuration: the built-in one (no ./projections.yaml)");
            parse(DEFAULT_CONFIG, "<built-in projections.yaml>")
        }
    }
}

/// When the process started, as near as it can tell: what a command reports as its own
/// duration counts from here (parsing, configuration, connecting and all).
static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// When the command began (see [`main`]).
pub(crate) fn started() -> std::time::Instant {
    *STARTED.get_or_init(std::time::Instant::now)
}

/// Parses the command line, runs the command, and says how it went.
pub fn main() -> std::process::ExitCode {
    started();
    let cli = Cli::parse();
    crate::logging::init(cli.verbosity.is_present().then(|| cli.verbosity.tracing_level_filter()));
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
    if let Some(answer) = cli.command.standalone() {
        return answer;
    }
    let config = load_config(cli.config.as_ref())?;
    let command = match cli.command.without_backend(config.clone(), cli.database_url.clone()).await {
        Ok(answer) => return answer,
        Err(command) => command,
    };
    let cli = Cli { command, ..cli };
    if let Some(missing) = Backend::missing_embedded_store(&config, cli.database_url.as_deref()) {
        // Opening the embedded store creates its file; a command that only reads says
        // there is nothing yet instead.
        if let Some(answer) = cli.command.without_store(&missing) {
            return answer;
        }
    }
    let backend = Backend::open(&config, cli.database_url.clone()).context("choosing the store")?;
    crate::with_backend!(backend, |c| {
        tracing::info!("store: {}", c.describe());
        cli.command.execute(config, c).await
    })
}
