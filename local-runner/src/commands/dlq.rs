//! `projector dlq`: lists and shows dead letters, and repairs parked aggregates (retry,
//! skip, discard) with an audit trail of who did what.

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use projector::config::Config;
use projector::repair::{repair_upcast, RepairAction, RepairEnd, RepairOutcome};
use projector::upcast::Reading;
use projector::{DeadLetter, DeadLetterFilter, DeadLetterQueue, EventStore, ProjectionHandler, ReadBound, Repairs};
use projector_local::Connector;
use serde::Serialize;
use uuid::Uuid;

use self::target::LetterRef;
use super::{connect, projection};
use crate::handlers::{self, WithHandler};
use crate::{output, say, table};

mod target;

#[derive(Subcommand)]
pub enum Command {
    /// Lists open dead letters (with --all, closed ones too).
    List {
        /// Only this projection's letters.
        #[arg(long, short = 'p')]
        projection: Option<String>,
        /// Only this aggregate's letters (its UUID).
        #[arg(long)]
        aggregate: Option<uuid::Uuid>,
        /// Also list closed letters (resolved, skipped, discarded).
        #[arg(long)]
        all: bool,
        /// Print the letters as JSON (a list; shape in the README) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Shows one dead letter: the event, the error, attempts, failure times, actions.
    Show {
        #[command(flatten)]
        target: Target,
        /// Print the letter, its event and its audit trail as JSON (shape in the README).
        #[arg(long)]
        json: bool,
    },
    /// Re-applies the parked sequence through the current handler, in version order;
    /// stops at the first failure. Safe to run twice.
    Retry {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        repair: RepairArgs,
    },
    /// Drops the dead-lettered event and re-applies the rest of the sequence.
    Skip {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        repair: RepairArgs,
    },
    /// Drops the whole parked sequence and unparks the aggregate.
    Discard {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        repair: RepairArgs,
    },
}

/// The dead letter a command acts on.
#[derive(clap::Args)]
pub struct Target {
    /// The dead letter: its id (a number, as `dlq list` shows it) or the id of its event
    /// (a UUID, as logs and alerts show it).
    #[arg(value_name = "LETTER_OR_EVENT_ID")]
    id: LetterRef,
    /// The projection whose letter to take, when the event failed in several.
    #[arg(long, short = 'p')]
    projection: Option<String>,
}

impl Target {
    async fn find<S: DeadLetterQueue>(&self, config: &Config, store: &S) -> Result<DeadLetter> {
        target::find(config, store, self.id, self.projection.as_deref()).await
    }
}

#[derive(clap::Args)]
pub struct RepairArgs {
    /// Who is acting, for the audit trail.
    #[arg(long, env = "PROJECTOR_ACTOR")]
    actor: Option<String>,
    /// Events applied per transaction.
    #[arg(long, default_value_t = 1000)]
    chunk: usize,
    /// Print the outcome as one JSON object (shape in the README), also when the repair
    /// stops at a failing event.
    #[arg(long)]
    json: bool,
}

/// `dlq retry|skip|discard --json`.
#[derive(Serialize)]
struct RepairReport<'a> {
    dead_letter_id: i64,
    event_id: Uuid,
    projection: &'a str,
    aggregate_id: Uuid,
    action: &'a str,
    actor: &'a str,
    events_applied: u64,
    events_dropped: u64,
    /// True when the letter is closed and the aggregate unparked.
    unparked: bool,
    /// The event that failed again, when the repair stopped at one.
    stopped_at: Option<StoppedAt<'a>>,
}

#[derive(Serialize)]
struct StoppedAt<'a> {
    dead_letter_id: i64,
    event_id: Uuid,
    version: i64,
    error: &'a str,
}

pub async fn execute<C: Connector>(config: &Config, connector: &C, command: Command) -> Result<()> {
    let store = connect(connector).await?;
    let (target, what, args) = match command {
        Command::List { projection, aggregate, all, json } => {
            return list(
                config,
                &store,
                DeadLetterFilter { projection, aggregate_id: aggregate, include_closed: all },
                json,
            )
            .await
        }
        Command::Show { target, json } => return show(&store, target.find(config, &store).await?, json).await,
        Command::Retry { target, repair } => (target, RepairAction::Retry, repair),
        Command::Skip { target, repair } => (target, RepairAction::Skip, repair),
        Command::Discard { target, repair } => (target, RepairAction::Discard, repair),
    };
    let letter = target.find(config, &store).await?;
    let id = letter.id;
    let p = projection(config, &letter.projection)?;
    let who = actor(&args);
    let keyring = crate::keyring::for_readers(config)?;
    let reading = Reading::new(p.events.to_filter(), handlers::enabled_upcasters(config)?)
        .decrypting(crate::keyring::decryption(config, keyring.as_ref(), &letter.projection)?);
    let job = Repair { store: &store, reading, id, what, actor: &who, chunk: args.chunk };
    let outcome = handlers::dispatch(&p.handler, job).await.with_context(|| format!("dlq {} {id}", what.as_str()))?;
    if args.json {
        let stopped_at = match &outcome.end {
            RepairEnd::Done => None,
            RepairEnd::Stopped { dead_letter_id, event_id, version, error } => {
                Some(StoppedAt { dead_letter_id: *dead_letter_id, event_id: *event_id, version: *version, error })
            }
        };
        output::json(&RepairReport {
            dead_letter_id: id,
            event_id: letter.event_id,
            projection: &letter.projection,
            aggregate_id: letter.aggregate_id,
            action: what.as_str(),
            actor: &who,
            events_applied: outcome.events_applied,
            events_dropped: outcome.events_dropped,
            unparked: stopped_at.is_none(),
            stopped_at,
        })?;
    }
    match outcome.end {
        RepairEnd::Done if args.json => Ok(()),
        RepairEnd::Done => {
            say!(
                "dead letter {id}: {} event(s) applied, {} dropped; aggregate {} unparked",
                outcome.events_applied,
                outcome.events_dropped,
                letter.aggregate_id
            );
            Ok(())
        }
        RepairEnd::Stopped { dead_letter_id, event_id, version, error } => bail!(
            "dead letter {id}: {} event(s) applied, then event {event_id} (v{version}) failed: {error}; \
             aggregate {} stays parked behind dead letter {dead_letter_id}",
            outcome.events_applied,
            letter.aggregate_id
        ),
    }
}

async fn list<S: DeadLetterQueue>(config: &Config, store: &S, filter: DeadLetterFilter, json: bool) -> Result<()> {
    if let Some(p) = &filter.projection {
        projection(config, p)?;
    }
    let letters = store.list(&filter).await.context("listing dead letters")?;
    if json {
        output::json(&letters)?;
    } else if letters.is_empty() {
        say!("no dead letters");
    } else {
        let header =
            ["id", "projection", "status", "aggregate", "version", "event_type", "attempts", "last_failed", "error"];
        say!("{}", table::render(&header, &letter_rows(&letters)));
    }
    Ok(())
}

async fn show<S: DeadLetterQueue + EventStore>(store: &S, letter: DeadLetter, json: bool) -> Result<()> {
    let actions = store.actions(letter.id).await?;
    let events = store
        .read_aggregate(letter.aggregate_id, ReadBound::Versions { after: letter.version - 1, upto: letter.version })
        .await?;
    if json {
        output::json(&serde_json::json!({ "dead_letter": letter, "event": events.first(), "actions": actions }))?;
    } else {
        say!("dead letter {} ({})", letter.id, letter.status);
        say!("  projection:   {}", letter.projection);
        say!(
            "  event:        {} {} (aggregate {} v{}, position {})",
            letter.event_id,
            letter.event_type,
            letter.aggregate_id,
            letter.version,
            letter.position
        );
        if let Some(e) = events.first() {
            say!("  event_data:   {}", e.event_data.get());
        }
        say!("  error:        {} ({})", letter.error, letter.error_class);
        say!("  attempts:     {}", letter.attempts);
        say!("  first failed: {}", letter.first_failed_at.to_rfc3339());
        say!("  last failed:  {}", letter.last_failed_at.to_rfc3339());
        for a in actions {
            say!("  {} {} by {}: {}", a.at.to_rfc3339(), a.action, a.actor, a.outcome);
        }
    }
    Ok(())
}

/// One repair of the parked sequence behind dead letter `id`.
struct Repair<'a, S> {
    store: &'a S,
    reading: Reading,
    id: i64,
    what: RepairAction,
    actor: &'a str,
    chunk: usize,
}

impl<S: Repairs + EventStore> WithHandler for Repair<'_, S> {
    type Output = Result<RepairOutcome>;

    async fn run<H: ProjectionHandler>(self, handler: H) -> Result<RepairOutcome> {
        Ok(repair_upcast(&handler, self.store, &self.reading, self.id, self.what, self.actor, self.chunk).await?)
    }
}

fn actor(args: &RepairArgs) -> String {
    args.actor
        .clone()
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

fn letter_rows(letters: &[DeadLetter]) -> Vec<Vec<String>> {
    letters
        .iter()
        .map(|l| {
            vec![
                l.id.to_string(),
                l.projection.clone(),
                l.status.to_string(),
                l.aggregate_id.to_string(),
                format!("v{}", l.version),
                l.event_type.clone(),
                l.attempts.to_string(),
                l.last_failed_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                l.error.chars().take(80).collect(),
            ]
        })
        .collect()
}
