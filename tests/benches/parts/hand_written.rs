//! The yardstick for live catch-up: a batched worker as one would write it by hand for
//! this one read model. It reads 10,000 events by position, loads the rows they touch,
//! folds them in a map, writes them with one `unnest` upsert and moves its checkpoint in
//! the same transaction, on prepared statements and with asynchronous commit (as the
//! runtime commits). Reading by position is *not* commit-safe: an event committed late
//! behind a larger position is skipped for good. It is what the runtime must beat.

use std::collections::HashMap;
use std::time::Instant;

use tokio_postgres::types::Json;
use uuid::Uuid;

use super::{connect_raw, CatchUp, Res, RowArrays};

const TABLE: &str = "user_profile_hand";

struct Profile {
    email: Option<String>,
    name: Option<String>,
    plan: Option<String>,
    active: bool,
    version: i64,
}

/// Runs the worker from position 0 until a read comes back empty; its table is
/// `user_profile_hand`.
pub async fn run(url: &str, batch: i64) -> Res<CatchUp> {
    let client = connect_raw(url).await?;
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {TABLE};
             CREATE TABLE {TABLE} (user_id uuid PRIMARY KEY, email text, name text, plan text,
                                   active boolean NOT NULL, version bigint NOT NULL);
             DROP TABLE IF EXISTS hand_checkpoint;
             CREATE TABLE hand_checkpoint (id int PRIMARY KEY, position bigint NOT NULL);
             INSERT INTO hand_checkpoint VALUES (1, 0);
             SET synchronous_commit = off;"
        ))
        .await?;
    let read = client
        .prepare(
            "SELECT position, aggregate_id, event_type, version, event_data FROM events
             WHERE position > $1 AND aggregate_type = 'user' ORDER BY position LIMIT $2",
        )
        .await?;
    let load = client
        .prepare(&format!("SELECT user_id, email, name, plan, active, version FROM {TABLE} WHERE user_id = ANY($1)"))
        .await?;
    let upsert = client.prepare(&super::UPSERT_SQL.replace("\"user_profile\"", TABLE)).await?;
    let checkpoint = client.prepare("UPDATE hand_checkpoint SET position = $1 WHERE id = 1").await?;

    let start = Instant::now();
    let (mut position, mut events, mut batches) = (0i64, 0u64, 0u64);
    loop {
        let rows = client.query(&read, &[&position, &batch]).await?;
        let Some(last) = rows.last() else { break };
        position = last.get(0);
        let ids: Vec<Uuid> = {
            let mut ids: Vec<Uuid> = rows.iter().map(|r| r.get(1)).collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        };
        let mut profiles: HashMap<Uuid, Profile> = HashMap::with_capacity(ids.len());
        for r in client.query(&load, &[&ids]).await? {
            let profile =
                Profile { email: r.get(1), name: r.get(2), plan: r.get(3), active: r.get(4), version: r.get(5) };
            profiles.insert(r.get(0), profile);
        }
        for r in &rows {
            let id: Uuid = r.get(1);
            let kind: &str = r.get(2);
            let version: i64 = r.get(3);
            let Json(data): Json<serde_json::Value> = r.get(4);
            let text = |field: &str| data.get(field).and_then(|v| v.as_str()).map(str::to_owned);
            let profile =
                profiles.entry(id).or_insert(Profile { email: None, name: None, plan: None, active: true, version: 0 });
            if version <= profile.version {
                continue;
            }
            match kind {
                "UserRegistered" => {
                    profile.email = text("email");
                    profile.name = text("name");
                    profile.plan = text("plan");
                }
                "UserEmailChanged" => profile.email = text("email"),
                "UserRenamed" => profile.name = text("name"),
                "PlanUpgraded" => profile.plan = text("plan"),
                "UserDeactivated" => profile.active = false,
                _ => {}
            }
            profile.version = version;
        }
        let mut arrays = RowArrays::default();
        for (id, p) in profiles {
            arrays.ids.push(id);
            arrays.emails.push(p.email);
            arrays.names.push(p.name);
            arrays.plans.push(p.plan);
            arrays.active.push(p.active);
            arrays.versions.push(p.version);
        }
        client.batch_execute("BEGIN").await?;
        client.execute(&upsert, &arrays.params()).await?;
        client.execute(&checkpoint, &[&position]).await?;
        client.batch_execute("COMMIT").await?;
        events += rows.len() as u64;
        batches += 1;
    }
    Ok(CatchUp { events, batches, elapsed: start.elapsed() })
}
