//! Subject keys on PostgreSQL: provisioning, shredding and rewrapping of wrapped data
//! keys, and the crypto audit trail ([`SubjectKeys`]).
//!
//! Provisioning and shredding of one subject take a transaction-scoped advisory lock
//! named after the subject, so a provision racing a shred either finishes first (and its
//! key is deleted) or sees the fence.

use std::future::Future;

use postgres_types::{ToSql, Type};
use projector::crypto::WrappedDek;
use projector::store::keys::{
    check_actor, check_audit_record, check_subject, AuditEntry, AuditOperation, AuditRecord, KeyLookup, Provisioned,
    Shredded, SubjectKey, SubjectKeys, FIRST_DEK_VERSION,
};
use projector::StoreError;
use tokio_postgres::{Client, Row};
use uuid::Uuid;

use crate::error::map;
use crate::PgStore;

const LOCK_SUBJECT: &str = include_str!("../sql/lock_subject.sql");
const SUBJECT_KEY_STATE: &str = include_str!("../sql/subject_key_state.sql");
const PROVISION_SUBJECT_KEY: &str = include_str!("../sql/provision_subject_key.sql");
const SUBJECT_KEYS: &str = include_str!("../sql/subject_keys.sql");
const SHRED_SUBJECT: &str = include_str!("../sql/shred_subject.sql");
const KEYS_TO_REWRAP: &str = include_str!("../sql/keys_to_rewrap.sql");
const REPLACE_WRAP: &str = include_str!("../sql/replace_wrap.sql");
const INSERT_AUDIT: &str = include_str!("../sql/insert_audit.sql");
const AUDIT_LOG: &str = include_str!("../sql/audit_log.sql");
const GUARDED_AUDIT: &str = include_str!("../sql/guarded_audit.sql");

/// The CTE `audit` that writes audit rows (their arrays from parameter `$first`) when
/// the statement's CTE `guard` returned a row.
pub(crate) fn audit_cte(first: usize) -> String {
    format!(", audit AS (\n{})\n", crate::dead_letters::renumbered(GUARDED_AUDIT, first - 1))
}

impl SubjectKeys for PgStore {
    async fn provision_subject_key(
        &self,
        subject: &str,
        candidate: &WrappedDek,
        actor: &str,
    ) -> Result<Provisioned, StoreError> {
        check_subject(subject)?;
        check_actor(actor)?;
        let client = self.client().await?;
        in_transaction(&client, async {
            lock_subject(&client, subject).await?;
            let row = client.query_typed_one(SUBJECT_KEY_STATE, &[(&subject, Type::TEXT)]).await.map_err(map)?;
            match lookup(subject, &row)? {
                KeyLookup::Erased => return Ok(Provisioned::Erased),
                KeyLookup::Found(key) => return Ok(Provisioned::Existing(key)),
                KeyLookup::Missing => {}
            }
            let (dek, kek, wrapped) = (int4(FIRST_DEK_VERSION)?, int4(candidate.kek_version())?, candidate.encode());
            client
                .query_typed(
                    PROVISION_SUBJECT_KEY,
                    &[
                        (&subject, Type::TEXT),
                        (&dek, Type::INT4),
                        (&kek, Type::INT4),
                        (&wrapped, Type::TEXT),
                        (&actor, Type::TEXT),
                    ],
                )
                .await
                .map_err(map)?;
            Ok(Provisioned::Created(SubjectKey {
                subject: subject.to_owned(),
                dek_version: FIRST_DEK_VERSION,
                wrapped: candidate.clone(),
            }))
        })
        .await
    }

    async fn subject_keys(&self, subjects: &[String]) -> Result<Vec<KeyLookup>, StoreError> {
        let client = self.client().await?;
        subject_keys(&client, subjects).await
    }

    async fn shred_subject(&self, subject: &str, actor: &str) -> Result<Shredded, StoreError> {
        check_subject(subject)?;
        check_actor(actor)?;
        let client = self.client().await?;
        in_transaction(&client, async {
            lock_subject(&client, subject).await?;
            let row = client
                .query_typed_one(SHRED_SUBJECT, &[(&subject, Type::TEXT), (&actor, Type::TEXT)])
                .await
                .map_err(map)?;
            Ok(Shredded { keys_deleted: row.get::<_, i64>(0) as u64, already_erased: row.get(1) })
        })
        .await
    }

    async fn keys_to_rewrap(
        &self,
        kek_version: u32,
        after: Option<(&str, u32)>,
        limit: u32,
    ) -> Result<Vec<SubjectKey>, StoreError> {
        let (after_subject, after_version) = after.unwrap_or(("", 0));
        let (kek, after_version, limit) = (int4(kek_version)?, int4(after_version)?, i64::from(limit));
        let client = self.client().await?;
        let rows = client
            .query_typed(
                KEYS_TO_REWRAP,
                &[(&kek, Type::INT4), (&after_subject, Type::TEXT), (&after_version, Type::INT4), (&limit, Type::INT8)],
            )
            .await
            .map_err(map)?;
        rows.iter()
            .map(|row| {
                let subject: String = row.get(0);
                let key = key_from(&subject, row.get(1), row.get(2))?;
                Ok(key)
            })
            .collect()
    }

    async fn replace_wrap(&self, key: &SubjectKey, rewrapped: &WrappedDek, actor: &str) -> Result<bool, StoreError> {
        check_actor(actor)?;
        let (dek, kek) = (int4(key.dek_version)?, int4(rewrapped.kek_version())?);
        let (old, new) = (key.wrapped.encode(), rewrapped.encode());
        let client = self.client().await?;
        let rows = client
            .query_typed(
                REPLACE_WRAP,
                &[
                    (&key.subject, Type::TEXT),
                    (&dek, Type::INT4),
                    (&old, Type::TEXT),
                    (&kek, Type::INT4),
                    (&new, Type::TEXT),
                    (&actor, Type::TEXT),
                ],
            )
            .await
            .map_err(map)?;
        Ok(!rows.is_empty())
    }

    async fn record_audit(&self, records: &[AuditRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        record_audit(&client, records).await
    }

    async fn audit_log(&self, subject: Option<&str>, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let limit = i64::from(limit);
        let client = self.client().await?;
        let rows = client.query_typed(AUDIT_LOG, &[(&subject, Type::TEXT), (&limit, Type::INT8)]).await.map_err(map)?;
        rows.iter().map(audit_entry).collect()
    }
}

/// The current key of each subject, on a client that may be inside a transaction.
pub(crate) async fn subject_keys(client: &Client, subjects: &[String]) -> Result<Vec<KeyLookup>, StoreError> {
    subjects.iter().try_for_each(|s| check_subject(s))?;
    if subjects.is_empty() {
        return Ok(Vec::new());
    }
    let rows = client.query_typed(SUBJECT_KEYS, &[(&subjects, Type::TEXT_ARRAY)]).await.map_err(map)?;
    subjects.iter().zip(&rows).map(|(subject, row)| lookup(subject, row)).collect()
}

/// Writes audit rows on a client that may be inside the caller's transaction.
pub(crate) async fn record_audit(client: &Client, records: &[AuditRecord]) -> Result<(), StoreError> {
    if records.is_empty() {
        return Ok(());
    }
    let columns = AuditColumns::new(records)?;
    let mut params = Vec::new();
    columns.push(&mut params);
    client.query_typed(INSERT_AUDIT, &params).await.map_err(map)?;
    Ok(())
}

/// Runs `work` between `BEGIN` and `COMMIT`, rolling back when it fails.
async fn in_transaction<T>(
    client: &Client,
    work: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    client.batch_execute("BEGIN").await.map_err(map)?;
    match work.await {
        Ok(value) => {
            client.batch_execute("COMMIT").await.map_err(map)?;
            Ok(value)
        }
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

async fn lock_subject(client: &Client, subject: &str) -> Result<(), StoreError> {
    client.query_typed(LOCK_SUBJECT, &[(&subject, Type::TEXT)]).await.map_err(map)?;
    Ok(())
}

/// Reads `(erased, dek_version, wrapped)`.
fn lookup(subject: &str, row: &Row) -> Result<KeyLookup, StoreError> {
    if row.get::<_, bool>(0) {
        return Ok(KeyLookup::Erased);
    }
    match row.get::<_, Option<i32>>(1) {
        None => Ok(KeyLookup::Missing),
        Some(version) => Ok(KeyLookup::Found(key_from(subject, version, row.get(2))?)),
    }
}

fn key_from(subject: &str, dek_version: i32, wrapped: String) -> Result<SubjectKey, StoreError> {
    let wrapped = WrappedDek::decode(&wrapped)
        .map_err(|e| StoreError::Database(format!("stored key of subject {subject:?} does not decode: {e}")))?;
    Ok(SubjectKey { subject: subject.to_owned(), dek_version: dek_version as u32, wrapped })
}

fn audit_entry(row: &Row) -> Result<AuditEntry, StoreError> {
    let bad = |e: tokio_postgres::Error| StoreError::Database(format!("crypto_audit row: {e}"));
    let operation: String = row.try_get(2).map_err(bad)?;
    let field_paths: serde_json::Value = row.try_get(4).map_err(bad)?;
    Ok(AuditEntry {
        id: row.try_get(0).map_err(bad)?,
        at: row.try_get(1).map_err(bad)?,
        record: AuditRecord {
            operation: AuditOperation::parse(&operation)
                .ok_or_else(|| StoreError::Database(format!("crypto_audit row: unknown operation {operation:?}")))?,
            subject: row.try_get(3).map_err(bad)?,
            field_paths: serde_json::from_value(field_paths)
                .map_err(|e| StoreError::Database(format!("crypto_audit row: field_paths: {e}")))?,
            dek_version: row.try_get::<_, Option<i32>>(5).map_err(bad)?.map(|v| v as u32),
            kek_version: row.try_get::<_, Option<i32>>(6).map_err(bad)?.map(|v| v as u32),
            event_id: row.try_get(7).map_err(bad)?,
            actor: row.try_get(8).map_err(bad)?,
            error_class: row.try_get(10).map_err(bad)?,
            count: row.try_get::<_, i64>(11).map_err(bad)? as u64,
        },
    })
}

/// Audit rows as one array per column, for `unnest`.
pub(crate) struct AuditColumns {
    operation: Vec<&'static str>,
    subject: Vec<Option<String>>,
    field_paths: Vec<serde_json::Value>,
    dek_version: Vec<Option<i32>>,
    kek_version: Vec<Option<i32>>,
    event_id: Vec<Option<Uuid>>,
    actor: Vec<String>,
    outcome: Vec<&'static str>,
    error_class: Vec<Option<String>>,
    count: Vec<i64>,
}

impl AuditColumns {
    /// The rows, checked, as arrays.
    pub(crate) fn new(records: &[AuditRecord]) -> Result<Self, StoreError> {
        records.iter().try_for_each(check_audit_record)?;
        let optional = |v: Option<u32>| v.map(int4).transpose();
        Ok(Self {
            operation: records.iter().map(|r| r.operation.as_str()).collect(),
            subject: records.iter().map(|r| r.subject.clone()).collect(),
            field_paths: records.iter().map(|r| serde_json::json!(r.field_paths)).collect(),
            dek_version: records.iter().map(|r| optional(r.dek_version)).collect::<Result<_, _>>()?,
            kek_version: records.iter().map(|r| optional(r.kek_version)).collect::<Result<_, _>>()?,
            event_id: records.iter().map(|r| r.event_id).collect(),
            actor: records.iter().map(|r| r.actor.clone()).collect(),
            outcome: records.iter().map(AuditRecord::outcome).collect(),
            error_class: records.iter().map(|r| r.error_class.clone()).collect(),
            count: records.iter().map(|r| i64::try_from(r.count).unwrap_or(i64::MAX)).collect(),
        })
    }

    /// The ten arrays, in the order `insert_audit.sql` and `guarded_audit.sql` take them.
    pub(crate) fn push<'a>(&'a self, params: &mut Vec<(&'a (dyn ToSql + Sync), Type)>) {
        params.push((&self.operation, Type::TEXT_ARRAY));
        params.push((&self.subject, Type::TEXT_ARRAY));
        params.push((&self.field_paths, Type::JSONB_ARRAY));
        params.push((&self.dek_version, Type::INT4_ARRAY));
        params.push((&self.kek_version, Type::INT4_ARRAY));
        params.push((&self.event_id, Type::UUID_ARRAY));
        params.push((&self.actor, Type::TEXT_ARRAY));
        params.push((&self.outcome, Type::TEXT_ARRAY));
        params.push((&self.error_class, Type::TEXT_ARRAY));
        params.push((&self.count, Type::INT8_ARRAY));
    }
}

fn int4(v: u32) -> Result<i32, StoreError> {
    i32::try_from(v).map_err(|_| StoreError::InvalidInput(format!("key version {v} is beyond the stored range")))
}
