//! The eager-migration suite on PostgreSQL: one test per check, each on a fresh database
//! (read directly, on a connection of its own, to compare every row).

use projector_tests::dumps::PgRows;
use projector_tests::pg::TestDb;

projector_tests::migration_tests!(
    flavor: multi_thread;
    let db = TestDb::new().await;
    (db.store().await, PgRows(db.url.clone()))
);
