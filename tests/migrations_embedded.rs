//! The eager-migration suite on the embedded store: one test per check, each on a fresh
//! store file (read directly, beside the store, to compare every row).

use projector_embedded::EmbeddedStore;
use projector_tests::dumps::SqliteRows;

projector_tests::migration_tests!(
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("store.db");
    (EmbeddedStore::open(&path).expect("open the store"), SqliteRows(path.clone()))
);
