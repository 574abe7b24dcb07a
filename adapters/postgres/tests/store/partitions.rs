//! `projector_bucket` is `Partition::bucket`, and the planner inlines it: statements that
//! filter by partition plan the expression itself, as when they spelled it out.

use postgres_types::Type;
use projector::Partition;
use uuid::Uuid;

use crate::id;
use projector_tests::pg::TestDb;

#[tokio::test]
async fn the_sql_partition_is_the_core_partition() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let mut ids: Vec<Uuid> = (0..2000).map(id).collect();
    ids.extend([Uuid::nil(), Uuid::max(), Uuid::from_u128(0xffff_ffff), Uuid::from_u128(0x8000_0000)]);
    for count in [0u32, 1, 2, 3, 4, 7, 16, 1000, u32::MAX] {
        let rows = client
            .query_typed(
                "SELECT projector_bucket(a, $2) FROM unnest($1::uuid[]) WITH ORDINALITY AS t(a, n) ORDER BY n",
                &[(&ids, Type::UUID_ARRAY), (&i64::from(count), Type::INT8)],
            )
            .await
            .expect("buckets");
        for (id, row) in ids.iter().zip(&rows) {
            assert_eq!(row.get::<_, i64>(0), i64::from(Partition::bucket(id, count)), "{id} of {count}");
        }
    }
}

async fn plan(client: &tokio_postgres::Client, sql: &str, count: i64, index: i64) -> String {
    let none: Option<Vec<String>> = None;
    let rows = client
        .query_typed(
            &format!("EXPLAIN (VERBOSE, COSTS OFF) {sql}"),
            &[
                (&projector_postgres::Xid8(0), Type::XID8),
                (&0i64, Type::INT8),
                (&none, Type::TEXT_ARRAY),
                (&none, Type::TEXT_ARRAY),
                (&count, Type::INT8),
                (&index, Type::INT8),
                (&100i64, Type::INT8),
                (&false, Type::BOOL),
            ],
        )
        .await
        .expect("explain");
    rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>().join("\n")
}

#[tokio::test]
async fn the_partition_filter_plans_as_the_expression_and_folds_away_for_one_partition() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO events (event_id, aggregate_id, aggregate_type, event_type, event_data, version)
             SELECT gen_random_uuid(), gen_random_uuid(), 'thing', 'A', '{}', 1 FROM generate_series(1, 200);
             ANALYZE events;",
        )
        .await
        .expect("events");
    let read_all = include_str!("../../sql/read_all.sql");
    let split = plan(&client, read_all, 4, 1).await;
    assert!(!split.contains("projector_bucket"), "the function is inlined:\n{split}");
    assert!(split.contains("::bit(32)") && split.contains("% '4'::bigint"), "the expression is planned:\n{split}");
    let whole = plan(&client, read_all, 1, 0).await;
    assert!(!whole.contains("projector_bucket") && !whole.contains("bit(32)"), "no filter for one partition:\n{whole}");

    let states = client
        .query_typed(
            &("EXPLAIN (VERBOSE, COSTS OFF) ".to_owned() + include_str!("../../sql/projection_states.sql")),
            &[(&10_001i64, Type::INT8)],
        )
        .await
        .expect("explain states");
    let states = states.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>().join("\n");
    assert!(!states.contains("projector_bucket") && states.contains("bit(32)"), "states inline it too:\n{states}");
}
