//! The reader's side: what a projection sees of encrypted fields.
//!
//! Every path that folds events (live batches, gap reads, rebuilds, time travel,
//! operator repairs, the Worker) reads them through [`crate::upcast::Reading`], which
//! calls [`Decryption::open`] first. There each event's payload is checked against its
//! `encrypted_fields`; the fields the projection is granted are opened, the others
//! become [`REDACTED`](crate::crypto::REDACTED). An event whose fields cannot be read
//! fails (it is dead-lettered and parks its aggregate) and is never passed on as
//! plaintext. A shredded subject's fields read as redacted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::subject::subject_of_stored;
use super::tally::AuditTally;
use crate::config::EncryptionConfig;
use crate::crypto::{
    check_encrypted_fields, envelope_dek_version, open_paths, redact_paths, value_at, CacheLimits, CryptoError, Dek,
    DekCache, EventContext, Keyring, ENVELOPE_PREFIX,
};
use crate::error::{HandlerError, StoreError};
use crate::event::DomainEvent;
use crate::store::keys::{AuditOperation, AuditRecord, KeyLookup, KeyReads};

/// A clock for the key cache (the core has none of its own).
pub type Clock = fn() -> DateTime<Utc>;

/// What a projection may decrypt, and the keys to do it with. The default grants
/// nothing: every encrypted field reads as redacted, and no key is ever touched.
#[derive(Clone, Default)]
pub struct Decryption {
    granted: Option<Arc<Granted>>,
}

struct Granted {
    keyring: Keyring,
    paths: BTreeSet<String>,
    config: EncryptionConfig,
    actor: String,
    clock: Clock,
    cache: Mutex<DekCache>,
}

impl std::fmt::Debug for Decryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.granted {
            None => f.write_str("Decryption(none)"),
            Some(g) => f
                .debug_struct("Decryption")
                .field("paths", &g.paths)
                .field("keyring", &g.keyring)
                .field("actor", &g.actor)
                .finish_non_exhaustive(),
        }
    }
}

/// What opening a batch's encrypted fields found.
#[derive(Debug, Default)]
pub struct Opened {
    /// Events whose fields could not be read, with the error to dead-letter them with.
    /// They are left as stored (sealed) and must never reach a handler.
    pub failed: Vec<(Uuid, HandlerError)>,
    /// Audit rows of the decrypts (one per subject and outcome).
    pub audit: Vec<AuditRecord>,
}

/// One subject's key, as this batch found it.
enum SubjectKey {
    Open { dek_version: u32, kek_version: u32, dek: Dek },
    Erased,
    Failed(CryptoError),
}

impl Decryption {
    /// Grants nothing: encrypted fields read as redacted.
    pub fn none() -> Decryption {
        Decryption::default()
    }

    /// Opens `paths` (a projection's `decrypt:` list) with keys wrapped by `keyring`,
    /// auditing as `actor`; `config` says whose key an event type's fields are under
    /// when its metadata does not, and how long opened keys stay cached by `clock`. An
    /// empty grant is [`Decryption::none`].
    pub fn granted(
        keyring: Keyring,
        paths: impl IntoIterator<Item = String>,
        config: &EncryptionConfig,
        actor: impl Into<String>,
        clock: Clock,
    ) -> Decryption {
        let paths: BTreeSet<String> = paths.into_iter().collect();
        if paths.is_empty() {
            return Decryption::none();
        }
        let cache = Mutex::new(DekCache::new(config.cache));
        let granted = Granted { keyring, paths, config: config.clone(), actor: actor.into(), clock, cache };
        Decryption { granted: Some(Arc::new(granted)) }
    }

    /// Whether any field is granted (then event metadata is needed: it names subjects).
    pub fn grants_any(&self) -> bool {
        self.granted.is_some()
    }

    pub fn cache_limits(&self) -> Option<CacheLimits> {
        self.granted.as_ref().map(|g| g.config.cache)
    }

    /// Checks, opens or redacts the encrypted fields of `events` in place. Keys are read
    /// once per batch, through `keys`, for the subjects whose granted fields need them
    /// and that the cache does not hold. Fails only when reading keys fails (a store
    /// error, transient or not); every problem with one event is in [`Opened::failed`].
    pub async fn open<K: KeyReads>(&self, keys: &mut K, events: &mut [DomainEvent]) -> Result<Opened, StoreError> {
        let mut opened = Opened::default();
        let actor = self.granted.as_ref().map_or("", |g| g.actor.as_str());
        let mut tally = AuditTally::new(actor);
        // Parsed payloads of the events that need a look, by index.
        let mut work: Vec<(usize, Value)> = Vec::new();
        for (index, event) in events.iter().enumerate() {
            if !needs_a_look(event) {
                continue;
            }
            match serde_json::from_str::<Value>(event.event_data.get()) {
                Ok(payload) => work.push((index, payload)),
                // Not JSON at all: the fold reports it as the payload error it is.
                Err(_) if event.encrypted_fields.is_empty() => {}
                Err(e) => opened
                    .failed
                    .push((event.event_id, encrypted(event, CryptoError::Plaintext { reason: e.to_string() }))),
            }
        }
        if work.is_empty() {
            return Ok(opened);
        }
        let subjects = match &self.granted {
            Some(granted) => granted.keys_for(keys, events, &work).await?,
            None => BTreeMap::new(),
        };
        for (index, mut payload) in work {
            let event = &mut events[index];
            let result = match &self.granted {
                None => redact_paths(&mut payload, &event.encrypted_fields).map(|()| None),
                Some(granted) => granted.open_one(event, &mut payload, &subjects, &mut tally),
            };
            match result {
                Ok(_) if event.encrypted_fields.is_empty() => {}
                Ok(_) => match serde_json::value::to_raw_value(&payload) {
                    Ok(raw) => event.event_data = raw,
                    Err(e) => opened
                        .failed
                        .push((event.event_id, encrypted(event, CryptoError::Plaintext { reason: e.to_string() }))),
                },
                Err(error) => opened.failed.push((event.event_id, encrypted(event, error))),
            }
        }
        opened.audit = tally.take();
        Ok(opened)
    }
}

impl Granted {
    /// The key of every subject some event needs for a granted field. The stored keys
    /// of all of them are read in one query every batch, so a shred takes effect at the
    /// next batch of every runner whatever the cache holds; the cache only spares the
    /// unwrap of a key opened before.
    async fn keys_for<K: KeyReads>(
        &self,
        keys: &mut K,
        events: &[DomainEvent],
        work: &[(usize, Value)],
    ) -> Result<BTreeMap<String, SubjectKey>, StoreError> {
        let now = (self.clock)();
        let mut subjects: Vec<String> = Vec::new();
        for (index, payload) in work {
            let event = &events[*index];
            if self.granted_dek_version(event, payload).is_none() {
                continue;
            }
            let subject = subject_of_stored(event, payload, &self.config);
            if !subjects.contains(&subject) {
                subjects.push(subject);
            }
        }
        let mut found: BTreeMap<String, SubjectKey> = BTreeMap::new();
        if subjects.is_empty() {
            return Ok(found);
        }
        let lookups = keys.read_keys(&subjects).await?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        for (subject, lookup) in subjects.into_iter().zip(lookups) {
            let key = match lookup {
                KeyLookup::Erased => {
                    cache.forget_subject(&subject);
                    SubjectKey::Erased
                }
                KeyLookup::Missing => {
                    cache.forget_subject(&subject);
                    SubjectKey::Failed(CryptoError::MissingKey)
                }
                KeyLookup::Found(stored) => {
                    let (dek_version, kek_version) = (stored.dek_version, stored.wrapped.kek_version());
                    // A retired or removed KEK must fail even for a key opened before.
                    let usable = self.keyring.kek(kek_version).map(drop);
                    let opened = match (usable, cache.get(&subject, dek_version, now)) {
                        (Err(error), _) => Err(error),
                        (Ok(()), Some(dek)) => Ok(dek),
                        (Ok(()), None) => self.keyring.unwrap(&stored.wrapped, &subject).inspect(|dek| {
                            cache.insert(&subject, dek_version, dek.clone(), now);
                        }),
                    };
                    match opened {
                        Ok(dek) => SubjectKey::Open { dek_version, kek_version, dek },
                        Err(error) => SubjectKey::Failed(error),
                    }
                }
            };
            found.insert(subject, key);
        }
        Ok(found)
    }

    /// The DEK version of the first granted field of the event, if it has one.
    fn granted_dek_version(&self, event: &DomainEvent, payload: &Value) -> Option<u32> {
        event.encrypted_fields.iter().filter(|path| self.paths.contains(*path)).find_map(|path| {
            match value_at(payload, path) {
                Ok(Some(Value::String(text))) => envelope_dek_version(text).ok(),
                _ => None,
            }
        })
    }

    /// Opens one event's granted fields and redacts the rest; audits what it did.
    fn open_one(
        &self,
        event: &DomainEvent,
        payload: &mut Value,
        subjects: &BTreeMap<String, SubjectKey>,
        tally: &mut AuditTally,
    ) -> Result<Option<()>, CryptoError> {
        let listed = &event.encrypted_fields;
        let granted: Vec<String> = listed.iter().filter(|p| self.paths.contains(*p)).cloned().collect();
        if granted.is_empty() {
            return redact_paths(payload, listed).map(|()| None);
        }
        check_encrypted_fields(payload, listed)?;
        let subject = subject_of_stored(event, payload, &self.config);
        let key = subjects.get(&subject);
        let context = EventContext::of(event);
        let result = open_paths(
            payload,
            listed,
            |path| self.paths.contains(path),
            &context,
            |version| match key {
                Some(SubjectKey::Open { dek_version, dek, .. }) if *dek_version == version => Ok(Some(dek.clone())),
                Some(SubjectKey::Open { .. }) => Err(CryptoError::UnknownDekVersion { version }),
                Some(SubjectKey::Erased) => Ok(None),
                Some(SubjectKey::Failed(error)) => Err(error.clone()),
                None => Err(CryptoError::MissingKey),
            },
        );
        let versions = match key {
            Some(SubjectKey::Open { dek_version, kek_version, .. }) => (Some(*dek_version), Some(*kek_version)),
            _ => (None, None),
        };
        match &result {
            Ok(_) if matches!(key, Some(SubjectKey::Erased)) => {
                tally.count(AuditOperation::Denied, &subject, &granted, versions, Some("erased"))
            }
            Ok(_) => tally.count(AuditOperation::Decrypt, &subject, &granted, versions, None),
            Err(error) => tally.count(AuditOperation::Decrypt, &subject, &granted, versions, Some(class_name(error))),
        }
        result.map(|_| Some(()))
    }
}

fn class_name(error: &CryptoError) -> &'static str {
    match error.class() {
        crate::error::ErrorClass::Transient => "transient",
        crate::error::ErrorClass::Permanent => "permanent",
    }
}

fn encrypted(event: &DomainEvent, error: CryptoError) -> HandlerError {
    HandlerError::Encrypted { event_id: event.event_id, error }
}

/// Whether an event may hold envelopes: it lists encrypted fields, or its text has the
/// envelope prefix, or a `\u` escape behind which the prefix could hide. Cheap: the
/// text is searched, not parsed, so plain events cost a scan of their bytes.
fn needs_a_look(event: &DomainEvent) -> bool {
    let text = event.event_data.get();
    !event.encrypted_fields.is_empty() || text.contains(ENVELOPE_PREFIX) || text.contains("\\u")
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;
    use serde_json::json;

    use super::*;
    use crate::crypto::{encrypt_field, FieldContext};

    /// A key source that must never be asked: nothing is granted.
    struct NoKeys;

    impl KeyReads for NoKeys {
        async fn read_keys(&mut self, _: &[String]) -> crate::error::Result<Vec<KeyLookup>> {
            panic!("a reader without a grant reads no keys")
        }
    }

    fn event(data: &str, listed: &[&str]) -> DomainEvent {
        DomainEvent {
            position: 1,
            transaction_id: 0,
            event_id: Uuid::from_u128(1),
            aggregate_id: Uuid::from_u128(2),
            aggregate_type: "user".into(),
            event_type: "UserRegistered".into(),
            event_data: serde_json::value::RawValue::from_string(data.to_owned()).unwrap(),
            metadata: serde_json::value::RawValue::from_string("{}".to_owned()).unwrap(),
            version: 1,
            timestamp: DateTime::from_timestamp(0, 0).unwrap(),
            encrypted_fields: listed.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    fn envelope() -> String {
        let at = FieldContext {
            aggregate_type: "user",
            aggregate_id: Uuid::from_u128(2),
            event_type: "UserRegistered",
            version: 1,
            path: "email",
        };
        encrypt_field(&Dek::from_bytes([7; 32]), 1, &at, &json!("ada@example.com")).unwrap()
    }

    fn open(events: &mut [DomainEvent]) -> Opened {
        Decryption::none().open(&mut NoKeys, events).now_or_never().expect("no I/O").expect("no store error")
    }

    #[test]
    fn without_a_grant_listed_fields_read_redacted_and_plain_events_are_untouched() {
        let plain = r#"{"name":"Ada",  "plan":"pro"}"#;
        let sealed = format!(r#"{{"email":"{}","plan":"pro"}}"#, envelope());
        let mut events = vec![event(plain, &[]), event(&sealed, &["email"])];
        let opened = open(&mut events);
        assert!(opened.failed.is_empty() && opened.audit.is_empty(), "{opened:?}");
        assert_eq!(events[0].event_data.get(), plain, "a plain event is not even re-serialized");
        let read: Value = serde_json::from_str(events[1].event_data.get()).unwrap();
        assert_eq!(read, json!({"email": "[redacted]", "plan": "pro"}));
    }

    #[test]
    fn an_envelope_hidden_behind_an_escape_or_a_plaintext_listed_field_fails() {
        let escaped = envelope().replacen('.', "\\u002e", 1);
        let hidden = format!(r#"{{"email":"{escaped}"}}"#);
        let mut events = vec![event(&hidden, &[]), event(r#"{"email":"ada@example.com"}"#, &["email"])];
        let opened = open(&mut events);
        let errors: Vec<String> = opened.failed.iter().map(|(_, e)| e.to_string()).collect();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].contains("holds an envelope but is not listed"), "{errors:?}");
        assert!(errors[1].contains("does not hold an envelope") && !errors[1].contains("ada@"), "{errors:?}");
        assert!(events[1].event_data.get().contains("ada@"), "a failed event is left as stored, for no handler");
    }
}
