//! `LocalAdapter::serve` on the embedded store: while the deployed workers run it answers
//! `/health` and sends alert notifications, and it returns on shutdown or when every
//! worker has ended.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{append_unreadable_event, eventually, free_port, get_status, Receiver};
use projection_user_profile::UserProfile;
use projector::adapter::ProjectionAdapter;
use projector::config::Config;
use projector_embedded::EmbeddedStore;
use projector_local::{EmbeddedConnector, LocalAdapter, Registry, ServeEnd, WorkerExit};

fn config(on_failure: &str, listen: &str, webhook: &str) -> Config {
    let yaml = format!(
        "projections:
  user-profile:
    handler: user-profile
    provider: local
    config: {{ memory: 128MB, timeout: 30s, concurrency: 1 }}
    poll_interval: 20ms
    lease_ttl: 5s
    retry: {{ max_retries: 0, base: 1ms, cap: 1ms }}
    on_failure: {on_failure}
alerts:
  webhook: {webhook}
  interval: 50ms
  dead_letters: 1
observability:
  listen: {listen}
  health_interval: 5s
"
    );
    Config::from_yaml_str(&yaml, "serve-test.yaml", &["user-profile"]).unwrap_or_else(|errors| panic!("{errors}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_health_metrics_and_alerts_until_shutdown() {
    let store = EmbeddedStore::open_in_memory().expect("store");
    let receiver = Receiver::start().await;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let connector = EmbeddedConnector::new(store.clone(), ":memory:");
    let adapter = LocalAdapter::new(
        config("park", &addr.to_string(), &receiver.url),
        connector,
        Registry::default().with(UserProfile),
    );
    adapter.register_all(&store).await.expect("register");
    adapter.deploy("user-profile").await.expect("deploy");
    append_unreadable_event(&store).await;

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let checks = async {
        let (code, body) = eventually("/health", async || get_status(addr, "/health").await).await;
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("user-profile"), "{body}");
        let (code, metrics) = get_status(addr, "/metrics").await.expect("/metrics answers");
        assert_eq!(code, 200, "{metrics}");
        assert!(metrics.contains("projection=\"user-profile\""), "{metrics}");
        let firing = eventually("a firing dead_letters notification", async || {
            receiver.bodies().into_iter().find(|b| b["condition"] == "dead_letters")
        })
        .await;
        assert_eq!(firing["status"], "firing");
        assert_eq!(firing["projection"], "user-profile");
        stop.send(()).unwrap();
    };
    let (end, ()) = tokio::join!(
        adapter.serve(async {
            let _ = stopped.await;
        }),
        checks
    );
    let end = end.expect("the endpoint binds");
    assert_eq!(end, ServeEnd::Shutdown);
    assert!(get_status(addr, "/health").await.is_none(), "the endpoint closes when serve returns");
    let exits = tokio::task::block_in_place(|| adapter.stop_all());
    assert_eq!(exits["user-profile"], [WorkerExit::Stopped]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returns_when_every_worker_has_ended() {
    let store = EmbeddedStore::open_in_memory().expect("store");
    let connector = EmbeddedConnector::new(store.clone(), ":memory:");
    let adapter = LocalAdapter::new(
        config("stop", "off", "http://127.0.0.1:1/unused"),
        connector,
        Registry::default().with(UserProfile),
    );
    adapter.register_all(&store).await.expect("register");
    adapter.deploy("user-profile").await.expect("deploy");
    append_unreadable_event(&store).await;

    let end = tokio::time::timeout(Duration::from_secs(10), adapter.serve(std::future::pending()))
        .await
        .expect("serve returns once the only worker has halted")
        .expect("nothing to bind");
    assert_eq!(end, ServeEnd::WorkersEnded);
    let exits = tokio::task::block_in_place(|| adapter.stop_all());
    assert!(matches!(exits["user-profile"].as_slice(), [WorkerExit::Halted(_)]), "{exits:?}");
}

/// The user-profile handler, except that finding the row of a `UserEmailChanged` panics
/// (outside the handler call the runtime guards).
struct PanicsOnEmailChange;

impl projector::ProjectionHandler for PanicsOnEmailChange {
    type Key = <UserProfile as projector::ProjectionHandler>::Key;
    type Row = <UserProfile as projector::ProjectionHandler>::Row;

    fn name(&self) -> &'static str {
        "user-profile"
    }

    fn schema(&self) -> &'static projector::TableSchema {
        UserProfile.schema()
    }

    fn ordering(&self) -> projector::Ordering {
        UserProfile.ordering()
    }

    fn filter(&self) -> projector::EventFilter {
        UserProfile.filter()
    }

    fn key(&self, event: &projector::DomainEvent) -> Option<Self::Key> {
        assert_ne!(event.event_type, "UserEmailChanged", "this handler cannot key an email change");
        UserProfile.key(event)
    }

    fn handle(
        &self,
        row: &mut Option<Self::Row>,
        event: &projector::DomainEvent,
    ) -> Result<(), projector::HandlerError> {
        UserProfile.handle(row, event)
    }
}

/// A worker that ends while the runner serves (here a panic, which records nothing in
/// the store) makes `/health` answer 503 at once, not only when its heartbeat goes stale
/// (an hour here); the other partition keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_exits_makes_health_unavailable() {
    let store = EmbeddedStore::open_in_memory().expect("store");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let yaml = format!(
        "projections:
  user-profile:
    handler: user-profile
    provider: local
    config: {{ memory: 128MB, timeout: 30s, concurrency: 1 }}
    partitions: 2
    poll_interval: 20ms
    lease_ttl: 5s
observability:
  listen: {addr}
  health_interval: 1h
"
    );
    let config = Config::from_yaml_str(&yaml, "exit-test.yaml", &["user-profile"]).unwrap_or_else(|e| panic!("{e}"));
    let connector = EmbeddedConnector::new(store.clone(), ":memory:");
    let adapter = LocalAdapter::new(config, connector, Registry::default().with(PanicsOnEmailChange));
    adapter.register_all(&store).await.expect("register");
    adapter.deploy("user-profile").await.expect("deploy");

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let checks = async {
        let (code, body) = eventually("/health", async || get_status(addr, "/health").await).await;
        assert_eq!(code, 200, "{body}");
        append_unreadable_event(&store).await;
        let (code, body) = eventually("a 503 from /health", async || {
            get_status(addr, "/health").await.filter(|(code, _)| *code == 503)
        })
        .await;
        assert_eq!(code, 503);
        assert!(body.contains("the worker exited: failed: panicked: "), "{body}");
        stop.send(()).unwrap();
    };
    let (end, ()) = tokio::join!(
        adapter.serve(async {
            let _ = stopped.await;
        }),
        checks
    );
    let end = end.expect("the endpoint binds");
    assert_eq!(end, ServeEnd::Shutdown, "the other partition still runs");
    let _ = tokio::task::block_in_place(|| adapter.stop_all());
}

/// An `observability.listen` address that is taken is an error naming it, not a warning
/// and a runner nobody can watch.
#[tokio::test]
async fn an_observability_address_that_cannot_be_bound_is_an_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let store = EmbeddedStore::open_in_memory().expect("store");
    let connector = EmbeddedConnector::new(store.clone(), ":memory:");
    let adapter = LocalAdapter::new(
        config("park", &addr.to_string(), "http://127.0.0.1:1/unused"),
        connector,
        Registry::default().with(UserProfile),
    );
    let error = adapter.serve(std::future::pending()).await.expect_err("the address is taken");
    assert!(error.to_string().contains(&addr.to_string()), "{error}");
}

/// A partition that failed before and runs again reports no failure: its status and
/// `last_error` clear once a step succeeds, even with nothing new to read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_that_runs_again_clears_its_last_error() {
    use projector::{Partition, ProjectionStore, Status};
    let store = EmbeddedStore::open_in_memory().expect("store");
    let connector = EmbeddedConnector::new(store.clone(), ":memory:");
    let adapter = LocalAdapter::new(
        config("park", "off", "http://127.0.0.1:1/unused"),
        connector,
        Registry::default().with(UserProfile),
    );
    adapter.register_all(&store).await.expect("register");
    store.set_status("user-profile", Partition::WHOLE, Status::Failed, Some("connection reset")).await.unwrap();
    adapter.deploy("user-profile").await.expect("deploy");
    let state = eventually("the partition to report no failure", async || {
        let states = store.states().await.ok()?;
        states.into_iter().find(|s| s.status != Status::Failed && s.last_error.is_none())
    })
    .await;
    assert_eq!(state.status, Status::CaughtUp, "{state:?}");
    assert_eq!(state.error_count, 1, "the error count keeps the history");
    let _ = tokio::task::block_in_place(|| adapter.stop_all());
}
