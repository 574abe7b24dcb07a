//! The subcommands, each generic over the store behind a [`Connector`].

use std::io::BufRead;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use projector::adapter::ProjectionAdapter;
use projector::config::{Config, ProjectionConfig};
use projector::runtime::state_at;
use projector::{
    AppendRequest, BatchRunner, Checkpoint, EventFilter, EventStore, ExpectedVersion, Metadata, NewEvent, Ordering,
    Partition, ProjectionHandler, ProjectionState, ProjectionStore, ReadBound, Rebuild, Record, RowKey, Value,
};
use projector_local::{Connector, LocalAdapter, Registry, WorkerExit};
use serde::Deserialize;
use uuid::Uuid;

use crate::{say, seed, table, with_handler, DlqCommand, RepairArgs};

fn registry<C: Connector>() -> Registry<C> {
    Registry::default().with(projection_user_profile::UserProfile).with(projection_daily_activity::DailyActivity)
}

async fn connect<C: Connector>(connector: &C) -> Result<C::Store> {
    connector.connect().await.with_context(|| {
        format!("cannot reach the {}; is it running? (set DATABASE_URL or --database-url)", connector.describe())
    })
}

fn projection<'c>(config: &'c Config, name: &str) -> Result<&'c ProjectionConfig> {
    config.projections.get(name).ok_or_else(|| {
        let known: Vec<&str> = config.projections.keys().map(String::as_str).collect();
        anyhow!("unknown projection {name:?}; configured projections: {}", known.join(", "))
    })
}

async fn register_all<C: Connector>(config: &Config, connector: &C) -> Result<()> {
    let store = connect(connector).await?;
    let adapter = LocalAdapter::new(config.clone(), connector.clone(), registry::<C>());
    adapter.register_all(&store).await.context("registering projections")?;
    Ok(())
}

pub async fn init<C: Connector>(config: &Config, connector: C) -> Result<()> {
    let applied = connector.migrate().await.with_context(|| format!("migrating the {}", connector.describe()))?;
    for name in &applied {
        say!("applied migration {name}");
    }
    register_all(config, &connector).await?;
    say!(
        "{} ready: {} projection(s) registered ({})",
        connector.describe(),
        config.projections.len(),
        config.projections.keys().cloned().collect::<Vec<_>>().join(", ")
    );
    Ok(())
}

/// One line of `projector append` input: either `events: [...]` or one event inline.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppendLine {
    aggregate_id: Uuid,
    aggregate_type: String,
    #[serde(default)]
    expected_version: Option<i64>,
    #[serde(default)]
    idempotency_key: Option<String>,
    #[serde(default)]
    events: Option<Vec<NewEvent>>,
    #[serde(default)]
    event_id: Option<Uuid>,
    #[serde(default)]
    event_type: Option<String>,
    #[serde(default)]
    event_data: Option<serde_json::Value>,
    #[serde(default)]
    metadata: Option<Metadata>,
    #[serde(default)]
    timestamp: Option<DateTime<Utc>>,
    #[serde(default)]
    encrypted_fields: Vec<String>,
}

impl AppendLine {
    fn into_request(self) -> Result<AppendRequest> {
        let events = match (self.events, self.event_type) {
            (Some(events), None) => events,
            (None, Some(event_type)) => vec![NewEvent {
                event_id: self.event_id,
                event_type,
                event_data: self.event_data.unwrap_or_else(|| serde_json::json!({})),
                metadata: self.metadata.unwrap_or_default(),
                timestamp: self.timestamp,
                encrypted_fields: self.encrypted_fields,
            }],
            (Some(_), Some(_)) => {
                bail!("give either `events` or one inline `event_type`, not both")
            }
            (None, None) => bail!("missing `event_type` (or `events`)"),
        };
        Ok(AppendRequest {
            aggregate_id: self.aggregate_id,
            aggregate_type: self.aggregate_type,
            expected_version: self.expected_version.map_or(ExpectedVersion::Any, ExpectedVersion::Exact),
            events,
            idempotency_key: self.idempotency_key,
        })
    }
}

pub async fn append<C: Connector>(connector: &C, file: Option<&Path>) -> Result<()> {
    let (name, reader): (String, Box<dyn BufRead>) = match file {
        Some(p) if p != Path::new("-") => (
            p.display().to_string(),
            Box::new(std::io::BufReader::new(
                std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?,
            )),
        ),
        _ => ("<stdin>".into(), Box::new(std::io::BufReader::new(std::io::stdin()))),
    };
    let store = connect(connector).await?;
    let (mut appends, mut events, mut repeated) = (0u64, 0u64, 0u64);
    for (i, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("{name}:{}: cannot read", i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let at = |what: &str| format!("{name}:{}: {what} ({appends} earlier line(s) were appended)", i + 1);
        let parsed: AppendLine = serde_json::from_str(&line).with_context(|| at("not a valid append line"))?;
        let request = parsed.into_request().with_context(|| at("not a valid append line"))?;
        let outcome = store.append(request).await.with_context(|| at("append failed"))?;
        if outcome.deduplicated {
            repeated += 1;
        } else {
            appends += 1;
            events += outcome.event_ids.len() as u64;
        }
    }
    say!("appended {events} event(s) in {appends} append(s); {repeated} repeated idempotency key(s) wrote nothing");
    Ok(())
}

/// Runs every partition of one projection to caught-up in this task.
async fn catch_up<H: ProjectionHandler, S: EventStore + ProjectionStore>(
    handler: &H,
    store: &S,
    name: &str,
    p: &ProjectionConfig,
    owner: &str,
) -> Result<u64> {
    let mut applied = 0;
    for index in 0..p.partitions {
        let partition = Partition { index, count: p.partitions };
        let lease = store
            .claim(name, partition, owner, p.lease_ttl)
            .await?
            .ok_or_else(|| anyhow!("{name} partition {partition} is leased by a running runner; stop it first"))?;
        let mut runner = BatchRunner::new(handler, store, &p.events.to_filter(), lease).batch_size(p.batch_size);
        applied += runner.catch_up().await.with_context(|| format!("projection {name}"))?.events_applied;
        store.release(runner.lease()).await?;
    }
    Ok(applied)
}

pub async fn demo<C: Connector>(config: &Config, connector: C, users: u32) -> Result<()> {
    connector.migrate().await?;
    let store = connect(&connector).await?;
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
    register_all(config, &connector).await?;
    let owner = format!("demo-{}", std::process::id());
    for (name, p) in &config.projections {
        let applied = with_handler!(p.handler.as_str(), |h| catch_up(&h, &store, name, p, &owner).await?);
        say!("{name}: caught up ({applied} event(s) applied now)");
    }
    say!();
    print_status(&store.states().await?);
    for (name, p) in &config.projections {
        say!();
        with_handler!(p.handler.as_str(), |h| sample_rows(&h, &store, name).await?);
    }
    Ok(())
}

/// Prints a few rows of a projection's read model.
async fn sample_rows<H: ProjectionHandler, S: EventStore + ProjectionStore>(
    handler: &H,
    store: &S,
    name: &str,
) -> Result<()> {
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

fn print_status(states: &[ProjectionState]) {
    let rows: Vec<Vec<String>> = states
        .iter()
        .map(|s| {
            vec![
                s.projection.clone(),
                format!("{}/{}", s.partition, s.partitions),
                s.status.to_string(),
                s.checkpoint.to_string(),
                s.lag_events.to_string(),
                format!("{:.1}", s.lag_seconds),
                s.events_applied.to_string(),
                s.dead_letters.to_string(),
                format!("{}/{}", s.parked_aggregates, s.parked_events),
                s.error_count.to_string(),
                s.lease_owner.clone().unwrap_or_else(|| "-".into()),
                s.last_error.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    say!(
        "{}",
        table::render(
            &[
                "projection",
                "partition",
                "status",
                "checkpoint",
                "lag",
                "lag_s",
                "applied",
                "dead",
                "parked",
                "errors",
                "owner",
                "last_error",
            ],
            &rows
        )
    );
}

pub async fn status<C: Connector>(config: &Config, connector: &C, json: bool) -> Result<()> {
    let store = connect(connector).await?;
    let states: Vec<ProjectionState> = store
        .states()
        .await
        .context("reading projection state (has `projector init` run?)")?
        .into_iter()
        .filter(|s| config.projections.contains_key(&s.projection))
        .collect();
    let hold = store.horizon_hold().await.context("reading the read horizon")?;
    if json {
        say!("{}", serde_json::to_string_pretty(&states)?);
    } else if states.is_empty() {
        say!("no projection is registered yet; run `projector init`");
    } else {
        print_status(&states);
    }
    if let (Some(h), false) = (&hold, json) {
        let since = h.transaction_started_at.map_or_else(|| "unknown".to_owned(), |t| t.to_rfc3339());
        say!(
            "\nread horizon held back by backend {} ({}), in a transaction since {since}: {} committed event(s) \
             wait for it to end",
            h.pid,
            h.description,
            h.events_waiting
        );
    }
    Ok(())
}

pub async fn run<C: Connector>(config: Config, connector: C, only: Vec<String>) -> Result<()> {
    for name in &only {
        projection(&config, name)?;
    }
    // Wait for the store: a runner started before its database keeps trying.
    let store = loop {
        match connector.connect().await {
            Ok(store) => break store,
            Err(e) => {
                eprintln!("waiting for the {}: {e}", connector.describe());
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = shutdown_signal() => return Ok(()),
                }
            }
        }
    };
    let adapter = LocalAdapter::new(config.clone(), connector.clone(), registry::<C>());
    adapter.register_all(&store).await.context("registering projections")?;
    let names: Vec<String> = if only.is_empty() { config.projections.keys().cloned().collect() } else { only };
    for name in &names {
        let d = adapter.deploy(name).await?;
        eprintln!("running {name} with {} partition(s) as {}", d.partitions, adapter.owner());
    }

    // Observability: /metrics, /health and alerts read the projections' state through
    // one shared store connection.
    let store = std::sync::Arc::new(store);
    let metrics = adapter.metrics();
    // What this runner answers for: its projections' partitions that it leases, or that
    // nobody holds a live lease on (another runner reports its own).
    let (ours, me) = (names.clone(), adapter.owner().to_owned());
    let states = move || {
        let (store, ours, me) = (std::sync::Arc::clone(&store), ours.clone(), me.clone());
        async move {
            let now = Utc::now();
            let mine = |s: &ProjectionState| {
                ours.contains(&s.projection)
                    && match (&s.lease_owner, s.lease_expires_at) {
                        (Some(owner), Some(until)) => owner == &me || until < now,
                        _ => true,
                    }
            };
            store.states().await.map(|all| all.into_iter().filter(mine).collect::<Vec<_>>()).map_err(|e| e.to_string())
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let http = {
        let (metrics, states, stop) = (std::sync::Arc::clone(&metrics), states.clone(), stop_rx.clone());
        let (listen, interval) = (config.observability.listen, config.observability.health_interval);
        async move {
            if let Some(addr) = listen {
                match projector_local::http::serve(addr, metrics, states, interval, stop).await {
                    Ok(()) => {}
                    Err(e) => eprintln!("warning: /metrics and /health are not served on {addr}: {e}"),
                }
            }
            std::future::pending::<()>().await
        }
    };
    let alerts = {
        let (metrics, states, stop) = (std::sync::Arc::clone(&metrics), states.clone(), stop_rx.clone());
        let alerts = config.alerts.clone();
        async move {
            if let Some(alerts) = alerts {
                projector_local::alerts::Alerter::new(alerts).run(states, metrics, stop).await;
            }
            std::future::pending::<()>().await
        }
    };
    let listen = adapter.listen(stop_rx);
    let shutdown = shutdown_signal();
    tokio::pin!(listen, shutdown, http, alerts);
    let mut listening = true;
    let mut check = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = &mut listen, if listening => listening = false,
            _ = &mut http => {}
            _ = &mut alerts => {}
            _ = check.tick() => if adapter.all_finished() { break },
        }
    }
    let _ = stop_tx.send(true);
    eprintln!("stopping: draining the current batches");
    let exits = tokio::task::block_in_place(|| adapter.stop_all());
    let failed: Vec<String> = exits
        .iter()
        .flat_map(|(name, ws)| {
            ws.iter().filter_map(move |w| match w {
                WorkerExit::Failed(e) | WorkerExit::Halted(e) => Some(format!("{name}: {e}")),
                WorkerExit::Stopped => None,
            })
        })
        .collect();
    if failed.is_empty() {
        eprintln!("stopped cleanly");
        Ok(())
    } else {
        bail!("projection(s) failed:\n  {}", failed.join("\n  "))
    }
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub async fn rebuild<C: Connector>(config: &Config, connector: &C, name: &str, from: Option<i64>) -> Result<()> {
    let p = projection(config, name)?;
    register_all(config, connector).await?;
    let store = connect(connector).await?;
    let total: i64 = store
        .states()
        .await?
        .iter()
        .filter(|s| s.projection == name)
        .map(|s| s.events_applied + s.lag_events)
        .max()
        .unwrap_or(0);
    let bar = indicatif::ProgressBar::new(total.max(1) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} [{bar:40}] {pos}/{len} events, {per_sec}, ETA {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(format!("rebuilding {name}"));
    let started = std::time::Instant::now();
    let outcome = with_handler!(p.handler.as_str(), |h| {
        Rebuild::new(&h, &p.events.to_filter())
            .from_position(from)
            .run(&store, |read: u64, _| {
                if read > bar.length().unwrap_or(0) {
                    bar.set_length(read);
                }
                bar.set_position(read)
            })
            .await
    });
    bar.finish_and_clear();
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            let _ = mark_failed(&store, name, p.partitions, &e.to_string()).await;
            return Err(anyhow!(e).context(format!("rebuild of {name} failed; the read model is unchanged")));
        }
    };
    let secs = started.elapsed().as_secs_f64();
    say!(
        "rebuilt {name}: {} events read, {} applied, {} rows written, checkpoint {} in {:.2}s ({:.0} events/s)",
        outcome.events_read,
        outcome.events_applied,
        outcome.rows_written,
        outcome.checkpoint,
        secs,
        outcome.events_read as f64 / secs.max(1e-9)
    );
    Ok(())
}

async fn mark_failed<S: ProjectionStore>(store: &S, name: &str, partitions: u32, error: &str) -> Result<()> {
    for index in 0..partitions {
        store.set_status(name, Partition { index, count: partitions }, projector::Status::Running, Some(error)).await?;
    }
    Ok(())
}

pub async fn state<C: Connector>(
    config: &Config,
    connector: &C,
    name: &str,
    key: &str,
    at: Option<&str>,
) -> Result<()> {
    let p = projection(config, name)?;
    let at =
        at.map(|t| DateTime::parse_from_rfc3339(t).map(|t| t.with_timezone(&Utc))).transpose().with_context(|| {
            format!("--at {:?}: expected an RFC 3339 instant such as 2026-01-31T12:00:00Z", at.unwrap_or(""))
        })?;
    let store = connect(connector).await?;
    with_handler!(p.handler.as_str(), |h| show_state(&h, &store, p, name, key, at).await)
}

async fn show_state<H: ProjectionHandler, S: EventStore>(
    handler: &H,
    store: &S,
    p: &ProjectionConfig,
    name: &str,
    key: &str,
    at: Option<DateTime<Utc>>,
) -> Result<()> {
    let parsed = H::Key::parse(key).map_err(|e| anyhow!("key {key:?} for {name}: {e}"))?;
    let aggregate = (handler.ordering() == Ordering::AggregateVersion).then(|| Uuid::parse_str(key).ok()).flatten();
    let found = state_at(handler, store, &p.events.to_filter(), &parsed, aggregate, at).await?;
    let Some((row, version)) = found else {
        let when = at.map_or_else(|| "now".to_owned(), |t| format!("at {}", t.to_rfc3339()));
        bail!("{name} has no row for key {key} ({when})");
    };
    let schema = handler.schema();
    let mut values = Vec::new();
    parsed.to_values(&mut values);
    row.to_values(&mut values);
    if schema.version_column.is_some() {
        values.push(Value::BigInt(version));
    }
    let object: serde_json::Map<String, serde_json::Value> =
        schema.all_columns().zip(&values).map(|(c, v)| (c.name.to_owned(), v.to_json())).collect();
    say!("{}", serde_json::to_string_pretty(&object)?);
    Ok(())
}

pub async fn scale<C: Connector>(config: &Config, connector: &C, name: &str, partitions: u32) -> Result<()> {
    let p = projection(config, name)?;
    if !(1..=256).contains(&partitions) {
        bail!("partitions must be between 1 and 256, not {partitions}");
    }
    let store = connect(connector).await?;
    let states: Vec<ProjectionState> = store.states().await?.into_iter().filter(|s| s.projection == name).collect();
    let before = states.len();
    if before == 0 {
        bail!("projection {name} is not registered yet; run `projector init` first");
    }
    let now = Utc::now();
    if let Some(held) = states.iter().find(|s| s.lease_owner.is_some() && s.lease_expires_at.is_some_and(|t| t > now)) {
        bail!(
            "{name} partition {} is leased by {} until {}; stop its runners first",
            held.partition,
            held.lease_owner.as_deref().unwrap_or("?"),
            held.lease_expires_at.map(|t| t.to_rfc3339()).unwrap_or_default()
        );
    }
    let owner = format!("scale-{}", std::process::id());
    let filter = p.events.to_filter();
    let target = with_handler!(p.handler.as_str(), |h| {
        let target = projector::runtime::align_partitions(&h, &store, name, &filter, &owner, p.batch_size)
            .await
            .with_context(|| format!("aligning the partitions of {name} (are its runners stopped?)"))?;
        store.register(name, h.schema(), &h.filter().and(&filter), partitions).await?;
        target
    });
    say!("{name}: {before} -> {partitions} partition(s), all starting at checkpoint {target}");
    if p.partitions != partitions {
        say!("set `partitions: {partitions}` for {name} in projections.yaml before starting the runners");
    }
    Ok(())
}

fn actor(args: &RepairArgs) -> String {
    args.actor
        .clone()
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

fn letter_rows(letters: &[projector::DeadLetter]) -> Vec<Vec<String>> {
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

pub async fn dlq<C: Connector>(config: &Config, connector: &C, command: DlqCommand) -> Result<()> {
    use projector::repair::{repair, RepairAction, RepairEnd};
    use projector::{DeadLetterFilter, DeadLetterQueue};
    let store = connect(connector).await?;
    let (id, what, args) = match command {
        DlqCommand::List { projection, aggregate, all, json } => {
            if let Some(p) = &projection {
                self::projection(config, p)?;
            }
            let letters = store
                .list(&DeadLetterFilter { projection, aggregate_id: aggregate, include_closed: all })
                .await
                .context("listing dead letters")?;
            if json {
                say!("{}", serde_json::to_string_pretty(&letters)?);
            } else if letters.is_empty() {
                say!("no dead letters");
            } else {
                let header = [
                    "id",
                    "projection",
                    "status",
                    "aggregate",
                    "version",
                    "event_type",
                    "attempts",
                    "last_failed",
                    "error",
                ];
                say!("{}", table::render(&header, &letter_rows(&letters)));
            }
            return Ok(());
        }
        DlqCommand::Show { id, json } => {
            let letter = store
                .get(id)
                .await?
                .ok_or_else(|| anyhow!("no dead letter {id}; `projector dlq list --all` shows them"))?;
            let actions = store.actions(id).await?;
            let events = store
                .read_aggregate(
                    letter.aggregate_id,
                    ReadBound::Versions { after: letter.version - 1, upto: letter.version },
                )
                .await?;
            if json {
                let value = serde_json::json!({ "dead_letter": letter, "event": events.first(), "actions": actions });
                say!("{}", serde_json::to_string_pretty(&value)?);
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
            return Ok(());
        }
        DlqCommand::Retry { id, repair } => (id, RepairAction::Retry, repair),
        DlqCommand::Skip { id, repair } => (id, RepairAction::Skip, repair),
        DlqCommand::Discard { id, repair } => (id, RepairAction::Discard, repair),
    };
    let letter =
        store.get(id).await?.ok_or_else(|| anyhow!("no dead letter {id}; `projector dlq list --all` shows them"))?;
    let p = projection(config, &letter.projection)?;
    let who = actor(&args);
    let outcome = with_handler!(p.handler.as_str(), |h| {
        repair(&h, &store, &p.events.to_filter(), id, what, &who, args.chunk).await
    })
    .with_context(|| format!("dlq {} {id}", what.as_str()))?;
    match outcome.end {
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
