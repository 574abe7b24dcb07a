//! `/health` of a real worker: a handler that blocks freezes the worker's loop, and the
//! runner reports unhealthy within the health interval even though nothing lags for long;
//! once the handler returns, healthy again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use projector::{
    AppendRequest, DomainEvent, EventFilter, EventStore, ExpectedVersion, HandlerError, NewEvent, OnFailure,
    Ordering as Order, Partition, ProjectionHandler, ProjectionStore, RetryPolicy, TableSchema,
};
use projector_embedded::EmbeddedStore;
use projector_local::metrics::Metrics;
use projector_local::{http, run_partition, EmbeddedConnector, WorkerExit, WorkerSettings};
use projector_tests::ledger::{Applied, Ledger};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

/// The ledger, but `handle` blocks its thread while the gate is closed.
#[derive(Clone)]
struct Gated {
    open: Arc<AtomicBool>,
}

impl ProjectionHandler for Gated {
    type Key = Uuid;
    type Row = Applied;
    fn name(&self) -> &'static str {
        Ledger.name()
    }
    fn schema(&self) -> &'static TableSchema {
        Ledger.schema()
    }
    fn ordering(&self) -> Order {
        Ledger.ordering()
    }
    fn key(&self, event: &DomainEvent) -> Option<Uuid> {
        Ledger.key(event)
    }
    fn handle(&self, row: &mut Option<Applied>, event: &DomainEvent) -> Result<(), HandlerError> {
        while !self.open.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
        }
        Ledger.handle(row, event)
    }
}

async fn health(port: u16) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect to /health");
    stream.write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n").await.expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("response");
    let code = response.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

async fn wait_for(port: u16, code: u16, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let (got, body) = health(port).await;
        if got == code {
            return body;
        }
        assert!(Instant::now() < deadline, "/health stayed {got}, expected {code} within {within:?}: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_loop_is_unhealthy_within_the_interval_and_healthy_again_after() {
    let store = EmbeddedStore::open_in_memory().expect("store");
    let handler = Gated { open: Arc::new(AtomicBool::new(true)) };
    store.register(handler.name(), handler.schema(), &handler.filter(), 1).await.expect("register");
    let append = |n: u128| AppendRequest {
        aggregate_id: Uuid::from_u128(0xF00 + n),
        aggregate_type: "user".into(),
        expected_version: ExpectedVersion::Any,
        events: vec![NewEvent::new("UserRenamed", serde_json::json!({ "name": n }))],
        idempotency_key: None,
    };
    store.append(append(1)).await.expect("append");

    let metrics = Metrics::new();
    let interval = Duration::from_millis(600);
    let listener = http::bind("127.0.0.1:0".parse().unwrap()).await.expect("bind");
    let port = listener.local_addr().unwrap().port();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let states_store = store.clone();
    let states = move || {
        let store = states_store.clone();
        async move { store.states().await.map_err(|e| e.to_string()) }
    };
    tokio::spawn(http::serve_listener(listener, Arc::clone(&metrics), states, interval, stop_rx.clone()));

    let settings = WorkerSettings {
        projection: handler.name().to_owned(),
        filter: EventFilter::all(),
        partition: Partition::WHOLE,
        batch_size: 10,
        poll_interval: Duration::from_millis(20),
        lease_ttl: Duration::from_secs(30),
        owner: "frozen-loop-test".into(),
        retry: RetryPolicy::default(),
        on_failure: OnFailure::Park,
        gap_timeout: projector::config::DEFAULT_GAP_TIMEOUT,
        crash_limit: projector::config::DEFAULT_CRASH_LIMIT,
        upcasters: projector::upcast::Upcasters::new(),
        window: projector::CatchUpWindow::for_memory(128 << 20),
        decryption: Default::default(),
        snapshots: None,
    };
    let worker = {
        let (handler, metrics, connector) =
            (handler.clone(), Arc::clone(&metrics), EmbeddedConnector::new(store.clone(), ":memory:"));
        let stop = stop_rx.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(run_partition(&handler, &connector, &settings, &metrics, Arc::new(Default::default()), stop))
        })
    };
    wait_for(port, 200, Duration::from_secs(10)).await;

    // The next event blocks inside the handler: the loop stops heart-beating.
    handler.open.store(false, Ordering::SeqCst);
    store.append(append(2)).await.expect("append");
    let frozen_at = Instant::now();
    let body = wait_for(port, 503, Duration::from_secs(5)).await;
    assert!(frozen_at.elapsed() < interval * 4, "noticed after {:?}", frozen_at.elapsed());
    assert!(body.contains("event-ledger") && body.contains("frozen or gone"), "says which loop froze: {body}");

    handler.open.store(true, Ordering::SeqCst);
    wait_for(port, 200, Duration::from_secs(5)).await;
    stop_tx.send(true).unwrap();
    assert_eq!(worker.join().unwrap(), WorkerExit::Stopped);
}
