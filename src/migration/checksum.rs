//! Checksums of stored events that do not depend on how a store spells its JSON, nor on
//! the order the events are read in.
//!
//! PostgreSQL hands `jsonb` back re-spaced and with its keys re-ordered; the embedded
//! store hands back the text it was given. Each event is hashed over a canonical form
//! of its columns (object keys sorted, no spaces, a number by its value), and a set of
//! events sums its members' hashes, so chunks can add to a running checksum and a
//! verification can recompute it in any order.

use serde_json::Value;
use uuid::Uuid;

use crate::store::migrations::StoredShape;

/// A checksum of a set of events: the wrapping sum of each one's 64-bit FNV-1a hash.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Checksum(pub u64);

impl Checksum {
    /// The checksum of no events.
    pub const EMPTY: Checksum = Checksum(0);

    /// Adds one event.
    pub fn add(&mut self, event_id: Uuid, shape: &StoredShape) {
        self.0 = self.0.wrapping_add(event_hash(event_id, shape));
    }

    /// The text form a migration records (16 lower-case hex digits).
    pub fn parse(text: &str) -> Option<Checksum> {
        (text.len() == 16).then(|| u64::from_str_radix(text, 16).ok().map(Checksum)).flatten()
    }
}

impl std::fmt::Display for Checksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The hash of one event's id and the columns a migration replaces.
pub fn event_hash(event_id: Uuid, shape: &StoredShape) -> u64 {
    let mut hash = Fnv::new();
    hash.write(event_id.as_bytes());
    hash.field(shape.event_type.as_bytes());
    hash.field(canonical_text(shape.event_data.get()).as_bytes());
    hash.field(canonical_text(shape.metadata.get()).as_bytes());
    hash.0
}

/// Two shapes hold the same type and the same JSON values (however spelled).
pub fn same_content(a: &StoredShape, b: &StoredShape) -> bool {
    a.event_type == b.event_type
        && canonical_text(a.event_data.get()) == canonical_text(b.event_data.get())
        && canonical_text(a.metadata.get()) == canonical_text(b.metadata.get())
}

/// The canonical form of JSON text; text that is not JSON stands for itself (it hashes
/// as stored, and differs from any JSON).
pub fn canonical_text(text: &str) -> String {
    match serde_json::from_str::<Value>(text) {
        Ok(value) => {
            let mut out = String::with_capacity(text.len());
            canonical(&value, &mut out);
            out
        }
        Err(_) => format!("\u{0}{text}"),
    }
}

fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&canonical_number(n)),
        Value::String(s) => out.push_str(&Value::String(s.clone()).to_string()),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical(&map[key], out);
            }
            out.push('}');
        }
    }
}

/// A number by its value: `100`, `100.0` and `1e2` are one number (PostgreSQL keeps
/// `numeric` text that serde reads as a float).
fn canonical_number(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => format!("{}", f as i64),
        Some(f) => format!("{f:e}"),
        None => n.to_string(),
    }
}

/// 64-bit FNV-1a, with a separator byte between fields.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn field(&mut self, bytes: &[u8]) {
        self.write(&[0xff]);
        self.write(bytes);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use super::*;

    fn shape(event_type: &str, data: &str, metadata: &str) -> StoredShape {
        StoredShape {
            event_type: event_type.into(),
            event_data: RawValue::from_string(data.into()).unwrap(),
            metadata: RawValue::from_string(metadata.into()).unwrap(),
        }
    }

    #[test]
    fn spelling_does_not_change_the_hash_but_values_do() {
        let id = Uuid::from_u128(1);
        let compact = shape("A", r#"{"b":1,"a":[1.5,"x"]}"#, r#"{"event_version":2}"#);
        let spaced = shape("A", r#"{"a": [1.5, "x"], "b": 1.0}"#, r#"{"event_version": 2}"#);
        assert_eq!(event_hash(id, &compact), event_hash(id, &spaced));
        assert!(same_content(&compact, &spaced));
        for other in [
            shape("B", r#"{"b":1,"a":[1.5,"x"]}"#, r#"{"event_version":2}"#),
            shape("A", r#"{"b":2,"a":[1.5,"x"]}"#, r#"{"event_version":2}"#),
            shape("A", r#"{"b":1,"a":[1.5,"x"]}"#, r#"{"event_version":3}"#),
        ] {
            assert_ne!(event_hash(id, &compact), event_hash(id, &other));
        }
        assert_ne!(event_hash(id, &compact), event_hash(Uuid::from_u128(2), &compact));
    }

    #[test]
    fn a_set_checksum_ignores_order_and_round_trips_as_text() {
        let (a, b) = (shape("A", "{}", "{}"), shape("B", "{}", "{}"));
        let mut one = Checksum::EMPTY;
        one.add(Uuid::from_u128(1), &a);
        one.add(Uuid::from_u128(2), &b);
        let mut two = Checksum::EMPTY;
        two.add(Uuid::from_u128(2), &b);
        two.add(Uuid::from_u128(1), &a);
        assert_eq!(one, two);
        assert_eq!(Checksum::parse(&one.to_string()), Some(one));
        assert_eq!(Checksum::parse("xyz"), None);
        assert_eq!(Checksum::EMPTY.to_string(), "0000000000000000");
    }
}
