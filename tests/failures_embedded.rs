//! The failure-handling suite on the embedded store: one test per check, each on a fresh
//! in-memory store; then what is particular to a store in one file: the attempt history
//! across a restart, a repair holding the file's connection, and the upgrade of a file
//! from before the failure tables.

use std::sync::mpsc;
use std::time::Duration;

use projector::{DeadLetterStatus, EventFilter, Partition, ProjectionStore, RepairSession, Repairs};
use projector_embedded::{EmbeddedStore, MIGRATIONS};
use projector_tests::failures::{action, aggregate, claim, parked_setup, ticks, COUNTS, TTL};

projector_tests::failure_tests!(EmbeddedStore::open_in_memory().expect("open an in-memory store"));

/// The attempt history is in the file: a restart keeps the retry budget spent.
#[tokio::test]
async fn the_attempt_history_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("failures.db");
    let store = EmbeddedStore::open(&path).unwrap();
    store.register("p", &COUNTS, &EventFilter::all(), 1).await.unwrap();
    let events = ticks(&store, aggregate(1), 1).await;
    let first = store.record_failure("p", &events[0], "timeout 1").await.unwrap();
    store.record_failure("p", &events[0], "timeout 2").await.unwrap();
    drop(store);

    let store = EmbeddedStore::open(&path).unwrap();
    let third = store.record_failure("p", &events[0], "timeout 3").await.unwrap();
    assert_eq!((third.attempts, third.first_failed_at), (3, first.first_failed_at));
}

/// The session holds the connection: the partition's runner waits for it, then sees the
/// parked set the repair left.
#[tokio::test]
async fn a_runner_waits_for_an_open_repair() {
    let store = EmbeddedStore::open_in_memory().unwrap();
    let (odd, _, stored, lease1) = parked_setup(&store).await;
    let mut session = store.begin_repair("p", stored.id).await.unwrap();
    session.set_parking(None).await.unwrap();

    let (done, claimed) = mpsc::channel();
    let runner = store.clone();
    let partition = lease1.partition;
    let thread = std::thread::spawn(move || {
        let lease = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(async { runner.claim("p", partition, "runner", TTL).await.unwrap().unwrap() });
        done.send(lease).unwrap();
    });
    assert!(claimed.recv_timeout(Duration::from_millis(200)).is_err(), "the claim waits for the repair");
    session.close(DeadLetterStatus::Resolved, &action(stored.id, "retry", "done")).await.unwrap();
    session.commit().await.unwrap();
    let lease = claimed.recv_timeout(Duration::from_secs(10)).expect("the claim goes on after the commit");
    thread.join().unwrap();
    assert!(!lease.parked.by_aggregate.contains_key(&odd));
    assert_eq!(lease.parked.epoch, lease1.parked.epoch + 1);
}

/// A file at schema version 3 (before the failure tables) with a projection in it opens
/// with no dead letters and no parkings, at its checkpoint.
#[tokio::test]
async fn a_version_3_file_upgrades() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v3.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)",
        )
        .unwrap();
        for m in MIGRATIONS.iter().filter(|m| m.version <= 3) {
            conn.execute_batch(m.sql).unwrap();
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, 'then')",
                rusqlite::params![m.version, m.name],
            )
            .unwrap();
        }
        conn.execute_batch(
            "INSERT INTO projections (name, table_name, filter, partitions) VALUES ('p', 'dl_counts', '{}', 1);
             INSERT INTO projection_checkpoints (projection, partition, partitions, position, updated_at)
             VALUES ('p', 0, 1, 7, '2026-03-01T00:00:00.000000Z');",
        )
        .unwrap();
    }
    let store = EmbeddedStore::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), MIGRATIONS.last().unwrap().version);
    let lease = claim(&store, Partition::WHOLE).await;
    assert_eq!(lease.checkpoint.position, 7);
    assert_eq!(lease.parked, Default::default());
    let state = store.states().await.unwrap().remove(0);
    assert_eq!((state.dead_letters, state.parked_aggregates, state.parked_events), (0, 0, 0));
}
