//! `user-profile`: the latest profile of every user, one row per user aggregate.
//!
//! Email, name and plan hold the value from the highest-versioned event that sets them
//! (`UserRegistered` sets all three); `active` turns false at `UserDeactivated`.
//! `SubjectErased` (appended by crypto-shredding the user) sets email and name to null,
//! as an event that sets them to nothing: a later event may set them again. Every
//! user event creates the row if it is missing and advances its version, so re-applying
//! an event changes nothing visible.

use projector::{
    Column, ColumnType, DomainEvent, EventFilter, HandlerError, Ordering, ProjectionHandler, Record, RowError,
    RowReader, TableSchema, Value,
};
use serde::Deserialize;
use uuid::Uuid;

/// The read-model table `user_profile`.
pub const SCHEMA: TableSchema = TableSchema {
    name: "user_profile",
    key: &[Column::new("user_id", ColumnType::Uuid)],
    columns: &[
        Column::new("email", ColumnType::Text).nullable(),
        Column::new("name", ColumnType::Text).nullable(),
        Column::new("plan", ColumnType::Text).nullable(),
        Column::new("active", ColumnType::Bool),
    ],
    version_column: Some("version"),
};

/// One user's profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub email: Option<String>,
    pub name: Option<String>,
    pub plan: Option<String>,
    pub active: bool,
}

impl Default for Profile {
    fn default() -> Self {
        Self { email: None, name: None, plan: None, active: true }
    }
}

impl Record for Profile {
    fn to_values(&self, out: &mut Vec<Value>) {
        out.push(self.email.clone().into());
        out.push(self.name.clone().into());
        out.push(self.plan.clone().into());
        out.push(self.active.into());
    }

    fn from_values(values: &mut RowReader<'_>) -> Result<Self, RowError> {
        Ok(Self {
            email: values.opt_text()?,
            name: values.opt_text()?,
            plan: values.opt_text()?,
            active: values.boolean()?,
        })
    }
}

#[derive(Deserialize)]
struct Registered {
    email: Option<String>,
    name: Option<String>,
    plan: Option<String>,
}

#[derive(Deserialize)]
struct EmailChanged {
    email: Option<String>,
}

#[derive(Deserialize)]
struct Renamed {
    name: Option<String>,
}

#[derive(Deserialize)]
struct PlanUpgraded {
    plan: Option<String>,
}

/// Upcasters of the user events this projection reads, registered next to it (a runner
/// lists every crate's steps in one registry; `projections.yaml` enables chains).
///
/// `UserRegistered` v2 always names the plan: v1 registrations could leave it out, and
/// those users were on the free plan. A v1 `plan` that is not a string cannot be read
/// as a plan name, and the step refuses it (lazily the event is dead-lettered; an eager
/// `projector migrate` names it in its plan and does not start). The handler reads v2;
/// it also reads a v1 payload as stored (`plan` absent is `None`), which is the shape
/// the reference semantics of this read model are written against.
pub const UPCASTERS: &[projector::upcast::Upcaster] =
    &[projector::upcast::Upcaster::new("UserRegistered", 1, registered_v1_to_v2)];

/// `UserRegistered` v1 → v2: a missing (or null) `plan` becomes `"free"`.
fn registered_v1_to_v2(mut payload: projector::upcast::Payload) -> Result<projector::upcast::Payload, String> {
    match payload.get("plan") {
        None | Some(serde_json::Value::Null) => {
            payload.insert("plan".to_owned(), serde_json::Value::from("free"));
        }
        Some(serde_json::Value::String(_)) => {}
        Some(other) => return Err(format!("`plan` is {other}, not a plan name")),
    }
    Ok(payload)
}

/// The handler.
#[derive(Debug, Clone, Copy, Default)]
pub struct UserProfile;

impl ProjectionHandler for UserProfile {
    type Key = Uuid;
    type Row = Profile;

    fn name(&self) -> &'static str {
        "user-profile"
    }

    fn schema(&self) -> &'static TableSchema {
        &SCHEMA
    }

    fn ordering(&self) -> Ordering {
        Ordering::AggregateVersion
    }

    fn filter(&self) -> EventFilter {
        EventFilter::aggregate_types(["user"]).without_metadata()
    }

    fn key(&self, event: &DomainEvent) -> Option<Uuid> {
        Some(event.aggregate_id)
    }

    fn handle(&self, row: &mut Option<Profile>, event: &DomainEvent) -> Result<(), HandlerError> {
        let profile = row.get_or_insert_with(Profile::default);
        match event.event_type.as_str() {
            "UserRegistered" => {
                let e: Registered = event.data()?;
                profile.email = e.email;
                profile.name = e.name;
                profile.plan = e.plan;
            }
            "UserEmailChanged" => profile.email = event.data::<EmailChanged>()?.email,
            "UserRenamed" => profile.name = event.data::<Renamed>()?.name,
            "PlanUpgraded" => profile.plan = event.data::<PlanUpgraded>()?.plan,
            "UserDeactivated" => profile.active = false,
            projector::encryption::SUBJECT_ERASED => {
                profile.email = None;
                profile.name = None;
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use projector::testing::{event, Scenario};
    use serde_json::json;

    fn user(id: Uuid, event_type: &str, data: serde_json::Value) -> DomainEvent {
        event("user", id, event_type, data)
    }

    #[test]
    fn registration_then_changes_keep_latest_values() {
        let id = Uuid::from_u128(1);
        let s = Scenario::new(&UserProfile)
            .given(user(id, "UserRegistered", json!({"email": "a@x.io", "name": "Ada", "plan": "free"})))
            .given(user(id, "UserEmailChanged", json!({"email": "ada@x.io"})))
            .given(user(id, "UserRenamed", json!({"name": "Ada L."})))
            .given(user(id, "PlanUpgraded", json!({"plan": "pro"})))
            .then_row(
                &id,
                Some(Profile {
                    email: Some("ada@x.io".into()),
                    name: Some("Ada L.".into()),
                    plan: Some("pro".into()),
                    active: true,
                }),
            );
        assert_eq!(s.version(&id), 4);
    }

    #[test]
    fn deactivation_keeps_the_profile_and_marks_it_inactive() {
        let id = Uuid::from_u128(2);
        Scenario::new(&UserProfile)
            .given(user(id, "UserRegistered", json!({"email": "b@x.io", "name": "Bo", "plan": "free"})))
            .given(user(id, "UserDeactivated", json!({})))
            .then_row(
                &id,
                Some(Profile {
                    email: Some("b@x.io".into()),
                    name: Some("Bo".into()),
                    plan: Some("free".into()),
                    active: false,
                }),
            );
    }

    #[test]
    fn missing_keys_mean_null_and_unknown_events_only_advance_the_version() {
        let id = Uuid::from_u128(3);
        let s = Scenario::new(&UserProfile)
            .given(user(id, "UserRegistered", json!({"email": "c@x.io"})))
            .given(user(id, "UserLoggedIn", json!({"ip": "127.0.0.1"})))
            .then_row(&id, Some(Profile { email: Some("c@x.io".into()), ..Profile::default() }));
        assert_eq!(s.version(&id), 2);
    }

    #[test]
    fn a_replayed_event_changes_nothing() {
        let id = Uuid::from_u128(4);
        let registered = user(id, "UserRegistered", json!({"email": "d@x.io", "name": "Di", "plan": "free"}));
        let mut renamed = user(id, "UserRenamed", json!({"name": "Dee"}));
        renamed.version = 2;
        let mut stale = user(id, "UserRenamed", json!({"name": "stale"}));
        stale.version = 2;
        Scenario::new(&UserProfile).given(registered).given(renamed).given(stale).then_row(
            &id,
            Some(Profile {
                email: Some("d@x.io".into()),
                name: Some("Dee".into()),
                plan: Some("free".into()),
                active: true,
            }),
        );
    }

    #[test]
    fn a_v1_registration_without_a_plan_is_on_the_free_plan() {
        let chains = projector::upcast::Upcasters::from_steps(UPCASTERS.iter().copied()).unwrap();
        let id = Uuid::from_u128(6);
        let v1 = user(id, "UserRegistered", json!({"email": "e@x.io", "name": "Eve"}));
        Scenario::new(&UserProfile).given(chains.upcast(v1).unwrap()).then_row(
            &id,
            Some(Profile {
                email: Some("e@x.io".into()),
                name: Some("Eve".into()),
                plan: Some("free".into()),
                active: true,
            }),
        );
        let kept = chains.upcast(user(id, "UserRegistered", json!({"plan": "pro"}))).unwrap();
        assert_eq!(kept.data::<serde_json::Value>().unwrap(), json!({"plan": "pro"}));
        assert_eq!(kept.metadata().unwrap().event_version, 2);
        let odd = chains.upcast(user(id, "UserRegistered", json!({"plan": 42}))).unwrap_err();
        assert!(odd.to_string().contains("`plan` is 42, not a plan name"), "{odd}");
    }

    #[test]
    fn an_erased_subject_keeps_no_email_or_name() {
        let id = Uuid::from_u128(7);
        let s = Scenario::new(&UserProfile)
            .given(user(id, "UserRegistered", json!({"email": "f@x.io", "name": "Fay", "plan": "pro"})))
            .given(user(id, "SubjectErased", json!({"subject": id.to_string()})))
            .then_row(&id, Some(Profile { email: None, name: None, plan: Some("pro".into()), active: true }));
        assert_eq!(s.version(&id), 2);
    }

    #[test]
    fn a_payload_that_does_not_fit_names_the_event() {
        let id = Uuid::from_u128(5);
        Scenario::new(&UserProfile)
            .given(user(id, "UserEmailChanged", json!({"email": 42})))
            .then_error(|e| matches!(e, HandlerError::Payload { event_type, .. } if event_type == "UserEmailChanged"));
    }
}
