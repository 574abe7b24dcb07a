//! The failure-handling suite on the embedded store: one test per check, each on a fresh
//! in-memory store.

use projector_embedded::EmbeddedStore;

projector_tests::failure_tests!(EmbeddedStore::open_in_memory().expect("open an in-memory store"));
