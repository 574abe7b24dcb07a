//! `wrangler dev --local` for the repository's Worker, on a free port, with its own
//! state directory; stopped (its whole process group) when dropped.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::http;

/// Why the Worker cannot run here, if it cannot: a missing tool of the toolchain.
pub fn missing_toolchain(root: &Path) -> Option<String> {
    if !root.join("node_modules/.bin/wrangler").exists() {
        return Some("node_modules/.bin/wrangler is missing (run `npm ci`)".into());
    }
    for tool in ["worker-build", "wasm-bindgen"] {
        let found = Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
        if !found.is_ok_and(|s| s.success()) {
            return Some(format!("{tool} is not on PATH (run .ci/test, which installs it)"));
        }
    }
    None
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

pub struct Wrangler {
    child: Child,
    pub port: u16,
    log: PathBuf,
    _state: tempfile::TempDir,
}

impl Wrangler {
    /// Starts `wrangler dev` with `vars` (`--var NAME:value` each) and waits until the
    /// Worker answers HTTP (its build runs first; allow minutes on a cold cache).
    pub async fn start(vars: &[(&str, &str)]) -> Wrangler {
        let root = repo_root();
        let state = tempfile::tempdir().expect("a state directory");
        let port = free_port();
        let log = state.path().join("wrangler.log");
        let out = std::fs::File::create(&log).expect("log file");
        let mut command = Command::new(root.join("node_modules/.bin/wrangler"));
        command
            .current_dir(&root)
            .args(["dev", "--local", "--ip", "127.0.0.1", "--port", &port.to_string(), "--test-scheduled"])
            .arg("--persist-to")
            .arg(state.path().join("state"))
            .args(["--log-level", "info", "--show-interactive-dev-session=false"])
            .env("WRANGLER_SEND_METRICS", "false")
            .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
            .env("CI", "true")
            // wasm-opt takes longer than it saves in a test run.
            .env("WORKER_BUILD_FLAGS", "--no-opt")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .process_group(0);
        for (name, value) in vars {
            command.arg("--var").arg(format!("{name}:{value}"));
        }
        let child = command.spawn().expect("spawn wrangler dev");
        let mut wrangler = Wrangler { child, port, log, _state: state };
        let deadline = Instant::now() + Duration::from_secs(900);
        loop {
            if let Ok(Some(status)) = wrangler.child.try_wait() {
                panic!("wrangler dev exited ({status}) before answering:\n{}", wrangler.log_tail());
            }
            if http::request(port, "GET", "/__ready", &[]).await.is_ok() {
                return wrangler;
            }
            assert!(Instant::now() < deadline, "wrangler dev did not answer within 15 min:\n{}", wrangler.log_tail());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The last lines wrangler and the Worker printed.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    pub async fn get(&self, path: &str) -> http::Reply {
        self.send("GET", path, &[]).await
    }

    pub async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> http::Reply {
        http::request(self.port, method, path, headers)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log_tail()))
    }

    /// Runs the `scheduled` handler once (as the cron trigger would) and waits for it.
    pub async fn trigger_cron(&self) {
        let reply = self.get("/__scheduled?cron=*+*+*+*+*").await;
        assert_eq!(reply.status, 200, "the scheduled trigger: {}\n{}", reply.body, self.log_tail());
    }
}

impl Drop for Wrangler {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}
