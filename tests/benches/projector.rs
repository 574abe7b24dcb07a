//! End-to-end numbers for Projector on PostgreSQL. Prints numbers; it is not a test.
//!
//! ```text
//! cargo bench -p projector-tests --bench projector -- [--events N] [--aggregates N] [--quick]
//!                                                       [--phases] [--rebuild-only] [--read-size N]
//! ```
//!
//! The database comes from `PROJECTOR_BENCH_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); the bench drops and recreates its own
//! database `projector_bench` there.
//!
//! Steps: seed (server-side), the reference SQL statement, a full rebuild (verified
//! against the statement), live catch-up with a checkpoint per batch (verified), peak
//! RSS, batch appends over 4 connections, single-append latency, and append→read-model
//! lag at ~1000 events/s, then a summary against the targets.
//!
//! Diagnostics: `--phases` adds instrumented copies of the rebuild and of a live batch
//! (time per phase, CPU of client and server, plans) and experiments that measure
//! candidate changes (read-ahead, fewer columns, COPY, a row cache, asynchronous commit);
//! `--rebuild-only` stops after the rebuild; `--read-size N` sets `Rebuild::read_size`.
//! Wall times on a shared 2-core machine are noisy: compare the CPU lines too.

use std::collections::HashMap;
use std::error::Error;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use projection_user_profile::{UserProfile, SCHEMA};
use projector::fold::Fold;
use projector::{
    AppendRequest, BatchRunner, CatchUpWindow, Checkpoint, EventFilter, EventStore, ExpectedVersion, NewEvent,
    Partition, ProjectionHandler, ProjectionStore, Rebuild, RebuildSession, Rebuilds,
};
use projector_postgres::{PgStore, Xid8};
use serde_json::json;
use tokio_postgres::types::Type;
use tokio_postgres::{AsyncMessage, Client, NoTls};
use uuid::Uuid;

#[path = "parts/cli.rs"]
mod cli;
#[path = "parts/hand_written.rs"]
mod hand_written;

type BoxError = Box<dyn Error + Send + Sync>;
type Res<T> = Result<T, BoxError>;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const BENCH_DB: &str = "projector_bench";
const OWNER: &str = "bench";
/// `config.memory` of the runners the bench drives, as in the default `projections.yaml`.
const RUNNER_MEMORY: u64 = 128 << 20;

/// Interleaved repetitions of each `--phases` experiment (the best is reported).
const ROUNDS: usize = 3;

const TARGET_REBUILD: f64 = 300_000.0;
const TARGET_RSS_MB: f64 = 64.0;
const TARGET_LAG_P99_MS: f64 = 2.0;
const TARGET_LAG_P99_FAST_MS: f64 = 20.0;
const TARGET_CATCH_UP_RATIO: f64 = 1.5;
const TARGET_TAKEOVER: Duration = Duration::from_secs(1);
/// The hand-written worker's batch (the yardstick's shape).
const HAND_WRITTEN_BATCH: i64 = 10_000;

/// The reference semantics of `user_profile` as one SQL statement (the yardstick).
const REFERENCE_SQL: &str = "
SELECT aggregate_id AS user_id,
       (array_agg(event_data ->> 'email' ORDER BY version DESC) FILTER (WHERE event_type IN ('UserRegistered', 'UserEmailChanged')))[1] AS email,
       (array_agg(event_data ->> 'name' ORDER BY version DESC) FILTER (WHERE event_type IN ('UserRegistered', 'UserRenamed')))[1] AS name,
       (array_agg(event_data ->> 'plan' ORDER BY version DESC) FILTER (WHERE event_type IN ('UserRegistered', 'PlanUpgraded')))[1] AS plan,
       NOT bool_or(event_type = 'UserDeactivated') AS active,
       max(version) AS version
FROM events WHERE aggregate_type = 'user' GROUP BY aggregate_id";

/// The read-model upsert `write_rows` sends (as `upsert_sql` builds it for `user_profile`).
const UPSERT_SQL: &str =
    "INSERT INTO \"user_profile\" (\"user_id\", \"email\", \"name\", \"plan\", \"active\", \"version\")
SELECT \"user_id\", \"email\", \"name\", \"plan\", \"active\", \"version\"
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::boolean[], $6::bigint[])
     AS r(\"user_id\", \"email\", \"name\", \"plan\", \"active\", \"version\")
ON CONFLICT (\"user_id\") DO UPDATE SET \"email\" = EXCLUDED.\"email\", \"name\" = EXCLUDED.\"name\",
    \"plan\" = EXCLUDED.\"plan\", \"active\" = EXCLUDED.\"active\", \"version\" = EXCLUDED.\"version\"";

/// `user_profile` rows as one array per column.
#[derive(Default)]
struct RowArrays {
    ids: Vec<Uuid>,
    emails: Vec<Option<String>>,
    names: Vec<Option<String>>,
    plans: Vec<Option<String>>,
    active: Vec<bool>,
    versions: Vec<i64>,
}

impl RowArrays {
    fn from_rows(rows: &[tokio_postgres::Row]) -> Self {
        let mut a = RowArrays::default();
        for r in rows {
            a.ids.push(r.get(0));
            a.emails.push(r.get(1));
            a.names.push(r.get(2));
            a.plans.push(r.get(3));
            a.active.push(r.get(4));
            a.versions.push(r.get(5));
        }
        a
    }

    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 6] {
        [&self.ids, &self.emails, &self.names, &self.plans, &self.active, &self.versions]
    }

    fn slice(&self, from: usize, to: usize) -> RowArrays {
        RowArrays {
            ids: self.ids[from..to].to_vec(),
            emails: self.emails[from..to].to_vec(),
            names: self.names[from..to].to_vec(),
            plans: self.plans[from..to].to_vec(),
            active: self.active[from..to].to_vec(),
            versions: self.versions[from..to].to_vec(),
        }
    }
}

/// A plan line, shortened (custom plans print whole parameter arrays).
fn clip(line: &str) -> String {
    if line.chars().count() <= 180 {
        return line.to_owned();
    }
    let cut: String = line.chars().take(180).collect();
    format!("{cut}…")
}

// ---------------------------------------------------------------------------------------
// Arguments, URLs, small helpers
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
struct Args {
    events: u64,
    aggregates: u64,
    phases: bool,
    rebuild_only: bool,
    /// `Rebuild::read_size` for the rebuild of step 3 (`None`: the runtime's default).
    read_size: Option<usize>,
}

fn parse_number(value: Option<String>, flag: &str) -> u64 {
    let Some(v) = value else {
        eprintln!("{flag} needs a number");
        std::process::exit(2);
    };
    match v.replace(['_', ','], "").parse() {
        Ok(n) => n,
        Err(_) => {
            eprintln!("{flag}: not a number: {v}");
            std::process::exit(2);
        }
    }
}

fn parse_args() -> Args {
    let mut args = Args { events: 1_000_000, aggregates: 100_000, phases: false, rebuild_only: false, read_size: None };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
            None => (arg.clone(), None),
        };
        match flag.as_str() {
            "--events" => args.events = parse_number(inline.or_else(|| it.next()), "--events"),
            "--aggregates" => args.aggregates = parse_number(inline.or_else(|| it.next()), "--aggregates"),
            "--quick" => {
                args.events = 100_000;
                args.aggregates = 10_000;
            }
            "--phases" => args.phases = true,
            "--rebuild-only" => args.rebuild_only = true,
            "--read-size" => args.read_size = Some(parse_number(inline.or_else(|| it.next()), "--read-size") as usize),
            // `cargo bench` passes `--bench` to harness-less benches.
            "--bench" => {}
            other => eprintln!("ignoring unknown argument {other:?}"),
        }
    }
    if args.aggregates == 0 || args.events < args.aggregates {
        eprintln!("need 0 < aggregates <= events (got {} events, {} aggregates)", args.events, args.aggregates);
        std::process::exit(2);
    }
    args
}

/// The same server, database `projector_bench`.
fn bench_url(base: &str) -> String {
    match base.find("://") {
        Some(scheme) => {
            let (main, query) = match base.find('?') {
                Some(q) => (&base[..q], &base[q..]),
                None => (base, ""),
            };
            let start = scheme + 3;
            let authority_end = main[start..].find('/').map_or(main.len(), |i| start + i);
            format!("{}/{BENCH_DB}{query}", &main[..authority_end])
        }
        None => format!("{base} dbname={BENCH_DB}"),
    }
}

async fn connect_raw(url: &str) -> Res<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Thousands separators.
fn int(n: f64) -> String {
    let s = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn rate(events: u64, elapsed: Duration) -> f64 {
    events as f64 / elapsed.as_secs_f64().max(1e-9)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Peak resident set size of this process (`VmHWM`), in MB.
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Resets `VmHWM` to the current RSS (Linux ≥ 4.0), so a phase's own peak can be read.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// utime + stime of a process, in seconds (`/proc/<pid>/stat`).
fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// CPU used so far by this process and by the server backends of the bench database.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    client: f64,
    server: f64,
}

impl Cpu {
    async fn now(sql: &Client) -> Cpu {
        let pids = sql
            .query(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .map(|rows| rows.iter().map(|r| r.get::<_, i32>(0)).collect::<Vec<_>>())
            .unwrap_or_default();
        Cpu { client: cpu_seconds("self"), server: pids.iter().map(|p| cpu_seconds(&p.to_string())).sum() }
    }

    /// "client CPU x s, postgres CPU y s" since `self` (backends that exited are lost).
    fn since(self, before: Cpu) -> String {
        format!(
            "client CPU {:.2} s, postgres backend CPU {:.2} s",
            self.client - before.client,
            (self.server - before.server).max(0.0)
        )
    }
}

/// splitmix64: deterministic ids and choices without a rand dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn uuid(&mut self) -> Uuid {
        let bytes = ((u128::from(self.next()) << 64) | u128::from(self.next())).to_be_bytes();
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}

/// A user-profile event for `version` of a user (the same shape the seed writes).
fn user_event(rng: &mut Rng, id: Uuid, version: i64) -> NewEvent {
    let short = &id.simple().to_string()[..12];
    if version == 1 {
        return NewEvent::new(
            "UserRegistered",
            json!({"email": format!("{short}@example.com"), "name": format!("User {short}"), "plan": "free"}),
        );
    }
    match rng.below(100) {
        0..=39 => NewEvent::new("UserEmailChanged", json!({"email": format!("{short}.{version}@example.org")})),
        40..=71 => NewEvent::new("UserRenamed", json!({"name": format!("User {short} #{version}")})),
        72..=96 => {
            let plans = ["starter", "pro", "business", "enterprise"];
            NewEvent::new("PlanUpgraded", json!({"plan": plans[(version % 4) as usize]}))
        }
        _ => NewEvent::new("UserDeactivated", json!({"reason": "requested"})),
    }
}

fn request(id: Uuid, expected: i64, events: Vec<NewEvent>) -> AppendRequest {
    AppendRequest {
        aggregate_id: id,
        aggregate_type: "user".into(),
        expected_version: ExpectedVersion::Exact(expected),
        events,
        idempotency_key: None,
    }
}

// ---------------------------------------------------------------------------------------
// Steps
// ---------------------------------------------------------------------------------------

/// Seeds `n` events over `a` user aggregates in one server-side statement.
///
/// Every aggregate registers at a random instant in the first 27 days; each of the other
/// `n - a` events picks a random aggregate and a random instant after its registration.
/// Versions are numbered per aggregate by time and rows are inserted in time order, so
/// aggregates interleave and each aggregate's versions are consecutive from 1 and in
/// position order.
async fn seed(sql: &Client, n: u64, a: u64) -> Res<()> {
    sql.batch_execute("SET work_mem = '256MB'; SELECT setseed(0.42)").await?;
    let extra = n - a;
    let statement = format!(
        "INSERT INTO events (event_id, aggregate_id, aggregate_type, event_type, event_data, metadata, version, timestamp)
WITH agg AS (
    SELECT a, random() * 0.9 AS t0 FROM generate_series(1, {a}) AS a
), extra AS (
    SELECT (1 + floor(random() * {a}))::bigint AS a, random() AS u, random() AS k
    FROM generate_series(1, {extra})
), numbered AS (
    SELECT a, t, row_number() OVER (PARTITION BY a ORDER BY t) AS v,
           CASE WHEN first THEN 'UserRegistered'
                WHEN k < 0.40 THEN 'UserEmailChanged'
                WHEN k < 0.72 THEN 'UserRenamed'
                WHEN k < 0.97 THEN 'PlanUpgraded'
                ELSE 'UserDeactivated' END AS event_type
    FROM (
        SELECT a::bigint AS a, t0 AS t, 0.0::float8 AS k, true AS first FROM agg
        UNION ALL
        SELECT x.a, g.t0 + (1 - g.t0) * (0.0001 + 0.9999 * x.u), x.k, false
        FROM extra x JOIN agg g ON g.a = x.a
    ) ev
)
SELECT gen_random_uuid(), md5('bench-user-' || a)::uuid, 'user', event_type,
       CASE event_type
           WHEN 'UserRegistered' THEN
               jsonb_build_object('email', 'user' || a || '@example.com', 'name', 'User ' || a, 'plan', 'free')
           WHEN 'UserEmailChanged' THEN jsonb_build_object('email', 'user' || a || '.' || v || '@example.org')
           WHEN 'UserRenamed' THEN jsonb_build_object('name',
               CASE WHEN v % 7 = 0 THEN 'Zoë «' || a || '» ' || v ELSE 'User ' || a || ' #' || v END)
           WHEN 'PlanUpgraded' THEN
               jsonb_build_object('plan', (ARRAY['starter', 'pro', 'business', 'enterprise'])[1 + (v % 4)::int])
           ELSE jsonb_build_object('reason', 'requested')
       END,
       jsonb_build_object('event_version', 1, 'correlation_id', md5('corr-' || a)::uuid),
       v,
       timestamptz '2025-01-01 00:00:00+00' + t * interval '30 days'
FROM numbered
ORDER BY t"
    );
    sql.batch_execute(&statement).await?;
    sql.batch_execute("RESET work_mem").await?;
    Ok(())
}

/// Both directions of `EXCEPT` between our table and the reference table must be empty.
async fn verify(sql: &Client, ours: &str, reference: &str) -> Res<()> {
    let cols = "user_id, email, name, plan, active, version";
    let row = sql
        .query_one(
            &format!(
                "SELECT (SELECT count(*) FROM (SELECT {cols} FROM {ours} EXCEPT SELECT {cols} FROM {reference}) x),
                        (SELECT count(*) FROM (SELECT {cols} FROM {reference} EXCEPT SELECT {cols} FROM {ours}) y),
                        (SELECT count(*) FROM {ours}), (SELECT count(*) FROM {reference})"
            ),
            &[],
        )
        .await?;
    let (extra, missing, n_ours, n_ref): (i64, i64, i64, i64) = (row.get(0), row.get(1), row.get(2), row.get(3));
    if extra == 0 && missing == 0 {
        println!("      verified: read model equals the SQL statement ({} rows)", int(n_ours as f64));
        return Ok(());
    }
    println!(
        "      MISMATCH: {extra} rows only in {ours}, {missing} rows only in {reference} ({n_ours} vs {n_ref} rows)"
    );
    let sample = sql
        .query(
            &format!(
                "(SELECT 'ours' AS side, {cols} FROM (SELECT {cols} FROM {ours} EXCEPT SELECT {cols} FROM {reference}) x LIMIT 5)
                 UNION ALL
                 (SELECT 'sql' AS side, {cols} FROM (SELECT {cols} FROM {reference} EXCEPT SELECT {cols} FROM {ours}) y LIMIT 5)"
            ),
            &[],
        )
        .await?;
    for r in sample {
        let side: String = r.get(0);
        let id: Uuid = r.get(1);
        let email: Option<String> = r.get(2);
        let name: Option<String> = r.get(3);
        let plan: Option<String> = r.get(4);
        let active: Option<bool> = r.get(5);
        let version: Option<i64> = r.get(6);
        println!("        {side}: {id} {email:?} {name:?} {plan:?} active={active:?} v{version:?}");
    }
    std::process::exit(1);
}

/// [`verify`] without the success line.
async fn verify_quiet(sql: &Client, ours: &str, reference: &str) -> Res<()> {
    let cols = "user_id, email, name, plan, active, version";
    let row = sql
        .query_one(
            &format!(
                "SELECT (SELECT count(*) FROM (SELECT {cols} FROM {ours} EXCEPT SELECT {cols} FROM {reference}) x)
                      + (SELECT count(*) FROM (SELECT {cols} FROM {reference} EXCEPT SELECT {cols} FROM {ours}) y)"
            ),
            &[],
        )
        .await?;
    if row.get::<_, i64>(0) != 0 {
        return verify(sql, ours, reference).await;
    }
    Ok(())
}

async fn reset_projection(sql: &Client) -> Res<()> {
    sql.batch_execute("DELETE FROM user_profile").await?;
    sql.batch_execute("UPDATE projection_state SET transaction_id = '0', position = 0").await?;
    // Not timed: start the catch-up on a table without dead rows, as a fresh deploy would.
    sql.batch_execute("VACUUM user_profile").await?;
    Ok(())
}

struct CatchUp {
    events: u64,
    batches: u64,
    elapsed: Duration,
}

/// Live path from checkpoint 0: read, load rows, fold, commit rows + checkpoint per batch.
async fn catch_up(store: &PgStore, batch: usize) -> Res<CatchUp> {
    let lease = store
        .claim(UserProfile.name(), Partition::WHOLE, OWNER, Duration::from_secs(60))
        .await?
        .ok_or("the lease is held by another owner")?;
    let mut runner = BatchRunner::new(&UserProfile, store, &EventFilter::all(), lease)
        .batch_size(batch)
        .lease_ttl(Duration::from_secs(60))
        .window(CatchUpWindow::for_memory(RUNNER_MEMORY));
    let start = Instant::now();
    let (mut events, mut batches) = (0u64, 0u64);
    loop {
        let outcome = runner.step().await?;
        if outcome.events_read == 0 {
            break;
        }
        events += outcome.events_read as u64;
        batches += 1;
    }
    Ok(CatchUp { events, batches, elapsed: start.elapsed() })
}

/// Live path split into `partitions` hash partitions, each on its own connection and
/// task, as `partitions: N` runs them (scale-out on one machine).
async fn catch_up_partitioned(url: &str, batch: usize, partitions: u32) -> Res<CatchUp> {
    let mut stores = Vec::new();
    for _ in 0..partitions {
        stores.push(PgStore::connect(url).await?);
    }
    // The store owns the count: the bench changes it as `projector scale` does.
    stores[0].repartition(UserProfile.name(), partitions).await?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (index, store) in stores.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let partition = Partition { index: index as u32, count: partitions };
            let lease = store
                .claim(UserProfile.name(), partition, OWNER, Duration::from_secs(60))
                .await?
                .ok_or("the lease is held by another owner")?;
            let mut runner = BatchRunner::new(&UserProfile, &store, &EventFilter::all(), lease)
                .batch_size(batch)
                .lease_ttl(Duration::from_secs(60))
                .window(CatchUpWindow::for_memory(RUNNER_MEMORY));
            let (mut events, mut batches) = (0u64, 0u64);
            loop {
                let outcome = runner.step().await?;
                if outcome.events_read == 0 {
                    break;
                }
                events += outcome.events_read as u64;
                batches += 1;
            }
            Ok::<(u64, u64), BoxError>((events, batches))
        }));
    }
    let (mut events, mut batches) = (0, 0);
    for task in tasks {
        let (e, b) = task.await??;
        events += e;
        batches += b;
    }
    Ok(CatchUp { events, batches, elapsed: start.elapsed() })
}

/// `total` events in appends of `per_append` events (new aggregates) over `connections`
/// concurrent connections. Returns (events, elapsed).
async fn batch_append(url: &str, total: usize, per_append: usize, connections: usize) -> Res<(u64, Duration)> {
    let mut stores = Vec::new();
    for _ in 0..connections {
        stores.push(PgStore::connect(url).await?);
    }
    let appends = (total / per_append / connections).max(1);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, store) in stores.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0xB47C_0000 + i as u64);
            let mut written = 0u64;
            for _ in 0..appends {
                let id = rng.uuid();
                let events: Vec<NewEvent> = (1..=per_append as i64).map(|v| user_event(&mut rng, id, v)).collect();
                let outcome = store.append(request(id, 0, events)).await?;
                written += outcome.event_ids.len() as u64;
            }
            Ok::<u64, BoxError>(written)
        }));
    }
    let mut written = 0;
    for task in tasks {
        written += task.await??;
    }
    Ok((written, start.elapsed()))
}

/// `n` appends of one event each, `ExpectedVersion::Exact`, round-robin over 50 users.
async fn single_appends(url: &str, n: usize) -> Res<Vec<Duration>> {
    let store = PgStore::connect(url).await?;
    let mut rng = Rng(0x51_4E61_E000);
    let mut users: Vec<(Uuid, i64)> = (0..50).map(|_| (rng.uuid(), 0)).collect();
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        let slot = i % users.len();
        let (id, version) = users[slot];
        let event = user_event(&mut rng, id, version + 1);
        let t = Instant::now();
        store.append(request(id, version, vec![event])).await?;
        latencies.push(t.elapsed());
        users[slot].1 += 1;
    }
    latencies.sort();
    Ok(latencies)
}

/// A connection that `LISTEN`s on `projector_events` and wakes `notify` per notification.
async fn listen(url: &str) -> Res<(Client, Arc<tokio::sync::Notify>)> {
    let (client, mut connection) = tokio_postgres::connect(url, NoTls).await?;
    let notify = Arc::new(tokio::sync::Notify::new());
    let wake = notify.clone();
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(_))) => wake.notify_one(),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            }
        }
    });
    client.batch_execute("LISTEN projector_events").await?;
    Ok((client, notify))
}

struct Lag {
    sorted: Vec<Duration>,
    /// Durations of the steps that applied events (read + load + commit).
    steps: Vec<Duration>,
    appended: usize,
    append_rate: f64,
    batches: usize,
    wakeups_by_notify: u64,
}

/// Appenders at ~`rate` events/s for `seconds`, one runner (on this task) applying them.
/// The lag of an event is from its append's return (commit) to the return of the commit
/// of the batch that contains it (the row is visible from then on).
async fn lag(store: &PgStore, url: &str, rate_per_s: u64, seconds: u64, appenders: usize, seed: u64) -> Res<Lag> {
    let lease = store
        .claim(UserProfile.name(), Partition::WHOLE, OWNER, Duration::from_secs(60))
        .await?
        .ok_or("the lease is held by another owner")?;
    let mut runner = BatchRunner::new(&UserProfile, store, &EventFilter::all(), lease)
        .batch_size(1000)
        .lease_ttl(Duration::from_secs(60))
        .window(CatchUpWindow::for_memory(RUNNER_MEMORY));
    // Apply what the append steps left behind, so only the paced events are measured.
    runner.catch_up().await?;

    let (_listener, notify) = listen(url).await?;
    let per_task = (rate_per_s * seconds) as usize / appenders;
    let period = Duration::from_secs_f64(appenders as f64 / rate_per_s as f64);
    let finished = Arc::new(AtomicUsize::new(0));
    let mut stores = Vec::new();
    for _ in 0..appenders {
        stores.push(PgStore::connect(url).await?);
    }
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    let mut tasks = Vec::new();
    for (i, append_store) in stores.into_iter().enumerate() {
        let finished = finished.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(seed.wrapping_mul(0x1000) + i as u64);
            let mut users: Vec<(Uuid, i64)> = (0..25).map(|_| (rng.uuid(), 0)).collect();
            let mut log: Vec<(i64, Instant)> = Vec::with_capacity(per_task);
            // Stagger the appenders across one period.
            let mut next = start + period.mul_f64(i as f64 / appenders as f64);
            let result: Res<()> = async {
                for k in 0..per_task {
                    tokio::time::sleep_until(next).await;
                    next += period;
                    let slot = k % users.len();
                    let (id, version) = users[slot];
                    let event = user_event(&mut rng, id, version + 1);
                    let outcome = append_store.append(request(id, version, vec![event])).await?;
                    log.push((outcome.positions[0], Instant::now()));
                    users[slot].1 += 1;
                }
                Ok(())
            }
            .await;
            finished.fetch_add(1, AtomicOrdering::SeqCst);
            result.map(|()| log)
        }));
    }

    let mut batches: Vec<(Checkpoint, Instant)> = Vec::new();
    let mut steps: Vec<Duration> = Vec::new();
    let mut wakeups_by_notify = 0u64;
    let run_start = Instant::now();
    loop {
        let all_done = finished.load(AtomicOrdering::SeqCst) == appenders;
        let step_start = Instant::now();
        let outcome = runner.step().await?;
        if outcome.events_read > 0 {
            let now = Instant::now();
            steps.push(now - step_start);
            batches.push((outcome.checkpoint, now));
            continue;
        }
        if all_done {
            break;
        }
        tokio::select! {
            _ = notify.notified() => wakeups_by_notify += 1,
            _ = tokio::time::sleep(Duration::from_millis(1)) => {}
        }
    }
    let run_elapsed = run_start.elapsed();
    let mut log = Vec::new();
    for task in tasks {
        log.extend(task.await??);
    }

    // Where each appended event sits in commit order, to find the batch that applied it.
    let sql = connect_raw(url).await?;
    let positions: Vec<i64> = log.iter().map(|(p, _)| *p).collect();
    let rows = sql
        .query("SELECT position, transaction_id::text::bigint FROM events WHERE position = ANY($1)", &[&positions])
        .await?;
    let xids: HashMap<i64, u64> = rows.iter().map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1) as u64)).collect();
    let mut lags = Vec::with_capacity(log.len());
    for (position, appended_at) in &log {
        let checkpoint = Checkpoint { transaction_id: xids[position], position: *position };
        let idx = batches.partition_point(|(to, _)| *to < checkpoint);
        let Some((_, visible_at)) = batches.get(idx) else {
            return Err(format!("event at position {position} was never applied").into());
        };
        lags.push(visible_at.saturating_duration_since(*appended_at));
    }
    lags.sort();
    steps.sort();
    Ok(Lag {
        steps,
        appended: log.len(),
        append_rate: rate(log.len() as u64, run_elapsed),
        sorted: lags,
        batches: batches.len(),
        wakeups_by_notify,
    })
}

/// An instrumented copy of `Rebuild::run` (full rebuild, no flushes before the end) that
/// times each phase, plus the raw query without decoding and the server's own time.
async fn rebuild_phases(store: &PgStore, sql: &Client, events_total: u64) -> Res<()> {
    const READ_SIZE: usize = 20_000;
    let handler = UserProfile;
    let filter = handler.filter();
    reset_peak_rss();
    let rss_start = peak_rss_mb();
    let total = Instant::now();
    let mut session = store.begin_rebuild(handler.name(), &SCHEMA).await?;
    let t = Instant::now();
    session.clear_rows(None).await?;
    let clear = t.elapsed();
    let mut fold = Fold::new(&handler).assume_absent(true);
    let mut checkpoint = Checkpoint::START;
    let (mut read, mut apply, mut dealloc) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut n = 0u64;
    let mut pages = 0u64;
    let mut payload_bytes = 0usize;
    loop {
        let t = Instant::now();
        let events = session.read_all(checkpoint, &filter, READ_SIZE).await?;
        read += t.elapsed();
        let Some(last) = events.last() else { break };
        checkpoint = last.checkpoint();
        n += events.len() as u64;
        pages += 1;
        payload_bytes += events.iter().map(|e| e.event_data.get().len() + e.metadata.get().len()).sum::<usize>();
        let t = Instant::now();
        let gaps = fold.gaps(&events);
        if !gaps.is_empty() {
            return Err("unexpected gaps in a single-transaction seed".into());
        }
        fold.apply(&events, &[])?;
        apply += t.elapsed();
        let t = Instant::now();
        drop(events);
        dealloc += t.elapsed();
    }
    let rss_after_read = peak_rss_mb();
    let t = Instant::now();
    let changes = fold.changes();
    let rows = changes.upserts.len();
    let build = t.elapsed();
    let rss_after_changes = peak_rss_mb();
    let t = Instant::now();
    drop(fold);
    let drop_fold = t.elapsed();
    let t = Instant::now();
    session.write_rows(changes).await?;
    let write = t.elapsed();
    let rss_after_write = peak_rss_mb();
    let t = Instant::now();
    session.finish(checkpoint, n, None).await?;
    let finish = t.elapsed();
    let total = total.elapsed();

    // The same read query, rows left undecoded (tokio-postgres `Row`s only).
    let read_sql = "SELECT position, transaction_id, event_id, aggregate_id, aggregate_type, event_type, event_data,
                           metadata, version, timestamp, encrypted_fields
                    FROM events
                    WHERE (transaction_id, position) > ($1::xid8, $2::bigint)
                      AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
                      AND ($3::text[] IS NULL OR event_type = ANY($3))
                      AND ($4::text[] IS NULL OR aggregate_type = ANY($4))
                      AND ($5::bigint <= 1 OR ('x' || right(aggregate_id::text, 8))::bit(32)::bigint % $5 = $6::bigint)
                    ORDER BY transaction_id, position
                    LIMIT $7";
    let no_types: Option<Vec<String>> = None;
    let agg_types: Option<Vec<String>> = Some(vec!["user".into()]);
    let (count, index, limit) = (1i64, 0i64, READ_SIZE as i64);
    let mut after = (Xid8(0), 0i64);
    let mut raw_rows = 0u64;
    let t = Instant::now();
    loop {
        let rows = sql
            .query_typed(
                read_sql,
                &[
                    (&after.0, Type::XID8),
                    (&after.1, Type::INT8),
                    (&no_types, Type::TEXT_ARRAY),
                    (&agg_types, Type::TEXT_ARRAY),
                    (&count, Type::INT8),
                    (&index, Type::INT8),
                    (&limit, Type::INT8),
                ],
            )
            .await?;
        let Some(last) = rows.last() else { break };
        after = (last.get::<_, Xid8>(1), last.get::<_, i64>(0));
        raw_rows += rows.len() as u64;
    }
    let raw = t.elapsed();

    // Server-side execution of the whole scan (no transfer): one page of the full size.
    let explain = sql
        .query(
            &format!(
                "EXPLAIN (ANALYZE, BUFFERS, TIMING OFF)
                 SELECT position, transaction_id, event_id, aggregate_id, aggregate_type, event_type, event_data,
                        metadata, version, timestamp, encrypted_fields
                 FROM events
                 WHERE (transaction_id, position) > ('0'::xid8, 0::bigint)
                   AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
                   AND aggregate_type = ANY('{{user}}'::text[])
                 ORDER BY transaction_id, position LIMIT {events_total}"
            ),
            &[],
        )
        .await?;
    let plan: Vec<String> = explain.iter().map(|r| r.get::<_, String>(0)).collect();
    let server_ms = plan
        .iter()
        .find_map(|l| l.trim().strip_prefix("Execution Time: "))
        .and_then(|v| v.trim_end_matches(" ms").parse::<f64>().ok())
        .unwrap_or(f64::NAN);

    let pct = |d: Duration| 100.0 * d.as_secs_f64() / total.as_secs_f64();
    println!("      rebuild phases ({} events in {pages} pages of {READ_SIZE}, {rows} rows):", int(n as f64));
    println!("        begin+clear (DELETE)         {:>9.1} ms  {:>5.1}%", ms(clear), pct(clear));
    println!(
        "        read_all (query+decode)      {:>9.1} ms  {:>5.1}%  {:>10} ev/s",
        ms(read),
        pct(read),
        int(rate(n, read))
    );
    println!(
        "          of which raw query+transfer{:>9.1} ms          {:>10} ev/s ({} rows, no DomainEvent decode)",
        ms(raw),
        int(rate(raw_rows, raw)),
        int(raw_rows as f64)
    );
    println!("          of which server execution  {:>9.1} ms          (EXPLAIN ANALYZE, whole scan)", server_ms);
    println!(
        "          of which decode (est.)     {:>9.1} ms          (read_all − raw query)",
        ms(read.saturating_sub(raw))
    );
    println!(
        "        fold (gaps + apply)          {:>9.1} ms  {:>5.1}%  {:>10} ev/s",
        ms(apply),
        pct(apply),
        int(rate(n, apply))
    );
    println!("        drop event pages             {:>9.1} ms  {:>5.1}%", ms(dealloc), pct(dealloc));
    println!("        fold.changes() (row values)  {:>9.1} ms  {:>5.1}%", ms(build), pct(build));
    println!("        drop fold                    {:>9.1} ms  {:>5.1}%", ms(drop_fold), pct(drop_fold));
    println!("        write_rows (unnest upsert)   {:>9.1} ms  {:>5.1}%", ms(write), pct(write));
    println!("        finish (checkpoint+COMMIT)   {:>9.1} ms  {:>5.1}%", ms(finish), pct(finish));
    println!(
        "        total                        {:>9.1} ms          {:>10} ev/s; payload+metadata JSON read {:.1} MB",
        ms(total),
        int(rate(n, total)),
        payload_bytes as f64 / 1e6,
    );
    println!(
        "        peak RSS: {rss_start:.1} MB at start, {rss_after_read:.1} MB after reading+folding, \
         {rss_after_changes:.1} MB after fold.changes(), {rss_after_write:.1} MB after write_rows"
    );
    for line in plan.iter().take(6) {
        println!("        | {}", clip(line));
    }
    Ok(())
}

/// The rebuild loop with one page of read-ahead: the query for page k+1 is sent before
/// page k is folded, so the server produces rows while the client folds.
async fn rebuild_prefetch(store: &PgStore) -> Res<(u64, Duration)> {
    const READ_SIZE: usize = 20_000;
    let handler = UserProfile;
    let filter = handler.filter();
    let start = Instant::now();
    let mut session = store.begin_rebuild(handler.name(), &SCHEMA).await?;
    session.clear_rows(None).await?;
    let mut fold = Fold::new(&handler).assume_absent(true);
    let mut events = session.read_all(Checkpoint::START, &filter, READ_SIZE).await?;
    let mut n = 0u64;
    let mut checkpoint = Checkpoint::START;
    while let Some(last) = events.last() {
        checkpoint = last.checkpoint();
        n += events.len() as u64;
        let next = session.read_all(checkpoint, &filter, READ_SIZE);
        let mut next = std::pin::pin!(next);
        // Poll once: the query goes out now; its rows arrive while we fold.
        let early =
            std::future::poll_fn(|cx| std::task::Poll::Ready(std::future::Future::poll(next.as_mut(), cx))).await;
        fold.apply(&events, &[])?;
        events = match early {
            std::task::Poll::Ready(result) => result?,
            std::task::Poll::Pending => next.await?,
        };
    }
    let changes = fold.changes();
    drop(fold);
    session.write_rows(changes).await?;
    session.finish(checkpoint, n, None).await?;
    Ok((n, start.elapsed()))
}

/// The rebuild loop with the next page's read running *while* the current page is folded:
/// the fold yields every 500 events so the read future drains the socket in between, and
/// the server produces the next page on the other core.
async fn rebuild_overlap(store: &PgStore) -> Res<(u64, Duration)> {
    const READ_SIZE: usize = 20_000;
    let handler = UserProfile;
    let filter = handler.filter();
    let start = Instant::now();
    let mut session = store.begin_rebuild(handler.name(), &SCHEMA).await?;
    session.clear_rows(None).await?;
    let mut fold = Fold::new(&handler).assume_absent(true);
    let mut events = session.read_all(Checkpoint::START, &filter, READ_SIZE).await?;
    let mut n = 0u64;
    let mut checkpoint = Checkpoint::START;
    while let Some(last) = events.last() {
        checkpoint = last.checkpoint();
        n += events.len() as u64;
        let current = std::mem::take(&mut events);
        let fold_ref = &mut fold;
        let folding = async move {
            for chunk in current.chunks(500) {
                fold_ref.apply(chunk, &[])?;
                tokio::task::yield_now().await;
            }
            Ok::<(), BoxError>(())
        };
        let (next, folded) = tokio::join!(biased; session.read_all(checkpoint, &filter, READ_SIZE), folding);
        folded?;
        events = next?;
    }
    let changes = fold.changes();
    drop(fold);
    session.write_rows(changes).await?;
    session.finish(checkpoint, n, None).await?;
    Ok((n, start.elapsed()))
}

/// `Rebuild::run` against two read-ahead variants, interleaved, best of `ROUNDS` each.
async fn rebuild_variants(store: &PgStore, sql: &Client) -> Res<()> {
    let labels = [
        "Rebuild::run (today)",
        "read-ahead: next query sent before folding",
        "overlap: next page read while folding (yield/500)",
    ];
    let mut best: Vec<(Duration, f64, f64, u64)> = vec![(Duration::MAX, 0.0, 0.0, 0); labels.len()];
    for _round in 0..ROUNDS {
        for (i, _) in labels.iter().enumerate() {
            let cpu = Cpu::now(sql).await;
            let (n, elapsed) = match i {
                0 => {
                    let t = Instant::now();
                    let o = Rebuild::new(&UserProfile, &EventFilter::all()).run(store, |_, _| {}).await?;
                    (o.events_read, t.elapsed())
                }
                1 => rebuild_prefetch(store).await?,
                _ => rebuild_overlap(store).await?,
            };
            let after = Cpu::now(sql).await;
            verify_quiet(sql, "user_profile", "user_profile_sql").await?;
            if elapsed < best[i].0 {
                best[i] = (elapsed, after.client - cpu.client, (after.server - cpu.server).max(0.0), n);
            }
        }
    }
    println!("      rebuild variants (best of {ROUNDS} interleaved rounds; each verified against the SQL statement):");
    for (label, (elapsed, client, server, n)) in labels.iter().zip(best) {
        println!(
            "        {label:<52} {:>7.3} s  {:>10} ev/s  client CPU {client:.2} s, postgres CPU {server:.2} s",
            elapsed.as_secs_f64(),
            int(rate(n, elapsed))
        );
    }
    Ok(())
}

/// Three ways to write the rebuilt rows into `user_profile` right after the rebuild's
/// `DELETE`, each in a transaction that is rolled back.
async fn write_strategies(sql: &Client) -> Res<()> {
    let rows = sql.query("SELECT user_id, email, name, plan, active, version FROM user_profile_sql", &[]).await?;
    let arrays = RowArrays::from_rows(&rows);
    let n = rows.len();
    drop(rows);
    let chunks: Vec<RowArrays> =
        (0..n).step_by(50_000).map(|from| arrays.slice(from, (from + 50_000).min(n))).collect();
    let plain_insert = UPSERT_SQL.split(" ON CONFLICT").next().unwrap_or(UPSERT_SQL);
    let mut results: Vec<(&str, Duration)> = Vec::new();
    for _round in 0..ROUNDS {
        for strategy in ["unnest upsert (today)", "unnest plain INSERT", "COPY BINARY"] {
            sql.batch_execute("BEGIN; DELETE FROM user_profile").await?;
            let t = Instant::now();
            match strategy {
                "unnest upsert (today)" => {
                    for c in &chunks {
                        sql.execute(UPSERT_SQL, &c.params()).await?;
                    }
                }
                "unnest plain INSERT" => {
                    for c in &chunks {
                        sql.execute(plain_insert, &c.params()).await?;
                    }
                }
                _ => {
                    let sink = sql
                    .copy_in(
                        "COPY user_profile (user_id, email, name, plan, active, version) FROM STDIN (FORMAT binary)",
                    )
                    .await?;
                    let types = [Type::UUID, Type::TEXT, Type::TEXT, Type::TEXT, Type::BOOL, Type::INT8];
                    let writer = tokio_postgres::binary_copy::BinaryCopyInWriter::new(sink, &types);
                    let mut writer = std::pin::pin!(writer);
                    for i in 0..n {
                        writer
                            .as_mut()
                            .write(&[
                                &arrays.ids[i],
                                &arrays.emails[i],
                                &arrays.names[i],
                                &arrays.plans[i],
                                &arrays.active[i],
                                &arrays.versions[i],
                            ])
                            .await?;
                    }
                    writer.as_mut().finish().await?;
                }
            }
            let elapsed = t.elapsed();
            sql.batch_execute("ROLLBACK").await?;
            match results.iter_mut().find(|r| r.0 == strategy) {
                Some(r) => r.1 = r.1.min(elapsed),
                None => results.push((strategy, elapsed)),
            }
        }
    }
    println!(
        "      writing {} rebuilt rows after the rebuild's DELETE (rolled back; best of {ROUNDS} interleaved rounds):",
        int(n as f64)
    );
    for (strategy, elapsed) in results {
        println!("        {strategy:<24} {:>8.1} ms  {:>10} rows/s", ms(elapsed), int(rate(n as u64, elapsed)));
    }
    Ok(())
}

/// The rebuild's read query, undecoded, with all columns vs the columns `user-profile`
/// uses (no metadata, encrypted_fields, event_id).
async fn read_columns(sql: &Client) -> Res<()> {
    const PAGE: i64 = 20_000;
    let all = "position, transaction_id, event_id, aggregate_id, aggregate_type, event_type, event_data, \
               metadata, version, timestamp, encrypted_fields";
    let needed = "position, transaction_id, aggregate_id, aggregate_type, event_type, event_data, version, timestamp";
    let text_data =
        "position, transaction_id, aggregate_id, aggregate_type, event_type, event_data::text, version, timestamp";
    let mut best: Vec<(&str, Duration, u64, usize)> = Vec::new();
    for _round in 0..ROUNDS {
        for (label, columns) in [
            ("all 11 columns (today)", all),
            ("8 columns, no metadata/encrypted_fields/event_id", needed),
            ("same, event_data::text", text_data),
        ] {
            let query = format!(
                "SELECT {columns} FROM events
             WHERE (transaction_id, position) > ($1::xid8, $2::bigint)
               AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
               AND aggregate_type = ANY($3)
             ORDER BY transaction_id, position LIMIT $4"
            );
            let types: Vec<String> = vec!["user".into()];
            let mut after = (Xid8(0), 0i64);
            let (mut rows_total, mut bytes) = (0u64, 0usize);
            let t = Instant::now();
            loop {
                let rows = sql
                    .query_typed(
                        &query,
                        &[
                            (&after.0, Type::XID8),
                            (&after.1, Type::INT8),
                            (&types, Type::TEXT_ARRAY),
                            (&PAGE, Type::INT8),
                        ],
                    )
                    .await?;
                let Some(last) = rows.last() else { break };
                after = (last.get::<_, Xid8>(1), last.get::<_, i64>(0));
                rows_total += rows.len() as u64;
                bytes += rows.iter().map(|r| r.raw_size_bytes()).sum::<usize>();
            }
            let elapsed = t.elapsed();
            match best.iter_mut().find(|b| b.0 == label) {
                Some(b) => b.1 = b.1.min(elapsed),
                None => best.push((label, elapsed, rows_total, bytes)),
            }
        }
    }
    println!("      rebuild read query, rows undecoded, pages of {PAGE} (best of {ROUNDS} interleaved rounds):");
    for (label, elapsed, rows_total, bytes) in best {
        println!(
            "        {label:<50} {:>8.1} ms  {:>10} rows/s  {:>6.1} MB on the wire",
            ms(elapsed),
            int(rate(rows_total, elapsed)),
            bytes as f64 / 1e6
        );
    }
    Ok(())
}

/// `url` with `synchronous_commit = off` for the session (the runner's connection only).
fn async_commit_url(url: &str) -> String {
    if url.contains("://") {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}options=-c%20synchronous_commit%3Doff")
    } else {
        format!("{url} options='-c synchronous_commit=off'")
    }
}

#[derive(Debug, Clone, Copy)]
struct CatchUpVariant {
    label: &'static str,
    /// Keep committed rows in memory across batches; load only keys never seen.
    cache: bool,
    /// Print table statistics and the plans of a batch's statements afterwards.
    explain: bool,
    /// Stop after this many events (whole stream: `None`).
    limit: Option<u64>,
}

/// An instrumented copy of `BatchRunner::step`, run from checkpoint 0 to the end.
async fn catch_up_phases(
    store: &PgStore,
    sql: &Client,
    batch: usize,
    events_total: u64,
    variant: CatchUpVariant,
) -> Res<f64> {
    let handler = UserProfile;
    let filter = handler.filter();
    let lease = store
        .claim(handler.name(), Partition::WHOLE, OWNER, Duration::from_secs(60))
        .await?
        .ok_or("the lease is held by another owner")?;
    let (mut read, mut load, mut fold_t, mut changes_t, mut commit) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let (mut n, mut batches, mut loaded_keys, mut loaded_rows, mut upserts) = (0u64, 0u64, 0usize, 0usize, 0usize);
    let mut from = lease.checkpoint;
    let mut per_batch: Vec<Duration> = Vec::new();
    let mut probe_keys: Vec<Uuid> = Vec::new();
    // A batch from the middle of the run, to EXPLAIN its row load on the final table.
    let probe_batch = events_total / batch as u64 / 2;
    // Rows as committed, kept across batches (the `cached` variant): only keys never
    // seen are loaded from the store.
    let mut cache: HashMap<Uuid, Vec<projector::Value>> = HashMap::new();
    let total = Instant::now();
    loop {
        let batch_start = Instant::now();
        let t = Instant::now();
        let events = store.read_all(from, &filter, Partition::WHOLE, batch).await?;
        read += t.elapsed();
        let Some(last) = events.last() else { break };
        if variant.limit.is_some_and(|limit| n >= limit) {
            break;
        }
        let to = last.checkpoint();
        let t = Instant::now();
        let mut fold = Fold::new(&handler);
        let keys = fold.keys_to_load(&events);
        let mut rows = Vec::new();
        let mut missing = Vec::new();
        for key in &keys {
            let cached = match (variant.cache, key.first()) {
                (true, Some(projector::Value::Uuid(id))) => cache.get(id),
                _ => None,
            };
            match cached {
                Some(row) => rows.push(row.clone()),
                None => missing.push(key.clone()),
            }
        }
        if !missing.is_empty() {
            let found = store.load_rows(&SCHEMA, &missing).await?;
            loaded_keys += missing.len();
            loaded_rows += found.len();
            rows.extend(found);
        }
        load += t.elapsed();
        if batches == probe_batch {
            probe_keys = events.iter().map(|e| e.aggregate_id).collect();
        }
        let t = Instant::now();
        fold.insert_loaded(&keys, &rows).map_err(|e| e.to_string())?;
        if !fold.gaps(&events).is_empty() {
            return Err("unexpected gaps in a single-transaction seed".into());
        }
        fold.apply(&events, &[])?;
        fold_t += t.elapsed();
        let t = Instant::now();
        let changes = fold.changes();
        changes_t += t.elapsed();
        upserts += changes.upserts.len();
        let t = Instant::now();
        store
            .commit(projector::BatchCommit {
                lease: &lease,
                table: &SCHEMA,
                from,
                to,
                changes,
                events_applied: fold.events_applied(),
                last_event_at: fold.last_event_at(),
                lease_ttl: Duration::from_secs(60),
                dead_letters: Vec::new(),
            })
            .await?;
        commit += t.elapsed();
        if variant.cache {
            for row in fold.rows() {
                if let Some(projector::Value::Uuid(id)) = row.first() {
                    cache.insert(*id, row);
                }
            }
        }
        from = to;
        n += events.len() as u64;
        batches += 1;
        per_batch.push(batch_start.elapsed());
    }
    let total = total.elapsed();
    if variant.limit.is_some() {
        return Ok(rate(n, total));
    }
    let pct = |d: Duration| 100.0 * d.as_secs_f64() / total.as_secs_f64();
    println!(
        "      catch-up phases, batch {batch}, {} ({} events, {batches} batches, {} keys loaded from the store → {} rows found, {} upserts):",
        variant.label,
        int(n as f64),
        int(loaded_keys as f64),
        int(loaded_rows as f64),
        int(upserts as f64)
    );
    println!(
        "        read_all                     {:>9.1} ms  {:>5.1}%  {:>6.2} ms/batch",
        ms(read),
        pct(read),
        ms(read) / batches as f64
    );
    println!(
        "        keys + load_rows             {:>9.1} ms  {:>5.1}%  {:>6.2} ms/batch",
        ms(load),
        pct(load),
        ms(load) / batches as f64
    );
    println!(
        "        fold (insert_loaded+apply)   {:>9.1} ms  {:>5.1}%  {:>6.2} ms/batch",
        ms(fold_t),
        pct(fold_t),
        ms(fold_t) / batches as f64
    );
    println!(
        "        fold.changes()               {:>9.1} ms  {:>5.1}%  {:>6.2} ms/batch",
        ms(changes_t),
        pct(changes_t),
        ms(changes_t) / batches as f64
    );
    println!(
        "        commit (CAS + upsert)        {:>9.1} ms  {:>5.1}%  {:>6.2} ms/batch",
        ms(commit),
        pct(commit),
        ms(commit) / batches as f64
    );
    println!("        total                        {:>9.1} ms          {:>10} ev/s", ms(total), int(rate(n, total)));
    let tenth = (per_batch.len() / 10).max(1);
    let first: Duration = per_batch.iter().take(tenth).sum();
    let last: Duration = per_batch.iter().rev().take(tenth).sum();
    println!(
        "        first 10% of batches {:.2} ms/batch, last 10% {:.2} ms/batch",
        ms(first) / tenth as f64,
        ms(last) / tenth as f64
    );
    if !variant.explain {
        return Ok(rate(n, total));
    }
    let size = sql
        .query_one(
            "SELECT pg_size_pretty(pg_total_relation_size('user_profile')),
                    (SELECT count(*) FROM user_profile),
                    coalesce((SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'user_profile'), 0),
                    coalesce((SELECT n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'user_profile'), 0),
                    current_setting('autovacuum'), current_setting('synchronous_commit')",
            &[],
        )
        .await?;
    println!(
        "        user_profile now {} on disk for {} rows; {} updates so far, {} of them HOT (stats may lag); \
         autovacuum {}, synchronous_commit {}",
        size.get::<_, String>(0),
        size.get::<_, i64>(1),
        size.get::<_, i64>(2),
        size.get::<_, i64>(3),
        size.get::<_, String>(4),
        size.get::<_, String>(5),
    );
    // A batch-sized upsert of existing rows, the statement `write_rows` sends (rolled back).
    let current = sql
        .query(
            "SELECT user_id, email, name, plan, active, version + 1 FROM user_profile WHERE user_id = ANY($1)",
            &[&probe_keys],
        )
        .await?;
    let arrays = RowArrays::from_rows(&current);
    sql.batch_execute("BEGIN").await?;
    let plan = sql.query(&format!("EXPLAIN (ANALYZE, BUFFERS, WAL) {UPSERT_SQL}"), &arrays.params()).await;
    sql.batch_execute("ROLLBACK").await?;
    println!("        upsert of {} existing rows, plan:", current.len());
    for r in plan?.iter().take(14) {
        println!("        | {}", clip(&r.get::<_, String>(0)));
    }
    // The two statements of a batch, on the final table, for a batch-sized key set.
    for (label, statement) in [
        (
            "load_rows",
            "EXPLAIN (ANALYZE, BUFFERS) SELECT t.\"user_id\", t.\"email\", t.\"name\", t.\"plan\", t.\"active\", t.\"version\"
             FROM \"user_profile\" t WHERE (t.\"user_id\") IN (SELECT \"user_id\" FROM unnest($1::uuid[]) AS k(\"user_id\"))",
        ),
        (
            "read_all",
            "EXPLAIN (ANALYZE, BUFFERS) SELECT position FROM events
             WHERE (transaction_id, position) > ('0'::xid8, (SELECT max(position) / 2 FROM events))
               AND transaction_id < pg_snapshot_xmin(pg_current_snapshot()) AND aggregate_type = ANY('{user}')
             ORDER BY transaction_id, position LIMIT 1000 -- $1",
        ),
    ] {
        let plan = if label == "load_rows" {
            sql.query(statement, &[&probe_keys]).await?
        } else {
            sql.query(&statement.replace(" -- $1", ""), &[]).await?
        };
        println!("        {label} plan:");
        for r in plan.iter().take(12) {
            println!("        | {}", clip(&r.get::<_, String>(0)));
        }
    }
    Ok(rate(n, total))
}

// ---------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("bench failed: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Res<()> {
    let args = parse_args();
    let base = std::env::var("PROJECTOR_BENCH_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
    let url = bench_url(&base);
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    println!(
        "projector bench: {} events over {} user aggregates ({profile} build), database {}",
        int(args.events as f64),
        int(args.aggregates as f64),
        projector_postgres::redact(&url)
    );

    let admin = connect_raw(&base).await?;
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")).await?;
    admin.batch_execute(&format!("CREATE DATABASE {BENCH_DB}")).await?;
    drop(admin);
    let store = PgStore::connect(&url).await?;
    store.migrate().await?;
    let sql = connect_raw(&url).await?;

    // 1. Seed.
    let t = Instant::now();
    seed(&sql, args.events, args.aggregates).await?;
    let seed_time = t.elapsed();
    let t = Instant::now();
    sql.batch_execute("VACUUM ANALYZE events").await?;
    let analyze_time = t.elapsed();
    let stats = sql
        .query_one(
            "SELECT count(*), count(DISTINCT aggregate_id), max(version),
                    pg_size_pretty(pg_total_relation_size('events')),
                    bool_and(v_ok)
             FROM (SELECT aggregate_id, version,
                          version = row_number() OVER (PARTITION BY aggregate_id ORDER BY position) AS v_ok
                   FROM events) e",
            &[],
        )
        .await?;
    let (seeded, aggs, max_version, size, consecutive): (i64, i64, i64, String, bool) =
        (stats.get(0), stats.get(1), stats.get(2), stats.get(3), stats.get(4));
    println!(
        "[1] seed: {} events over {} aggregates in {:.2} s ({} ev/s server-side INSERT … SELECT), VACUUM ANALYZE {:.2} s; \
         max version {max_version}, versions consecutive in position order: {consecutive}, events table {size}",
        int(seeded as f64),
        int(aggs as f64),
        seed_time.as_secs_f64(),
        int(rate(seeded as u64, seed_time)),
        analyze_time.as_secs_f64()
    );
    if !consecutive || seeded as u64 != args.events {
        return Err("seed is not what was asked for".into());
    }
    let n = seeded as u64;

    // 2. The SQL yardstick.
    let t = Instant::now();
    sql.batch_execute(&format!("CREATE TABLE user_profile_sql AS {REFERENCE_SQL}")).await?;
    let sql_time = t.elapsed();
    let sql_rate = rate(n, sql_time);
    println!(
        "[2] SQL statement (CREATE TABLE user_profile_sql AS …): {:.3} s → {} ev/s",
        sql_time.as_secs_f64(),
        int(sql_rate)
    );

    // 3. Full rebuild.
    store.register(UserProfile.name(), &SCHEMA, &UserProfile.filter(), 1).await?;
    if args.phases {
        // First, in a fresh process, so its memory numbers are its own.
        rebuild_phases(&store, &sql, n).await?;
        verify(&sql, "user_profile", "user_profile_sql").await?;
    }
    let cpu = Cpu::now(&sql).await;
    let t = Instant::now();
    let mut rebuild = Rebuild::new(&UserProfile, &EventFilter::all());
    if let Some(n) = args.read_size {
        rebuild = rebuild.read_size(n);
    }
    let outcome = rebuild.run(&store, |_, _| {}).await?;
    let rebuild_time = t.elapsed();
    let rebuild_cpu = Cpu::now(&sql).await.since(cpu);
    let rebuild_rate = rate(outcome.events_read, rebuild_time);
    println!(
        "[3] full rebuild: {} events read, {} applied, {} rows in {:.3} s → {} ev/s; ours/SQL = {:.2}x",
        int(outcome.events_read as f64),
        int(outcome.events_applied as f64),
        int(outcome.rows_written as f64),
        rebuild_time.as_secs_f64(),
        int(rebuild_rate),
        rebuild_rate / sql_rate
    );
    println!("      {rebuild_cpu}");
    verify(&sql, "user_profile", "user_profile_sql").await?;
    let rss_after_rebuild = peak_rss_mb();
    println!("[5] peak RSS after rebuild (VmHWM): {rss_after_rebuild:.1} MB");
    // 3b. The same rebuild as a user runs it: the whole `projector rebuild` process.
    let cli_binary = cli::binary();
    let mut cli_rebuild: Option<Duration> = None;
    match &cli_binary {
        Some(binary) => {
            let setup = cli::Setup::new(&url, 1000)?;
            let (elapsed, said) = cli::rebuild(&setup, binary)?;
            println!(
                "[3] `projector rebuild user-profile`, whole process: {:.3} s → {} ev/s; SQL/ours = {:.2}x",
                elapsed.as_secs_f64(),
                int(rate(n, elapsed)),
                sql_time.as_secs_f64() / elapsed.as_secs_f64()
            );
            println!("      it said: {said}");
            verify(&sql, "user_profile", "user_profile_sql").await?;
            cli_rebuild = Some(elapsed);
        }
        None => println!(
            "[3] `projector rebuild` whole process: skipped (no binary: `cargo build --release -p projector-cli` first)"
        ),
    }
    if args.phases {
        rebuild_variants(&store, &sql).await?;
        read_columns(&sql).await?;
        write_strategies(&sql).await?;
    }
    if args.rebuild_only {
        return Ok(());
    }

    // 4. Live catch-up, against the hand-written batched worker (same data, same run).
    let hand = hand_written::run(&url, HAND_WRITTEN_BATCH).await?;
    let hand_rate = rate(hand.events, hand.elapsed);
    println!(
        "[4] hand-written batched worker, batch {HAND_WRITTEN_BATCH} (by position, not commit-safe): {} events in \
         {} batches in {:.3} s → {} ev/s",
        int(hand.events as f64),
        int(hand.batches as f64),
        hand.elapsed.as_secs_f64(),
        int(hand_rate)
    );
    verify(&sql, "user_profile_hand", "user_profile_sql").await?;
    let mut catch_ups = Vec::new();
    for batch in [1000usize, 10_000] {
        reset_projection(&sql).await?;
        let cpu = Cpu::now(&sql).await;
        let c = catch_up(&store, batch).await?;
        let catch_up_cpu = Cpu::now(&sql).await.since(cpu);
        println!(
            "[4] live catch-up, batch {batch}: {} events in {} steps (one commit each) in {:.3} s → {} ev/s",
            int(c.events as f64),
            int(c.batches as f64),
            c.elapsed.as_secs_f64(),
            int(rate(c.events, c.elapsed))
        );
        println!("      {catch_up_cpu}; ours/hand-written = {:.2}x", rate(c.events, c.elapsed) / hand_rate);
        verify(&sql, "user_profile", "user_profile_sql").await?;
        catch_ups.push((format!("live catch-up, batch {batch}"), rate(c.events, c.elapsed)));
    }
    {
        let (batch, partitions) = (5000usize, 2u32);
        reset_projection(&sql).await?;
        let c = catch_up_partitioned(&url, batch, partitions).await?;
        println!(
            "[4] live catch-up, {partitions} partitions, batch {batch}: {} events in {} batches in {:.3} s → {} ev/s",
            int(c.events as f64),
            int(c.batches as f64),
            c.elapsed.as_secs_f64(),
            int(rate(c.events, c.elapsed))
        );
        verify(&sql, "user_profile", "user_profile_sql").await?;
        catch_ups.push((format!("live catch-up, {partitions} partitions"), rate(c.events, c.elapsed)));
        // Back to one partition, caught up, for the lag measurement.
        projector::runtime::align_partitions(
            &UserProfile,
            &store,
            UserProfile.name(),
            &EventFilter::all(),
            OWNER,
            batch,
        )
        .await?;
        store.repartition(UserProfile.name(), 1).await?;
    }
    if args.phases {
        let async_store = PgStore::connect(&async_commit_url(&url)).await?;
        let setting: String =
            connect_raw(&async_commit_url(&url)).await?.query_one("SHOW synchronous_commit", &[]).await?.get(0);
        println!("      (a connection opened with the runner's URL options has synchronous_commit = {setting})");
        // The whole stream as the runner does it (with plans), then with a row cache, then
        // with the cache and asynchronous commits on the runner's connection.
        let variants = [
            (
                CatchUpVariant { label: "as BatchRunner::step does it", cache: false, explain: true, limit: None },
                &store,
            ),
            (CatchUpVariant { label: "rows cached across batches", cache: true, explain: false, limit: None }, &store),
            (
                CatchUpVariant {
                    label: "rows cached + synchronous_commit=off (runner connection)",
                    cache: true,
                    explain: false,
                    limit: None,
                },
                &async_store,
            ),
        ];
        for (variant, runner_store) in variants {
            reset_projection(&sql).await?;
            catch_up_phases(runner_store, &sql, 1000, n, variant).await?;
            verify(&sql, "user_profile", "user_profile_sql").await?;
        }
    }

    // 6. Batch append.
    let (appended, append_time) = batch_append(&url, 20_000, 100, 4).await?;
    let append_rate = rate(appended, append_time);
    println!(
        "[6] batch append: {} events, 100 per append (new aggregates, Exact(0)), 4 connections, in {:.3} s → {} ev/s",
        int(appended as f64),
        append_time.as_secs_f64(),
        int(append_rate)
    );

    // 7. Single append latency.
    let latencies = single_appends(&url, 2000).await?;
    let (a50, a99) = (percentile(&latencies, 50.0), percentile(&latencies, 99.0));
    println!(
        "[7] single append (1 event, Exact(v)), {} appends: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        ms(a50),
        ms(a99),
        ms(*latencies.last().unwrap_or(&Duration::ZERO))
    );

    // 8. Lag.
    let l = lag(&store, &url, 1000, 5, 4, 0x1A6).await?;
    let (l50, l99) = (percentile(&l.sorted, 50.0), percentile(&l.sorted, 99.0));
    println!(
        "[8] lag append→row visible: {} events at {} ev/s (4 appenders), {} batches, {} notify wake-ups: \
         p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        int(l.appended as f64),
        int(l.append_rate),
        l.batches,
        l.wakeups_by_notify,
        ms(l50),
        ms(l99),
        ms(*l.sorted.last().unwrap_or(&Duration::ZERO))
    );
    println!(
        "      runner steps that applied events: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (read + load + commit)",
        ms(percentile(&l.steps, 50.0)),
        ms(percentile(&l.steps, 99.0)),
        ms(*l.steps.last().unwrap_or(&Duration::ZERO))
    );
    if args.phases {
        let async_store = PgStore::connect(&async_commit_url(&url)).await?;
        let l = lag(&async_store, &url, 1000, 5, 4, 0x1A7).await?;
        println!(
            "      lag with synchronous_commit=off on the runner's connection only: {} events at {} ev/s: \
             p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; steps p50 {:.2} ms, p99 {:.2} ms",
            int(l.appended as f64),
            int(l.append_rate),
            ms(percentile(&l.sorted, 50.0)),
            ms(percentile(&l.sorted, 99.0)),
            ms(*l.sorted.last().unwrap_or(&Duration::ZERO)),
            ms(percentile(&l.steps, 50.0)),
            ms(percentile(&l.steps, 99.0)),
        );
    }
    let fast = lag(&store, &url, 10_000, 3, 16, 0x1A8).await?;
    let fast99 = percentile(&fast.sorted, 99.0);
    println!(
        "[8] lag at {} ev/s (16 appenders), {} events, {} batches: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        int(fast.append_rate),
        int(fast.appended as f64),
        fast.batches,
        ms(percentile(&fast.sorted, 50.0)),
        ms(fast99),
        ms(*fast.sorted.last().unwrap_or(&Duration::ZERO))
    );

    // 9. kill -9 of a runner, immediate restart: spawn to first commit.
    let mut takeover: Option<(Duration, Duration)> = None;
    if let Some(binary) = &cli_binary {
        // The bench's own runners above keep their leases: give them back.
        sql.batch_execute(
            "UPDATE projection_state SET lease_owner = NULL, lease_expires_at = NULL, lease_locked = false",
        )
        .await?;
        let setup = cli::Setup::new(&url, 1000)?;
        let appender = PgStore::connect(&url).await?;
        let user = Uuid::from_u128(0x7A4E_0FE4);
        let version = std::cell::Cell::new(0i64);
        let append = async || -> Res<i64> {
            let mut rng = Rng(version.get() as u64);
            let next = version.get() + 1;
            let outcome = appender.append(request(user, version.get(), vec![user_event(&mut rng, user, next)])).await?;
            version.set(next);
            Ok(outcome.positions[0])
        };
        let (best, worst) = cli::crash_to_resume(&setup, binary, &sql, append, 5).await?;
        println!(
            "[9] kill -9 of `projector run`, immediate restart, 5 rounds: spawn → first commit best {:.0} ms, worst {:.0} ms",
            ms(best),
            ms(worst)
        );
        takeover = Some((best, worst));
    } else {
        println!("[9] kill -9 → resume: skipped (no binary: `cargo build --release -p projector-cli` first)");
    }

    // Everything appended since (steps 6–9) went through the live runner: check it all.
    sql.batch_execute(&format!("CREATE TABLE user_profile_sql_final AS {REFERENCE_SQL}")).await?;
    verify(&sql, "user_profile", "user_profile_sql_final").await?;
    let rss_end = peak_rss_mb();
    println!("[5] peak RSS at end (VmHWM): {rss_end:.1} MB");

    // Summary.
    let mark = |ok: bool| if ok { "ok" } else { "MISSED" };
    println!();
    println!("summary ({profile}, {} events / {} aggregates)", int(n as f64), int(args.aggregates as f64));
    println!("  {:<34} {:>16}  {:<14}", "metric", "value", "target");
    println!("  {:<34} {:>16}  {:<14}", "seed (server-side)", format!("{:.2} s", seed_time.as_secs_f64()), "");
    println!("  {:<34} {:>16}  {:<14}", "SQL statement", format!("{} ev/s", int(sql_rate)), "(yardstick)");
    println!(
        "  {:<34} {:>16}  {:<14} {}",
        "full rebuild",
        format!("{} ev/s", int(rebuild_rate)),
        "≥ 300,000",
        mark(rebuild_rate >= TARGET_REBUILD)
    );
    println!("  {:<34} {:>16}  {:<14}", "rebuild / SQL (in process)", format!("{:.2}x", rebuild_rate / sql_rate), "");
    match cli_rebuild {
        Some(t) => {
            let ratio = sql_time.as_secs_f64() / t.as_secs_f64();
            println!(
                "  {:<34} {:>16}  {:<14} {}",
                "`projector rebuild` / SQL",
                format!("{ratio:.2}x"),
                "≥ 1.00x",
                mark(ratio >= 1.0)
            );
        }
        None => println!("  {:<34} {:>16}", "`projector rebuild` / SQL", "skipped"),
    }
    println!(
        "  {:<34} {:>16}  {:<14}",
        "hand-written batched worker",
        format!("{} ev/s", int(hand_rate)),
        "(yardstick)"
    );
    for (label, r) in &catch_ups {
        println!("  {:<34} {:>16}  {:<14} {:.2}x hand-written", label, format!("{} ev/s", int(*r)), "", r / hand_rate);
    }
    let one_partition = catch_ups.iter().take(2).map(|(_, r)| *r).fold(0.0, f64::max);
    println!(
        "  {:<34} {:>16}  {:<14} {}",
        "catch-up / hand-written (1 part.)",
        format!("{:.2}x", one_partition / hand_rate),
        "≥ 1.50x",
        mark(one_partition / hand_rate >= TARGET_CATCH_UP_RATIO)
    );
    println!(
        "  {:<34} {:>16}  {:<14} {}",
        "peak RSS after rebuild",
        format!("{rss_after_rebuild:.1} MB"),
        "≤ 64 MB",
        mark(rss_after_rebuild <= TARGET_RSS_MB)
    );
    println!(
        "  {:<34} {:>16}  {:<14} {}",
        "peak RSS at end",
        format!("{rss_end:.1} MB"),
        "≤ 64 MB",
        mark(rss_end <= TARGET_RSS_MB)
    );
    println!("  {:<34} {:>16}  {:<14}", "batch append (100/append, 4 conns)", format!("{} ev/s", int(append_rate)), "");
    println!("  {:<34} {:>16}  {:<14}", "single append p50", format!("{:.2} ms", ms(a50)), "");
    println!("  {:<34} {:>16}  {:<14}", "single append p99", format!("{:.2} ms", ms(a99)), "");
    println!("  {:<34} {:>16}  {:<14}", "lag p50", format!("{:.2} ms", ms(l50)), "");
    println!(
        "  {:<34} {:>16}  {:<14} {}",
        "lag p99",
        format!("{:.2} ms", ms(l99)),
        "≤ 2 ms",
        mark(ms(l99) <= TARGET_LAG_P99_MS)
    );
    println!(
        "  {:<34} {:>16}  {:<14} {}",
        "lag p99 at 10,000 ev/s",
        format!("{:.2} ms", ms(fast99)),
        "≤ 20 ms",
        mark(ms(fast99) <= TARGET_LAG_P99_FAST_MS)
    );
    match takeover {
        Some((best, worst)) => println!(
            "  {:<34} {:>16}  {:<14} {}",
            "kill -9 → first commit (worst)",
            format!("{:.0} ms (best {:.0})", ms(worst), ms(best)),
            "≤ 1 s",
            mark(worst <= TARGET_TAKEOVER)
        ),
        None => println!("  {:<34} {:>16}", "kill -9 → first commit", "skipped"),
    }
    Ok(())
}
