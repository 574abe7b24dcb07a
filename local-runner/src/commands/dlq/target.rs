//! Which dead letter an operator means: the letter's own id, as `dlq list` shows it, or
//! the id of its event, as logs and alerts show it.

use anyhow::{anyhow, bail, Context, Result};
use projector::config::Config;
use projector::{DeadLetter, DeadLetterFilter, DeadLetterQueue};
use uuid::Uuid;

use crate::commands::projection;

/// A dead letter's id or an event id, as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LetterRef {
    Letter(i64),
    Event(Uuid),
}

impl std::str::FromStr for LetterRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(id) = s.parse::<i64>() {
            return Ok(LetterRef::Letter(id));
        }
        Uuid::parse_str(s).map(LetterRef::Event).map_err(|_| {
            format!(
                "{s:?} is neither a dead letter's id (a number, as `projector dlq list` shows it) \
                 nor an event id (a UUID, as logs and alerts show it)"
            )
        })
    }
}

/// The one letter `target` names, within `projection` when one is given. An event that
/// failed in several projections has a letter in each: the operator picks one.
pub async fn find<S: DeadLetterQueue>(
    config: &Config,
    store: &S,
    target: LetterRef,
    only: Option<&str>,
) -> Result<DeadLetter> {
    if let Some(p) = only {
        projection(config, p)?;
    }
    match target {
        LetterRef::Letter(id) => {
            let letter = store
                .get(id)
                .await?
                .ok_or_else(|| anyhow!("no dead letter {id}; `projector dlq list --all` shows them"))?;
            match only {
                Some(p) if letter.projection != p => {
                    bail!("dead letter {id} belongs to projection {}, not {p}", letter.projection)
                }
                _ => Ok(letter),
            }
        }
        LetterRef::Event(event_id) => {
            let filter =
                DeadLetterFilter { projection: only.map(str::to_owned), aggregate_id: None, include_closed: true };
            let mut found: Vec<DeadLetter> = store
                .list(&filter)
                .await
                .context("looking the event up among the dead letters")?
                .into_iter()
                .filter(|l| l.event_id == event_id)
                .collect();
            match found.len() {
                0 => {
                    let within = only.map_or_else(String::new, |p| format!(" in projection {p}"));
                    bail!("no dead letter for event {event_id}{within}; `projector dlq list --all` shows them")
                }
                1 => Ok(found.remove(0)),
                _ => {
                    let each: Vec<String> =
                        found.iter().map(|l| format!("{} (dead letter {})", l.projection, l.id)).collect();
                    bail!(
                        "event {event_id} has dead letters in several projections: {}; \
                         pass --projection to say which",
                        each.join(", ")
                    )
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_is_a_letter_and_a_uuid_an_event() {
        assert_eq!("12".parse::<LetterRef>(), Ok(LetterRef::Letter(12)));
        let id = "11111111-1111-4111-8111-111111111111";
        assert_eq!(id.parse::<LetterRef>(), Ok(LetterRef::Event(Uuid::parse_str(id).unwrap())));
        let bad = "twelve".parse::<LetterRef>().unwrap_err();
        assert!(bad.contains("dead letter's id") && bad.contains("event id"), "{bad}");
    }
}
