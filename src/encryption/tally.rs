//! Audit rows grouped: one row per subject and outcome for a batch, not one per field.

use std::collections::BTreeMap;

use crate::store::keys::{AuditOperation, AuditRecord};

type Key = (&'static str, Option<String>, Option<u32>, Option<u32>, Option<String>);

/// Audit rows of one batch (or page), merged by operation, subject, key versions and
/// outcome; the field paths of a merged row are the union of its parts'.
#[derive(Debug, Default)]
pub struct AuditTally {
    actor: String,
    rows: BTreeMap<Key, (AuditOperation, Vec<String>, u64)>,
}

impl AuditTally {
    pub fn new(actor: impl Into<String>) -> Self {
        AuditTally { actor: actor.into(), rows: BTreeMap::new() }
    }

    /// Counts one operation on `subject`'s fields `paths`; `error_class` is `None` when it
    /// succeeded.
    pub fn count(
        &mut self,
        operation: AuditOperation,
        subject: &str,
        paths: &[String],
        versions: (Option<u32>, Option<u32>),
        error_class: Option<&str>,
    ) {
        let key =
            (operation.as_str(), Some(subject.to_owned()), versions.0, versions.1, error_class.map(str::to_owned));
        let (_, known, count) = self.rows.entry(key).or_insert_with(|| (operation, Vec::new(), 0));
        for path in paths {
            if !known.contains(path) {
                known.push(path.clone());
            }
        }
        *count += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The rows counted so far, emptying the tally.
    pub fn take(&mut self) -> Vec<AuditRecord> {
        std::mem::take(&mut self.rows)
            .into_iter()
            .map(|((_, subject, dek, kek, error_class), (operation, mut paths, count))| {
                paths.sort();
                AuditRecord {
                    operation,
                    subject,
                    field_paths: paths,
                    dek_version: dek,
                    kek_version: kek,
                    event_id: None,
                    actor: self.actor.clone(),
                    error_class,
                    count,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_per_subject_and_outcome() {
        let mut tally = AuditTally::new("user-profile");
        let ok = (Some(1), Some(2));
        tally.count(AuditOperation::Decrypt, "a", &["email".into()], ok, None);
        tally.count(AuditOperation::Decrypt, "a", &["name".into(), "email".into()], ok, None);
        tally.count(AuditOperation::Decrypt, "b", &["email".into()], ok, None);
        tally.count(AuditOperation::Decrypt, "a", &["email".into()], (None, None), Some("permanent"));
        let rows = tally.take();
        assert_eq!(rows.len(), 3, "{rows:?}");
        let a = rows.iter().find(|r| r.subject.as_deref() == Some("a") && r.error_class.is_none()).unwrap();
        assert_eq!(
            (a.count, a.field_paths.clone(), a.actor.as_str()),
            (2, vec!["email".into(), "name".into()], "user-profile")
        );
        assert!(tally.is_empty());
    }
}
