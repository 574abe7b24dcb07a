//! The field-encryption suite on PostgreSQL, and two rewraps at once from two
//! connections.

use projector_tests::pg::TestDb;

projector_tests::encryption_tests!(
    flavor: multi_thread;
    let db = TestDb::new().await;
    db.store().await
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_rewraps_from_two_connections_corrupt_nothing() {
    let db = TestDb::new().await;
    let (a, b) = (db.store().await, db.store().await);
    projector_tests::encryption::concurrent_rewraps_corrupt_nothing(&a, &b).await;
}
