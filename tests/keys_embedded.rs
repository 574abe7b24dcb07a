//! The subject-key suite on the embedded store, and provisioning raced from two
//! connections to one file.

projector_tests::keys_tests!(projector_embedded::EmbeddedStore::open_in_memory().expect("open an in-memory store"));

#[tokio::test]
async fn concurrent_provisioning_from_two_connections_ends_with_one_key() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("store.db");
    let a = projector_embedded::EmbeddedStore::open(&path).expect("open");
    let b = projector_embedded::EmbeddedStore::open(&path).expect("open a second connection");
    projector_tests::keys::concurrent_provisioning_ends_with_one_key(&a, &b).await;
}
