//! Wake-ups: one call per appending statement until told to stop.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use projector::StoreError;
use projector_postgres::listen_for_appends;

use crate::{append, id, request};
use projector_tests::pg::TestDb;

#[tokio::test]
async fn appends_wake_the_listener_until_it_is_stopped() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let woken = Arc::new(AtomicUsize::new(0));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let listener = tokio::spawn({
        let (url, woken) = (db.url.clone(), Arc::clone(&woken));
        async move {
            listen_for_appends(&url, move || _ = woken.fetch_add(1, Ordering::SeqCst), async {
                let _ = stopped.await;
            })
            .await
        }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut n = 0;
    // LISTEN takes effect a moment after the call; append until a wake-up arrives.
    while woken.load(Ordering::SeqCst) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no wake-up after {n} appends");
        append(&store, request(id(n), 0, &["A"], None)).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(()).expect("listener alive");
    tokio::time::timeout(Duration::from_secs(5), listener)
        .await
        .expect("the listener returns when stopped")
        .expect("no panic")
        .expect("no error");
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_and_a_bad_url_invalid() {
    let never = std::future::pending::<()>();
    match listen_for_appends("postgres://postgres:secret@127.0.0.1:1/x", || {}, never).await {
        Err(StoreError::Unavailable(message)) => assert!(!message.contains("secret"), "{message}"),
        other => panic!("want Unavailable, got {other:?}"),
    }
    let never = std::future::pending::<()>();
    assert!(matches!(
        listen_for_appends("postgres://h/db?bogus=1", || {}, never).await,
        Err(StoreError::InvalidInput(_))
    ));
}
