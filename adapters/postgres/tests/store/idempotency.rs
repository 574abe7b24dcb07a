//! An idempotency key names one request: the same request again returns the first
//! outcome, any other request under the key is refused and writes nothing.

use projector::{EventStore, ReadBound, StoreError};

use crate::{append, id, request};
use projector_tests::pg::TestDb;

#[tokio::test]
async fn a_key_answers_only_the_request_it_was_stored_for() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let a = id(1);
    let first = append(&store, request(a, 0, &["A", "B"], Some("k"))).await;
    assert!(!first.deduplicated);

    let again = append(&store, request(a, 0, &["A", "B"], Some("k"))).await;
    assert_eq!(again, projector::AppendOutcome { deduplicated: true, ..first.clone() });

    for (what, other) in [
        ("other events", request(a, 0, &["A", "C"], Some("k"))),
        ("another expected version", request(a, 2, &["A", "B"], Some("k"))),
        ("another aggregate", request(id(2), 0, &["A", "B"], Some("k"))),
    ] {
        match store.append(other).await {
            Err(StoreError::IdempotencyConflict { key, .. }) => assert_eq!(key, "k", "{what}"),
            other => panic!("{what}: want IdempotencyConflict, got {other:?}"),
        }
    }
    assert_eq!(store.read_aggregate(a, ReadBound::All).await.expect("read").len(), 2, "nothing more on a");
    assert!(store.read_aggregate(id(2), ReadBound::All).await.expect("read").is_empty(), "nothing on the other");
}

#[tokio::test]
async fn the_stored_fingerprint_is_the_core_fingerprint_of_the_request() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let keyed = request(id(3), 0, &["A"], Some("k3"));
    append(&store, keyed.clone()).await;
    append(&store, request(id(3), 1, &["B"], None)).await;
    let row = db
        .client()
        .await
        .query_one("SELECT fingerprint FROM idempotency_keys WHERE key = 'k3'", &[])
        .await
        .expect("stored key");
    assert_eq!(row.get::<_, Option<String>>(0), Some(projector::store::rules::request_fingerprint(&keyed)));
    let count = db.client().await.query_one("SELECT count(*) FROM idempotency_keys", &[]).await.expect("count");
    assert_eq!(count.get::<_, i64>(0), 1, "an append without a key stores none");
}
