//! The Worker in workerd (`wrangler dev --local`) against a fresh PostgreSQL database:
//! the cron trigger runs the core's batch runtime to the same read models as the native
//! runtime (a poison event dead-lettered and its user parked, as natively, and the alert
//! webhook told), an invocation stops at its budget and the next goes on, the HTTP
//! routes answer and guard as they should, the operator's adapter reads the Worker over
//! HTTP, a wake-up through the queue catches up without a cron tick, and a version gap
//! retried through the queue is dead-lettered once and alerted.
//!
//! Needs the Worker toolchain (`npm ci`, `worker-build`, `wasm-bindgen`; `.ci/test`
//! installs them). Without it the test is skipped with the reason, except under `CI=true`,
//! where it fails. One `wrangler dev` serves every check; each check reports its own
//! failure and the test fails listing all of them.

mod support;

use projection_daily_activity::DailyActivity;
use projection_user_profile::UserProfile;
use projector::adapter::ProjectionAdapter;
use projector::config::Config;
use projector::{BatchRunner, Checkpoint, EventFilter, EventStore, Partition, ProjectionHandler, ProjectionStore};
use projector_cloudflare::control::CloudflareWorkerAdapter;
use projector_postgres::PgStore;
use projector_tests::pg::TestDb;
use support::events;
use support::webhook::Webhook;
use support::wrangler::{self, Wrangler};

const TOKEN: &str = "the-rebuild-token";
/// Events per batch in the Worker: the demo history needs many batches.
const BATCH: usize = 25;
const USERS: u32 = 40;
/// How long the Worker waits for missing versions: short, so the gap check ends soon.
const GAP_TIMEOUT_MS: &str = "4000";

/// How the operator's side knows the Worker's projections.
const DEPLOYED: &str = "
projections:
  user-profile:
    handler: user-profile
    provider: cloudflare
    config: { memory: 128MB, timeout: 30s, concurrency: 1 }
  daily-activity:
    handler: daily-activity
    provider: cloudflare
    config: { memory: 128MB, timeout: 30s, concurrency: 1 }
";

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
    let webhook = Webhook::start().await;
    let worker = Wrangler::start(&[
        ("DATABASE_URL", worker_db.url.as_str()),
        ("REBUILD_TOKEN", TOKEN),
        ("ALERT_WEBHOOK", &webhook.url),
        ("GAP_TIMEOUT_MS", GAP_TIMEOUT_MS),
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

    eprintln!("rebuilt after {:.1}s", started.elapsed().as_secs_f64());
    operator_reads_the_worker(&worker, &root, &mut checks).await;
    let alerts = dead_letter_alerts(&webhook);
    checks.check(alerts.len() == 1 && alerts[0]["status"] == "firing", || {
        format!("one alert for the poison event's dead letter, not {alerts:#?}")
    });
    eprintln!("monitored after {:.1}s", started.elapsed().as_secs_f64());

    wake_ups_catch_up_without_the_cron(&worker, &worker_db, &mut checks).await;
    eprintln!("woken after {:.1}s", started.elapsed().as_secs_f64());
    a_gap_retried_through_the_queue_is_dead_lettered_once(&worker, &worker_db, &webhook, &mut checks).await;

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

/// The `dead_letters` notifications of user-profile the webhook received.
fn dead_letter_alerts(webhook: &Webhook) -> Vec<serde_json::Value> {
    let all = webhook.received();
    all.into_iter().filter(|a| a["condition"] == "dead_letters" && a["projection"] == "user-profile").collect()
}

/// `CloudflareWorkerAdapter` reads the Worker's `/health` and `/status` over HTTP.
async fn operator_reads_the_worker(worker: &Wrangler, root: &std::path::Path, checks: &mut Checks) {
    let config = Config::from_yaml_str(DEPLOYED, "projections.yaml", &["user-profile", "daily-activity"])
        .expect("the deployed configuration");
    let adapter = CloudflareWorkerAdapter::<PgStore>::new(config, root)
        .expect("the adapter")
        .url(format!("http://127.0.0.1:{}", worker.port));
    match adapter.monitor("user-profile").await {
        Ok(states) => checks
            .check(states.len() == 1 && states[0].lag_events == 0 && states[0].dead_letters == 1, || {
                format!("monitor(user-profile) over HTTP: {states:#?}")
            }),
        Err(e) => checks.check(false, || format!("monitor(user-profile) over HTTP failed: {e}")),
    }
    match adapter.report("daily-activity").await {
        Ok(report) => checks.check(
            report.health.healthy && report.health.partitions.len() == 2 && report.projections.len() == 2,
            || format!("the Worker's report over HTTP: {report:#?}"),
        ),
        Err(e) => checks.check(false, || format!("the Worker's report over HTTP failed: {e}")),
    }
}

/// Polls `done` every 250 ms for up to `seconds`; whether it came true.
async fn eventually(seconds: u64, mut done: impl AsyncFnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while std::time::Instant::now() < deadline {
        if done().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    done().await
}

/// `POST /wake` needs the token, then queues a wake-up whose consumer applies the new
/// events at once: no cron tick is triggered here.
async fn wake_ups_catch_up_without_the_cron(worker: &Wrangler, db: &TestDb, checks: &mut Checks) {
    let refused = worker.send("POST", "/wake", &[]).await;
    checks.check(refused.status == 401, || format!("a wake-up without the token: {} {}", refused.status, refused.body));
    let more: Vec<_> = events::demo(USERS + 3).into_iter().skip(USERS as usize).take(3).collect();
    let store = db.store().await;
    for request in more {
        store.append(request).await.expect("append a new user");
    }
    db.settle().await;
    let (before, _, _) = progress(db, "daily-activity").await;
    let bearer = format!("Bearer {TOKEN}");
    let woke = worker.send("POST", "/wake", &[("Authorization", &bearer)]).await;
    checks.check(woke.status == 202, || format!("a wake-up with the token: {} {}", woke.status, woke.body));
    let expected = before + 3;
    let caught_up = eventually(60, async || {
        let (applied, lag, _) = progress(db, "daily-activity").await;
        let (_, profile_lag, _) = progress(db, "user-profile").await;
        applied == expected && lag == 0 && profile_lag == 0
    })
    .await;
    checks.check(caught_up, || {
        format!("the wake-up did not catch up: daily-activity should have applied {expected}\n{}", worker.log_tail())
    });
}

/// A version missing before an event: the partition waits, its retry goes through the
/// wake queue (and, once the queue gives up, its dead-letter queue), and the event is
/// dead-lettered exactly once, its user parked, the alert sent.
async fn a_gap_retried_through_the_queue_is_dead_lettered_once(
    worker: &Wrangler,
    db: &TestDb,
    webhook: &Webhook,
    checks: &mut Checks,
) {
    let (user, third) = events::gap(db).await;
    let bearer = format!("Bearer {TOKEN}");
    let woke = worker.send("POST", "/wake", &[("Authorization", &bearer)]).await;
    checks.check(woke.status == 202, || format!("a wake-up with the token: {} {}", woke.status, woke.body));
    let letters = "(SELECT projection, version, status, error_class, strpos(error, 'missing') > 0 AS names_the_gap \
                   FROM dead_letters WHERE event_id = '{third}')";
    let letters = letters.replace("{third}", &third.to_string());
    let lettered = eventually(120, async || !table_rows(db, &letters).await.is_empty()).await;
    let alerted = eventually(30, async || dead_letter_alerts(webhook).len() == 2).await;
    let rows = table_rows(db, &letters).await;
    checks.check(
        lettered
            && rows.len() == 1
            && rows[0].contains("\"projection\": \"user-profile\"")
            && rows[0].contains("\"version\": 3")
            && rows[0].contains("\"status\": \"open\"")
            && rows[0].contains("\"names_the_gap\": true"),
        || format!("the gap's dead letter: {rows:#?}\n{}", worker.log_tail()),
    );
    let parked =
        table_rows(db, &format!("(SELECT from_version FROM parked_aggregates WHERE aggregate_id = '{user}')")).await;
    checks.check(parked == ["{\"from_version\": 3}"], || format!("the user parked from version 3: {parked:?}"));
    checks.check(alerted, || format!("one more dead-letter alert, for the gap: {:#?}", webhook.received()));
}
