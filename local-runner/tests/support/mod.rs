//! Shared helpers for the `projector` CLI integration tests: a temp working directory
//! with its own `projections.yaml`, the binary run with a deadline, long-running
//! runners that are always killed, fast server-side seeding, and the oracle SQL the
//! read models are compared with.

#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use projector::{ProjectionState, Status};
use projector_tests::pg::TestDb;
use tempfile::TempDir;
use tokio_postgres::Client;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_projector");

/// A `projections.yaml` for tests: short leases and polls so that crashes and
/// take-overs resolve within seconds; no `/metrics` listener (runners run side by side).
pub fn test_config(partitions: u32) -> String {
    format!(
        "observability:
  listen: off
projections:
  user-profile:
    handler: user-profile
    provider: local
    # Small, so that a catch-up far behind commits a window every few thousand events.
    config: {{ memory: 16MB, timeout: 30s, concurrency: 1 }}
    events:
      aggregate_types: [user]
    batch_size: 500
    partitions: {partitions}
    poll_interval: 50ms
    lease_ttl: 1s
  daily-activity:
    handler: daily-activity
    provider: local
    config: {{ memory: 64MB, timeout: 30s, concurrency: 1 }}
    batch_size: 500
    partitions: {partitions}
    poll_interval: 50ms
    lease_ttl: 1s
"
    )
}

/// What a finished command printed.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Panics with both streams unless the command exited 0.
    pub fn assert_success(&self, what: &str) -> &Self {
        assert!(self.success(), "{what}: expected exit 0, got {}\n{}", self.status, self.describe());
        self
    }

    /// Panics unless the command failed, did not panic, and said `needle` on stderr.
    pub fn assert_failure_mentioning(&self, what: &str, needle: &str) -> &Self {
        assert!(!self.success(), "{what}: expected a non-zero exit, got {}\n{}", self.status, self.describe());
        assert!(self.status.code().is_some(), "{what}: killed by a signal, not exited\n{}", self.describe());
        assert!(
            !self.stderr.contains("panicked"),
            "{what}: the binary panicked instead of reporting an error\n{}",
            self.describe()
        );
        assert!(self.stderr.contains(needle), "{what}: stderr does not mention {needle:?}\n{}", self.describe());
        self
    }

    pub fn describe(&self) -> String {
        format!("--- stdout ---\n{}\n--- stderr ---\n{}", self.stdout, self.stderr)
    }
}

/// A temporary working directory for the CLI, with an optional PostgreSQL URL.
pub struct Workspace {
    pub dir: TempDir,
    pub db_url: Option<String>,
    next_log: std::sync::atomic::AtomicU32,
}

impl Workspace {
    /// An empty directory (no `projections.yaml`: the built-in configuration applies).
    pub fn empty(db_url: Option<&str>) -> Workspace {
        Workspace {
            dir: tempfile::Builder::new().prefix("projector-cli-test").tempdir().expect("create temp dir"),
            db_url: db_url.map(str::to_owned),
            next_log: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// A directory holding `projections.yaml` with `yaml`.
    pub fn with_config(db_url: Option<&str>, yaml: &str) -> Workspace {
        let ws = Workspace::empty(db_url);
        ws.write("projections.yaml", yaml);
        ws
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// The binary with `args`, run in this directory, with DATABASE_URL set to this
    /// workspace's URL or removed (and no inherited PROJECTOR_CONFIG).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_remove("DATABASE_URL")
            .env_remove("PROJECTOR_CONFIG")
            .env("PROJECTOR_LOG", "warn")
            .stdin(Stdio::null());
        if let Some(url) = &self.db_url {
            cmd.env("DATABASE_URL", url);
        }
        cmd
    }

    /// Runs the binary to completion; panics (after killing it) if it takes longer than `timeout`.
    pub fn run(&self, args: &[&str], timeout: Duration) -> Output {
        self.run_with(args, &[], timeout)
    }

    /// [`Workspace::run`] with environment variables set (`Some`) or removed (`None`).
    pub fn run_with(&self, args: &[&str], env: &[(&str, Option<&str>)], timeout: Duration) -> Output {
        let mut cmd = self.command(args);
        for (name, value) in env {
            match value {
                Some(v) => cmd.env(name, v),
                None => cmd.env_remove(name),
            };
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = ChildGuard(cmd.spawn().unwrap_or_else(|e| panic!("spawn {BIN} {args:?}: {e}")));
        let mut out_pipe = child.0.stdout.take().expect("stdout piped");
        let mut err_pipe = child.0.stderr.take().expect("stderr piped");
        let out = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out_pipe.read_to_string(&mut s);
            s
        });
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err_pipe.read_to_string(&mut s);
            s
        });
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.0.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.0.kill();
                let _ = child.0.wait();
                let stdout = out.join().unwrap_or_default();
                let stderr = err.join().unwrap_or_default();
                panic!(
                    "`projector {}` did not finish within {timeout:?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
                    args.join(" ")
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Output { status, stdout: out.join().unwrap_or_default(), stderr: err.join().unwrap_or_default() }
    }

    /// Starts `projector run` (plus `extra` arguments); output goes to log files.
    pub fn spawn_runner(&self, extra: &[&str]) -> Runner {
        self.spawn_runner_with(extra, &[])
    }

    /// [`Workspace::spawn_runner`] with environment variables set.
    pub fn spawn_runner_with(&self, extra: &[&str], env: &[(&str, &str)]) -> Runner {
        let n = self.next_log.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let out_path = self.dir.path().join(format!("runner-{n}.stdout"));
        let err_path = self.dir.path().join(format!("runner-{n}.stderr"));
        let mut args = vec!["run"];
        args.extend_from_slice(extra);
        let mut cmd = self.command(&args);
        cmd.envs(env.iter().copied());
        cmd.stdout(File::create(&out_path).expect("runner stdout file"))
            .stderr(File::create(&err_path).expect("runner stderr file"));
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {BIN} run: {e}"));
        Runner { child: Some(child), err_path, out_path }
    }

    /// `projector status --json`, parsed.
    pub fn status(&self) -> Vec<ProjectionState> {
        let out = self.run(&["status", "--json"], Duration::from_secs(30));
        out.assert_success("projector status --json");
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("status --json is not a list of partition states: {e}\n{}", out.describe()))
    }

    /// Polls `status --json` until `done` holds for the states, or panics after `timeout`
    /// with the last states and `context()` (e.g. runner logs).
    pub fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&[ProjectionState]) -> bool,
        context: impl Fn() -> String,
    ) -> Vec<ProjectionState> {
        let deadline = Instant::now() + timeout;
        loop {
            let states = self.status();
            if done(&states) {
                return states;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\nlast status:\n{}\n{}",
                    show(&states),
                    context()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until `partitions` partition rows exist and each is caught-up with lag 0.
    pub fn wait_caught_up(
        &self,
        partitions: usize,
        timeout: Duration,
        context: impl Fn() -> String,
    ) -> Vec<ProjectionState> {
        self.wait_status("every partition caught up with lag 0", timeout, |s| all_caught_up(s, partitions), context)
    }
}

/// True when there are `partitions` rows, all caught-up with no lag.
pub fn all_caught_up(states: &[ProjectionState], partitions: usize) -> bool {
    states.len() == partitions && states.iter().all(|s| s.lag_events == 0 && s.status == Status::CaughtUp)
}

/// A port nothing listens on now, for a runner's `/metrics` and `/health`.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("its address").port()
}

/// One plain HTTP/1.0 GET: (status code, body).
pub fn get(port: u16, path: &str) -> (u16, String) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
            write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("request");
            let mut response = String::new();
            stream.read_to_string(&mut response).expect("response");
            let status = response.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
            let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
            return (status, body);
        }
        assert!(std::time::Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One line per partition state, for failure messages.
pub fn show(states: &[ProjectionState]) -> String {
    states
        .iter()
        .map(|s| {
            format!(
                "  {} {}/{} status={} lag={} applied={} owner={:?} expires={:?} error={:?}",
                s.projection,
                s.partition,
                s.partitions,
                s.status,
                s.lag_events,
                s.events_applied,
                s.lease_owner,
                s.lease_expires_at,
                s.last_error
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Kills (SIGKILL) and reaps a child when dropped.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// A running `projector run`; SIGKILLed and reaped on drop if still alive.
pub struct Runner {
    child: Option<Child>,
    err_path: PathBuf,
    out_path: PathBuf,
}

impl Runner {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Has it exited (and with what)?
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().expect("try_wait"))
    }

    /// SIGKILL, then reap.
    pub fn sigkill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM (through `kill`, the std library only sends SIGKILL).
    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Sends a signal by name (`INT`, `TERM`) through `kill`.
    pub fn signal(&self, name: &str) {
        let status =
            Command::new("kill").args([&format!("-{name}"), &self.pid().to_string()]).status().expect("run kill");
        assert!(status.success(), "kill -{name} {} failed: {status}", self.pid());
    }

    /// Waits for the process to exit; panics (it is killed on drop) after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                return status;
            }
            if Instant::now() > deadline {
                panic!("the runner (pid {}) did not exit within {timeout:?}\n{}", self.pid(), self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and assert a clean exit (code 0) within `timeout`.
    pub fn stop_cleanly(&mut self, timeout: Duration) {
        self.sigterm();
        let status = self.wait_exit(timeout);
        assert!(status.success(), "runner exited with {status} after SIGTERM, expected 0\n{}", self.logs());
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err_path).unwrap_or_default()
    }

    pub fn logs(&self) -> String {
        format!(
            "--- runner pid {} stdout ---\n{}\n--- runner stderr ---\n{}",
            self.pid(),
            std::fs::read_to_string(&self.out_path).unwrap_or_default(),
            self.stderr()
        )
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.sigkill();
    }
}

// ---------------------------------------------------------------------------------------
// Seeding
// ---------------------------------------------------------------------------------------

/// Inserts the events with global sequence numbers `from..to` for `users` users named
/// by `prefix`: event `i` belongs to user `i % users` with version `i / users + 1`, so
/// consecutive ranges continue every user's versions (when `from` is a multiple of
/// `users`). Version 1 registers the user; later versions rotate email, name and plan
/// changes, with an occasional deactivation. Timestamps advance 31 s per event from
/// 2026-01-01, spreading the events over many days. Inserted in statements of
/// `chunk` events (one transaction each).
pub async fn seed(client: &Client, prefix: &str, users: i64, from: i64, to: i64, chunk: i64) {
    const SQL: &str = "
INSERT INTO events (event_id, aggregate_id, aggregate_type, event_type, event_data, version, timestamp)
SELECT gen_random_uuid(), md5($1::text || (i % $2::bigint))::uuid, 'user', t.event_type,
  CASE t.event_type
    WHEN 'UserRegistered' THEN jsonb_build_object(
      'email', 'u' || (i % $2::bigint) || '@example.com', 'name', 'User ' || (i % $2::bigint), 'plan', 'free')
    WHEN 'UserEmailChanged' THEN jsonb_build_object('email', 'u' || (i % $2::bigint) || '.v' || v || '@example.org')
    WHEN 'UserRenamed' THEN jsonb_build_object('name', 'User ' || (i % $2::bigint) || ' v' || v)
    WHEN 'PlanUpgraded' THEN jsonb_build_object('plan', (ARRAY['starter', 'pro', 'enterprise'])[v % 3 + 1])
    ELSE jsonb_build_object('reason', 'requested')
  END,
  v,
  timestamptz '2026-01-01 00:00:00+00' + i * interval '31 seconds'
FROM generate_series($3::bigint, $4::bigint - 1) AS i
CROSS JOIN LATERAL (SELECT i / $2::bigint + 1 AS v) AS vv
CROSS JOIN LATERAL (
  SELECT CASE
    WHEN v = 1 THEN 'UserRegistered'
    WHEN (i * 7 + v) % 13 = 0 THEN 'UserDeactivated'
    ELSE (ARRAY['UserEmailChanged', 'UserRenamed', 'PlanUpgraded'])[v % 3 + 1]
  END AS event_type
) AS t
ORDER BY i";
    let mut start = from;
    while start < to {
        let end = (start + chunk).min(to);
        client
            .execute(SQL, &[&prefix, &users, &start, &end])
            .await
            .unwrap_or_else(|e| panic!("seeding events {start}..{end}: {e:?}"));
        start = end;
    }
}

pub async fn count_events(client: &Client) -> i64 {
    client.query_one("SELECT count(*) FROM events", &[]).await.expect("count events").get(0)
}

// ---------------------------------------------------------------------------------------
// Oracle
// ---------------------------------------------------------------------------------------

/// The reference read models, computed from the events (shared with the store suites).
pub use projector_tests::ledger::{DAILY_ACTIVITY_ORACLE, USER_PROFILE_ORACLE};

/// The read model `user_profile`, in the oracle's column order.
pub const USER_PROFILE_MODEL: &str = "SELECT user_id, email, name, plan, active, version FROM user_profile";

/// The read model `daily_activity`, in the oracle's column order.
pub const DAILY_ACTIVITY_MODEL: &str = "SELECT day, event_type, events FROM daily_activity";

/// Rows of `left EXCEPT right` and of `right EXCEPT left` (as JSON text, at most 20
/// each) and how many there are in all.
pub async fn diff(client: &Client, left: &str, right: &str) -> (i64, Vec<String>) {
    let sql = format!(
        "WITH l AS ({left}), r AS ({right}),
              only_l AS (SELECT * FROM l EXCEPT SELECT * FROM r),
              only_r AS (SELECT * FROM r EXCEPT SELECT * FROM l),
              both_sides AS (
                SELECT 'only in expected: ' || row_to_json(x)::text AS line FROM only_l x
                UNION ALL
                SELECT 'only in actual:   ' || row_to_json(y)::text FROM only_r y)
         SELECT (SELECT count(*) FROM both_sides), line FROM (SELECT line FROM both_sides ORDER BY line LIMIT 40) s
         UNION ALL SELECT (SELECT count(*) FROM both_sides), NULL WHERE NOT EXISTS (SELECT 1 FROM both_sides)"
    );
    let rows = client.query(&sql, &[]).await.unwrap_or_else(|e| panic!("diff query failed: {e:?}\n{sql}"));
    let total: i64 = rows.first().map_or(0, |r| r.get(0));
    let lines = rows.iter().filter_map(|r| r.get::<_, Option<String>>(1)).collect();
    (total, lines)
}

/// Panics unless `expected` and `actual` hold the same rows, showing the differing rows.
pub async fn assert_same_rows(client: &Client, what: &str, expected: &str, actual: &str) {
    let (total, lines) = diff(client, expected, actual).await;
    assert!(total == 0, "{what}: {total} differing row(s) (EXCEPT both ways); first ones:\n  {}", lines.join("\n  "));
}

/// Both read models equal the oracle, and neither is empty.
pub async fn assert_read_models_match_oracle(client: &Client, when: &str) {
    assert_same_rows(client, &format!("{when}: user_profile vs oracle"), USER_PROFILE_ORACLE, USER_PROFILE_MODEL).await;
    assert_same_rows(client, &format!("{when}: daily_activity vs oracle"), DAILY_ACTIVITY_ORACLE, DAILY_ACTIVITY_MODEL)
        .await;
    let users: i64 = client.query_one("SELECT count(*) FROM user_profile", &[]).await.expect("count").get(0);
    let counted: i64 =
        client.query_one("SELECT coalesce(sum(events), 0)::bigint FROM daily_activity", &[]).await.expect("sum").get(0);
    assert!(users > 0 && counted > 0, "{when}: the read models are empty");
    assert_eq!(counted, count_events(client).await, "{when}: daily_activity must count every event exactly once");
}

// ---------------------------------------------------------------------------------------
// A test database driven from synchronous tests
// ---------------------------------------------------------------------------------------

/// A fresh migrated PostgreSQL database (dropped at the end) and a client on it. Tests
/// are synchronous (they spawn and wait for processes); database calls go through
/// [`Pg::block_on`] on a runtime of its own.
pub struct Pg {
    pub client: Client,
    pub db: TestDb,
    rt: tokio::runtime::Runtime,
}

impl Pg {
    pub fn new() -> Pg {
        let rt =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("test runtime");
        let db = rt.block_on(TestDb::new());
        let client = rt.block_on(db.client());
        Pg { client, db, rt }
    }

    pub fn url(&self) -> &str {
        &self.db.url
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    pub fn execute(&self, sql: &str) {
        self.block_on(self.client.batch_execute(sql)).unwrap_or_else(|e| panic!("{e:?}\n{sql}"));
    }

    /// Waits until every stored event is below the server's read horizon: a transaction
    /// of another test on the same server may hold it back for a moment.
    pub fn settle(&self) {
        self.block_on(self.db.settle());
    }

    /// One bigint from a query returning one row and column.
    pub fn scalar(&self, sql: &str) -> i64 {
        self.block_on(self.client.query_one(sql, &[])).unwrap_or_else(|e| panic!("{e:?}\n{sql}")).get(0)
    }

    pub fn seed(&self, prefix: &str, users: i64, from: i64, to: i64) {
        self.block_on(seed(&self.client, prefix, users, from, to, 10_000));
    }

    pub fn assert_same_rows(&self, what: &str, expected: &str, actual: &str) {
        self.block_on(assert_same_rows(&self.client, what, expected, actual));
    }

    pub fn assert_read_models_match_oracle(&self, when: &str) {
        self.block_on(assert_read_models_match_oracle(&self.client, when));
    }
}
