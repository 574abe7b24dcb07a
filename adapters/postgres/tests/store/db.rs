//! A fresh database per check on the test server, dropped when the check ends.

use std::sync::atomic::{AtomicU32, Ordering};

use projector_postgres::PgStore;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The maintenance URL: `PROJECTOR_TEST_DATABASE_URL`, or the local server as `postgres`.
fn admin_url() -> String {
    std::env::var("PROJECTOR_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database that exists for the life of this value.
#[derive(Debug)]
pub struct TestDb {
    name: String,
    pub url: String,
}

impl TestDb {
    /// A new, empty database (no migrations applied).
    pub async fn empty() -> TestDb {
        let name = format!(
            "projector_pg_{}_{}_{:x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0)
        );
        let admin = PgStore::connect(&admin_url())
            .await
            .unwrap_or_else(|e| panic!("the test PostgreSQL server at {} is not reachable: {e}", admin_url()));
        admin.execute_script(&format!("CREATE DATABASE {name}")).await.expect("create test database");
        let admin = admin_url();
        let (path, query) = admin.split_once('?').map_or((admin.as_str(), ""), |(p, q)| (p, q));
        let base = path.rsplit_once('/').map_or(path, |(base, _)| base);
        let url = if query.is_empty() { format!("{base}/{name}") } else { format!("{base}/{name}?{query}") };
        TestDb { name, url }
    }

    /// A new database with the current schema.
    pub async fn migrated() -> TestDb {
        let db = TestDb::empty().await;
        db.store().await.migrate().await.expect("migrate test database");
        db
    }

    pub async fn store(&self) -> PgStore {
        PgStore::connect(&self.url).await.expect("connect to test database")
    }

    /// A raw client, for what the store API does not show.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) =
            tokio_postgres::connect(&self.url, tokio_postgres::NoTls).await.expect("connect to test database");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Dropping needs async I/O; a thread of its own works under any runtime.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async move {
                if let Ok(admin) = PgStore::connect(&admin_url()).await {
                    let _ = admin.execute_script(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
                }
            });
        })
        .join();
    }
}
