//! Keeping decrypted values out of error texts.
//!
//! A handler that fails on an event with decrypted fields may quote them: serde's
//! "invalid type: string \"ada@example.com\", expected …" does. Such a text ends up in
//! a dead letter, a log line and a status row, none of which shredding can reach, so
//! the reader replaces every decrypted value found in it with [`REDACTED`].

use serde_json::Value;

use super::paths::{value_at, REDACTED};

/// Values shorter than this are not replaced: a one-character value would turn every
/// occurrence of that character into the marker, and names no one.
const MIN_SCRUBBED_CHARS: usize = 2;

/// The scalar texts under the listed paths of `payload` (strings as they are and as
/// `{:?}` quotes them, numbers and booleans as JSON writes them), longest first.
/// `None` when a listed path cannot be found any more (an upcaster moved it): then no
/// text about the event can be known to be free of them.
pub fn plaintext_leaves<S: AsRef<str>>(payload: &Value, listed: &[S]) -> Option<Vec<String>> {
    let mut leaves = Vec::new();
    for path in listed {
        let value = value_at(payload, path.as_ref()).ok()??;
        collect(value, &mut leaves);
    }
    leaves.retain(|leaf| leaf.chars().count() >= MIN_SCRUBBED_CHARS && leaf != REDACTED);
    leaves.sort_by_key(|leaf| std::cmp::Reverse(leaf.len()));
    leaves.dedup();
    Some(leaves)
}

/// `text` with every occurrence of a leaf replaced by [`REDACTED`].
pub fn scrub_text(text: &str, leaves: &[String]) -> String {
    let mut out = text.to_owned();
    for leaf in leaves {
        if out.contains(leaf.as_str()) {
            out = out.replace(leaf.as_str(), REDACTED);
        }
    }
    out
}

fn collect(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(text) => {
            out.push(text.clone());
            let quoted = format!("{text:?}");
            out.push(quoted[1..quoted.len() - 1].to_owned());
        }
        Value::Array(items) => items.iter().for_each(|item| collect(item, out)),
        Value::Object(map) => map.iter().for_each(|(key, item)| {
            out.push(key.clone());
            collect(item, out);
        }),
        Value::Null => {}
        scalar => out.push(scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn decrypted_values_are_replaced_in_a_message() {
        let payload = json!({"email": "ada@example.com", "name": "Ada \"Countess\"", "born": 1815, "plan": "pro"});
        let leaves = plaintext_leaves(&payload, &["email", "name", "born"]).expect("all paths present");
        let message = "invalid type: string \"ada@example.com\", expected u8; name \"Ada \\\"Countess\\\"\"; 1815; pro";
        let scrubbed = scrub_text(message, &leaves);
        assert!(
            !scrubbed.contains("ada@") && !scrubbed.contains("Countess") && !scrubbed.contains("1815"),
            "{scrubbed}"
        );
        assert!(scrubbed.contains("pro"), "fields not listed stay: {scrubbed}");
    }

    #[test]
    fn a_path_that_moved_means_nothing_can_be_vouched_for() {
        assert_eq!(plaintext_leaves(&json!({"mail": "x"}), &["email"]), None);
        let leaves = plaintext_leaves(&json!({"email": REDACTED, "age": 7}), &["email", "age"]).unwrap();
        assert!(leaves.is_empty(), "the marker and one-character values are left alone: {leaves:?}");
    }
}
