//! The snapshot suite on the embedded store: one test per check, each on a fresh store.

use projector_embedded::EmbeddedStore;

projector_tests::snapshot_tests!(EmbeddedStore::open_in_memory().expect("open an in-memory store"));
