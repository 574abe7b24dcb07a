//! `projector keys`: the keyring's life (init, rotate, retire), moving data keys onto
//! the primary key-encryption key (rewrap), and crypto-shredding a subject (shred).
//!
//! The keyring is read from where `projections.yaml` says (`encryption.keyring_env` or
//! `keyring_file`); a new keyring text goes to a file created with mode 0600, to the
//! configured keyring file (replaced atomically), or to standard output.
//!
//! A shred also appends `SubjectErased` to the subject's aggregate, once (an idempotency
//! key per subject), so that read models redact what they hold of it as they apply it.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use projector::config::{Config, KeyringSource};
use projector::crypto::Keyring;
use projector::encryption::{rewrap_all, RewrapOutcome, SUBJECT_ERASED};
use projector::store::keys::{AuditOperation, AuditRecord, SubjectKeys};
use projector::{AppendRequest, EventStore, ExpectedVersion, NewEvent, ReadBound};
use projector_local::Connector;
use zeroize::Zeroizing;

use super::connect;
use crate::keyring::{actor, check_private, load, write_private};
use crate::{output, say};

#[derive(Subcommand)]
pub enum Command {
    /// Generates a new keyring (one fresh key-encryption key, v1) for
    /// `encryption.keyring_env` or `keyring_file`.
    Init(InitArgs),
    /// Adds a fresh key-encryption key, one version above the highest, as primary, and
    /// writes the new keyring; data keys stay under their old KEK until `keys rewrap`.
    Rotate(WriteArgs),
    /// Re-wraps every data key that is not under the primary key-encryption key. Safe to
    /// stop and run again, and to run twice at once.
    Rewrap(RewrapArgs),
    /// Raises the keyring's minimum version: KEKs below it may no longer unwrap. Refused
    /// while a data key is still wrapped under one of them (run `keys rewrap` first).
    Retire(RetireArgs),
    /// Crypto-shreds a subject: deletes its data keys and fences it, so its encrypted
    /// fields read as redacted forever and no new key is ever provisioned for it.
    Shred(ShredArgs),
}

#[derive(clap::Args)]
pub struct InitArgs {
    /// Write the keyring to this new file (created with mode 0600; an existing file is
    /// never overwritten) instead of standard output.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Print the outcome as one JSON object (shape in the README).
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct WriteArgs {
    /// Write the new keyring to this new file (mode 0600). Default: replace the
    /// configured `keyring_file` atomically, or print to standard output when the
    /// keyring comes from `keyring_env`.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Print the outcome as one JSON object (shape in the README).
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct RewrapArgs {
    /// Print the outcome as one JSON object (shape in the README), without a progress bar.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct RetireArgs {
    /// The new minimum version, `v<N>` or `<N>`: KEKs below it are retired. At most
    /// the primary.
    #[arg(value_name = "VERSION")]
    version: String,
    #[command(flatten)]
    write: WriteArgs,
}

#[derive(clap::Args)]
pub struct ShredArgs {
    /// The subject whose keys are deleted: an aggregate id, or the value of the
    /// event type's `encryption.subjects` field.
    subject: String,
    /// The aggregate `SubjectErased` is appended to. Default: the subject, when it is
    /// an aggregate id (a UUID); otherwise no event is appended.
    #[arg(long, value_name = "UUID")]
    aggregate: Option<uuid::Uuid>,
    /// That aggregate's type. Default: the type of its stored events.
    #[arg(long, value_name = "TYPE")]
    aggregate_type: Option<String>,
    /// Print the outcome as one JSON object (shape in the README).
    #[arg(long)]
    json: bool,
}

/// `keys init|rotate|retire --json`: never the keys themselves when they went to a file.
#[derive(serde::Serialize)]
struct KeyringReport {
    versions: Vec<u32>,
    primary: u32,
    min: u32,
    /// Where the keyring was written; `null`: it is in `keyring`.
    file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    keyring: Option<String>,
}

/// `keys shred --json`.
#[derive(serde::Serialize)]
struct ShredReport<'a> {
    subject: &'a str,
    keys_deleted: u64,
    already_erased: bool,
    /// Projections granted decrypted fields: their read models may hold the subject's
    /// values until rebuilt.
    rebuild: Vec<&'a str>,
    /// The `SubjectErased` event; `null`: the subject names no aggregate.
    erased_event: Option<ErasedEvent>,
}

/// Where `SubjectErased` went.
#[derive(serde::Serialize)]
pub(super) struct ErasedEvent {
    aggregate_id: uuid::Uuid,
    aggregate_type: String,
    version: i64,
    /// True when an earlier shred had appended it: nothing was appended now.
    deduplicated: bool,
}

impl Command {
    /// `keys init` needs neither configuration nor store.
    pub fn standalone(&self) -> Option<Result<()>> {
        match self {
            Command::Init(args) => Some(init(args)),
            _ => None,
        }
    }

    pub async fn execute<C: Connector>(self, config: &Config, connector: &C) -> Result<()> {
        match self {
            Command::Init(args) => init(&args),
            Command::Rotate(args) => {
                let keyring = load(config)?;
                let text = keyring.rotate().context("adding a key-encryption key")?;
                write(config, &text, &args, "rotated")?;
                let primary = Keyring::parse(&text)?.primary_version();
                audit_keyring(connector, AuditOperation::Rotate, primary, "keys rotate").await?;
                if !args.json {
                    eprintln!(
                        "next: give every runner and writer the new keyring, then run `projector keys rewrap`, \
                         then `projector keys retire v{}`",
                        Keyring::parse(&text)?.primary_version()
                    );
                }
                Ok(())
            }
            Command::Rewrap(args) => rewrap(config, connector, &args).await,
            Command::Retire(args) => retire(config, connector, &args).await,
            Command::Shred(args) => shred(config, connector, &args).await,
        }
    }
}

fn init(args: &InitArgs) -> Result<()> {
    let keyring = Keyring::generate().context("generating a key-encryption key")?;
    let text = keyring.to_text();
    match &args.out {
        Some(path) => {
            write_private(path, &text, false)?;
            report(&keyring, Some(path), None, args.json, "created")
        }
        None => report(&keyring, None, Some(text), args.json, "created"),
    }
}

/// Writes `text` where `args` or the configuration says, and reports it.
fn write(config: &Config, text: &Zeroizing<String>, args: &WriteArgs, what: &str) -> Result<()> {
    let keyring = Keyring::parse(text)?;
    let target: Option<(&Path, bool)> = match (&args.out, &config.encryption.keyring) {
        (Some(path), _) => Some((path, false)),
        (None, Some(KeyringSource::File(path))) => Some((path, true)),
        (None, _) => None,
    };
    match target {
        Some((path, replace)) => {
            if replace {
                check_private(path)?;
            }
            write_private(path, text, replace)?;
            report(&keyring, Some(path), None, args.json, what)
        }
        None => report(&keyring, None, Some(text.clone()), args.json, what),
    }
}

fn report(
    keyring: &Keyring,
    file: Option<&Path>,
    text: Option<Zeroizing<String>>,
    json: bool,
    what: &str,
) -> Result<()> {
    let versions: Vec<u32> = keyring.versions().collect();
    if json {
        return output::json(&KeyringReport {
            versions,
            primary: keyring.primary_version(),
            min: keyring.min_version(),
            file: file.map(|p| p.display().to_string()),
            keyring: text.as_ref().map(|t| t.to_string()),
        });
    }
    let summary = format!(
        "keyring {what}: versions {}, primary v{}, min v{}",
        versions.iter().map(|v| format!("v{v}")).collect::<Vec<_>>().join(", "),
        keyring.primary_version(),
        keyring.min_version()
    );
    match (file, text) {
        (Some(path), _) => say!("{summary}; written to {} (mode 0600)", path.display()),
        (None, Some(text)) => {
            // The summary goes to stderr, so stdout is the keyring alone (for a secret store).
            eprintln!("{summary}; the keyring text follows on standard output, handle it as a secret");
            say!("{}", text.as_str());
        }
        (None, None) => say!("{summary}"),
    }
    Ok(())
}

async fn rewrap<C: Connector>(config: &Config, connector: &C, args: &RewrapArgs) -> Result<()> {
    let keyring = load(config)?;
    let store = connect(connector).await?;
    let shown = !args.json && std::io::stderr().is_terminal();
    let bar = if shown { indicatif::ProgressBar::new_spinner() } else { indicatif::ProgressBar::hidden() };
    bar.set_message(format!("re-wrapping data keys under v{}", keyring.primary_version()));
    let who = actor("keys rewrap");
    let outcome = rewrap_all(&store, &keyring, &who, |so_far: &RewrapOutcome| {
        bar.set_message(format!(
            "re-wrapping data keys under v{}: {} moved, {} changed meanwhile, {} failed",
            so_far.primary,
            so_far.rewrapped,
            so_far.changed_meanwhile,
            so_far.failed.len()
        ));
        bar.tick();
    })
    .await?;
    bar.finish_and_clear();
    if args.json {
        output::json(&outcome)?;
    } else {
        say!(
            "re-wrapped {} data key(s) under v{}; {} changed by another writer meanwhile",
            outcome.rewrapped,
            outcome.primary,
            outcome.changed_meanwhile
        );
        for failure in &outcome.failed {
            say!(
                "  subject {:?} (data key v{}, under v{}): {}",
                failure.subject,
                failure.dek_version,
                failure.kek_version,
                failure.error
            );
        }
    }
    if !outcome.failed.is_empty() {
        bail!(
            "{} data key(s) could not be re-wrapped; they stay under their old key-encryption key",
            outcome.failed.len()
        );
    }
    Ok(())
}

async fn retire<C: Connector>(config: &Config, connector: &C, args: &RetireArgs) -> Result<()> {
    let keyring = load(config)?;
    let text = args.version.trim();
    let min: u32 = text
        .strip_prefix('v')
        .unwrap_or(text)
        .parse()
        .ok()
        .filter(|v| *v > 0)
        .with_context(|| format!("{:?} is not a key version: give `v<N>` or `<N>`", args.version))?;
    let store = connect(connector).await?;
    let mut below = 0u64;
    let mut after: Option<(String, u32)> = None;
    loop {
        let page =
            store.keys_to_rewrap(keyring.primary_version(), after.as_ref().map(|(s, v)| (s.as_str(), *v)), 500).await?;
        let Some(last) = page.last() else { break };
        after = Some((last.subject.clone(), last.dek_version));
        below += page.iter().filter(|k| k.wrapped.kek_version() < min).count() as u64;
    }
    if below > 0 {
        bail!(
            "{below} data key(s) are still wrapped under a key-encryption key below v{min}: retiring it would make \
             their fields unreadable; run `projector keys rewrap` first"
        );
    }
    let new = keyring.with_min_version(min).with_context(|| format!("retiring the keys below v{min}"))?;
    write(config, &new, &args.write, "retired")?;
    audit_keyring(connector, AuditOperation::Retire, min, "keys retire").await
}

/// Records a change of the keyring, once it is written.
async fn audit_keyring<C: Connector>(
    connector: &C,
    operation: AuditOperation,
    version: u32,
    command: &str,
) -> Result<()> {
    let row = AuditRecord::new(operation, actor(command)).key_versions(None, Some(version));
    let recorded = async { connect(connector).await?.record_audit(&[row]).await.map_err(anyhow::Error::from) };
    recorded.await.with_context(|| {
        format!("the new keyring was written, but its {} audit row could not be recorded", operation.as_str())
    })
}

async fn shred<C: Connector>(config: &Config, connector: &C, args: &ShredArgs) -> Result<()> {
    let store = connect(connector).await?;
    let shredded = store.shred_subject(&args.subject, &actor("keys shred")).await?;
    let erased_event = append_erased(&store, &args.subject, args.aggregate, args.aggregate_type.as_deref())
        .await
        .with_context(|| {
            format!(
                "subject {:?} is shredded, but its {SUBJECT_ERASED} event was not appended; \
                 run `keys shred` again once the cause is fixed",
                args.subject
            )
        })?;
    let rebuild: Vec<&str> =
        config.projections.iter().filter(|(_, p)| !p.decrypt.is_empty()).map(|(name, _)| name.as_str()).collect();
    if args.json {
        return output::json(&ShredReport {
            subject: &args.subject,
            keys_deleted: shredded.keys_deleted,
            already_erased: shredded.already_erased,
            rebuild,
            erased_event,
        });
    }
    if shredded.already_erased {
        say!("subject {:?} was shredded before; {} key(s) deleted now", args.subject, shredded.keys_deleted);
    } else {
        say!(
            "subject {:?} shredded: {} data key(s) deleted; its encrypted fields read as redacted from now on",
            args.subject,
            shredded.keys_deleted
        );
    }
    match erased_event {
        Some(e) if e.deduplicated => {
            say!("  {SUBJECT_ERASED} was appended before, to {} aggregate {}", e.aggregate_type, e.aggregate_id)
        }
        Some(e) => say!(
            "  {SUBJECT_ERASED} appended to {} aggregate {} (version {})",
            e.aggregate_type,
            e.aggregate_id,
            e.version
        ),
        None => {
            say!("  no {SUBJECT_ERASED} event: the subject is not an aggregate id; give `--aggregate` to append one")
        }
    }
    for name in rebuild {
        say!("  {name} is granted decrypted fields: rebuild it (`projector rebuild {name}`) to drop what it read");
    }
    Ok(())
}

/// Appends `SubjectErased` to the subject's aggregate (`aggregate`, or the subject when
/// it is an aggregate id; `None`: neither), once per subject.
pub(super) async fn append_erased<S: EventStore>(
    store: &S,
    subject: &str,
    aggregate: Option<uuid::Uuid>,
    aggregate_type: Option<&str>,
) -> Result<Option<ErasedEvent>> {
    let Some(aggregate_id) = aggregate.or_else(|| uuid::Uuid::parse_str(subject).ok()) else {
        return Ok(None);
    };
    let aggregate_type = match aggregate_type {
        Some(t) => t.to_owned(),
        None => {
            let first = store.read_aggregate(aggregate_id, ReadBound::Versions { after: 0, upto: 1 }).await?;
            first.into_iter().next().map(|e| e.aggregate_type).with_context(|| {
                format!("aggregate {aggregate_id} has no events to take its type from: give `--aggregate-type`")
            })?
        }
    };
    let request = AppendRequest {
        aggregate_id,
        aggregate_type: aggregate_type.clone(),
        expected_version: ExpectedVersion::Any,
        events: vec![NewEvent::new(SUBJECT_ERASED, serde_json::json!({ "subject": subject }))],
        idempotency_key: Some(format!("{SUBJECT_ERASED}:{subject}")),
    };
    let outcome = store.append(request).await?;
    Ok(Some(ErasedEvent {
        aggregate_id,
        aggregate_type,
        version: outcome.last_version,
        deduplicated: outcome.deduplicated,
    }))
}
