//! A cache of opened data-encryption keys by subject and DEK version, bounded in age,
//! uses and size, so a reader does not unwrap the same key for every event.
//!
//! Pure: the caller passes the current time to every call (there is no clock in the
//! core, and a Worker's clock is the request's). Evicted keys are wiped, since a
//! [`Dek`] wipes itself when dropped.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::keys::Dek;

/// How long, how often and how many keys stay cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// An entry older than this is not served (and is evicted).
    pub max_age: Duration,
    /// An entry is served at most this many times, then evicted.
    pub max_uses: u32,
    /// Past this many entries, the oldest inserted is evicted.
    pub max_entries: usize,
}

impl Default for CacheLimits {
    fn default() -> Self {
        CacheLimits { max_age: Duration::from_secs(300), max_uses: 10_000, max_entries: 1_000 }
    }
}

struct Entry {
    dek: Dek,
    inserted_at: DateTime<Utc>,
    uses: u32,
    /// Insertion order, the key of `DekCache::order`.
    seq: u64,
}

/// Opened DEKs by (subject, DEK version).
pub struct DekCache {
    limits: CacheLimits,
    entries: BTreeMap<String, BTreeMap<u32, Entry>>,
    /// Insertion order, oldest first: what to evict when full.
    order: BTreeMap<u64, (String, u32)>,
    next_seq: u64,
}

impl DekCache {
    pub fn new(limits: CacheLimits) -> Self {
        DekCache { limits, entries: BTreeMap::new(), order: BTreeMap::new(), next_seq: 0 }
    }

    pub fn limits(&self) -> CacheLimits {
        self.limits
    }

    /// The cached key, counting one use; `None` when absent, too old or used up (such
    /// an entry is evicted). A clock that went backwards counts as too old: refetching
    /// is always safe.
    pub fn get(&mut self, subject: &str, dek_version: u32, now: DateTime<Utc>) -> Option<Dek> {
        let versions = self.entries.get_mut(subject)?;
        let entry = versions.get_mut(&dek_version)?;
        if !fresh(entry, &self.limits, now) || entry.uses >= self.limits.max_uses {
            self.remove(subject, dek_version);
            return None;
        }
        entry.uses += 1;
        let dek = entry.dek.clone();
        if entry.uses >= self.limits.max_uses {
            self.remove(subject, dek_version);
        }
        Some(dek)
    }

    /// Caches a key freshly unwrapped at `now`, replacing any entry for the same
    /// subject and version; evicts the oldest entry when full.
    pub fn insert(&mut self, subject: &str, dek_version: u32, dek: Dek, now: DateTime<Utc>) {
        self.remove(subject, dek_version);
        if self.limits.max_entries == 0 || self.limits.max_uses == 0 || self.limits.max_age.is_zero() {
            return;
        }
        while self.order.len() >= self.limits.max_entries {
            let Some((_, (old_subject, old_version))) = self.order.pop_first() else { break };
            self.remove_entry(&old_subject, old_version);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, (subject.to_owned(), dek_version));
        let entry = Entry { dek, inserted_at: now, uses: 0, seq };
        self.entries.entry(subject.to_owned()).or_default().insert(dek_version, entry);
    }

    /// Drops every version of a subject's key: after the subject is shredded, or its
    /// keys rewrapped. Returns how many were cached.
    pub fn forget_subject(&mut self, subject: &str) -> usize {
        let Some(versions) = self.entries.remove(subject) else { return 0 };
        for entry in versions.values() {
            self.order.remove(&entry.seq);
        }
        versions.len()
    }

    /// Drops entries too old or used up at `now`; returns how many.
    pub fn evict_expired(&mut self, now: DateTime<Utc>) -> usize {
        let stale: Vec<(String, u32)> = self
            .entries
            .iter()
            .flat_map(|(subject, versions)| {
                versions
                    .iter()
                    .filter(|(_, e)| !fresh(e, &self.limits, now) || e.uses >= self.limits.max_uses)
                    .map(move |(version, _)| (subject.clone(), *version))
            })
            .collect();
        for (subject, version) in &stale {
            self.remove(subject, *version);
        }
        stale.len()
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    fn remove(&mut self, subject: &str, dek_version: u32) {
        if let Some(seq) = self.remove_entry(subject, dek_version) {
            self.order.remove(&seq);
        }
    }

    /// Removes from `entries` only; returns the entry's place in `order`.
    fn remove_entry(&mut self, subject: &str, dek_version: u32) -> Option<u64> {
        let versions = self.entries.get_mut(subject)?;
        let entry = versions.remove(&dek_version)?;
        if versions.is_empty() {
            self.entries.remove(subject);
        }
        Some(entry.seq)
    }
}

impl fmt::Debug for DekCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DekCache").field("limits", &self.limits).field("len", &self.len()).finish()
    }
}

fn fresh(entry: &Entry, limits: &CacheLimits, now: DateTime<Utc>) -> bool {
    (now - entry.inserted_at).to_std().is_ok_and(|age| age < limits.max_age)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + chrono::TimeDelta::milliseconds(ms)
    }

    fn key(byte: u8) -> Dek {
        Dek::from_bytes([byte; 32])
    }

    fn cache(max_age_ms: u64, max_uses: u32, max_entries: usize) -> DekCache {
        DekCache::new(CacheLimits { max_age: Duration::from_millis(max_age_ms), max_uses, max_entries })
    }

    fn hit(cache: &mut DekCache, subject: &str, version: u32, now: i64) -> Option<u8> {
        cache.get(subject, version, at(now)).map(|dek| dek.bytes()[0])
    }

    #[test]
    fn keys_are_found_by_subject_and_version() {
        let mut c = cache(1_000, 100, 10);
        assert_eq!(hit(&mut c, "ada", 1, 0), None);
        c.insert("ada", 1, key(1), at(0));
        c.insert("ada", 2, key(2), at(0));
        c.insert("bob", 1, key(3), at(0));
        assert_eq!(
            (hit(&mut c, "ada", 1, 1), hit(&mut c, "ada", 2, 1), hit(&mut c, "bob", 1, 1)),
            (Some(1), Some(2), Some(3))
        );
        assert_eq!(hit(&mut c, "bob", 2, 1), None);
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn an_entry_expires_at_its_maximum_age_or_when_the_clock_goes_back() {
        let mut c = cache(1_000, 100, 10);
        c.insert("ada", 1, key(1), at(5_000));
        assert_eq!(hit(&mut c, "ada", 1, 5_999), Some(1));
        assert_eq!(hit(&mut c, "ada", 1, 6_000), None);
        assert!(c.is_empty(), "an expired entry is evicted when asked for");
        c.insert("ada", 1, key(1), at(5_000));
        assert_eq!(hit(&mut c, "ada", 1, 4_999), None);
    }

    #[test]
    fn an_entry_serves_its_maximum_number_of_uses() {
        let mut c = cache(1_000, 3, 10);
        c.insert("ada", 1, key(1), at(0));
        for _ in 0..3 {
            assert_eq!(hit(&mut c, "ada", 1, 1), Some(1));
        }
        assert!(c.is_empty(), "the last use evicts it");
        assert_eq!(hit(&mut c, "ada", 1, 1), None);
    }

    #[test]
    fn the_oldest_entry_goes_when_full() {
        let mut c = cache(1_000, 100, 2);
        c.insert("a", 1, key(1), at(0));
        c.insert("b", 1, key(2), at(1));
        c.insert("a", 1, key(3), at(2)); // replaces: "b" is now the oldest
        c.insert("c", 1, key(4), at(3));
        assert_eq!(c.len(), 2);
        assert_eq!(hit(&mut c, "b", 1, 4), None);
        assert_eq!((hit(&mut c, "a", 1, 4), hit(&mut c, "c", 1, 4)), (Some(3), Some(4)));
    }

    #[test]
    fn a_replaced_entry_starts_over() {
        let mut c = cache(1_000, 2, 10);
        c.insert("ada", 1, key(1), at(0));
        assert_eq!(hit(&mut c, "ada", 1, 900), Some(1));
        c.insert("ada", 1, key(1), at(900));
        assert_eq!(hit(&mut c, "ada", 1, 1_500), Some(1));
        assert_eq!(hit(&mut c, "ada", 1, 1_500), Some(1));
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn forgetting_a_subject_drops_all_its_versions_only() {
        let mut c = cache(1_000, 100, 10);
        c.insert("ada", 1, key(1), at(0));
        c.insert("ada", 2, key(2), at(0));
        c.insert("bob", 1, key(3), at(0));
        assert_eq!(c.forget_subject("ada"), 2);
        assert_eq!(c.forget_subject("ada"), 0);
        assert_eq!((c.len(), hit(&mut c, "ada", 1, 1), hit(&mut c, "bob", 1, 1)), (1, None, Some(3)));
    }

    #[test]
    fn expired_and_used_up_entries_are_swept() {
        let mut c = cache(1_000, 1, 10);
        c.insert("old", 1, key(1), at(0));
        c.insert("new", 1, key(2), at(900));
        assert_eq!(c.evict_expired(at(1_000)), 1);
        assert_eq!(c.len(), 1);
        c.clear();
        assert!(c.is_empty());
    }

    #[test]
    fn zero_limits_cache_nothing() {
        for mut c in [cache(0, 1, 1), cache(1_000, 0, 1), cache(1_000, 1, 0)] {
            c.insert("ada", 1, key(1), at(0));
            assert!(c.is_empty(), "{c:?}");
        }
    }

    #[test]
    fn debug_shows_no_keys() {
        let mut c = cache(1_000, 100, 10);
        c.insert("ada", 1, key(0xab), at(0));
        let shown = format!("{c:?}");
        assert!(!shown.contains("171") && !shown.contains("ab, ab") && !shown.contains("ada"), "{shown}");
    }
}
