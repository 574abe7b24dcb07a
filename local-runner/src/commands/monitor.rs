//! `projector monitor`: what a running deployment says about itself, over HTTP.
//!
//! - `--provider cloudflare`: each Worker's `GET /health` and `GET /status` (the URL from
//!   `--url`, or a template naming each projection's Worker by `{worker}` or
//!   `{projection}`).
//! - `--provider local`: the `projector run` endpoint's `GET /health` (default
//!   `http://<observability.listen>`) and the partition states from the store.
//!
//! The exit status is non-zero when a runner is unreachable or reports itself unhealthy,
//! after the report is printed, so the command serves as a check in scripts.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use projector::config::{Config, Provider};
use projector::ProjectionStore;
use projector_cloudflare::control::{worker_url, CloudflareWorkerAdapter, Monitor, WorkerReport};
use projector_local::Connector;

use super::{connect, with_provider};
use crate::commands::status::print_table;
use crate::{output, say};

#[derive(clap::Args)]
pub struct Args {
    /// Which runners to read: `local` (the `projector run` endpoint, and the store) or
    /// `cloudflare` (each Worker's /health and /status).
    #[arg(long, value_parser = ["local", "cloudflare"], default_value = "local")]
    pub provider: String,
    /// Only these projections (default: every one with that provider).
    #[arg(long = "projection", short = 'p')]
    projections: Vec<String>,
    /// Where the runners answer. Cloudflare: the Worker's URL, or a template with
    /// `{worker}` or `{projection}` for one Worker per projection (e.g.
    /// https://{worker}.example.workers.dev). Local: default http://<observability.listen>.
    #[arg(long, env = "PROJECTOR_MONITOR_URL")]
    url: Option<String>,
    /// Print the reports as JSON (a list, one per runner; shape in the README).
    #[arg(long)]
    json: bool,
}

impl Args {
    /// Reading Workers needs no store; the local runner's states come from the store.
    pub fn needs_store(&self) -> bool {
        self.provider == "local"
    }
}

/// `monitor --provider cloudflare`.
pub async fn cloudflare(config: Config, args: Args) -> Result<()> {
    let names = with_provider(&config, &args.projections, Provider::Cloudflare)?;
    let Some(template) = args.url.clone() else {
        bail!(
            "give the Workers' URL: --url (or PROJECTOR_MONITOR_URL), e.g. https://{{worker}}.<subdomain>.workers.dev"
        );
    };
    let adapter = CloudflareWorkerAdapter::<projector_postgres::PgStore>::new(config, ".")?.url(template.clone());
    // One request per Worker: a URL without a placeholder serves every projection.
    let mut workers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for name in &names {
        workers.entry(worker_url(&template, name)).or_default().push(name.clone());
    }
    let mut reports = Vec::new();
    let mut problems = Vec::new();
    for projections in workers.into_values() {
        match adapter.report(&projections[0]).await {
            Ok(report) => reports.push(only(report, &projections)),
            Err(e) => problems.push(e.to_string()),
        }
    }
    show(&reports, args.json)?;
    finish(&reports, problems)
}

/// `monitor --provider local`.
pub async fn local<C: Connector>(config: &Config, connector: &C, args: Args) -> Result<()> {
    let names = with_provider(config, &args.projections, Provider::Local)?;
    let url = match (&args.url, config.observability.listen) {
        (Some(url), _) => url.clone(),
        (None, Some(addr)) => format!("http://{addr}"),
        (None, None) => bail!("observability.listen is `off`: give the runner's URL with --url"),
    };
    let store = connect(connector).await?;
    let states = store.states().await.context("reading projection state (has `projector init` run?)")?;
    let horizon_hold = store.horizon_hold().await.context("reading the read horizon")?;
    let monitor = Monitor::new()?;
    let mut problems = Vec::new();
    let health = match monitor.health(&url).await {
        Ok(health) => health,
        Err(e) => {
            problems.push(format!("{e} (is `projector run` running?)"));
            projector_cloudflare::pages::unreachable(&e.to_string())
        }
    };
    let report = only(WorkerReport { url, health, projections: states, horizon_hold }, &names);
    let reports = [report];
    show(&reports, args.json)?;
    finish(&reports, problems)
}

/// `report` narrowed to `names`.
fn only(mut report: WorkerReport, names: &[String]) -> WorkerReport {
    report.projections.retain(|s| names.contains(&s.projection));
    report.health.partitions.retain(|p| names.contains(&p.projection));
    report.health.healthy = report.health.error.is_none() && report.health.partitions.iter().all(|p| p.healthy);
    report
}

fn show(reports: &[WorkerReport], json: bool) -> Result<()> {
    if json {
        return output::json(&reports);
    }
    for (i, report) in reports.iter().enumerate() {
        if i > 0 {
            say!();
        }
        let verdict = if report.health.healthy { "healthy" } else { "UNHEALTHY" };
        say!("{}: {verdict}", report.url);
        if let Some(error) = &report.health.error {
            say!("  {error}");
        }
        for p in report.health.partitions.iter().filter(|p| !p.healthy) {
            say!("  {} partition {}: {}", p.projection, p.partition, p.reason.as_deref().unwrap_or("unhealthy"));
        }
        if report.projections.is_empty() {
            say!("  no partition state reported");
        } else {
            print_table(&report.projections);
        }
        if let Some(h) = &report.horizon_hold {
            say!(
                "read horizon held back by backend {} ({}): {} committed event(s) wait for it",
                h.pid,
                h.description,
                h.events_waiting
            );
        }
    }
    Ok(())
}

fn finish(reports: &[WorkerReport], mut problems: Vec<String>) -> Result<()> {
    for report in reports.iter().filter(|r| !r.health.healthy) {
        let partitions: Vec<String> = report
            .health
            .partitions
            .iter()
            .filter(|p| !p.healthy)
            .map(|p| format!("{}/{}", p.projection, p.partition))
            .collect();
        if !partitions.is_empty() || report.health.error.is_none() {
            problems.push(format!("{} reports unhealthy partitions: {}", report.url, partitions.join(", ")));
        }
    }
    problems.dedup();
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("{}", problems.join("\n"))
    }
}
