//! The store conformance suite on PostgreSQL, one fresh database per check.

use std::sync::Mutex;

use projector_tests::contract;
use projector_tests::pg::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_meets_the_contract() {
    let databases: Mutex<Vec<TestDb>> = Mutex::new(Vec::new());
    contract::run_all(|| async {
        let db = TestDb::new().await;
        let store = db.store().await;
        databases.lock().expect("database list").push(db);
        store
    })
    .await;
}
