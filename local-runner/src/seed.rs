//! Realistic sample events for the demo: users registering, changing email and name,
//! upgrading plans and leaving, interleaved across users over the last weeks.

use chrono::{Duration, Utc};
use projector::{AppendRequest, ExpectedVersion, NewEvent};
use rand::seq::IndexedRandom;
use rand::Rng;
use serde_json::json;
use uuid::Uuid;

const FIRST: &[&str] = &["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Leslie"];
const LAST: &[&str] =
    &["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Perlman", "Lamport"];
const PLANS: &[&str] = &["free", "starter", "pro", "enterprise"];

/// Appends for `users` users, in rounds so that users' events interleave.
pub fn requests(users: u32) -> Vec<AppendRequest> {
    let mut rng = rand::rng();
    let start = Utc::now() - Duration::days(21);
    let ids: Vec<Uuid> = (0..users).map(|_| Uuid::new_v4()).collect();
    let mut out = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let first = FIRST.choose(&mut rng).copied().unwrap_or("Ada");
        let last = LAST.choose(&mut rng).copied().unwrap_or("Lovelace");
        let at = start + Duration::minutes(i as i64 * 30 % (21 * 24 * 60));
        out.push(one(
            *id,
            0,
            NewEvent::new(
                "UserRegistered",
                json!({"email": format!("{}.{}{}@example.com", first.to_lowercase(), last.to_lowercase(), i),
                       "name": format!("{first} {last}"), "plan": "free"}),
            )
            .at(at),
        ));
    }
    let mut versions = vec![1i64; ids.len()];
    for round in 0..5 {
        for (i, id) in ids.iter().enumerate() {
            if !rng.random_bool(0.6) {
                continue;
            }
            let at = start + Duration::days(round * 3 + 3) + Duration::minutes(i as i64 * 7 % 1440);
            let event = match rng.random_range(0..10) {
                0..=3 => NewEvent::new("UserEmailChanged", json!({"email": format!("user{i}.r{round}@example.org")})),
                4..=5 => NewEvent::new(
                    "UserRenamed",
                    json!({"name": format!("{} {}", FIRST[i % FIRST.len()], LAST[(i + round as usize) % LAST.len()])}),
                ),
                6..=8 => {
                    NewEvent::new("PlanUpgraded", json!({"plan": PLANS.choose(&mut rng).copied().unwrap_or("pro")}))
                }
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
