//! Failure handling on the embedded store: the shared suite, and concurrent repairs.

use projector_embedded::EmbeddedStore;
use projector_tests::failures;

#[tokio::test]
async fn embedded_meets_the_failure_handling_contract() {
    failures::run_all(|| async { EmbeddedStore::open_in_memory().expect("open an in-memory store") }).await;
}
