//! From rows in memory to what a store writes: the changed rows as upserts and deletes
//! (additive columns as deltas), in chunks, and every row for time travel.

use super::{Change, Fold, Slot};
use crate::handler::ProjectionHandler;
use crate::read_model::{Merge, Record, RowKey, Value};
use crate::store::RowChanges;

impl<H: ProjectionHandler> Fold<'_, H> {
    /// The rows that differ from what is stored.
    pub fn changes(&self) -> RowChanges {
        self.change_chunks(usize::MAX).next().unwrap_or_default()
    }

    /// [`Fold::changes`] in chunks of at most `size` rows, built as they are taken, so a
    /// large flush never holds every row twice.
    pub fn change_chunks(&self, size: usize) -> impl Iterator<Item = RowChanges> + '_ {
        let mut changed = self.slots.iter().filter_map(|(key, slot)| self.change_of(key, slot));
        let size = size.max(1);
        // Nothing was ever loaded or evicted: no row of these keys exists in the table.
        let inserts_only = self.assume_absent;
        std::iter::from_fn(move || {
            let mut chunk = RowChanges { inserts_only, ..RowChanges::default() };
            for change in changed.by_ref() {
                match change {
                    Change::Upsert(values) => chunk.upserts.push(values),
                    Change::Delete(key) => chunk.deletes.push(key),
                }
                if chunk.upserts.len() + chunk.deletes.len() >= size {
                    break;
                }
            }
            (!chunk.is_empty()).then_some(chunk)
        })
    }

    fn change_of(&self, key: &H::Key, slot: &Slot<H::Row>) -> Option<Change> {
        if slot.row == slot.stored && slot.version == slot.stored_version {
            return None;
        }
        let schema = self.schema();
        let key_len = schema.key.len();
        let Some(row) = &slot.row else {
            return slot.stored.as_ref().map(|_| {
                let mut values = Vec::with_capacity(key_len);
                key.to_values(&mut values);
                Change::Delete(values)
            });
        };
        let mut values = Vec::with_capacity(key_len + schema.columns.len() + 1);
        key.to_values(&mut values);
        row.to_values(&mut values);
        if schema.has_additive_columns() {
            let mut stored = Vec::new();
            if let Some(s) = &slot.stored {
                s.to_values(&mut stored);
            }
            for (i, column) in schema.columns.iter().enumerate() {
                if column.merge == Merge::Add {
                    let old = match stored.get(i) {
                        Some(Value::BigInt(v)) => *v,
                        _ => 0,
                    };
                    if let Value::BigInt(new) = &mut values[key_len + i] {
                        *new -= old;
                    }
                }
            }
        }
        if schema.version_column.is_some() {
            values.push(Value::BigInt(slot.version));
        }
        Some(Change::Upsert(values))
    }

    /// All rows currently in memory, as stored-order values.
    pub fn rows(&self) -> Vec<Vec<Value>> {
        let schema = self.schema();
        let mut out = Vec::new();
        for (key, slot) in &self.slots {
            if let Some(row) = &slot.row {
                let mut values = Vec::new();
                key.to_values(&mut values);
                row.to_values(&mut values);
                if schema.version_column.is_some() {
                    values.push(Value::BigInt(slot.version));
                }
                out.push(values);
            }
        }
        out
    }
}
