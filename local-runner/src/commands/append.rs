//! `projector append`: appends events given as JSON lines, one append per line, from a
//! file or stdin.
//!
//! Every line says which version it expects (`expected_version`: a number, `"no_stream"`
//! or `"any"`), so an unchecked append is always a choice. Events are stamped with the
//! store's clock; `--keep-timestamps` imports history with the `timestamp`s it gives.
//!
//! The fields `projections.yaml` encrypts (`encryption.fields`) are sealed before they
//! reach the store, with the configured keyring; a line may not set `encrypted_fields`
//! for such an event type itself.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use projector::config::Config;
use projector::encryption::Sealer;
use projector::{AppendRequest, EventStore, ExpectedVersion, Metadata, NewEvent};
use projector_local::Connector;
use serde::Deserialize;
use uuid::Uuid;

use super::connect;
use crate::{output, say};

#[derive(clap::Args)]
pub struct Args {
    /// File of JSON lines; `-` or absent reads stdin.
    file: Option<PathBuf>,
    /// Keep each event's `timestamp` (importing history); without it a line giving one
    /// is refused, and events are stamped with the store's clock.
    #[arg(long)]
    keep_timestamps: bool,
    /// Print the counts as one JSON object (shape in the README).
    #[arg(long)]
    json: bool,
}

/// `append --json`.
#[derive(serde::Serialize)]
struct Report {
    source: String,
    appends: u64,
    events: u64,
    repeated: u64,
}

/// `expected_version` of an append line.
#[derive(Deserialize)]
#[serde(untagged)]
enum Expected {
    Version(i64),
    Word(String),
}

impl Expected {
    fn parse(field: Option<Expected>) -> Result<ExpectedVersion> {
        match field {
            None => bail!(
                "missing `expected_version`: give the aggregate's current version (0 for a new one),                  \"no_stream\", or \"any\" to append without a concurrency check"
            ),
            // Negative numbers are the store's to refuse, by the one rule for every appender.
            Some(Expected::Version(v)) => Ok(ExpectedVersion::Exact(v)),
            Some(Expected::Word(w)) if w == "any" => Ok(ExpectedVersion::Any),
            Some(Expected::Word(w)) if w == "no_stream" => Ok(ExpectedVersion::Exact(0)),
            Some(Expected::Word(w)) => {
                bail!("`expected_version` {w:?} is not a version: give a number, \"no_stream\" or \"any\"")
            }
        }
    }
}

/// One line of `projector append` input: either `events: [...]` or one event inline.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppendLine {
    aggregate_id: Uuid,
    aggregate_type: String,
    #[serde(default)]
    expected_version: Option<Expected>,
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
    fn into_request(self, keep_timestamps: bool) -> Result<AppendRequest> {
        let expected_version = Expected::parse(self.expected_version)?;
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
        if !keep_timestamps {
            if let Some(at) = events.iter().find_map(|e| e.timestamp) {
                bail!(
                    "an event gives `timestamp` {}, but events are stamped with the store's clock; \
                     pass --keep-timestamps to import history with its own timestamps",
                    at.to_rfc3339()
                );
            }
        }
        Ok(AppendRequest {
            aggregate_id: self.aggregate_id,
            aggregate_type: self.aggregate_type,
            expected_version,
            events,
            idempotency_key: self.idempotency_key,
        })
    }
}

pub async fn execute<C: Connector>(config: &Config, connector: &C, args: Args) -> Result<()> {
    let file = args.file.as_deref();
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
    // Read once, before the first line: a writer that must seal never appends without keys.
    let keyring = if config.encryption.seals_anything() { Some(crate::keyring::load(config)?) } else { None };
    let actor = crate::keyring::actor("append");
    let sealer = keyring.as_ref().map(|k| Sealer::new(k, &config.encryption, &actor));
    let (mut appends, mut events, mut repeated) = (0u64, 0u64, 0u64);
    for (i, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("{name}:{}: cannot read", i + 1))?;
        // Editors on some systems start UTF-8 files with a byte-order mark.
        let line = if i == 0 { line.strip_prefix('\u{feff}').unwrap_or(&line) } else { &line };
        if line.trim().is_empty() {
            continue;
        }
        let at = |what: &str| format!("{name}:{}: {what} ({appends} earlier line(s) were appended)", i + 1);
        let parsed: AppendLine = serde_json::from_str(line).with_context(|| at("not a valid append line"))?;
        let request = parsed.into_request(args.keep_timestamps).with_context(|| at("not a valid append line"))?;
        let outcome = match &sealer {
            Some(sealer) => sealer.append(&store, request).await.map_err(anyhow::Error::from),
            None => store.append(request).await.map_err(anyhow::Error::from),
        }
        .with_context(|| at("append failed"))?;
        if outcome.deduplicated {
            repeated += 1;
        } else {
            appends += 1;
            events += outcome.event_ids.len() as u64;
        }
    }
    if args.json {
        return output::json(&Report { source: name, appends, events, repeated });
    }
    say!("appended {events} event(s) in {appends} append(s); {repeated} repeated idempotency key(s) wrote nothing");
    Ok(())
}
