//! What a user runs: the `projector` binary as a whole process, timed from spawn to
//! exit (`rebuild`) or from spawn to its first commit (`run` after a `kill -9`).
//!
//! The binary is the one built next to this bench (`cargo build --release -p
//! projector-cli` before `cargo bench`); without it these steps say so and are skipped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::Res;

/// `target/<profile>/projector`, beside the bench's own `deps` directory.
pub fn binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.parent()?.join(format!("projector{}", std::env::consts::EXE_SUFFIX));
    path.is_file().then_some(path)
}

/// A `projections.yaml` with the user-profile projection on the bench database, in a
/// directory of its own (removed on drop).
pub struct Setup {
    dir: tempfile::TempDir,
    url: String,
}

impl Setup {
    pub fn new(url: &str, batch_size: usize) -> Res<Setup> {
        let dir = tempfile::tempdir()?;
        let yaml = format!(
            "database:\n  url_env: PROJECTOR_BENCH_DATABASE_URL\nobservability:\n  listen: off\n\
             projections:\n  user-profile:\n    handler: user-profile\n    provider: local\n    \
             config: {{ memory: 128MB, timeout: 30s, concurrency: 1 }}\n    batch_size: {batch_size}\n    \
             poll_interval: 50ms\n    lease_ttl: 10s\n"
        );
        std::fs::write(dir.path().join("projections.yaml"), yaml)?;
        Ok(Setup { dir, url: url.to_owned() })
    }

    fn command(&self, binary: &Path) -> Command {
        let mut command = Command::new(binary);
        command
            .current_dir(self.dir.path())
            .env("PROJECTOR_BENCH_DATABASE_URL", &self.url)
            .env_remove("DATABASE_URL")
            .stdin(Stdio::null());
        command
    }
}

/// `projector rebuild user-profile` from spawn to exit; returns the elapsed time and
/// the line the command printed about itself.
pub fn rebuild(setup: &Setup, binary: &Path) -> Res<(Duration, String)> {
    let start = Instant::now();
    let out = setup.command(binary).args(["rebuild", "user-profile"]).stderr(Stdio::inherit()).output()?;
    let elapsed = start.elapsed();
    if !out.status.success() {
        return Err(format!("projector rebuild exited with {}", out.status).into());
    }
    let said = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_owned();
    Ok((elapsed, said))
}

fn spawn_run(setup: &Setup, binary: &Path) -> Res<Child> {
    Ok(setup.command(binary).arg("run").stdout(Stdio::null()).stderr(Stdio::null()).spawn()?)
}

async fn checkpoint_position(sql: &Client) -> Res<i64> {
    let row = sql
        .query_one("SELECT coalesce(max(position), 0) FROM projection_state WHERE projection = 'user-profile'", &[])
        .await?;
    Ok(row.get(0))
}

/// A runner holding the partition is killed with SIGKILL; an event is appended; a new
/// runner starts at once. Returns the time from the new process's spawn to the commit
/// that applies the event (best of `rounds`, and the worst).
pub async fn crash_to_resume(
    setup: &Setup,
    binary: &Path,
    sql: &Client,
    append: impl AsyncFn() -> Res<i64>,
    rounds: usize,
) -> Res<(Duration, Duration)> {
    let mut times = Vec::new();
    let mut runner = spawn_run(setup, binary)?;
    for _ in 0..rounds {
        // Wait until this runner holds the partition and has caught up.
        let appended = append().await?;
        wait_for(sql, appended, Duration::from_secs(30)).await?;
        runner.kill()?;
        runner.wait()?;
        let appended = append().await?;
        let start = Instant::now();
        runner = spawn_run(setup, binary)?;
        wait_for(sql, appended, Duration::from_secs(30)).await?;
        times.push(start.elapsed());
    }
    runner.kill()?;
    runner.wait()?;
    times.sort();
    Ok((times[0], times[times.len() - 1]))
}

async fn wait_for(sql: &Client, position: i64, within: Duration) -> Res<()> {
    let deadline = Instant::now() + within;
    while checkpoint_position(sql).await? < position {
        if Instant::now() > deadline {
            return Err(format!("no runner applied position {position} within {within:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}
