//! When a claim may take a partition whose lease another owner still holds: at once when
//! the owner is known to be dead, otherwise only once the lease expires.
//!
//! The lease row and the batch commit's compare-and-set stay the only fencing: knowing an
//! owner is dead only lets a claim skip the wait, and a stale owner that is not dead after
//! all has its next commit refused because the lease names someone else.

use std::time::Duration;

/// Seed of the hash that turns an owner id into the key of its session lock (PostgreSQL
/// `hashtextextended(owner, seed)`): every store and every runner derive the same key.
pub const OWNER_LOCK_SEED: i64 = 0x7072_6f6a_6563_746f;

/// How a store learns that a lease's owner is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerLiveness {
    /// Every runner holds a lock named by its owner id for as long as its database session
    /// lives, taken before its first claim, and its leases record that it holds it. A claim
    /// that finds such a lease probes the lock: if it can take it, the session (and so the
    /// owner) is gone and the lease is taken over at once. A lease whose holder holds no
    /// lock is never probed (it would look dead).
    SessionLock,
    /// Only the lease's expiry says the owner is gone: a transaction-mode pooler has no
    /// sessions to hold a lock in, and the embedded store has no server sessions at all.
    Expiry,
}

impl OwnerLiveness {
    /// Whether claims probe (and hold) owner locks.
    pub fn session_locks(self) -> bool {
        self == Self::SessionLock
    }
}

/// A PostgreSQL store on a direct connection proves liveness with session locks; through a
/// transaction-mode pooler (`pooled`) a session lock would outlive the runner on a pooled
/// server connection, or be taken on one connection and probed from another, so it waits
/// for expiry.
pub fn owner_liveness(pooled: bool) -> OwnerLiveness {
    if pooled {
        OwnerLiveness::Expiry
    } else {
        OwnerLiveness::SessionLock
    }
}

/// The longest a runner waits between claims of a partition another owner holds: a claim
/// can take it over as soon as its owner is gone, so waiting for the expiry
/// (`lease_ttl`) would waste the takeover.
pub const MAX_CLAIM_RETRY: Duration = Duration::from_secs(1);

/// How long to wait before claiming again a partition another owner holds: half the lease
/// (it may expire by then), but at most [`MAX_CLAIM_RETRY`].
pub fn claim_retry(lease_ttl: Duration) -> Duration {
    (lease_ttl / 2).min(MAX_CLAIM_RETRY)
}

/// Whether a claim by `claimant` may take a lease held by `owner` right now: the lease is
/// free, ours, expired, or held under a session lock whose owner is gone. Stores write
/// this as SQL in their claim statement; this is the rule they translate.
pub fn may_claim(owner: Option<&str>, claimant: &str, expired: bool, owner_locked: bool, owner_gone: bool) -> bool {
    match owner {
        None => true,
        Some(owner) => owner == claimant || expired || (owner_locked && owner_gone),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_lease_of_another_owner_is_taken_only_when_its_locked_owner_is_gone() {
        assert!(may_claim(None, "b", false, false, false));
        assert!(may_claim(Some("b"), "b", false, false, false));
        assert!(may_claim(Some("a"), "b", true, false, false));
        assert!(!may_claim(Some("a"), "b", false, false, false));
        assert!(!may_claim(Some("a"), "b", false, false, true), "an owner without a lock only looks gone");
        assert!(!may_claim(Some("a"), "b", false, true, false));
        assert!(may_claim(Some("a"), "b", false, true, true));
        assert_eq!(owner_liveness(true), OwnerLiveness::Expiry);
        assert!(owner_liveness(false).session_locks());
        assert_eq!(claim_retry(Duration::from_secs(30)), MAX_CLAIM_RETRY);
        assert_eq!(claim_retry(Duration::from_millis(500)), Duration::from_millis(250));
    }
}
