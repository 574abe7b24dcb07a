//! The store conformance suite on the embedded (SQLite) store, in memory and on files.

use std::sync::atomic::{AtomicUsize, Ordering};

use projector_embedded::EmbeddedStore;
use projector_tests::contract;

#[tokio::test]
async fn embedded_in_memory_meets_the_contract() {
    contract::run_all(|| async { EmbeddedStore::open_in_memory().expect("open an in-memory store") }).await;
}

#[tokio::test]
async fn embedded_file_meets_the_contract() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let next = AtomicUsize::new(0);
    contract::run_all(|| {
        let path = dir.path().join(format!("nested/store-{}.db", next.fetch_add(1, Ordering::Relaxed)));
        async move { EmbeddedStore::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display())) }
    })
    .await;
}
