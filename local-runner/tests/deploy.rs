//! `projector deploy` and `projector monitor`: one Worker configuration and bundle per
//! `provider: cloudflare` projection (wrangler's dry run, offline), a value Workers
//! cannot honour refused with its place in the file, the local provider readying the
//! store and starting nothing, and `monitor` reading a real runner over HTTP.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{free_port, test_config, Workspace};

/// Two Workers (one with every knob written, one with the defaults) and a local projection.
const WORKERS: &str = "
database:
  url_env: PROJECTOR_TEST_STORE_URL
projections:
  user-profile:
    handler: user-profile
    provider: cloudflare
    config: { memory: 64MB, timeout: 2m, concurrency: 4 }
    events: { aggregate_types: [user] }
    partitions: 2
    poll_interval: 5m
    retry: { max_retries: 5, base: 1s, cap: 1m }
    gap_timeout: 2m
  daily-activity:
    handler: daily-activity
    provider: cloudflare
    config: { memory: 128MB, timeout: 30s, concurrency: 1 }
  activity-here:
    handler: daily-activity
    provider: local
    config: { memory: 64MB, timeout: 30s, concurrency: 1 }
alerts:
  webhook: https://hooks.example.com/projector
observability:
  listen: off
";

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().expect("the repository")
}

/// Why the Worker cannot be built and bundled here, if it cannot.
fn missing_toolchain(root: &Path) -> Option<String> {
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

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn a_dry_run_renders_and_bundles_one_worker_per_cloudflare_projection() {
    let root = repository();
    if let Some(reason) = missing_toolchain(&root) {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "the Worker toolchain is missing under CI: {reason}");
        eprintln!("SKIPPED the deploy dry run: {reason}");
        return;
    }
    let ws = Workspace::with_config(None, WORKERS);
    let out = ws.path().join("workers");
    let secret_url = "postgres://projector:s3cret-password@db.example.com/app";
    let root_arg = root.display().to_string();
    let out_arg = out.display().to_string();
    let args =
        ["deploy", "--provider", "cloudflare", "--dry-run", "--out", &out_arg, "--repository", &root_arg, "--json"];
    let env = [
        ("PROJECTOR_TEST_STORE_URL", Some(secret_url)),
        ("REBUILD_TOKEN", Some("a-token")),
        // wasm-opt takes longer than it saves in a test run.
        ("WORKER_BUILD_FLAGS", Some("--no-opt")),
    ];
    let done = ws.run_with(&args, &env, Duration::from_secs(1800));
    done.assert_success("deploy --provider cloudflare --dry-run");
    let report: serde_json::Value = serde_json::from_str(&done.stdout).expect("deploy --json");
    assert_eq!((report["provider"].as_str(), report["dry_run"].as_bool()), (Some("cloudflare"), Some(true)));
    let deployed: Vec<&str> =
        report["deployments"].as_array().unwrap().iter().map(|d| d["projection"].as_str().unwrap()).collect();
    assert_eq!(deployed, ["daily-activity", "user-profile"], "only the cloudflare projections: {}", done.describe());
    assert!(!out.join("activity-here").exists(), "a local projection is no Worker");

    let profile = read(&out.join("user-profile/wrangler.toml"));
    for expected in [
        "name = \"projector-user-profile\"\n",
        "main = \"",
        "adapters/cloudflare/build/index.js\"\n",
        "crons = [\"*/5 * * * *\"]\n",
        "[limits]\ncpu_ms = 120000\n",
        "PROJECTIONS = \"user-profile\"\n",
        "PARTITIONS = \"2\"\n",
        "INVOCATION_BUDGET_MS = \"120000\"\n",
        "MEMORY_BYTES = \"67108864\"\n",
        "AGGREGATE_TYPES = \"user\"\n",
        "MAX_RETRIES = \"5\"\n",
        "GAP_TIMEOUT_MS = \"120000\"\n",
        "ALERT_WEBHOOK = \"https://hooks.example.com/projector\"\n",
        "binding = \"WAKE\"\nqueue = \"projector-user-profile-wake\"\n",
        "max_retries = 5\nmax_concurrency = 4\ndead_letter_queue = \"projector-user-profile-dlq\"\n",
    ] {
        assert!(profile.contains(expected), "user-profile/wrangler.toml lacks {expected:?}:\n{profile}");
    }
    let activity = read(&out.join("daily-activity/wrangler.toml"));
    for expected in ["name = \"projector-daily-activity\"\n", "crons = [\"* * * * *\"]\n", "PARTITIONS = \"1\"\n"] {
        assert!(activity.contains(expected), "daily-activity/wrangler.toml lacks {expected:?}:\n{activity}");
    }
    assert!(!activity.contains("[limits]"), "30s is within the default CPU limit:\n{activity}");

    for name in ["user-profile", "daily-activity"] {
        let dist = out.join(name).join("dist");
        assert!(dist.join("index.js").is_file(), "wrangler's bundle of {name} has no index.js in {}", dist.display());
        let wasm =
            std::fs::read_dir(&dist).unwrap().flatten().any(|e| e.path().extension().is_some_and(|x| x == "wasm"));
        assert!(wasm, "wrangler's bundle of {name} carries no wasm module");
    }
    // Secrets are uploaded with a real deployment only, and never written where the
    // configurations go.
    for entry in walk(&out) {
        let bytes = std::fs::read(&entry).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("s3cret-password") && !text.contains("a-token"), "{} holds a secret", entry.display());
    }
    assert!(report["deployments"][0]["secrets"].as_array().unwrap().is_empty(), "a dry run uploads no secret");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn a_value_workers_cannot_honour_is_refused_with_its_place_in_the_file() {
    let yaml = WORKERS.replace("    poll_interval: 5m\n", "    poll_interval: 30s\n");
    let ws = Workspace::with_config(None, &yaml);
    let out = ws.path().join("workers");
    let out_arg = out.display().to_string();
    let done = ws.run(&["deploy", "--provider", "cloudflare", "--dry-run", "--out", &out_arg], Duration::from_secs(60));
    done.assert_failure_mentioning(
        "deploy with a poll interval under a minute",
        "projections.yaml:11:20: `poll_interval` 30s cannot run on provider `cloudflare`: a Worker is woken by a cron \
         trigger at most once a minute",
    );
    assert!(!out.exists(), "nothing is rendered from a configuration that does not validate");
}

#[test]
fn deploying_a_projection_of_another_provider_is_refused_by_name() {
    let ws = Workspace::with_config(None, WORKERS);
    let done =
        ws.run(&["deploy", "--provider", "cloudflare", "--projection", "activity-here"], Duration::from_secs(60));
    done.assert_failure_mentioning("deploy of a local projection", "projection activity-here has `provider: local`");
}

#[test]
fn the_local_provider_readies_the_store_and_starts_nothing() {
    let ws = Workspace::with_config(None, &test_config(2));
    let plan = ws.run(&["deploy", "--provider", "local", "--dry-run"], Duration::from_secs(60));
    plan.assert_success("deploy --provider local --dry-run");
    assert!(plan.stdout.contains("would be registered"), "{}", plan.describe());
    assert!(!ws.path().join(".projector").exists(), "a dry run opens no store");

    let done = ws.run(&["deploy", "--provider", "local", "--json"], Duration::from_secs(60));
    done.assert_success("deploy --provider local");
    let report: serde_json::Value = serde_json::from_str(&done.stdout).expect("deploy --json");
    assert_eq!(report["deployments"][0]["runs_as"], "projector run --projection daily-activity");
    let states = ws.status();
    assert_eq!(states.len(), 4, "two projections of two partitions registered: {states:?}");
    assert!(states.iter().all(|s| s.lease_owner.is_none()), "nothing runs: {states:?}");
}

#[test]
fn monitor_reads_a_running_runner_over_http() {
    let port = free_port();
    let config = test_config(1).replace("  listen: off", &format!("  listen: 127.0.0.1:{port}"));
    let ws = Workspace::with_config(None, &config);
    let runner = ws.spawn_runner(&[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let report = loop {
        let out = ws.run(&["monitor", "--json"], Duration::from_secs(60));
        if out.success() {
            break out;
        }
        assert!(Instant::now() < deadline, "the runner never reported healthy:\n{}\n{}", out.describe(), runner.logs());
        std::thread::sleep(Duration::from_millis(200));
    };
    let reports: serde_json::Value = serde_json::from_str(&report.stdout).expect("monitor --json");
    assert_eq!(reports[0]["url"], format!("http://127.0.0.1:{port}"));
    assert_eq!(reports[0]["health"]["healthy"], true, "{}", report.stdout);
    let projections: Vec<&str> =
        reports[0]["projections"].as_array().unwrap().iter().map(|s| s["projection"].as_str().unwrap()).collect();
    assert_eq!(projections.len(), 2, "{}", report.stdout);

    let table = ws.run(&["monitor", "--projection", "user-profile"], Duration::from_secs(60));
    table.assert_success("monitor as a table");
    assert!(table.stdout.starts_with(&format!("http://127.0.0.1:{port}: healthy\n")), "{}", table.describe());
    assert!(!table.stdout.contains("daily-activity"), "only the projection asked for:\n{}", table.stdout);

    // A runner that is not a Worker has no /status: said, with the URL and the answer.
    let url = format!("http://127.0.0.1:{port}");
    let workers = Workspace::with_config(None, WORKERS);
    let not_a_worker = workers.run(&["monitor", "--provider", "cloudflare", "--url", &url], Duration::from_secs(60));
    not_a_worker.assert_failure_mentioning("monitor of a runner that is no Worker", &format!("{url}/status: HTTP 404"));
}

#[test]
fn monitor_says_when_nothing_answers() {
    let port = free_port();
    let config = test_config(1).replace("  listen: off", &format!("  listen: 127.0.0.1:{port}"));
    let ws = Workspace::with_config(None, &config);
    ws.run(&["init"], Duration::from_secs(60)).assert_success("init");
    let out = ws.run(&["monitor"], Duration::from_secs(60));
    out.assert_failure_mentioning("monitor without a runner", &format!("http://127.0.0.1:{port}/health"));
    assert!(out.stderr.contains("is `projector run` running?"), "{}", out.describe());
    assert!(out.stdout.contains("UNHEALTHY"), "the report is printed before the exit: {}", out.describe());
}
