//! The operator's side of the Worker, natively: `scale` re-partitions a Worker's
//! projection through the store, bringing every partition to one checkpoint first, then
//! renders the Worker with the new count (a dry run: wrangler bundles offline).

// Only the demo history is used here.
#[path = "support/events.rs"]
#[allow(dead_code)]
mod events;

use std::time::Duration;

use projector::adapter::ProjectionAdapter;
use projector::config::Config;
use projector::{EventStore, ProjectionStore};
use projector_cloudflare::budget::Clock;
use projector_cloudflare::control::{scale, CloudflareWorkerAdapter};
use projector_cloudflare::invocation::{self, Retries};
use projector_cloudflare::settings::Settings;
use projector_tests::pg::TestDb;

const DEPLOYED: &str = "
projections:
  daily-activity:
    handler: daily-activity
    provider: cloudflare
    config: { memory: 128MB, timeout: 30s, concurrency: 1 }
    partitions: 2
";

struct Spent;

impl Clock for Spent {
    fn elapsed(&self) -> Duration {
        Duration::from_secs(3600)
    }
}

fn config() -> Config {
    Config::from_yaml_str(DEPLOYED, "projections.yaml", &["user-profile", "daily-activity"]).expect("configuration")
}

/// A store whose daily-activity partitions stand at different checkpoints: one
/// invocation with a spent budget runs one small batch per partition.
async fn unevenly_applied() -> (TestDb, usize) {
    let db = TestDb::new().await;
    let store = db.store().await;
    let requests = events::demo(30);
    let total = requests.iter().map(|r| r.events.len()).sum();
    for request in requests {
        store.append(request).await.expect("append");
    }
    db.settle().await;
    let settings = Settings::from_vars(|name| match name {
        "PROJECTIONS" => Some("daily-activity".into()),
        "PARTITIONS" => Some("2".into()),
        "BATCH_SIZE" => Some("5".into()),
        _ => None,
    })
    .expect("settings");
    invocation::run(&store, &settings, &Retries::Configured, "worker", Spent).await.expect("one invocation");
    (db, total)
}

#[tokio::test]
async fn scaling_aligns_the_partitions_and_splits_them_anew_in_the_store() {
    let (db, total) = unevenly_applied().await;
    let store = db.store().await;
    let target = scale::repartition(&store, &config(), "daily-activity", 3, "operator").await.expect("repartition");
    let states = store.states().await.unwrap();
    let mine: Vec<_> = states.iter().filter(|s| s.projection == "daily-activity").collect();
    assert_eq!(mine.len(), 3, "{mine:#?}");
    assert!(mine.iter().all(|s| s.checkpoint == target && s.partitions == 3), "{mine:#?}");
    assert_eq!(store.partition_count("daily-activity").await.unwrap(), Some(3));
    let applied: i64 = mine.iter().map(|s| s.events_applied).sum();
    assert!(applied as usize <= total, "nothing applied twice: {applied} of {total}");
}

#[tokio::test]
async fn the_adapter_scales_then_renders_the_worker_with_the_new_count() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap();
    let bundle = root.join("adapters/cloudflare/build/index.js");
    if !bundle.exists() || !root.join("node_modules/.bin/wrangler").exists() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "no Worker bundle or wrangler under CI");
        eprintln!("SKIPPED: no Worker bundle ({}) or no wrangler (npm ci)", bundle.display());
        return;
    }
    let (db, _) = unevenly_applied().await;
    let out = tempfile::tempdir().unwrap();
    let adapter =
        CloudflareWorkerAdapter::new(config(), &root).unwrap().dry_run(true).out(out.path()).store(db.store().await);
    let deployed = adapter.scale("daily-activity", 4).await.expect("scale");
    assert_eq!((deployed.provider, deployed.partitions), ("cloudflare", 4));
    let toml = std::fs::read_to_string(out.path().join("daily-activity/wrangler.toml")).unwrap();
    assert!(toml.contains("PARTITIONS = \"4\"\n"), "{toml}");
    assert!(out.path().join("daily-activity/dist/index.js").is_file(), "wrangler bundled the Worker");
    assert_eq!(db.store().await.partition_count("daily-activity").await.unwrap(), Some(4));
}
