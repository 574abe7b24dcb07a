//! Incident tracking: a firing condition opens one incident per (projection,
//! condition), which stays open, unrepeated, while the condition holds, and resolves
//! when it clears. The values and message of an incident are those of when it was
//! first seen; its resolution carries the values measured when it resolved, with the
//! time it resolved.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::conditions::{Condition, Firing};
use super::delivery::{AlertStatus, Notification};

/// An open incident.
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    pub projection: String,
    pub condition: Condition,
    pub partition: Option<u32>,
    /// Values when first seen (what the firing notification carried).
    pub values: serde_json::Value,
    pub message: String,
    pub first_seen: DateTime<Utc>,
    id: u64,
}

impl Incident {
    /// Tells incidents apart, also two of one (projection, condition) one after the other.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }
}

/// An incident that opened or resolved in one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Transition {
    Fired(Incident),
    Resolved {
        incident: Incident,
        at: DateTime<Utc>,
        /// The values measured when it resolved.
        values: serde_json::Value,
    },
}

impl Transition {
    pub fn incident(&self) -> &Incident {
        match self {
            Transition::Fired(incident) | Transition::Resolved { incident, .. } => incident,
        }
    }

    /// The webhook body announcing this transition.
    pub fn notification(&self) -> Notification {
        let (status, resolved_at, message, values) = match self {
            Transition::Fired(incident) => {
                (AlertStatus::Firing, None, incident.message.clone(), incident.values.clone())
            }
            Transition::Resolved { incident, at, values } => {
                (AlertStatus::Resolved, Some(*at), format!("resolved: {}", incident.message), values.clone())
            }
        };
        let incident = self.incident();
        Notification {
            status,
            projection: incident.projection.clone(),
            partition: incident.partition,
            condition: incident.condition,
            values,
            first_seen: incident.first_seen,
            resolved_at,
            message,
        }
    }
}

/// The open incidents.
#[derive(Debug, Default)]
pub(crate) struct Incidents {
    open: BTreeMap<(String, Condition), Incident>,
    next_id: u64,
}

impl Incidents {
    /// The open incidents, by projection then condition.
    pub fn open(&self) -> impl Iterator<Item = &Incident> {
        self.open.values()
    }

    /// Compares what fires at `wall` with the open incidents: the resolutions (incidents
    /// whose condition no longer fires, with the values `measure` gives for them now)
    /// come first, then the incidents that opened, each in (projection, condition) order.
    pub fn update(
        &mut self,
        firing: Firing,
        wall: DateTime<Utc>,
        measure: impl Fn(&Incident) -> serde_json::Value,
    ) -> Vec<Transition> {
        let cleared: Vec<(String, Condition)> =
            self.open.keys().filter(|key| !firing.contains_key(*key)).cloned().collect();
        let mut transitions: Vec<Transition> = cleared
            .into_iter()
            .filter_map(|key| self.open.remove(&key))
            .map(|incident| Transition::Resolved { values: measure(&incident), incident, at: wall })
            .collect();
        for (key, finding) in firing {
            if self.open.contains_key(&key) {
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            let incident = Incident {
                projection: key.0.clone(),
                condition: key.1,
                partition: finding.partition,
                values: finding.values,
                message: finding.message,
                first_seen: wall,
                id,
            };
            transitions.push(Transition::Fired(incident.clone()));
            self.open.insert(key, incident);
        }
        transitions
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::conditions::Finding;
    use super::*;

    fn finding(open: u64) -> Finding {
        Finding { partition: Some(1), values: json!({ "open": open }), message: format!("{open} open") }
    }

    fn firing(entries: &[(&str, Condition, u64)]) -> Firing {
        entries.iter().map(|&(p, c, open)| ((p.to_owned(), c), finding(open))).collect()
    }

    fn unmeasured(_: &Incident) -> serde_json::Value {
        serde_json::Value::Null
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn one_incident_while_a_condition_fires_with_its_first_values() {
        let mut incidents = Incidents::default();
        let opened = incidents.update(firing(&[("p", Condition::DeadLetters, 2)]), at(0), unmeasured);
        let [Transition::Fired(incident)] = opened.as_slice() else { panic!("{opened:?}") };
        assert_eq!((incident.projection.as_str(), incident.condition), ("p", Condition::DeadLetters));
        assert_eq!(incident.first_seen, at(0));
        let n = opened[0].notification();
        assert_eq!(n.status, AlertStatus::Firing);
        assert_eq!((n.partition, &n.values, n.message.as_str()), (Some(1), &json!({ "open": 2 }), "2 open"));
        assert_eq!(n.resolved_at, None);

        // Still firing, with other values: nothing new, the incident keeps its first ones.
        assert!(incidents.update(firing(&[("p", Condition::DeadLetters, 5)]), at(10), unmeasured).is_empty());
        let open: Vec<&Incident> = incidents.open().collect();
        assert_eq!(open.len(), 1);
        assert_eq!((&open[0].values, open[0].first_seen), (&json!({ "open": 2 }), at(0)));

        let resolved = incidents.update(Firing::new(), at(20), |i| json!({ "open": 0, "was": i.values["open"] }));
        let [Transition::Resolved { incident, at: when, .. }] = resolved.as_slice() else { panic!("{resolved:?}") };
        assert_eq!((incident.first_seen, *when), (at(0), at(20)));
        let n = resolved[0].notification();
        assert_eq!(n.status, AlertStatus::Resolved);
        assert_eq!((n.first_seen, n.resolved_at), (at(0), Some(at(20))));
        // The values measured at resolution, not the first ones.
        assert_eq!((&n.values, n.message.as_str()), (&json!({ "open": 0, "was": 2 }), "resolved: 2 open"));
        assert_eq!(incidents.open().count(), 0);
        assert!(incidents.update(Firing::new(), at(30), unmeasured).is_empty());
    }

    #[test]
    fn the_same_condition_again_is_a_new_incident() {
        let mut incidents = Incidents::default();
        let first = incidents.update(firing(&[("p", Condition::Stalled, 1)]), at(0), unmeasured);
        incidents.update(Firing::new(), at(5), unmeasured);
        let again = incidents.update(firing(&[("p", Condition::Stalled, 1)]), at(9), unmeasured);
        let (first, again) = (first[0].incident(), again[0].incident());
        assert_ne!(first.id(), again.id());
        assert_eq!(again.first_seen, at(9));
    }

    #[test]
    fn resolutions_come_first_then_openings_each_in_key_order() {
        let mut incidents = Incidents::default();
        incidents.update(firing(&[("b", Condition::LagSeconds, 1), ("a", Condition::Stalled, 1)]), at(0), unmeasured);
        let transitions = incidents.update(
            firing(&[("c", Condition::DeadLetters, 1), ("a", Condition::DeadLetterAge, 1)]),
            at(1),
            unmeasured,
        );
        let summary: Vec<(&str, &str, Condition)> = transitions
            .iter()
            .map(|t| {
                let kind = if matches!(t, Transition::Fired(_)) { "fired" } else { "resolved" };
                (kind, t.incident().projection.as_str(), t.incident().condition)
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("resolved", "a", Condition::Stalled),
                ("resolved", "b", Condition::LagSeconds),
                ("fired", "a", Condition::DeadLetterAge),
                ("fired", "c", Condition::DeadLetters),
            ]
        );
        let open: Vec<(&str, Condition)> = incidents.open().map(|i| (i.projection.as_str(), i.condition)).collect();
        assert_eq!(open, [("a", Condition::DeadLetterAge), ("c", Condition::DeadLetters)]);
    }
}
