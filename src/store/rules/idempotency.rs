//! Idempotency keys: a stable fingerprint of an append request, and the answer to a key
//! used again (the first outcome for the same request, a conflict for another).

use uuid::Uuid;

use crate::error::{Result, StoreError};
use crate::store::{AppendOutcome, AppendRequest, ExpectedVersion};

/// What an idempotency key was stored with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub aggregate_id: Uuid,
    /// [`request_fingerprint`] of the first append; `None` for keys stored before
    /// fingerprints were kept, for which only the aggregate is compared.
    pub fingerprint: Option<String>,
    /// What the first append wrote.
    pub outcome: AppendOutcome,
}

/// The answer to a repeated idempotency key: the first outcome when the request is the
/// same, a refusal naming the difference when it is not (as payment APIs do: a key
/// names one request, never "whatever came first").
pub fn replay_idempotent(key: &str, stored: StoredKey, request: &AppendRequest) -> Result<AppendOutcome> {
    replay_idempotent_print(key, stored, request, &request_fingerprint(request))
}

/// [`replay_idempotent`] with the request's fingerprint given (see
/// [`crate::store::AppendWith::fingerprint`]).
pub fn replay_idempotent_print(
    key: &str,
    stored: StoredKey,
    request: &AppendRequest,
    fingerprint: &str,
) -> Result<AppendOutcome> {
    if stored.aggregate_id != request.aggregate_id {
        return Err(StoreError::IdempotencyConflict {
            key: key.to_owned(),
            reason: format!(
                "it was used for aggregate {}, this append is for aggregate {}",
                stored.aggregate_id, request.aggregate_id
            ),
        });
    }
    if stored.fingerprint.is_some_and(|print| print != fingerprint) {
        return Err(StoreError::IdempotencyConflict {
            key: key.to_owned(),
            reason: format!(
                "it was used for other events on aggregate {} (versions {}..={})",
                stored.aggregate_id, stored.outcome.first_version, stored.outcome.last_version
            ),
        });
    }
    Ok(AppendOutcome { deduplicated: true, ..stored.outcome })
}

/// A stable fingerprint of everything an append says (aggregate, type, expected version,
/// and each event's id, type, payload, metadata, timestamp and encrypted fields). JSON
/// objects are read with sorted keys, so the same request always has the same print.
pub fn request_fingerprint(request: &AppendRequest) -> String {
    let mut hash = Fnv128::new();
    hash.field(request.aggregate_id.as_bytes());
    hash.field(request.aggregate_type.as_bytes());
    hash.field(
        match request.expected_version {
            ExpectedVersion::Any => "any".to_owned(),
            ExpectedVersion::Exact(v) => v.to_string(),
        }
        .as_bytes(),
    );
    for event in &request.events {
        hash.field(event.event_id.map(|id| id.to_string()).unwrap_or_default().as_bytes());
        hash.field(event.event_type.as_bytes());
        hash.json(&event.event_data);
        hash.json(&serde_json::to_value(&event.metadata).unwrap_or(serde_json::Value::Null));
        hash.field(event.timestamp.map(|t| t.to_rfc3339()).unwrap_or_default().as_bytes());
        for field in &event.encrypted_fields {
            hash.field(field.as_bytes());
        }
        hash.field(b"\xffend");
    }
    format!("fnv128:{:032x}", hash.0)
}

/// FNV-1a, 128 bits: stable across builds and platforms (unlike the std hashers), and
/// enough to tell two requests under one key apart; it guards against mistakes, not
/// against an adversary who controls both requests.
struct Fnv128(u128);

impl Fnv128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;

    fn new() -> Self {
        Self(Self::OFFSET)
    }

    fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u128::from(b);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }

    /// Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
    fn field(&mut self, bytes: &[u8]) {
        self.bytes(&(bytes.len() as u64).to_le_bytes());
        self.bytes(bytes);
    }

    fn json(&mut self, value: &serde_json::Value) {
        use serde_json::Value;
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                self.field(b"{");
                for key in keys {
                    self.field(key.as_bytes());
                    self.json(&map[key]);
                }
                self.field(b"}");
            }
            Value::Array(items) => {
                self.field(b"[");
                items.iter().for_each(|item| self.json(item));
                self.field(b"]");
            }
            scalar => self.field(scalar.to_string().as_bytes()),
        }
    }
}
