//! `projector state`: one read-model row, now or as it was at an instant (time travel),
//! folded from the events; a column/value table, or a JSON object with `--json`.

use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use projector::config::Config;
use projector::runtime::TimeTravel;
use projector::store::snapshots::Snapshots;
use projector::upcast::Reading;
use projector::{EventFilter, EventStore, Ordering, ProjectionHandler, ProjectionStore, Record, RowKey, Value};
use projector_local::Connector;
use uuid::Uuid;

use super::{connect, projection};
use crate::handlers::{self, WithHandler};
use crate::{output, say, table};

#[derive(clap::Args)]
pub struct Args {
    /// The projection whose read-model row to show, as named in projections.yaml.
    projection: String,
    /// The row key: a UUID for user-profile, DAY/EVENT_TYPE for daily-activity.
    key: String,
    /// RFC 3339 instant, e.g. 2026-01-31T12:00:00Z.
    #[arg(long)]
    at: Option<String>,
    /// Print the row as one JSON object, a field per column (shape in the README).
    #[arg(long)]
    json: bool,
}

pub async fn execute<C: Connector>(config: &Config, connector: &C, args: Args) -> Result<()> {
    let (name, key, at) = (args.projection.as_str(), args.key.as_str(), args.at.as_deref());
    let p = projection(config, name)?;
    let at =
        at.map(|t| DateTime::parse_from_rfc3339(t).map(|t| t.with_timezone(&Utc))).transpose().with_context(|| {
            format!("--at {:?}: expected an RFC 3339 instant such as 2026-01-31T12:00:00Z", at.unwrap_or(""))
        })?;
    let store = connect(connector).await?;
    let keyring = crate::keyring::for_readers(config)?;
    let reading = Reading::new(p.events.to_filter(), handlers::enabled_upcasters(config)?)
        .decrypting(crate::keyring::decryption(config, keyring.as_ref(), name)?);
    handlers::dispatch(
        &p.handler,
        ShowState { store: &store, reading, snapshots: p.snapshots.is_some(), name, key, at, json: args.json },
    )
    .await
}

/// Folds the row for `key` from the events up to `at` (all of them without one) and
/// prints it.
struct ShowState<'a, S> {
    store: &'a S,
    reading: Reading,
    /// Start from the projection's snapshots (it keeps them).
    snapshots: bool,
    name: &'a str,
    key: &'a str,
    at: Option<DateTime<Utc>>,
    json: bool,
}

impl<S: EventStore + ProjectionStore + Snapshots> WithHandler for ShowState<'_, S> {
    type Output = Result<()>;

    async fn run<H: ProjectionHandler>(self, handler: H) -> Result<()> {
        let ShowState { store, reading, snapshots, name, key, at, json } = self;
        let handler = &handler;
        let parsed = H::Key::parse(key).map_err(|e| anyhow!("key {key:?} for {name}: {e}"))?;
        let aggregate = (handler.ordering() == Ordering::AggregateVersion).then(|| Uuid::parse_str(key).ok()).flatten();
        let travel = TimeTravel::new(handler, &EventFilter::all()).reading(&reading).snapshots(snapshots);
        let travelled = travel.row(store, &parsed, aggregate, at).await?;
        tracing::info!(
            events_read = travelled.events_read,
            from_snapshot = ?travelled.from_snapshot,
            "{name} row for key {key} replayed"
        );
        let Some((row, version)) = travelled.row else {
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
        let columns: Vec<(String, serde_json::Value)> =
            schema.all_columns().zip(&values).map(|(c, v)| (c.name.to_owned(), v.to_json())).collect();
        if json {
            return output::json(&columns.into_iter().collect::<serde_json::Map<_, _>>());
        }
        let when = at.map_or_else(|| "now".to_owned(), |t| format!("at {}", t.to_rfc3339()));
        say!("{name} row for key {key} ({when}):");
        // In the schema's column order; the JSON object sorts its fields by name.
        let rows: Vec<Vec<String>> = columns
            .iter()
            .map(|(column, value)| {
                let shown = match value {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                vec![column.clone(), shown]
            })
            .collect();
        say!("{}", table::render(&["column", "value"], &rows));
        Ok(())
    }
}
