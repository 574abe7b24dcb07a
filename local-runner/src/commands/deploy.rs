//! `projector deploy`: puts the configured projections where their provider runs them.
//!
//! - `--provider cloudflare`: builds the Worker once (`worker-build`, unless
//!   `--no-build`), renders one `wrangler.toml` per `provider: cloudflare` projection
//!   into `--out`, and runs `wrangler deploy` on each; `--dry-run` bundles each Worker
//!   into `<out>/<projection>/dist` and uploads nothing. The store's URL
//!   (`--database-url`, or the variable `database.url_env` names) and `REBUILD_TOKEN`
//!   are uploaded as the Workers' secrets when set.
//! - `--provider local`: the local runner is a foreground process (`projector run`,
//!   under a service manager), so nothing is started: the store is made ready (the
//!   schema migrated, the projections registered, the partition counts checked, as `run`
//!   checks them) and the command that runs each projection is printed; `--dry-run`
//!   only prints.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use projector::config::{Config, Provider};
use projector_cloudflare::control::{CloudflareWorkerAdapter, WorkerDeployment};
use projector_local::Connector;
use serde::Serialize;

use super::{connect, register_all, with_provider};
use crate::{output, say};

#[derive(clap::Args)]
pub struct Args {
    /// Where the projections run: `cloudflare` (one Worker per projection, deployed with
    /// wrangler) or `local` (readies the store for `projector run`; starts nothing).
    #[arg(long, value_parser = ["cloudflare", "local"])]
    pub provider: String,
    /// Only these projections (default: every one with that provider).
    #[arg(long = "projection", short = 'p')]
    projections: Vec<String>,
    /// Change nothing: render and bundle each Worker offline (`wrangler deploy --dry-run`),
    /// or, for `local`, only say what would be done.
    #[arg(long)]
    dry_run: bool,
    /// Directory for the rendered Worker configurations (and a dry run's bundles), one
    /// subdirectory per projection. Default: .projector/deploy in the repository.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Deploy the Worker bundle already in adapters/cloudflare/build instead of building it.
    #[arg(long)]
    no_build: bool,
    /// The repository to build and deploy from (with package.json, node_modules and
    /// adapters/cloudflare). Default: the current directory.
    #[arg(long, value_name = "DIR", env = "PROJECTOR_REPOSITORY")]
    repository: Option<PathBuf>,
    /// Print what was deployed as one JSON object (shape in the README).
    #[arg(long)]
    json: bool,
}

impl Args {
    /// Deploying Workers needs no store, nor does a dry run; readying the local
    /// runner's store does.
    pub fn needs_store(&self) -> bool {
        self.provider == "local" && !self.dry_run
    }
}

/// `deploy --json`.
#[derive(Serialize)]
struct Report {
    provider: &'static str,
    dry_run: bool,
    deployments: Vec<Deployed>,
}

#[derive(Serialize)]
struct Deployed {
    projection: String,
    /// The Worker's name (`cloudflare`), or the command that runs the projection (`local`).
    runs_as: String,
    partitions: u32,
    /// The rendered `wrangler.toml` (`cloudflare`).
    config: Option<PathBuf>,
    /// A dry run's bundle directory (`cloudflare`).
    bundle: Option<PathBuf>,
    /// Secrets uploaded with the Worker, by name.
    secrets: Vec<String>,
}

/// `deploy --provider cloudflare`.
pub async fn cloudflare(config: Config, database_url: Option<String>, args: Args) -> Result<()> {
    let names = with_provider(&config, &args.projections, Provider::Cloudflare)?;
    let root = match &args.repository {
        Some(dir) => dir.clone(),
        None => std::env::current_dir().context("the current directory")?,
    };
    let url = database_url.or_else(|| config.database.url(|name| std::env::var(name).ok()));
    let url_env = config.database.url_env.clone();
    let mut adapter = CloudflareWorkerAdapter::<projector_postgres::PgStore>::new(config, &root)?.dry_run(args.dry_run);
    if let Some(out) = &args.out {
        adapter = adapter.out(out);
    }
    let mut unset = Vec::new();
    match url {
        Some(url) => adapter = adapter.secret("DATABASE_URL", url),
        None => unset.push(format!("DATABASE_URL (from --database-url or ${url_env})")),
    }
    match std::env::var("REBUILD_TOKEN").ok().filter(|t| !t.is_empty()) {
        Some(token) => adapter = adapter.secret("REBUILD_TOKEN", token),
        None => unset.push("REBUILD_TOKEN (from $REBUILD_TOKEN)".to_owned()),
    }
    if let Some(missing) = adapter.tools().missing() {
        bail!("{missing}");
    }
    if !args.no_build {
        if !args.json {
            eprintln!("building the Worker (worker-build --release) in {}", root.join("adapters/cloudflare").display());
        }
        adapter.build().await.context("building the Worker")?;
    }
    let mut deployments: Vec<WorkerDeployment> = Vec::new();
    for name in &names {
        let done = adapter.deploy_worker(name, None).await.with_context(|| format!("deploying {name}"))?;
        if !args.json {
            let what = if args.dry_run { "bundled (dry run)" } else { "deployed" };
            say!("{name}: {what} as Worker {} with {} partition(s)", done.worker, done.partitions);
            say!("  configuration: {}", done.config.display());
            if let Some(bundle) = &done.bundle {
                say!("  bundle: {}", bundle.display());
            }
        }
        deployments.push(done);
    }
    if args.json {
        let deployments = deployments
            .into_iter()
            .map(|d| Deployed {
                projection: d.projection,
                runs_as: d.worker,
                partitions: d.partitions,
                config: Some(d.config),
                bundle: d.bundle,
                secrets: d.secrets,
            })
            .collect();
        return output::json(&Report { provider: "cloudflare", dry_run: args.dry_run, deployments });
    }
    if args.dry_run {
        say!("dry run: nothing uploaded; secrets are never written to the output directory");
    } else if !unset.is_empty() {
        eprintln!(
            "not set, so not uploaded (each Worker keeps the one it has; `npx wrangler secret put NAME`): {}",
            unset.join(", ")
        );
    }
    Ok(())
}

/// `deploy --provider local`: the store is migrated, checked and registered in.
pub async fn local<C: Connector>(config: &Config, connector: &C, args: Args) -> Result<()> {
    let names = with_provider(config, &args.projections, Provider::Local)?;
    connector.migrate().await.with_context(|| format!("migrating the {}", connector.describe()))?;
    let store = connect(connector).await?;
    super::run::check_partition_counts(config, &store).await?;
    register_all(config, connector).await?;
    report_local(config, &names, &format!("registered in the {}", connector.describe()), args)
}

/// `deploy --provider local --dry-run`: says what `deploy` would do, opening nothing.
pub fn local_plan(config: &Config, args: Args) -> Result<()> {
    let names = with_provider(config, &args.projections, Provider::Local)?;
    report_local(config, &names, "would be registered in the store", args)
}

fn report_local(config: &Config, names: &[String], done: &str, args: Args) -> Result<()> {
    let runs_as = |name: &str| format!("projector run --projection {name}");
    if args.json {
        let deployments = names
            .iter()
            .map(|name| Deployed {
                projection: name.clone(),
                runs_as: runs_as(name),
                partitions: config.projections[name].partitions,
                config: None,
                bundle: None,
                secrets: Vec::new(),
            })
            .collect();
        return output::json(&Report { provider: "local", dry_run: args.dry_run, deployments });
    }
    for name in names {
        let partitions = config.projections[name].partitions;
        say!("{name}: {done} with {partitions} partition(s); runs with `{}`", runs_as(name));
    }
    say!("nothing was started: run `projector run` in the foreground or under a service manager");
    Ok(())
}
