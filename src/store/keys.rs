//! Subject keys and the crypto audit trail: what field encryption needs from a store.
//!
//! A subject's data key is stored only wrapped under a key-encryption key
//! ([`WrappedDek`]); the store never sees a key in the clear. Shredding a subject deletes
//! its keys and leaves an erasure fence, so nothing can provision a new key for it
//! later. Every operation that provisions, rewraps or shreds writes its audit row in
//! the same transaction as its effect.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::crypto::WrappedDek;
use crate::error::{Result, StoreError};

/// The data-key version a newly provisioned subject gets.
pub const FIRST_DEK_VERSION: u32 = 1;

/// The longest subject id, in bytes.
pub const MAX_SUBJECT_BYTES: usize = 256;

/// One subject's data key, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectKey {
    pub subject: String,
    pub dek_version: u32,
    pub wrapped: WrappedDek,
}

/// What provisioning a subject's key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provisioned {
    /// The candidate key was stored: the subject had none.
    Created(SubjectKey),
    /// The subject already had a key (perhaps from a concurrent writer): use this one.
    Existing(SubjectKey),
    /// The subject was shredded: no key may be provisioned for it again.
    Erased,
}

/// A subject's key as a reader finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLookup {
    Found(SubjectKey),
    /// Shredded: its encrypted values read as redacted.
    Erased,
    /// Never provisioned.
    Missing,
}

/// What shredding a subject did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shredded {
    pub keys_deleted: u64,
    /// The subject had been shredded before (this call only re-checked).
    pub already_erased: bool,
}

/// What an audit row records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditOperation {
    Encrypt,
    Decrypt,
    Provision,
    Wrap,
    Rewrap,
    Shred,
    /// A read or write that was refused (no grant, erased subject, retired key).
    Denied,
    /// The keyring got a new primary key-encryption key (`kek_version`).
    Rotate,
    /// The keyring's minimum version was raised to `kek_version`: keys below it retired.
    Retire,
}

impl AuditOperation {
    pub const ALL: [AuditOperation; 9] = [
        AuditOperation::Encrypt,
        AuditOperation::Decrypt,
        AuditOperation::Provision,
        AuditOperation::Wrap,
        AuditOperation::Rewrap,
        AuditOperation::Shred,
        AuditOperation::Denied,
        AuditOperation::Rotate,
        AuditOperation::Retire,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditOperation::Encrypt => "encrypt",
            AuditOperation::Decrypt => "decrypt",
            AuditOperation::Provision => "provision",
            AuditOperation::Wrap => "wrap",
            AuditOperation::Rewrap => "rewrap",
            AuditOperation::Shred => "shred",
            AuditOperation::Denied => "denied",
            AuditOperation::Rotate => "rotate",
            AuditOperation::Retire => "retire",
        }
    }

    pub fn parse(text: &str) -> Option<AuditOperation> {
        Self::ALL.into_iter().find(|op| op.as_str() == text)
    }
}

/// One audit row: who did what to which subject's keys or fields. Never plaintext,
/// never key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub operation: AuditOperation,
    pub subject: Option<String>,
    pub field_paths: Vec<String>,
    pub dek_version: Option<u32>,
    pub kek_version: Option<u32>,
    pub event_id: Option<Uuid>,
    /// The projection or operator on whose behalf it ran.
    pub actor: String,
    /// `None`: it succeeded; otherwise the error class of the failure.
    pub error_class: Option<String>,
    /// How many operations this row stands for (decrypts of one batch are grouped).
    pub count: u64,
}

impl AuditRecord {
    pub fn new(operation: AuditOperation, actor: impl Into<String>) -> Self {
        Self {
            operation,
            subject: None,
            field_paths: Vec::new(),
            dek_version: None,
            kek_version: None,
            event_id: None,
            actor: actor.into(),
            error_class: None,
            count: 1,
        }
    }

    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    pub fn key_versions(mut self, dek_version: Option<u32>, kek_version: Option<u32>) -> Self {
        self.dek_version = dek_version;
        self.kek_version = kek_version;
        self
    }

    pub fn outcome(&self) -> &'static str {
        if self.error_class.is_some() {
            "failed"
        } else {
            "ok"
        }
    }
}

/// An audit row as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub record: AuditRecord,
}

/// The key and audit storage of field encryption.
pub trait SubjectKeys {
    /// The subject's current key; when it has none, stores `candidate` as version
    /// [`FIRST_DEK_VERSION`] (with a `provision` audit row by `actor`). Two writers
    /// provisioning one subject at once end with one key: the later gets `Existing`.
    async fn provision_subject_key(&self, subject: &str, candidate: &WrappedDek, actor: &str) -> Result<Provisioned>;

    /// The current key of each subject, in the order asked (one query for a batch).
    async fn subject_keys(&self, subjects: &[String]) -> Result<Vec<KeyLookup>>;

    /// Deletes every key of the subject and fences it against new keys, with a `shred`
    /// audit row, in one transaction. Idempotent.
    async fn shred_subject(&self, subject: &str, actor: &str) -> Result<Shredded>;

    /// Keys not wrapped under `kek_version`, ordered by (subject, DEK version) after
    /// `after`; at most `limit`. Resuming from the last key seen walks every key once,
    /// also past keys that could not be rewrapped.
    async fn keys_to_rewrap(&self, kek_version: u32, after: Option<(&str, u32)>, limit: u32)
        -> Result<Vec<SubjectKey>>;

    /// Replaces `key`'s wrap with `rewrapped` (a `rewrap` audit row), only if the stored
    /// wrap is still `key.wrapped`: false when another writer changed or shredded it.
    async fn replace_wrap(&self, key: &SubjectKey, rewrapped: &WrappedDek, actor: &str) -> Result<bool>;

    async fn record_audit(&self, records: &[AuditRecord]) -> Result<()>;

    /// The newest audit rows first, of one subject or of all.
    async fn audit_log(&self, subject: Option<&str>, limit: u32) -> Result<Vec<AuditEntry>>;
}

/// Reading subjects' current keys: from a store, or inside one of its transactions (a
/// rebuild or a repair holds the store's connection, so its keys are read through it).
pub trait KeyReads {
    async fn read_keys(&mut self, subjects: &[String]) -> Result<Vec<KeyLookup>>;
}

impl<S: SubjectKeys> KeyReads for &S {
    async fn read_keys(&mut self, subjects: &[String]) -> Result<Vec<KeyLookup>> {
        self.subject_keys(subjects).await
    }
}

/// Keys read inside a rebuild.
#[derive(Debug)]
pub struct InRebuild<'s, R>(pub &'s mut R);

impl<R: crate::store::RebuildSession> KeyReads for InRebuild<'_, R> {
    async fn read_keys(&mut self, subjects: &[String]) -> Result<Vec<KeyLookup>> {
        self.0.subject_keys(subjects).await
    }
}

/// Keys read inside a repair.
#[derive(Debug)]
pub struct InRepair<'s, R>(pub &'s mut R);

impl<R: crate::store::RepairSession> KeyReads for InRepair<'_, R> {
    async fn read_keys(&mut self, subjects: &[String]) -> Result<Vec<KeyLookup>> {
        self.0.subject_keys(subjects).await
    }
}

/// A subject id is what keys are bound to: non-empty, bounded, printable.
pub fn check_subject(subject: &str) -> Result<()> {
    let bad = |why: &str| Err(StoreError::InvalidInput(format!("subject {subject:?}: {why}")));
    if subject.is_empty() {
        return bad("a subject id is empty");
    }
    if subject.len() > MAX_SUBJECT_BYTES {
        return bad(&format!("longer than {MAX_SUBJECT_BYTES} bytes"));
    }
    if subject.chars().any(char::is_control) {
        return bad("holds a control character");
    }
    Ok(())
}

/// The operator or projection named in an audit row.
pub fn check_actor(actor: &str) -> Result<()> {
    if actor.trim().is_empty() {
        return Err(StoreError::InvalidInput("an audit row names no actor".into()));
    }
    Ok(())
}

/// An audit row before it is written.
pub fn check_audit_record(record: &AuditRecord) -> Result<()> {
    check_actor(&record.actor)?;
    if let Some(subject) = &record.subject {
        check_subject(subject)?;
    }
    if record.count == 0 {
        return Err(StoreError::InvalidInput("an audit row stands for at least one operation".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_round_trip_through_their_names() {
        for op in AuditOperation::ALL {
            assert_eq!(AuditOperation::parse(op.as_str()), Some(op));
        }
        assert_eq!(AuditOperation::parse("read"), None);
    }

    #[test]
    fn subjects_are_checked() {
        assert!(check_subject("0b7c6f0e-user").is_ok());
        assert!(check_subject("").is_err());
        assert!(check_subject("a\nb").is_err());
        assert!(check_subject(&"x".repeat(MAX_SUBJECT_BYTES + 1)).is_err());
    }

    #[test]
    fn audit_rows_need_an_actor_and_a_count() {
        let row = AuditRecord::new(AuditOperation::Shred, "alice").subject("s1");
        assert!(check_audit_record(&row).is_ok());
        assert_eq!(row.outcome(), "ok");
        assert!(check_audit_record(&AuditRecord::new(AuditOperation::Shred, " ")).is_err());
        assert!(check_audit_record(&AuditRecord { count: 0, ..row }).is_err());
    }
}
