//! Subject keys on SQLite: provisioning, shredding and rewrapping of wrapped data keys,
//! and the crypto audit trail ([`SubjectKeys`]).
//!
//! Each operation is one `BEGIN IMMEDIATE` transaction: SQLite's write lock serializes a
//! provision racing a shred, as the subject lock does on PostgreSQL.

use chrono::Utc;
use projector::crypto::WrappedDek;
use projector::store::keys::{
    check_actor, check_audit_record, check_subject, AuditEntry, AuditOperation, AuditRecord, KeyLookup, Provisioned,
    Shredded, SubjectKey, SubjectKeys, FIRST_DEK_VERSION,
};
use projector::StoreError;
use rusqlite::{params, Connection, TransactionBehavior};

use crate::codec::{format_ts, format_uuid, parse_ts};
use crate::error::Context;
use crate::EmbeddedStore;

const SUBJECT_KEY_STATE: &str = include_str!("../sql/subject_key_state.sql");
const INSERT_SUBJECT_KEY: &str = include_str!("../sql/insert_subject_key.sql");
const ERASE_SUBJECT: &str = include_str!("../sql/erase_subject.sql");
const DELETE_SUBJECT_KEYS: &str = include_str!("../sql/delete_subject_keys.sql");
const KEYS_TO_REWRAP: &str = include_str!("../sql/keys_to_rewrap.sql");
const REPLACE_WRAP: &str = include_str!("../sql/replace_wrap.sql");
const INSERT_AUDIT: &str = include_str!("../sql/insert_audit.sql");
const AUDIT_LOG: &str = include_str!("../sql/audit_log.sql");

impl SubjectKeys for EmbeddedStore {
    async fn provision_subject_key(
        &self,
        subject: &str,
        candidate: &WrappedDek,
        actor: &str,
    ) -> Result<Provisioned, StoreError> {
        check_subject(subject)?;
        check_actor(actor)?;
        let context = || format!("provision the key of subject {subject:?}");
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).context(context)?;
        match lookup(&tx, subject)? {
            KeyLookup::Erased => return Ok(Provisioned::Erased),
            KeyLookup::Found(key) => return Ok(Provisioned::Existing(key)),
            KeyLookup::Missing => {}
        }
        let now = format_ts(Utc::now());
        tx.execute(
            INSERT_SUBJECT_KEY,
            params![subject, FIRST_DEK_VERSION, candidate.kek_version(), candidate.encode(), now],
        )
        .context(context)?;
        let audit = AuditRecord::new(AuditOperation::Provision, actor)
            .subject(subject)
            .key_versions(Some(FIRST_DEK_VERSION), Some(candidate.kek_version()));
        insert_audit(&tx, &audit, &now)?;
        tx.commit().context(context)?;
        Ok(Provisioned::Created(SubjectKey {
            subject: subject.to_owned(),
            dek_version: FIRST_DEK_VERSION,
            wrapped: candidate.clone(),
        }))
    }

    async fn subject_keys(&self, subjects: &[String]) -> Result<Vec<KeyLookup>, StoreError> {
        subject_keys(&self.lock(), subjects)
    }

    async fn shred_subject(&self, subject: &str, actor: &str) -> Result<Shredded, StoreError> {
        check_subject(subject)?;
        check_actor(actor)?;
        let context = || format!("shred subject {subject:?}");
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).context(context)?;
        let now = format_ts(Utc::now());
        let fenced = tx.execute(ERASE_SUBJECT, params![subject, now, actor]).context(context)?;
        let deleted = tx.execute(DELETE_SUBJECT_KEYS, params![subject]).context(context)?;
        insert_audit(&tx, &AuditRecord::new(AuditOperation::Shred, actor).subject(subject), &now)?;
        tx.commit().context(context)?;
        Ok(Shredded { keys_deleted: deleted as u64, already_erased: fenced == 0 })
    }

    async fn keys_to_rewrap(
        &self,
        kek_version: u32,
        after: Option<(&str, u32)>,
        limit: u32,
    ) -> Result<Vec<SubjectKey>, StoreError> {
        let (after_subject, after_version) = after.unwrap_or(("", 0));
        let context = || "list the keys to rewrap";
        let conn = self.lock();
        let mut statement = conn.prepare_cached(KEYS_TO_REWRAP).context(context)?;
        let rows = statement
            .query_map(params![kek_version, after_subject, after_version, limit], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?, r.get::<_, String>(2)?))
            })
            .context(context)?;
        let mut keys = Vec::new();
        for row in rows {
            let (subject, dek_version, wrapped) = row.context(context)?;
            keys.push(key_from(subject, dek_version, &wrapped)?);
        }
        Ok(keys)
    }

    async fn replace_wrap(&self, key: &SubjectKey, rewrapped: &WrappedDek, actor: &str) -> Result<bool, StoreError> {
        check_actor(actor)?;
        let context = || format!("rewrap the key of subject {:?}", key.subject);
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).context(context)?;
        let now = format_ts(Utc::now());
        let moved = tx
            .execute(
                REPLACE_WRAP,
                params![
                    key.subject,
                    key.dek_version,
                    key.wrapped.encode(),
                    rewrapped.kek_version(),
                    rewrapped.encode(),
                    now
                ],
            )
            .context(context)?;
        if moved == 1 {
            let audit = AuditRecord::new(AuditOperation::Rewrap, actor)
                .subject(key.subject.clone())
                .key_versions(Some(key.dek_version), Some(rewrapped.kek_version()));
            insert_audit(&tx, &audit, &now)?;
        }
        tx.commit().context(context)?;
        Ok(moved == 1)
    }

    async fn record_audit(&self, records: &[AuditRecord]) -> Result<(), StoreError> {
        records.iter().try_for_each(check_audit_record)?;
        if records.is_empty() {
            return Ok(());
        }
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).context(|| "record audit rows")?;
        record_audit(&tx, records)?;
        tx.commit().context(|| "record audit rows")
    }

    async fn audit_log(&self, subject: Option<&str>, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let context = || "read the crypto audit";
        let conn = self.lock();
        let mut statement = conn.prepare_cached(AUDIT_LOG).context(context)?;
        let rows = statement.query_map(params![subject, limit], RawAudit::read).context(context)?;
        rows.map(|row| row.context(context)?.decode()).collect()
    }
}

/// The current key of each subject, on a connection that may be inside a transaction.
pub(crate) fn subject_keys(conn: &Connection, subjects: &[String]) -> Result<Vec<KeyLookup>, StoreError> {
    subjects.iter().try_for_each(|s| check_subject(s))?;
    subjects.iter().map(|subject| lookup(conn, subject)).collect()
}

/// Writes audit rows on a connection inside the caller's transaction.
pub(crate) fn record_audit(conn: &Connection, records: &[AuditRecord]) -> Result<(), StoreError> {
    records.iter().try_for_each(check_audit_record)?;
    let now = format_ts(Utc::now());
    records.iter().try_for_each(|record| insert_audit(conn, record, &now))
}

fn lookup(conn: &Connection, subject: &str) -> Result<KeyLookup, StoreError> {
    let (erased, version, wrapped) = conn
        .query_row(SUBJECT_KEY_STATE, params![subject], |r| {
            Ok((r.get::<_, bool>(0)?, r.get::<_, Option<u32>>(1)?, r.get::<_, Option<String>>(2)?))
        })
        .context(|| format!("read the key of subject {subject:?}"))?;
    if erased {
        return Ok(KeyLookup::Erased);
    }
    match (version, wrapped) {
        (Some(version), Some(wrapped)) => Ok(KeyLookup::Found(key_from(subject.to_owned(), version, &wrapped)?)),
        _ => Ok(KeyLookup::Missing),
    }
}

fn key_from(subject: String, dek_version: u32, wrapped: &str) -> Result<SubjectKey, StoreError> {
    let wrapped = WrappedDek::decode(wrapped)
        .map_err(|e| StoreError::Database(format!("stored key of subject {subject:?} does not decode: {e}")))?;
    Ok(SubjectKey { subject, dek_version, wrapped })
}

fn insert_audit(conn: &Connection, record: &AuditRecord, now: &str) -> Result<(), StoreError> {
    let paths = serde_json::to_string(&record.field_paths).map_err(|e| StoreError::InvalidInput(e.to_string()))?;
    conn.execute(
        INSERT_AUDIT,
        params![
            now,
            record.operation.as_str(),
            record.subject,
            paths,
            record.dek_version,
            record.kek_version,
            record.event_id.as_ref().map(format_uuid),
            record.actor,
            record.outcome(),
            record.error_class,
            i64::try_from(record.count).unwrap_or(i64::MAX),
        ],
    )
    .context(|| format!("record a {} audit row", record.operation.as_str()))?;
    Ok(())
}

/// An audit row as SQLite hands it over, before its text columns are parsed.
struct RawAudit {
    id: i64,
    at: String,
    operation: String,
    subject: Option<String>,
    field_paths: String,
    dek_version: Option<u32>,
    kek_version: Option<u32>,
    event_id: Option<String>,
    actor: String,
    error_class: Option<String>,
    count: i64,
}

impl RawAudit {
    fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawAudit> {
        Ok(RawAudit {
            id: r.get(0)?,
            at: r.get(1)?,
            operation: r.get(2)?,
            subject: r.get(3)?,
            field_paths: r.get(4)?,
            dek_version: r.get(5)?,
            kek_version: r.get(6)?,
            event_id: r.get(7)?,
            actor: r.get(8)?,
            error_class: r.get(10)?,
            count: r.get(11)?,
        })
    }

    fn decode(self) -> Result<AuditEntry, StoreError> {
        let bad = |what: &str, e: String| StoreError::Database(format!("crypto_audit row {}: {what}: {e}", self.id));
        Ok(AuditEntry {
            id: self.id,
            at: parse_ts(&self.at).map_err(|e| bad("at", e))?,
            record: AuditRecord {
                operation: AuditOperation::parse(&self.operation)
                    .ok_or_else(|| bad("operation", self.operation.clone()))?,
                subject: self.subject.clone(),
                field_paths: serde_json::from_str(&self.field_paths).map_err(|e| bad("field_paths", e.to_string()))?,
                dek_version: self.dek_version,
                kek_version: self.kek_version,
                event_id: self
                    .event_id
                    .as_deref()
                    .map(uuid::Uuid::parse_str)
                    .transpose()
                    .map_err(|e| bad("event_id", e.to_string()))?,
                actor: self.actor.clone(),
                error_class: self.error_class.clone(),
                count: self.count as u64,
            },
        })
    }
}
