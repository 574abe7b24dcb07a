//! `projector migrate`: rewrites stored events through the upcaster chains that
//! `projections.yaml` enables (a dry run, an apply that can be resumed, a rollback), and
//! lists the migrations recorded.

mod report;

use std::time::Duration;

use anyhow::{bail, Result};
use clap::ArgGroup;
use projector::config::{Config, Provider};
use projector::migration::{rollback, ApplyOutcome, Migration, MigrationError, MigrationProgress};
use projector::store::migrations::{EventMigration, EventMigrations};
use projector::upcast::Upcasters;
use projector::{EventFilter, ProjectionHandler};
use projector_local::Connector;

use super::connect;
use crate::handlers::{self, WithHandler};
use crate::output;

/// A pause after each committed chunk, in milliseconds. For tests only: it keeps a
/// migration running long enough to be killed between chunks.
const PAUSE_ENV: &str = "PROJECTOR_MIGRATE_CHUNK_PAUSE_MS";

#[derive(clap::Args)]
#[command(group(ArgGroup::new("action").required(true).args(["plan", "apply", "rollback", "list"])))]
pub struct Args {
    /// Dry run: read every event of the migrated types and report, per type and version,
    /// how many would change, a sample before and after, and every event the upcasters
    /// cannot rewrite. Writes nothing; exits non-zero when any event cannot be rewritten.
    #[arg(long)]
    plan: bool,
    /// Rewrite the events in chunks, backing up every original, then verify. Refuses to
    /// start when the plan finds an event the upcasters cannot rewrite; goes on with a
    /// migration a previous run left unfinished.
    #[arg(long)]
    apply: bool,
    /// Put back every original a migration rewrote, byte for byte (its id from `--list`).
    #[arg(long, value_name = "MIGRATION")]
    rollback: Option<i64>,
    /// List the recorded migrations.
    #[arg(long)]
    list: bool,
    /// Migrate only this stored event type (repeatable); it must be enabled in
    /// `upcasting.event_types`. Default: every enabled type.
    #[arg(long = "event-type", value_name = "TYPE")]
    event_types: Vec<String>,
    /// Events read per chunk; each chunk is one short transaction.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    chunk: u32,
    /// Who is migrating, recorded with the migration.
    #[arg(long, env = "PROJECTOR_ACTOR")]
    actor: Option<String>,
    /// Print the outcome as one JSON document (shape in the README), without a progress bar.
    #[arg(long)]
    json: bool,
}

pub async fn execute<C: Connector>(config: &Config, connector: &C, args: Args) -> Result<()> {
    let store = connect(connector).await?;
    if args.list {
        let migrations = store.event_migrations().await?;
        return if args.json { output::json(&migrations) } else { report::list(&migrations) };
    }
    let actor = args.actor.clone().unwrap_or_else(whoami);
    let progress = Bar::new(args.json);
    if let Some(id) = args.rollback {
        let mut progress = progress.restoring(id);
        let outcome = rollback(&store, id, &actor, args.chunk as usize, &mut progress).await;
        progress.bar.finish_and_clear();
        let outcome = outcome.map_err(explain)?;
        return if args.json {
            output::json(&report::RollbackReport::of(&outcome))
        } else {
            report::rolled_back(&outcome)
        };
    }
    let upcasters = chains(config, &args.event_types)?;
    let told = told(config, &upcasters).await?;
    let migration = Migration::new(upcasters).chunk_size(args.chunk as usize).actor(actor);
    let mut progress = progress;
    if args.plan {
        let plan = migration.plan(&store, &mut progress).await;
        progress.bar.finish_and_clear();
        let plan = plan?;
        if args.json {
            output::json(&report::PlanReport { plan: &plan, projections: &told })?;
        } else {
            report::planned(&plan, &told)?;
        }
        if plan.is_refused() {
            bail!(
                "{} event(s) cannot be rewritten (listed above); `--apply` would refuse to start",
                plan.failures.len()
            );
        }
        return Ok(());
    }
    let outcome = migration.apply(&store, &mut progress).await;
    progress.bar.finish_and_clear();
    let outcome = outcome.map_err(explain)?;
    if args.json {
        return output::json(&report::ApplyReport::of(&outcome, &told));
    }
    match &outcome {
        ApplyOutcome::NothingToDo(plan) => report::nothing_to_do(plan),
        ApplyOutcome::Applied { migration, resumed, chunks } => report::applied(migration, *resumed, *chunks, &told),
    }
}

/// The chains to migrate with: those `projections.yaml` enables, or the named ones of
/// them. Lazy upcasting runs the same chains, which is what makes the rewrite invisible
/// to the projections.
fn chains(config: &Config, only: &[String]) -> Result<Upcasters> {
    let enabled = handlers::enabled_upcasters(config)?;
    if enabled.is_empty() {
        bail!(
            "no upcaster chains are enabled: `upcasting.event_types` in projections.yaml names the stored event types \
             to upcast; enable a type there (and run with it, lazily) before migrating it"
        );
    }
    if only.is_empty() {
        return Ok(enabled);
    }
    for event_type in only {
        if !config.upcasting.event_types.contains(event_type) {
            bail!(
                "--event-type {event_type}: not enabled in `upcasting.event_types` (enabled: {}); a type is migrated \
                 with the chains its projections already upcast it with",
                config.upcasting.event_types.join(", ")
            );
        }
    }
    Ok(enabled.enable_only(only)?)
}

/// Adds what to do next to the errors an operator acts on.
fn explain(e: MigrationError) -> anyhow::Error {
    let hint = match &e {
        MigrationError::PlanFailed(failures) => Some(format!(
            "every event that cannot be rewritten, by id:\n  {}\n(`projector migrate --plan` lists them too)",
            failures.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  ")
        )),
        _ => None,
    };
    let error = anyhow::Error::new(e);
    match hint {
        Some(hint) => error.context(hint),
        None => error,
    }
}

fn whoami() -> String {
    std::env::var("USER").or_else(|_| std::env::var("USERNAME")).unwrap_or_else(|_| "projector".to_owned())
}

/// A projection that reads migrated types, and why the migration changes nothing it sees.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Told {
    pub projection: String,
    pub provider: String,
    /// The migrated types (stored names, and the names they upcast to) it reads.
    pub reads: Vec<String>,
    pub rebuild_needed: bool,
    pub note: String,
}

/// The configured projections that read migrated types (before or after their chains).
async fn told(config: &Config, upcasters: &Upcasters) -> Result<Vec<Told>> {
    struct Filter;
    impl WithHandler for Filter {
        type Output = Result<EventFilter>;
        async fn run<H: ProjectionHandler>(self, handler: H) -> Result<EventFilter> {
            Ok(handler.filter())
        }
    }
    let mut types: Vec<String> = upcasters.event_types().into_iter().map(str::to_owned).collect();
    for step in upcasters.steps() {
        types.extend(step.renames_to.map(str::to_owned));
    }
    types.sort();
    types.dedup();
    let mut out = Vec::new();
    for (name, p) in &config.projections {
        let filter = handlers::dispatch(&p.handler, Filter).await?.and(&p.events.to_filter());
        let reads: Vec<String> =
            types.iter().filter(|t| filter.event_types.is_empty() || filter.event_types.contains(t)).cloned().collect();
        if reads.is_empty() {
            continue;
        }
        let provider = p.provider.to_string();
        let note = if p.provider == Provider::Cloudflare {
            "runs on Workers: its `UPCASTING` variable must enable the same types, as it must to read them lazily; \
             then the rewrite changes nothing it sees"
                .to_owned()
        } else {
            "reads these types through the same chains lazily: the rewrite changes nothing it sees, so it keeps \
             running and needs no rebuild"
                .to_owned()
        };
        out.push(Told { projection: name.clone(), provider, reads, rebuild_needed: false, note });
    }
    Ok(out)
}

/// The progress bar (hidden with `--json`, and by indicatif away from a terminal), and
/// the test-only pause between chunks.
struct Bar {
    bar: indicatif::ProgressBar,
    pause: Option<Duration>,
    what: String,
}

impl Bar {
    fn new(json: bool) -> Self {
        let bar = if json { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(1) };
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} [{bar:40}] {pos}/{len} events, {rate}, ETA {eta}")
                .map(|style| style.with_key("rate", crate::output::rate_key))
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let pause = std::env::var(PAUSE_ENV).ok().and_then(|ms| ms.parse().ok()).map(Duration::from_millis);
        bar.set_message("planning");
        Self { bar, pause, what: "migrating".to_owned() }
    }

    fn restoring(mut self, id: i64) -> Self {
        self.what = format!("rolling back migration {id}");
        self.bar.set_message(self.what.clone());
        self
    }
}

impl MigrationProgress for Bar {
    fn scanned(&mut self, events: u64) {
        self.bar.set_length(events.max(1));
        self.bar.set_position(events);
    }

    fn chunk(&mut self, done: u64, total: u64) {
        if self.bar.message() != self.what {
            self.bar.set_message(self.what.clone());
            self.bar.reset();
        }
        self.bar.set_length(total.max(done).max(1));
        self.bar.set_position(done);
        if let Some(pause) = self.pause {
            // Blocking on purpose: the pause is between chunks, when nothing is in flight.
            std::thread::sleep(pause);
        }
    }

    fn verifying(&mut self, events: u64) {
        self.bar.set_message("verifying");
        self.bar.set_position(events.min(self.bar.length().unwrap_or(events)));
    }
}

/// The migration a `--list` entry or an outcome names, for messages.
pub fn name(m: &EventMigration) -> String {
    format!("migration {} ({})", m.id, m.event_types.join(", "))
}
