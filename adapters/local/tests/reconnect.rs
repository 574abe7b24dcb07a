//! The connection behind `/metrics`, `/health` and the alerts, against PostgreSQL:
//! terminated, it is reopened and everything it serves goes on; while the database
//! refuses it, the endpoint says the store is down, and only for that long.

mod common;

use std::net::SocketAddr;

use common::exposition::Exposition;
use common::{append_unreadable_event, eventually, request, Receiver};
use projection_user_profile::UserProfile;
use projector::adapter::ProjectionAdapter;
use projector::config::Config;
use projector_local::{LocalAdapter, PgConnector, Registry, OBSERVER_APPLICATION_NAME};
use projector_tests::pg::{admin_url, TestDb};
use tokio::net::TcpListener;

fn config(listen: SocketAddr, webhook: &str) -> Config {
    let yaml = format!(
        "projections:
  user-profile:
    handler: user-profile
    provider: local
    config: {{ memory: 128MB, timeout: 30s, concurrency: 1 }}
    poll_interval: 20ms
    lease_ttl: 5s
    retry: {{ max_retries: 0, base: 1ms, cap: 1ms }}
    on_failure: park
alerts:
  webhook: {webhook}
  interval: 50ms
  dead_letters: 1
observability:
  listen: {listen}
  health_interval: 30s
"
    );
    Config::from_yaml_str(&yaml, "reconnect-test.yaml", &["user-profile"]).unwrap_or_else(|e| panic!("{e}"))
}

/// A runner on `db` with its endpoint bound (so requests never race the bind).
async fn runner(db: &TestDb, webhook: &str) -> (LocalAdapter<PgConnector>, TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let adapter =
        LocalAdapter::new(config(addr, webhook), PgConnector::new(&db.url), Registry::default().with(UserProfile));
    adapter.register_all(&db.store().await).await.expect("register");
    adapter.deploy("user-profile").await.expect("deploy");
    (adapter, listener, addr)
}

/// The backends of the observability connection, by the name it gives itself.
async fn observer_backends(admin: &tokio_postgres::Client) -> Vec<i32> {
    let rows = admin
        .query(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1",
            &[&OBSERVER_APPLICATION_NAME],
        )
        .await
        .expect("read pg_stat_activity");
    rows.iter().map(|r| r.get(0)).collect()
}

async fn terminate_observer(admin: &tokio_postgres::Client) -> i64 {
    admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = $1",
            &[&OBSERVER_APPLICATION_NAME],
        )
        .await
        .expect("terminate the observer's backend")
        .get(0)
}

async fn store_up(addr: SocketAddr) -> Option<f64> {
    let page = request(addr, "GET", "/metrics").await;
    Exposition::prometheus(&page.body).unwrap_or_else(|e| panic!("{e}\n{}", page.body)).value("projector_store_up", &[])
}

/// Once the runner's states connection was cut (a pooler reset, a server restart, an
/// operator's `pg_terminate_backend`), `/health` stayed 503 and the alerts stopped for
/// good while the workers had long recovered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_observability_connection_comes_back_after_its_backend_is_terminated() {
    let db = TestDb::new().await;
    let receiver = Receiver::start().await;
    let (adapter, listener, addr) = runner(&db, &receiver.url).await;
    let admin = db.client().await;

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let checks = async {
        eventually("/health 200", async || (request(addr, "GET", "/health").await.status == 200).then_some(())).await;
        let before = observer_backends(&admin).await;
        assert_eq!(before.len(), 1, "one connection named {OBSERVER_APPLICATION_NAME}: {before:?}");

        assert_eq!(terminate_observer(&admin).await, 1);
        let after = eventually("a new observer backend and /health 200", async || {
            let healthy = request(addr, "GET", "/health").await.status == 200;
            let backends = observer_backends(&admin).await;
            (healthy && backends.len() == 1 && backends != before).then_some(backends)
        })
        .await;
        assert_ne!(after, before);
        assert_eq!(store_up(addr).await, Some(1.0));

        // The alerts read through the same connection: they still fire.
        append_unreadable_event(&db.store().await).await;
        let firing = eventually("a firing dead_letters notification", async || {
            receiver.bodies().into_iter().find(|b| b["condition"] == "dead_letters")
        })
        .await;
        assert_eq!((firing["status"].as_str(), firing["projection"].as_str()), (Some("firing"), Some("user-profile")));
        stop.send(()).unwrap();
    };
    tokio::join!(
        adapter.serve_on(Some(listener), async {
            let _ = stopped.await;
        }),
        checks
    );
    let _ = tokio::task::block_in_place(|| adapter.stop_all());
}

/// While no connection can be had, `/health` is 503 naming why and `projector_store_up`
/// is 0; once the database takes connections again both recover without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_is_reported_down_while_it_refuses_connections_and_up_once_it_takes_them() {
    let db = TestDb::new().await;
    let receiver = Receiver::start().await;
    let (adapter, listener, addr) = runner(&db, &receiver.url).await;
    let admin = db.client().await;
    // A database cannot refuse connections from a session inside it.
    let server = projector_postgres::PgStore::connect(&admin_url()).await.expect("the maintenance database");
    let allow = |allowed: bool| format!("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {allowed}", db.name);

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let checks = async {
        eventually("/health 200", async || (request(addr, "GET", "/health").await.status == 200).then_some(())).await;

        server.execute_script(&allow(false)).await.expect("refuse connections");
        assert_eq!(terminate_observer(&admin).await, 1);
        let down = request(addr, "GET", "/health").await;
        assert_eq!(down.status, 503, "{}", down.body);
        assert!(down.body.contains("cannot read the projection states"), "{}", down.body);
        assert!(down.body.contains("reconnecting to the PostgreSQL at"), "{}", down.body);
        assert_eq!(store_up(addr).await, Some(0.0));

        server.execute_script(&allow(true)).await.expect("take connections again");
        eventually("/health 200 again", async || (request(addr, "GET", "/health").await.status == 200).then_some(()))
            .await;
        assert_eq!(store_up(addr).await, Some(1.0));
        assert_eq!(observer_backends(&admin).await.len(), 1);
        stop.send(()).unwrap();
    };
    tokio::join!(
        adapter.serve_on(Some(listener), async {
            let _ = stopped.await;
        }),
        checks
    );
    let _ = tokio::task::block_in_place(|| adapter.stop_all());
}
