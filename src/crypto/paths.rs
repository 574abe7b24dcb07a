//! Encrypted fields of a payload, named by path: sealing, opening, redacting and
//! checking that a payload and its `encrypted_fields` agree.
//!
//! A path names a field inside nested JSON objects by its keys joined with `.`:
//! `email`, `address.street`. Arrays are not traversed: a field inside an array is
//! encrypted by listing the array itself. Keys holding a `.` cannot be named. Listed
//! paths are unique and none lies inside another (`address` with `address.street`
//! would seal an envelope inside an envelope).
//!
//! # Redaction
//!
//! A field whose key a reader may not have, or whose subject was shredded, reads as
//! the JSON string [`REDACTED`], `"[redacted]"`: most personal fields are text, so a
//! handler that copies a string keeps working and shows a readable marker. A handler
//! whose encrypted field is not a string (a number, an object) must accept the marker
//! too (an untagged enum, or `serde_json::Value`), or such events fail to apply.

use std::collections::HashSet;

use serde_json::Value;
use uuid::Uuid;

use super::envelope::{decrypt_field, encrypt_field, envelope_dek_version, is_envelope, FieldContext};
use super::error::CryptoError;
use super::keys::Dek;
use crate::event::DomainEvent;

/// What a reader sees in place of a field it cannot decrypt.
pub const REDACTED: &str = "[redacted]";

/// [`REDACTED`] as a JSON value.
pub fn redacted() -> Value {
    Value::String(REDACTED.to_owned())
}

/// The event a payload belongs to: every field's [`FieldContext`] but the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventContext<'a> {
    pub aggregate_type: &'a str,
    pub aggregate_id: Uuid,
    pub event_type: &'a str,
    /// The aggregate's version after the event, as in [`FieldContext::version`].
    pub version: i64,
}

impl<'a> EventContext<'a> {
    pub fn of(event: &'a DomainEvent) -> Self {
        EventContext {
            aggregate_type: &event.aggregate_type,
            aggregate_id: event.aggregate_id,
            event_type: &event.event_type,
            version: event.version,
        }
    }

    pub fn field<'p>(&self, path: &'p str) -> FieldContext<'p>
    where
        'a: 'p,
    {
        FieldContext {
            aggregate_type: self.aggregate_type,
            aggregate_id: self.aggregate_id,
            event_type: self.event_type,
            version: self.version,
            path,
        }
    }
}

/// What [`decrypt_paths`] did, path by path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decrypted {
    pub decrypted: Vec<String>,
    /// Fields replaced by [`REDACTED`]: no key for the reader.
    pub redacted: Vec<String>,
}

/// Replaces the value at each path with its envelope, all or nothing, and returns the
/// paths present in the payload, which become the event's `encrypted_fields`. Absent
/// paths (or paths under a `null`) are skipped: there is nothing to protect. Fails
/// when a path crosses a non-object, or when the payload already holds an envelope.
pub fn encrypt_paths<S: AsRef<str>>(
    payload: &mut Value,
    paths: &[S],
    event: &EventContext<'_>,
    dek: &Dek,
    dek_version: u32,
) -> Result<Vec<String>, CryptoError> {
    let parsed = parse_paths(paths)?;
    // An envelope already here would be sealed again or read as unlisted later.
    if let Some(path) = find_envelopes(payload, &HashSet::new()) {
        return Err(CryptoError::UnlistedEnvelope { path });
    }
    let mut sealed = Vec::new();
    for (path, segments) in &parsed {
        if let Some(value) = lookup(payload, path, segments)? {
            sealed.push((*path, encrypt_field(dek, dek_version, &event.field(path), value)?));
        }
    }
    let mut written = Vec::with_capacity(sealed.len());
    for (path, envelope) in sealed {
        replace(payload, path, Value::String(envelope))?;
        written.push(path.to_owned());
    }
    Ok(written)
}

/// Opens every listed field in place, all or nothing. `keys` gives the subject's DEK
/// of a version, or `None` when the reader may not have it or the subject was
/// shredded: those fields become [`REDACTED`]. It is asked once per version.
///
/// The payload is first checked with [`check_encrypted_fields`]: a mismatch is an
/// error, never read as plaintext.
pub fn decrypt_paths<S: AsRef<str>>(
    payload: &mut Value,
    listed: &[S],
    event: &EventContext<'_>,
    keys: impl FnMut(u32) -> Result<Option<Dek>, CryptoError>,
) -> Result<Decrypted, CryptoError> {
    open_paths(payload, listed, |_| true, event, keys)
}

/// [`decrypt_paths`] for a reader granted only some fields: a listed field for which
/// `granted` is false becomes [`REDACTED`] unopened, and `keys` is asked only for the
/// versions of granted fields (not at all when none is granted).
pub fn open_paths<S: AsRef<str>>(
    payload: &mut Value,
    listed: &[S],
    granted: impl Fn(&str) -> bool,
    event: &EventContext<'_>,
    mut keys: impl FnMut(u32) -> Result<Option<Dek>, CryptoError>,
) -> Result<Decrypted, CryptoError> {
    check_encrypted_fields(payload, listed)?;
    let mut fetched: Vec<(u32, Option<Dek>)> = Vec::new();
    let mut opened = Vec::with_capacity(listed.len());
    for path in listed.iter().map(AsRef::as_ref) {
        if !granted(path) {
            opened.push((path, None));
            continue;
        }
        let envelope = envelope_at(payload, path)?;
        let version = envelope_dek_version(envelope)?;
        let known = fetched.iter().position(|(v, _)| *v == version);
        let index = match known {
            Some(index) => index,
            None => {
                fetched.push((version, keys(version)?));
                fetched.len() - 1
            }
        };
        let value = match &fetched[index].1 {
            Some(dek) => Some(decrypt_field(dek, &event.field(path), envelope)?),
            None => None,
        };
        opened.push((path, value));
    }
    let mut outcome = Decrypted::default();
    for (path, value) in opened {
        match value {
            Some(value) => {
                replace(payload, path, value)?;
                outcome.decrypted.push(path.to_owned());
            }
            None => {
                replace(payload, path, redacted())?;
                outcome.redacted.push(path.to_owned());
            }
        }
    }
    Ok(outcome)
}

/// Replaces every listed field with [`REDACTED`] without opening anything: for a
/// reader with no access to personal data. Checked first, like [`decrypt_paths`].
pub fn redact_paths<S: AsRef<str>>(payload: &mut Value, listed: &[S]) -> Result<(), CryptoError> {
    check_encrypted_fields(payload, listed)?;
    for path in listed {
        replace(payload, path.as_ref(), redacted())?;
    }
    Ok(())
}

/// Checks that every listed field holds an envelope and that no envelope sits
/// anywhere else (arrays included). Returns the first mismatch as a typed error.
pub fn check_encrypted_fields<S: AsRef<str>>(payload: &Value, listed: &[S]) -> Result<(), CryptoError> {
    let parsed = parse_paths(listed)?;
    for (path, segments) in &parsed {
        match lookup(payload, path, segments)? {
            None => return Err(CryptoError::MissingField { path: (*path).to_owned() }),
            Some(Value::String(text)) if is_envelope(text) => {}
            Some(_) => return Err(CryptoError::NotEncrypted { path: (*path).to_owned() }),
        }
    }
    let listed: HashSet<&str> = parsed.iter().map(|(path, _)| *path).collect();
    match find_envelopes(payload, &listed) {
        Some(path) => Err(CryptoError::UnlistedEnvelope { path }),
        None => Ok(()),
    }
}

/// Checks a list of paths as `encrypted_fields` takes them: none empty or with an
/// empty segment, none listed twice, none inside another.
pub fn check_paths<S: AsRef<str>>(paths: &[S]) -> Result<(), CryptoError> {
    parse_paths(paths).map(drop)
}

/// The value at `path` (`None` when a key on the way is missing or a parent is
/// `null`); an error when the path crosses a non-object.
pub fn value_at<'v>(payload: &'v Value, path: &str) -> Result<Option<&'v Value>, CryptoError> {
    let segments: Vec<&str> = path.split('.').collect();
    lookup(payload, path, &segments)
}

/// Replaces the value at `path`, which must be present.
pub fn set_value_at(payload: &mut Value, path: &str, value: Value) -> Result<(), CryptoError> {
    replace(payload, path, value)
}

type Parsed<'p> = Vec<(&'p str, Vec<&'p str>)>;

fn parse_paths<S: AsRef<str>>(paths: &[S]) -> Result<Parsed<'_>, CryptoError> {
    let invalid = |path: &str, reason: &str| CryptoError::InvalidPath { path: path.to_owned(), reason: reason.into() };
    let mut parsed: Parsed<'_> = Vec::with_capacity(paths.len());
    for path in paths.iter().map(AsRef::as_ref) {
        let segments: Vec<&str> = path.split('.').collect();
        if segments.iter().any(|s| s.is_empty()) {
            return Err(invalid(path, "empty, or has an empty segment"));
        }
        for (other, other_segments) in &parsed {
            if *other == path {
                return Err(invalid(path, "listed twice"));
            }
            let shorter = segments.len().min(other_segments.len());
            if segments[..shorter] == other_segments[..shorter] {
                return Err(invalid(path, &format!("overlaps {other:?}: one lies inside the other")));
            }
        }
        parsed.push((path, segments));
    }
    Ok(parsed)
}

/// The value at a path; `None` when a key is missing or a parent is `null`.
fn lookup<'v>(payload: &'v Value, path: &str, segments: &[&str]) -> Result<Option<&'v Value>, CryptoError> {
    let mut current = payload;
    for (depth, segment) in segments.iter().enumerate() {
        current = match current {
            Value::Object(map) => match map.get(*segment) {
                Some(value) => value,
                None => return Ok(None),
            },
            Value::Null if depth > 0 => return Ok(None),
            _ => {
                let parent =
                    if depth == 0 { "the payload".to_owned() } else { format!("{:?}", segments[..depth].join(".")) };
                return Err(CryptoError::InvalidPath {
                    path: path.to_owned(),
                    reason: format!("{parent} is not an object"),
                });
            }
        };
    }
    Ok(Some(current))
}

fn envelope_at<'v>(payload: &'v Value, path: &str) -> Result<&'v str, CryptoError> {
    let segments: Vec<&str> = path.split('.').collect();
    match lookup(payload, path, &segments)? {
        Some(Value::String(text)) if is_envelope(text) => Ok(text),
        Some(_) => Err(CryptoError::NotEncrypted { path: path.to_owned() }),
        None => Err(CryptoError::MissingField { path: path.to_owned() }),
    }
}

/// Sets the value at a path that [`lookup`] found.
fn replace(payload: &mut Value, path: &str, value: Value) -> Result<(), CryptoError> {
    let mut current = payload;
    let mut segments = path.split('.').peekable();
    while let Some(segment) = segments.next() {
        let Value::Object(map) = current else { break };
        let Some(slot) = map.get_mut(segment) else { break };
        if segments.peek().is_none() {
            *slot = value;
            return Ok(());
        }
        current = slot;
    }
    Err(CryptoError::MissingField { path: path.to_owned() })
}

enum Segment<'v> {
    Key(&'v str),
    Index(usize),
}

/// The path of an envelope not in `listed`, walking objects and arrays, shown as
/// `a.b[2].c`. Iterative, so no payload is deep enough to exhaust the stack; a path
/// is only spelled out for an envelope.
fn find_envelopes(payload: &Value, listed: &HashSet<&str>) -> Option<String> {
    // Depth-first: a node's ancestors are the first `depth - 1` entries of `trail`.
    let mut stack: Vec<(&Value, usize, Option<Segment<'_>>)> = vec![(payload, 0, None)];
    let mut trail: Vec<Segment<'_>> = Vec::new();
    while let Some((value, depth, segment)) = stack.pop() {
        trail.truncate(depth.saturating_sub(1));
        trail.extend(segment);
        match value {
            Value::String(text) if is_envelope(text) => {
                // Paths name object keys only, so nothing inside an array is listed.
                let nameable = trail.iter().all(|s| matches!(s, Segment::Key(_)));
                let path = show(&trail);
                if !(nameable && listed.contains(path.as_str())) {
                    return Some(path);
                }
            }
            Value::Object(map) => {
                stack.extend(map.iter().map(|(key, child)| (child, depth + 1, Some(Segment::Key(key)))));
            }
            Value::Array(items) => {
                stack.extend(items.iter().enumerate().map(|(i, child)| (child, depth + 1, Some(Segment::Index(i)))));
            }
            _ => {}
        }
    }
    None
}

fn show(trail: &[Segment<'_>]) -> String {
    let mut path = String::new();
    for segment in trail {
        match segment {
            Segment::Key(key) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Segment::Index(i) => path.push_str(&format!("[{i}]")),
        }
    }
    path
}

#[cfg(test)]
mod tests;
