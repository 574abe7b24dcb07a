//! The writer's side: an append whose personal fields are sealed before they reach the
//! store.
//!
//! Which fields of which event types are sealed, and under whose key, is the
//! configuration's (`encryption:` in `projections.yaml`). The associated data of every
//! envelope names the version the event is stored at: with an exact expected version
//! that is known; with `Any` the aggregate's current version is read, the events are
//! sealed for the versions after it and appended with that version expected, and a
//! concurrent append in between makes the writer read and seal again. A repeated
//! idempotency key is recognised by a fingerprint of the request as the caller made it,
//! with each sealed value replaced by its keyed digest ([`crate::crypto::DigestKey`]):
//! no plain hash of personal data is stored.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use uuid::Uuid;

use super::subject::{subject_for_append, METADATA_KEY};
use crate::config::EncryptionConfig;
use crate::crypto::{encrypt_paths, set_value_at, value_at, CryptoError, Dek, DigestKey, EventContext, Keyring};
use crate::error::StoreError;
use crate::store::keys::{check_subject, AuditOperation, AuditRecord, KeyLookup, Provisioned};
use crate::store::{rules, AppendOutcome, AppendRequest, AppendWith, EventStore, ExpectedVersion};

/// How often an `Any` append is sealed again after losing its version to a concurrent
/// append, before the conflict is reported.
const MAX_ATTEMPTS: u32 = 16;

/// An append that could not be sealed or stored.
///
/// ### Handling
/// - `Store`: as the store's error says (a `Conflict` with an exact expected version,
///   an unavailable database: retry).
/// - `Erased`: permanent; the subject was crypto-shredded and takes no personal data
///   again. Write the event without its personal fields, or not at all.
/// - `Refused`: the request does not fit the configuration (a missing subject field, a
///   reserved metadata key, `encrypted_fields` given for a sealed type); fix it.
/// - `Crypto`: the keyring cannot open the subject's key (a retired or missing KEK:
///   fix the keyring), or the random source failed (transient).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "append to aggregate {aggregate_id}: subject {subject:?} was erased (crypto-shredded); \
         no personal data can be written for it again"
    )]
    Erased { aggregate_id: Uuid, subject: String },
    #[error("append to aggregate {aggregate_id}, event {index} ({event_type:?}): {reason}")]
    Refused { aggregate_id: Uuid, index: usize, event_type: String, reason: String },
    #[error("append to aggregate {aggregate_id}: the key of subject {subject:?}: {error}")]
    Crypto { aggregate_id: Uuid, subject: String, error: CryptoError },
}

impl SealError {
    pub fn class(&self) -> crate::error::ErrorClass {
        match self {
            SealError::Store(e) => e.class(),
            SealError::Crypto { error, .. } => error.class(),
            _ => crate::error::ErrorClass::Permanent,
        }
    }
}

/// Seals the configured fields of appends, with keys wrapped by one keyring.
#[derive(Debug, Clone, Copy)]
pub struct Sealer<'a> {
    keyring: &'a Keyring,
    config: &'a EncryptionConfig,
    /// Who appends, as audit rows name it.
    actor: &'a str,
}

/// A subject's data key as the writer holds it.
struct SubjectDek {
    dek: Dek,
    dek_version: u32,
    kek_version: u32,
}

impl<'a> Sealer<'a> {
    pub fn new(keyring: &'a Keyring, config: &'a EncryptionConfig, actor: &'a str) -> Self {
        Sealer { keyring, config, actor }
    }

    /// Appends `request` with the configured fields of its events sealed (and the
    /// events of other types as they are), audited in the append's transaction.
    pub async fn append<S: EventStore>(&self, store: &S, request: AppendRequest) -> Result<AppendOutcome, SealError> {
        let sealed: Vec<Option<String>> = self.subjects(&request)?;
        if sealed.iter().all(Option::is_none) {
            return Ok(store.append(request).await?);
        }
        let keys = self.keys(store, &request, &sealed).await?;
        let fingerprint = self.fingerprint(&request, &sealed, &keys);
        let mut request = request;
        for event in request.events.iter_mut().filter(|e| e.event_id.is_none()) {
            // Named before sealing, so the audit rows can name the events.
            let id = random_id().map_err(|error| SealError::Crypto {
                aggregate_id: request.aggregate_id,
                subject: String::new(),
                error,
            })?;
            event.event_id = Some(id);
        }
        let mut attempts = 0;
        loop {
            attempts += 1;
            let current = match request.expected_version {
                ExpectedVersion::Exact(v) => v,
                ExpectedVersion::Any => store.current_version(request.aggregate_id).await?,
            };
            let (pinned, audit) = self.seal(&request, current, &sealed, &keys)?;
            let with = AppendWith { fingerprint: Some(fingerprint.clone()), audit };
            match store.append_with(pinned, with).await {
                Err(StoreError::Conflict { .. })
                    if request.expected_version == ExpectedVersion::Any && attempts < MAX_ATTEMPTS => {}
                other => return Ok(other?),
            }
        }
    }

    /// The subject of each event whose type has sealed fields (`None`: sealed as is).
    fn subjects(&self, request: &AppendRequest) -> Result<Vec<Option<String>>, SealError> {
        let mut out = Vec::with_capacity(request.events.len());
        for (i, event) in request.events.iter().enumerate() {
            let refused = |reason: String| SealError::Refused {
                aggregate_id: request.aggregate_id,
                index: i + 1,
                event_type: event.event_type.clone(),
                reason,
            };
            if event.metadata.extra.contains_key(METADATA_KEY) {
                return Err(refused(format!("the metadata key `{METADATA_KEY}` is reserved for the writer")));
            }
            if self.config.fields_of(&event.event_type).is_empty() {
                out.push(None);
                continue;
            }
            if !event.encrypted_fields.is_empty() {
                return Err(refused(
                    "`encrypted_fields` is given, but projections.yaml seals this event type's fields itself".into(),
                ));
            }
            let subject = subject_for_append(&event.event_type, request.aggregate_id, &event.event_data, self.config)
                .map_err(&refused)?;
            check_subject(&subject).map_err(|e| refused(e.to_string()))?;
            out.push(Some(subject));
        }
        Ok(out)
    }

    /// Each subject's data key: found and unwrapped, or provisioned (a race with
    /// another writer ends with one key). An erased subject is refused.
    async fn keys<S: EventStore>(
        &self,
        store: &S,
        request: &AppendRequest,
        sealed: &[Option<String>],
    ) -> Result<BTreeMap<String, SubjectDek>, SealError> {
        let mut subjects: Vec<String> = sealed.iter().flatten().cloned().collect();
        subjects.sort();
        subjects.dedup();
        let aggregate_id = request.aggregate_id;
        let crypto = |subject: &str, error| SealError::Crypto { aggregate_id, subject: subject.to_owned(), error };
        let erased = |subject: &str| SealError::Erased { aggregate_id, subject: subject.to_owned() };
        let mut keys = BTreeMap::new();
        let found = store.subject_keys(&subjects).await?;
        for (subject, lookup) in subjects.into_iter().zip(found) {
            let stored = match lookup {
                KeyLookup::Erased => return Err(erased(&subject)),
                KeyLookup::Found(stored) => stored,
                KeyLookup::Missing => {
                    let dek = Dek::generate().map_err(|e| crypto(&subject, e))?;
                    let wrapped = self.keyring.wrap(&dek, &subject).map_err(|e| crypto(&subject, e))?;
                    match store.provision_subject_key(&subject, &wrapped, self.actor).await? {
                        Provisioned::Created(key) => {
                            let key =
                                SubjectDek { dek, dek_version: key.dek_version, kek_version: wrapped.kek_version() };
                            keys.insert(subject, key);
                            continue;
                        }
                        Provisioned::Existing(stored) => stored,
                        Provisioned::Erased => return Err(erased(&subject)),
                    }
                }
            };
            let dek = self.keyring.unwrap(&stored.wrapped, &subject).map_err(|e| crypto(&subject, e))?;
            let key = SubjectDek { dek, dek_version: stored.dek_version, kek_version: stored.wrapped.kek_version() };
            keys.insert(subject, key);
        }
        Ok(keys)
    }

    /// The request's fingerprint as its caller made it, each value to be sealed
    /// replaced by its digest under the subject's key.
    fn fingerprint(
        &self,
        request: &AppendRequest,
        sealed: &[Option<String>],
        keys: &BTreeMap<String, SubjectDek>,
    ) -> String {
        let mut digested = request.clone();
        for (event, subject) in digested.events.iter_mut().zip(sealed) {
            let Some(key) = subject.as_ref().and_then(|s| keys.get(s)) else { continue };
            let digests = DigestKey::of(&key.dek);
            for path in self.config.fields_of(&event.event_type) {
                let digest = match value_at(&event.event_data, path) {
                    Ok(Some(value)) => digests.digest(path, value),
                    _ => continue,
                };
                // The path was just found, so it can be set.
                let _ = set_value_at(&mut event.event_data, path, Value::String(digest));
            }
        }
        rules::request_fingerprint(&digested)
    }

    /// The request with each sealed event's fields sealed for the version it will be
    /// stored at (after `current`), its subject in the metadata, and `Exact(current)`
    /// expected; and the audit rows of the seals.
    fn seal(
        &self,
        request: &AppendRequest,
        current: i64,
        sealed: &[Option<String>],
        keys: &BTreeMap<String, SubjectDek>,
    ) -> Result<(AppendRequest, Vec<AuditRecord>), SealError> {
        let mut pinned = request.clone();
        pinned.expected_version = ExpectedVersion::Exact(current);
        let mut audit = Vec::new();
        for (i, (event, subject)) in pinned.events.iter_mut().zip(sealed).enumerate() {
            let Some(subject) = subject else { continue };
            let key = &keys[subject];
            let version = rules::last_appended_version(request.aggregate_id, current, i + 1)?;
            let context = EventContext {
                aggregate_type: &request.aggregate_type,
                aggregate_id: request.aggregate_id,
                event_type: &event.event_type,
                version,
            };
            let paths = self.config.fields_of(&event.event_type);
            let written =
                encrypt_paths(&mut event.event_data, paths, &context, &key.dek, key.dek_version).map_err(|error| {
                    SealError::Refused {
                        aggregate_id: request.aggregate_id,
                        index: i + 1,
                        event_type: event.event_type.clone(),
                        reason: error.to_string(),
                    }
                })?;
            if written.is_empty() {
                continue;
            }
            event.metadata.extra.insert(METADATA_KEY.to_owned(), json!({ "subject": subject }));
            let mut row = AuditRecord::new(AuditOperation::Encrypt, self.actor)
                .subject(subject.clone())
                .key_versions(Some(key.dek_version), Some(key.kek_version));
            row.field_paths = written.clone();
            row.event_id = event.event_id;
            audit.push(row);
            event.encrypted_fields = written;
        }
        Ok((pinned, audit))
    }
}

/// A random (version 4) event id.
fn random_id() -> Result<Uuid, CryptoError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(uuid::Builder::from_random_bytes(bytes).into_uuid())
}
