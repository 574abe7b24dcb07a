//! The field-encryption suite on the embedded store, and two rewraps at once from two
//! connections to one file.

projector_tests::encryption_tests!(
    projector_embedded::EmbeddedStore::open_in_memory().expect("open an in-memory store")
);

#[tokio::test]
async fn concurrent_rewraps_from_two_connections_corrupt_nothing() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("store.db");
    let a = projector_embedded::EmbeddedStore::open(&path).expect("open");
    let b = projector_embedded::EmbeddedStore::open(&path).expect("open a second connection");
    projector_tests::encryption::concurrent_rewraps_corrupt_nothing(&a, &b).await;
}
