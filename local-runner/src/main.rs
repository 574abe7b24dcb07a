//! `projector`: the operator's and developer's command line.

mod backend;
mod commands;
mod handlers;
mod output;
mod seed;
mod table;

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use projector::config::Config;

use crate::backend::Backend;
use crate::commands::Command;

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

fn load_config(path: Option<&PathBuf>) -> Result<Config> {
    let found = path.cloned().or_else(|| {
        let default = PathBuf::from("projections.yaml");
        default.exists().then_some(default)
    });
    let handlers = handlers::names();
    let upcasters = handlers::upcasters()?;
    let upcastable = upcasters.event_types();
    let parse = |text: &str, file: &str| {
        Config::from_yaml_str_upcasting(text, file, &handlers, &upcastable).map_err(|e| anyhow::anyhow!("{e}"))
    };
    match found {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("{}: cannot read configuration file", path.display()))?;
            parse(&text, &path.display().to_string())
        }
        None => parse(DEFAULT_CONFIG, "<built-in projections.yaml>"),
    }
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PROJECTOR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into a file or a pipe.
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
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
    if let Some(missing) = Backend::missing_embedded_store(&config, cli.database_url.as_deref()) {
        // Opening the embedded store creates its file; a command that only reads says
        // there is nothing yet instead.
        if let Some(answer) = cli.command.without_store(&missing) {
            return answer;
        }
    }
    let backend = Backend::open(&config, cli.database_url.clone()).context("choosing the store")?;
    with_backend!(backend, |c| cli.command.execute(config, c).await)
}
