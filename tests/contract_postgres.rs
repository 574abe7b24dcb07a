//! The store conformance suite on PostgreSQL: one test per check, each on a fresh
//! database that lives as long as the test.

use projector_tests::pg::TestDb;

projector_tests::contract_tests!(
    flavor: multi_thread;
    let db = TestDb::new().await;
    db.store().await
);
