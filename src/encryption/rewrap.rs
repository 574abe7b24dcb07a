//! Moving every stored data key onto the keyring's primary KEK, so older KEKs can be
//! retired. Events are never touched: only the wraps of their keys change.
//!
//! Safe to stop and run again (it starts over and finds only the keys not moved yet),
//! and to run twice at once: each replace is a compare-and-set on the stored wrap, so a
//! key another run moved (or a shred deleted) meanwhile is left as that run left it.

use crate::crypto::{CryptoError, Keyring};
use crate::error::StoreError;
use crate::store::keys::SubjectKeys;

/// Keys read per page.
pub const REWRAP_PAGE: u32 = 500;

/// What a rewrap did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RewrapOutcome {
    /// The KEK version every key was moved to.
    pub primary: u32,
    /// Keys moved onto the primary by this run.
    pub rewrapped: u64,
    /// Keys another writer changed or shredded between the read and the replace.
    pub changed_meanwhile: u64,
    /// Keys that could not be opened (a KEK missing from the keyring or retired, or a
    /// damaged wrap), by subject, with why. They stay as they were.
    pub failed: Vec<RewrapFailure>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RewrapFailure {
    pub subject: String,
    pub dek_version: u32,
    pub kek_version: u32,
    pub error: String,
}

/// Rewraps every key not under `keyring`'s primary; `progress` is called after each
/// page with the outcome so far.
pub async fn rewrap_all<S: SubjectKeys>(
    store: &S,
    keyring: &Keyring,
    actor: &str,
    mut progress: impl FnMut(&RewrapOutcome),
) -> Result<RewrapOutcome, StoreError> {
    let primary = keyring.primary_version();
    let mut outcome = RewrapOutcome { primary, ..RewrapOutcome::default() };
    let mut after: Option<(String, u32)> = None;
    loop {
        let page = store.keys_to_rewrap(primary, after.as_ref().map(|(s, v)| (s.as_str(), *v)), REWRAP_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some((last.subject.clone(), last.dek_version));
        for key in &page {
            let rewrapped = match keyring.rewrap(&key.wrapped, &key.subject) {
                Ok(rewrapped) => rewrapped,
                Err(error) => {
                    outcome.failed.push(RewrapFailure {
                        subject: key.subject.clone(),
                        dek_version: key.dek_version,
                        kek_version: key.wrapped.kek_version(),
                        error: describe(&error),
                    });
                    continue;
                }
            };
            if store.replace_wrap(key, &rewrapped, actor).await? {
                outcome.rewrapped += 1;
            } else {
                outcome.changed_meanwhile += 1;
            }
        }
        progress(&outcome);
    }
    Ok(outcome)
}

fn describe(error: &CryptoError) -> String {
    match error {
        CryptoError::KekRetired { .. } => {
            format!("{error}: lower `min` in the keyring text to rewrap it, or shred the subject")
        }
        CryptoError::UnknownKekVersion { .. } => format!("{error}: add that key back to the keyring to rewrap it"),
        other => other.to_string(),
    }
}
