//! A database migrated by an earlier build upgrades in place, and what it stored keeps
//! working.

use projector::{EventStore, StoreError};
use projector_postgres::MIGRATIONS;

use crate::{append, id, request};
use projector_tests::pg::TestDb;

/// The migrations the previous schema had, applied as its runner did.
const PREVIOUS: usize = 4;

#[tokio::test]
async fn a_database_of_the_previous_schema_upgrades_in_place() {
    let db = TestDb::empty().await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,
                                             applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .expect("migrations table");
    for (version, name, sql) in &MIGRATIONS[..PREVIOUS] {
        client.batch_execute(sql).await.expect("previous migration");
        client
            .execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", &[version, name])
            .await
            .expect("record");
    }
    // A key stored before fingerprints were kept.
    let old = id(10);
    client
        .batch_execute(&format!(
            "INSERT INTO events (event_id, aggregate_id, aggregate_type, event_type, event_data, version)
             VALUES (gen_random_uuid(), '{old}', 'thing', 'A', '{{}}', 1);
             INSERT INTO idempotency_keys (key, aggregate_id, first_version, last_version)
             VALUES ('old-key', '{old}', 1, 1);"
        ))
        .await
        .expect("data of the previous schema");

    let store = db.store().await;
    let applied = store.migrate().await.expect("upgrade");
    let expected: Vec<&str> = MIGRATIONS[PREVIOUS..].iter().map(|(_, name, _)| *name).collect();
    assert_eq!(applied, expected, "only the new migrations run");
    assert!(store.migrate().await.expect("again").is_empty(), "a second run applies nothing");
    let recorded = client.query_one("SELECT count(*) FROM schema_migrations", &[]).await.expect("count");
    assert_eq!(recorded.get::<_, i64>(0), MIGRATIONS.len() as i64);

    // Without a fingerprint only the aggregate is compared.
    let replayed = append(&store, request(old, 0, &["Other"], Some("old-key"))).await;
    assert!(replayed.deduplicated && (replayed.first_version, replayed.last_version) == (1, 1), "{replayed:?}");
    assert_eq!(replayed.event_ids.len(), 1);
    match store.append(request(id(11), 0, &["A"], Some("old-key"))).await {
        Err(StoreError::IdempotencyConflict { .. }) => {}
        other => panic!("an old key used for another aggregate: want IdempotencyConflict, got {other:?}"),
    }
}
