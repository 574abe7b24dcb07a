//! The Worker in workerd (`wrangler dev --local`) against a fresh PostgreSQL database:
//! the cron trigger runs the core's batch runtime to the same read models as the native
//! runtime (a poison event dead-lettered and its user parked, as natively), an invocation
//! stops at its budget and the next goes on, and the HTTP routes answer and guard as they
//! should.
//!
//! Needs the Worker toolchain (`npm ci`, `worker-build`, `wasm-bindgen`; `.ci/test`
//! installs them). Without it the test is skipped with the reason, except under `CI=true`,
//! where it fails. One `wrangler dev` serves every check; each check reports its own
//! failure and the test fails listing all of them.

mod support;

use projection_daily_activity::DailyActivity;
use projection_user_profile::UserProfile;
use projector::{BatchRunner, Checkpoint, EventFilter, EventStore, Partition, ProjectionHandler, ProjectionStore};
use projector_postgres::PgStore;
use projector_tests::pg::TestDb;
use support::events;
use support::wrangler::{self, Wrangler};

const TOKEN: &str = "the-rebuild-token";
/// Events per batch in the Worker: the demo history needs many batches.
const BATCH: usize = 25;
const USERS: u32 = 40;

/// Every row of a table (or a parenthesized query), in order, as JSON text.
async fn table_rows(db: &TestDb, table: &str) -> Vec<String> {
    let client = db.client().await;
    client
        .query(&format!("SELECT to_jsonb(t)::text FROM {table} AS t ORDER BY 1"), &[])
        .await
        .unwrap_or_else(|e| panic!("read {table}: {e}"))
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect()
}

async fn append_demo(db: &TestDb) -> usize {
    let store = db.store().await;
    let mut requests = events::demo(USERS);
    requests.insert(requests.len() / 2, events::poison());
    let n = requests.iter().map(|r| r.events.len()).sum();
    for request in requests {
        store.append(request).await.expect("append a demo event");
    }
    db.settle().await;
    n
}

/// What the core's runtime makes of the same events natively.
async fn run_natively<H: ProjectionHandler>(store: &PgStore, handler: &H) {
    store.register(handler.name(), handler.schema(), &handler.filter(), 1).await.expect("register");
    let lease = store
        .claim(handler.name(), Partition::WHOLE, "native", std::time::Duration::from_secs(60))
        .await
        .expect("claim")
        .expect("a free lease");
    let mut runner = BatchRunner::new(handler, store, &EventFilter::all(), lease).batch_size(BATCH);
    runner.catch_up().await.expect("native catch-up");
    store.release(runner.lease()).await.expect("release");
}

/// (events applied, lag) of each partition of `projection`, as the store has them.
async fn progress(db: &TestDb, projection: &str) -> (i64, i64, Checkpoint) {
    let states = db.store().await.states().await.expect("states");
    let s = states.iter().find(|s| s.projection == projection).unwrap_or_else(|| panic!("{projection} registered"));
    (s.events_applied, s.lag_events, s.checkpoint)
}

struct Checks(Vec<String>);

impl Checks {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_runs_the_batch_runtime_in_workerd() {
    let root = wrangler::repo_root();
    if let Some(reason) = wrangler::missing_toolchain(&root) {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "the Worker toolchain is missing under CI: {reason}");
        eprintln!("SKIPPED the workerd test: {reason}");
        return;
    }
    let worker_db = TestDb::new().await;
    let native_db = TestDb::new().await;
    let started = std::time::Instant::now();
    let worker = Wrangler::start(&[
        ("DATABASE_URL", worker_db.url.as_str()),
        ("REBUILD_TOKEN", TOKEN),
        ("BATCH_SIZE", &BATCH.to_string()),
        // A budget smaller than one batch: each invocation runs one batch per partition.
        ("INVOCATION_BUDGET_MS", "1"),
        ("BUDGET_SHARE", "1"),
    ])
    .await;
    eprintln!("wrangler dev answered after {:.1}s", started.elapsed().as_secs_f64());
    let mut checks = Checks(Vec::new());

    let total = append_demo(&worker_db).await;
    assert_eq!(append_demo(&native_db).await, total);
    assert!(total > 3 * BATCH, "the history needs several batches ({total} events)");
    let native = native_db.store().await;
    run_natively(&native, &UserProfile).await;
    run_natively(&native, &DailyActivity).await;
    eprintln!("appended and ran natively after {:.1}s", started.elapsed().as_secs_f64());

    // The first invocation stops at its budget, after one batch per partition.
    worker.trigger_cron().await;
    let (applied, lag, first) = progress(&worker_db, "daily-activity").await;
    checks.check(applied == BATCH as i64 && lag == (total - BATCH) as i64, || {
        format!("the first invocation should apply one batch of {BATCH} and stop; applied {applied}, lag {lag}")
    });

    // Later invocations go on from the stored checkpoint until both are caught up.
    let mut invocations = 1;
    loop {
        let (_, profile_lag, _) = progress(&worker_db, "user-profile").await;
        let (_, activity_lag, _) = progress(&worker_db, "daily-activity").await;
        if profile_lag == 0 && activity_lag == 0 {
            break;
        }
        assert!(
            invocations < 4 * total / BATCH,
            "not caught up after {invocations} invocations\n{}",
            worker.log_tail()
        );
        worker.trigger_cron().await;
        invocations += 1;
    }
    eprintln!("{total} events caught up in {invocations} invocations ({:.1}s in all)", started.elapsed().as_secs_f64());
    let (applied, _, last) = progress(&worker_db, "daily-activity").await;
    checks.check(last > first, || format!("the checkpoint did not move after the first invocation: {first}"));
    checks.check(applied == total as i64, || format!("daily-activity applied {applied} events, not {total}"));
    checks.check(invocations >= total.div_ceil(BATCH), || format!("caught up in {invocations} invocations"));
    let letters = "(SELECT projection, event_type, version, error_class, attempts, status FROM dead_letters)";
    let (got, want) = (table_rows(&worker_db, letters).await, table_rows(&native_db, letters).await);
    checks.check(got.len() == 1 && got == want, || {
        format!("the poison event's dead letter from the Worker differs from the native one:\n{got:#?}\nvs\n{want:#?}")
    });
    for table in ["user_profile", "daily_activity"] {
        let (got, want) = (table_rows(&worker_db, table).await, table_rows(&native_db, table).await);
        checks.check(!want.is_empty() && got == want, || {
            format!("{table} from the Worker differs from the native runtime's:\n{got:#?}\nvs\n{want:#?}")
        });
    }

    eprintln!("compared after {:.1}s", started.elapsed().as_secs_f64());
    // The HTTP routes.
    let health = worker.get("/health").await;
    checks.check(health.status == 200 && health.json()["healthy"] == true, || {
        format!("/health: {} {}", health.status, health.body)
    });
    let status = worker.get("/status").await;
    let projections = status.json()["projections"].as_array().cloned().unwrap_or_default();
    checks.check(
        status.status == 200
            && projections.len() == 2
            && projections.iter().all(|p| p["lag_events"] == 0 && p["status"] == "caught-up"),
        || format!("/status: {} {}", status.status, status.body),
    );
    let metrics = worker.get("/metrics").await;
    checks.check(
        metrics.status == 200
            && metrics.header("content-type").is_some_and(|t| t.starts_with("text/plain; version=0.0.4"))
            && metrics.body.contains("projector_lag_events{projection=\"user-profile\",partition=\"0\"} 0\n")
            && metrics.body.contains(&format!(
                "projector_events_applied{{projection=\"daily-activity\",partition=\"0\"}} {total}\n"
            ))
            && metrics.body.contains("projector_up{projection=\"daily-activity\",partition=\"0\"} 1\n")
            && metrics.body.contains("projector_dead_letters_open{projection=\"user-profile\",partition=\"0\"} 1\n")
            && metrics.body.contains("projector_parked_aggregates{projection=\"user-profile\",partition=\"0\"} 1\n")
            && metrics.body.contains("projector_store_up 1\n"),
        || format!("/metrics: {} {:?}\n{}", metrics.status, metrics.header("content-type"), metrics.body),
    );

    eprintln!("routes after {:.1}s", started.elapsed().as_secs_f64());
    // Rebuilds need the token.
    let missing = worker.send("POST", "/rebuild/user-profile", &[]).await;
    checks.check(missing.status == 401, || format!("rebuild without a token: {} {}", missing.status, missing.body));
    let wrong = worker.send("POST", "/rebuild/user-profile", &[("Authorization", "Bearer the-rebuild-tokeN")]).await;
    checks.check(wrong.status == 403, || format!("rebuild with a wrong token: {} {}", wrong.status, wrong.body));
    let get = worker.get("/rebuild/user-profile").await;
    checks.check(get.status == 405, || format!("GET /rebuild: {} {}", get.status, get.body));
    let bearer = format!("Bearer {TOKEN}");
    let unknown = worker.send("POST", "/rebuild/orders", &[("Authorization", &bearer)]).await;
    checks.check(unknown.status == 404, || format!("rebuild of an unknown projection: {}", unknown.status));
    let rebuilt = worker.send("POST", "/rebuild/daily-activity", &[("Authorization", &bearer)]).await;
    checks.check(rebuilt.status == 200 && rebuilt.json()["events_read"] == total, || {
        format!("rebuild with the token: {} {}", rebuilt.status, rebuilt.body)
    });
    let (got, want) = (table_rows(&worker_db, "daily_activity").await, table_rows(&native_db, "daily_activity").await);
    checks.check(got == want, || "daily_activity after the Worker's rebuild differs from the native runtime's".into());

    eprintln!("done after {:.1}s", started.elapsed().as_secs_f64());
    if std::env::var_os("WORKERD_TEST_LOG").is_some() {
        eprintln!("{}", worker.log_tail());
    }
    assert!(
        checks.0.is_empty(),
        "{} check(s) failed:\n- {}\n\nwrangler:\n{}",
        checks.0.len(),
        checks.0.join("\n- "),
        worker.log_tail()
    );
}
