//! The subject-key suite on PostgreSQL, and provisioning raced from two connections.

use projector_tests::pg::TestDb;

projector_tests::keys_tests!(
    flavor: multi_thread;
    let db = TestDb::new().await;
    db.store().await
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_provisioning_from_two_connections_ends_with_one_key() {
    let db = TestDb::new().await;
    let (a, b) = (db.store().await, db.store().await);
    projector_tests::keys::concurrent_provisioning_ends_with_one_key(&a, &b).await;
}
