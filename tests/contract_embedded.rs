//! The store conformance suite on the embedded (SQLite) store, in memory and on files:
//! one test per check, each on a fresh store.

mod in_memory {
    use projector_embedded::EmbeddedStore;

    projector_tests::contract_tests!(EmbeddedStore::open_in_memory().expect("open an in-memory store"));
}

mod on_files {
    use projector_embedded::EmbeddedStore;

    projector_tests::contract_tests!(
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("nested/store.db");
        EmbeddedStore::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
    );
}
