//! The demo's kind of history, deterministic: users registering, changing email and
//! name, upgrading plans and leaving, interleaved across users over three weeks.

use chrono::{Duration, TimeZone, Utc};
use projector::{AppendRequest, ExpectedVersion, NewEvent};
use serde_json::json;
use uuid::Uuid;

const PLANS: [&str; 4] = ["free", "starter", "pro", "enterprise"];

/// Appends for `users` users; the same `users` always gives the same requests.
pub fn demo(users: u32) -> Vec<AppendRequest> {
    let start = Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap();
    let ids: Vec<Uuid> = (0..users).map(|i| Uuid::from_u64_pair(0x5eed, u64::from(i) + 1)).collect();
    let mut out = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let at = start + Duration::minutes(i as i64 * 37);
        let data = json!({"email": format!("user{i}@example.com"), "name": format!("User {i}"), "plan": "free"});
        out.push(one(*id, 0, NewEvent::new("UserRegistered", data).at(at)));
    }
    let mut versions = vec![1i64; ids.len()];
    for round in 0..4usize {
        for (i, id) in ids.iter().enumerate() {
            let pick = (i * 7 + round * 3) % 11;
            if pick > 7 {
                continue;
            }
            let at = start + Duration::days(round as i64 * 5 + 2) + Duration::minutes(i as i64 * 13);
            let event = match pick {
                0..=2 => NewEvent::new("UserEmailChanged", json!({"email": format!("user{i}.r{round}@example.org")})),
                3..=4 => NewEvent::new("UserRenamed", json!({"name": format!("User {i} (round {round})")})),
                5..=6 => NewEvent::new("PlanUpgraded", json!({"plan": PLANS[(i + round) % PLANS.len()]})),
                _ => NewEvent::new("UserDeactivated", json!({"reason": "requested"})),
            };
            out.push(one(*id, versions[i], event.at(at)));
            versions[i] += 1;
        }
    }
    out
}

fn one(aggregate_id: Uuid, expected: i64, event: NewEvent) -> AppendRequest {
    AppendRequest {
        aggregate_id,
        aggregate_type: "user".into(),
        expected_version: ExpectedVersion::Exact(expected),
        events: vec![event],
        idempotency_key: None,
    }
}

/// A user whose registration cannot be decoded (`email` is a number), and a later event
/// of the same user: user-profile dead-letters the first and parks the user behind it.
pub fn poison() -> AppendRequest {
    let at = Utc.with_ymd_and_hms(2026, 3, 4, 12, 0, 0).unwrap();
    AppendRequest {
        aggregate_id: Uuid::from_u64_pair(0xbad, 1),
        aggregate_type: "user".into(),
        expected_version: ExpectedVersion::Exact(0),
        events: vec![
            NewEvent::new("UserRegistered", json!({"email": 42, "name": "Poison"})).at(at),
            NewEvent::new("UserRenamed", json!({"name": "Still parked"})).at(at + Duration::minutes(1)),
        ],
        idempotency_key: None,
    }
}

/// A user with version 1 appended, and version 3 written around the store (by SQL) with
/// version 2 missing: its projections wait for version 2 until `gap_timeout`. Returns
/// the user and the id of version 3.
pub async fn gap(db: &projector_tests::pg::TestDb) -> (Uuid, Uuid) {
    use projector::EventStore;
    let user = Uuid::from_u64_pair(0x9a9, 1);
    let at = Utc.with_ymd_and_hms(2026, 3, 30, 8, 0, 0).unwrap();
    let registered =
        NewEvent::new("UserRegistered", json!({"email": "gap@example.com", "name": "Gap", "plan": "free"}));
    db.store().await.append(one(user, 0, registered.at(at))).await.expect("append version 1");
    let third = Uuid::from_u64_pair(0x9a9, 3);
    db.client()
        .await
        .execute(
            "INSERT INTO events (event_id, aggregate_id, aggregate_type, event_type, event_data, version, timestamp) \
             VALUES ($1, $2, 'user', 'UserRenamed', '{\"name\": \"After the gap\"}', 3, '2026-03-30T09:00:00Z')",
            &[&third, &user],
        )
        .await
        .expect("write version 3 around the store");
    db.settle().await;
    (user, third)
}
