//! The snapshot suite on PostgreSQL: one test per check, each on a fresh database.

use projector_tests::pg::TestDb;

projector_tests::snapshot_tests!(
    flavor: multi_thread;
    let db = TestDb::new().await;
    db.store().await
);
