//! `/health` and alert webhooks over real sockets on 127.0.0.1.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::exposition::Exposition;
use common::{fast_retry, get_health, request, start_server, state, wait_for_health, Logs, Receiver, StatesSource};
use projector::config::{AlertsConfig, Config};
use projector::Status;
use projector_local::alerts::Alerter;
use projector_local::metrics::Metrics;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_heartbeats_stops_and_the_store() {
    let interval = Duration::from_millis(1000);
    let metrics = Metrics::new();
    let states = vec![state("user-profile", 0, 2), state("user-profile", 1, 2)];
    let source: StatesSource = Arc::new(Mutex::new(Ok(states.clone())));
    let (addr, _shutdown) = start_server(Arc::clone(&metrics), Arc::clone(&source), interval).await;

    // Two partition "loops" heart-beating every 50ms, each of which can be frozen.
    let beating: Arc<[AtomicBool; 2]> = Arc::new([AtomicBool::new(true), AtomicBool::new(true)]);
    let done = Arc::new(AtomicBool::new(false));
    for partition in 0..2u32 {
        let (metrics, beating, done) = (Arc::clone(&metrics), Arc::clone(&beating), Arc::clone(&done));
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                if beating[partition as usize].load(Ordering::Relaxed) {
                    metrics.heartbeat("user-profile", partition);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, health) = get_health(addr).await;
    assert_eq!(status, 200, "{health:?}");
    assert!(health.healthy);
    assert_eq!(health.partitions.len(), 2);

    // Partition 1's loop freezes (its lag is 0: small lag must not hide it).
    beating[1].store(false, Ordering::Relaxed);
    let frozen_at = Instant::now();
    let health = wait_for_health(addr, 503, interval * 3).await;
    // The last beat was at most one period (50ms) before the freeze.
    assert!(
        frozen_at.elapsed() >= interval - Duration::from_millis(60),
        "unhealthy too early: {:?}",
        frozen_at.elapsed()
    );
    assert!(!health.healthy);
    assert!(health.partitions[0].healthy, "{health:?}");
    let p1 = &health.partitions[1];
    assert_eq!((p1.projection.as_str(), p1.partition, p1.healthy), ("user-profile", 1, false));
    assert!(p1.reason.as_deref().unwrap().contains("no heartbeat"), "{p1:?}");
    let page = Exposition::prometheus(&request(addr, "GET", "/metrics").await.body).unwrap();
    assert_eq!(page.get("projector_up", "user-profile", "1"), 0.0);
    assert_eq!(page.get("projector_up", "user-profile", "0"), 1.0);

    // It beats again.
    beating[1].store(true, Ordering::Relaxed);
    let health = wait_for_health(addr, 200, interval * 3).await;
    assert!(health.partitions.iter().all(|p| p.healthy && p.reason.is_none()));

    // Parked events are not lag and keep it healthy.
    let mut parked = states.clone();
    parked[0].parked_events = 50;
    parked[0].parked_aggregates = 2;
    parked[0].dead_letters = 1;
    *source.lock().unwrap() = Ok(parked);
    assert_eq!(get_health(addr).await.0, 200);

    // A halted partition is unhealthy with the reason given, heartbeats or not.
    metrics.stopped("user-profile", 0, "stopped at event 12/3: handler error");
    let (status, health) = get_health(addr).await;
    assert_eq!(status, 503);
    assert_eq!(health.partitions[0].reason.as_deref(), Some("stopped at event 12/3: handler error"));
    metrics.resumed("user-profile", 0);
    assert_eq!(wait_for_health(addr, 200, interval).await.partitions.len(), 2);

    // A failed status in the store is unhealthy too.
    let mut failed = states.clone();
    failed[1].status = Status::Failed;
    failed[1].last_error = Some("boom".into());
    *source.lock().unwrap() = Ok(failed);
    let (status, health) = get_health(addr).await;
    assert_eq!(status, 503);
    assert_eq!(health.partitions[1].reason.as_deref(), Some("status failed: boom"));

    // The store is unreachable: 503 naming the error.
    *source.lock().unwrap() = Err("connection refused (os error 111)".into());
    let (status, health) = get_health(addr).await;
    assert_eq!(status, 503);
    assert!(!health.healthy);
    assert!(health.error.as_deref().unwrap().contains("connection refused (os error 111)"), "{health:?}");
    done.store(true, Ordering::Relaxed);
}

#[tokio::test]
async fn one_firing_and_one_resolved_post_per_incident() {
    let receiver = Receiver::start().await;
    let metrics = Metrics::new();
    let mut alerter = Alerter::new(AlertsConfig {
        webhook: Some(receiver.url.clone()),
        dead_letters: Some(1),
        lag_seconds: Some(60),
        retry: fast_retry(3),
        ..AlertsConfig::default()
    });
    let mut states = vec![state("user-profile", 0, 2), state("user-profile", 1, 2)];
    for _ in 0..3 {
        alerter.evaluate(&states, &metrics).await;
    }
    assert!(receiver.bodies().is_empty());

    states[0].dead_letters = 2;
    states[0].oldest_dead_letter_at = Some(Utc::now());
    for _ in 0..5 {
        alerter.evaluate(&states, &metrics).await;
    }
    assert_eq!(receiver.count("firing", "dead_letters"), 1);
    assert_eq!(receiver.bodies().len(), 1);
    let firing = &receiver.bodies()[0];
    assert_eq!(firing["projection"], "user-profile");
    assert_eq!(firing["partition"], 0);
    assert_eq!(firing["values"]["open"], 2);
    assert_eq!(firing["values"]["threshold"], 1);
    assert!(firing["message"].as_str().unwrap().contains("2 open dead letter"));
    let first_seen = firing["first_seen"].as_str().unwrap();
    DateTime::parse_from_rfc3339(first_seen).unwrap();
    assert!(firing.get("resolved_at").is_none());

    // A second condition on another partition: a second incident.
    states[1].lag_seconds = 120.0;
    states[1].lag_events = 40;
    for _ in 0..5 {
        alerter.evaluate(&states, &metrics).await;
    }
    assert_eq!(receiver.count("firing", "lag_seconds"), 1);
    assert_eq!(receiver.count("firing", "dead_letters"), 1);
    let lag = receiver.bodies().into_iter().find(|b| b["condition"] == "lag_seconds").unwrap();
    assert_eq!(lag["partition"], 1);
    assert_eq!(lag["values"]["lag_seconds"], 120.0);
    assert_eq!(alerter.incidents().count(), 2);

    // Dead letters handled: resolved once, the lag incident goes on silently.
    states[0].dead_letters = 0;
    states[0].oldest_dead_letter_at = None;
    for _ in 0..5 {
        alerter.evaluate(&states, &metrics).await;
    }
    assert_eq!(receiver.count("resolved", "dead_letters"), 1);
    let resolved = receiver.bodies().into_iter().find(|b| b["status"] == "resolved").unwrap();
    assert_eq!(resolved["first_seen"], first_seen);
    // The values when it resolved, not those of when it fired.
    assert_eq!(resolved["values"]["open"], 0, "{resolved}");
    assert_eq!(resolved["values"]["threshold"], 1, "{resolved}");
    DateTime::parse_from_rfc3339(resolved["resolved_at"].as_str().unwrap()).unwrap();
    assert_eq!(receiver.count("firing", "lag_seconds"), 1);
    assert_eq!(receiver.count("resolved", "lag_seconds"), 0);

    states[1].lag_seconds = 0.0;
    states[1].lag_events = 0;
    for _ in 0..3 {
        alerter.evaluate(&states, &metrics).await;
    }
    assert_eq!(receiver.count("resolved", "lag_seconds"), 1);
    let resolved = receiver.bodies().into_iter().find(|b| b["status"] == "resolved" && b["condition"] == "lag_seconds");
    let resolved = resolved.unwrap();
    assert_eq!(
        (resolved["values"]["lag_seconds"].as_f64(), resolved["values"]["lag_events"].as_i64()),
        (Some(0.0), Some(0))
    );
    assert_eq!(receiver.bodies().len(), 4);
    assert_eq!(alerter.incidents().count(), 0);

    // The same condition again is a new incident.
    states[0].dead_letters = 1;
    for _ in 0..3 {
        alerter.evaluate(&states, &metrics).await;
    }
    assert_eq!(receiver.count("firing", "dead_letters"), 2);
    assert_eq!(receiver.bodies().len(), 5);
    assert_eq!(alerter.pending(), 0);
}

#[tokio::test]
async fn a_refusing_webhook_is_logged_and_retried_until_it_listens() {
    // A port nobody listens on (bound, then released).
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/hooks/projector");
    let logs = Logs::default();
    let _guard = logs.capture();
    let metrics = Metrics::new();
    let mut alerter = Alerter::new(AlertsConfig {
        webhook: Some(url.clone()),
        dead_letters: Some(1),
        retry: fast_retry(10),
        ..AlertsConfig::default()
    });
    let mut states = vec![state("user-profile", 0, 1)];
    states[0].dead_letters = 3;

    alerter.evaluate(&states, &metrics).await;
    assert_eq!(alerter.incidents().count(), 1);
    assert_eq!(alerter.pending(), 1);
    let text = logs.text();
    assert!(text.contains("ERROR") && text.contains("alert firing"), "{text}");
    assert!(text.contains("WARN"), "{text}");
    assert!(text.contains(&format!("alert webhook {url}: attempt 1 of 11 failed: cannot connect: ")), "{text}");
    tokio::time::sleep(Duration::from_millis(10)).await;
    alerter.evaluate(&states, &metrics).await;
    assert!(logs.text().contains("attempt 2 of 11 failed"), "{}", logs.text());
    assert_eq!(alerter.incidents().count(), 1);

    // The condition clears while the webhook is still down: the resolution queues
    // behind the firing notification.
    states[0].dead_letters = 0;
    alerter.evaluate(&states, &metrics).await;
    assert_eq!(alerter.incidents().count(), 0);
    assert_eq!(alerter.pending(), 2);
    assert!(logs.text().contains("alert resolved"), "{}", logs.text());

    // The receiver comes up on that port: both arrive, in order, once each.
    let receiver = Receiver::on(TcpListener::bind(("127.0.0.1", port)).await.unwrap());
    tokio::time::sleep(Duration::from_millis(10)).await;
    for _ in 0..6 {
        alerter.evaluate(&states, &metrics).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let statuses: Vec<Value> = receiver.bodies().iter().map(|b| b["status"].clone()).collect();
    assert_eq!(statuses, ["firing", "resolved"], "{}", logs.text());
    assert_eq!(alerter.pending(), 0);
    let bodies = receiver.bodies();
    assert_eq!(bodies[0]["first_seen"], bodies[1]["first_seen"]);
    assert_eq!(bodies[1]["condition"], "dead_letters");
}

#[tokio::test]
async fn an_undeliverable_notification_is_given_up_after_its_retries() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let logs = Logs::default();
    let _guard = logs.capture();
    let metrics = Metrics::new();
    let mut alerter = Alerter::new(AlertsConfig {
        webhook: Some(format!("http://127.0.0.1:{port}/hooks/projector")),
        dead_letters: Some(1),
        retry: fast_retry(1),
        ..AlertsConfig::default()
    });
    let mut states = vec![state("p", 0, 1)];
    states[0].dead_letters = 1;
    for _ in 0..4 {
        alerter.evaluate(&states, &metrics).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(logs.text().contains("attempt 2 of 2 failed"), "{}", logs.text());
    assert!(logs.text().contains("giving up"), "{}", logs.text());
    assert_eq!(alerter.pending(), 0);
    // The incident itself stays open (and is not re-sent).
    assert_eq!(alerter.incidents().count(), 1);
    assert!(!logs.text().contains("attempt 3"), "{}", logs.text());
    // Its resolution is not sent either: the receiver never heard of it.
    states[0].dead_letters = 0;
    alerter.evaluate(&states, &metrics).await;
    assert_eq!(alerter.pending(), 0);
}

#[tokio::test]
async fn stalled_and_dead_letter_age_follow_the_clock() {
    let metrics = Metrics::new();
    let mut alerter = Alerter::new(AlertsConfig {
        stalled: Some(Duration::from_secs(120)),
        dead_letter_age: Some(Duration::from_secs(600)),
        ..AlertsConfig::default()
    });
    let start = Instant::now();
    let wall = Utc::now();
    let mut states = vec![state("p", 0, 1)];
    states[0].lag_events = 10;
    states[0].dead_letters = 1;
    states[0].oldest_dead_letter_at = Some(wall);
    let conditions = |a: &Alerter| a.incidents().map(|i| i.condition.as_str()).collect::<Vec<_>>();

    alerter.evaluate_at(&states, &metrics, start, wall).await;
    assert!(conditions(&alerter).is_empty());
    // Lag and no progress for 2m: stalled.
    let later = start + Duration::from_secs(121);
    alerter.evaluate_at(&states, &metrics, later, wall + chrono::Duration::seconds(121)).await;
    assert_eq!(conditions(&alerter), ["stalled"]);
    let incident = alerter.incidents().next().unwrap();
    assert_eq!(incident.partition, Some(0));
    assert!(incident.message.contains("not progressing"), "{}", incident.message);
    // The checkpoint moves: resolved. An old dead letter fires on its own.
    states[0].checkpoint.position += 5;
    alerter.evaluate_at(&states, &metrics, later + Duration::from_secs(1), wall + chrono::Duration::seconds(601)).await;
    assert_eq!(conditions(&alerter), ["dead_letter_age"]);
    // A halted partition is stalled at once.
    metrics.stopped("p", 0, "stopped at event 3/4");
    alerter.evaluate_at(&states, &metrics, later + Duration::from_secs(2), wall + chrono::Duration::seconds(602)).await;
    assert_eq!(conditions(&alerter), ["dead_letter_age", "stalled"]);
    assert!(alerter.incidents().any(|i| i.message.contains("stopped at event 3/4")));
    // A batch commits (progress; the halt is over) and the lag is gone.
    metrics.batch_committed("p", 0, 10, Duration::from_millis(5));
    states[0].lag_events = 0;
    alerter.evaluate_at(&states, &metrics, later + Duration::from_secs(3), wall + chrono::Duration::seconds(603)).await;
    assert_eq!(conditions(&alerter), ["dead_letter_age"]);
}

#[tokio::test]
async fn run_evaluates_every_interval_until_shutdown() {
    let receiver = Receiver::start().await;
    let metrics = Metrics::new();
    let alerter = Alerter::new(AlertsConfig {
        webhook: Some(receiver.url.clone()),
        interval: Duration::from_millis(20),
        dead_letters: Some(1),
        retry: fast_retry(3),
        ..AlertsConfig::default()
    });
    let source: StatesSource = Arc::new(Mutex::new(Err("database down".into())));
    let (tx, rx) = watch::channel(false);
    let task = {
        let source = Arc::clone(&source);
        tokio::spawn(alerter.run(
            move || {
                let source = Arc::clone(&source);
                async move { source.lock().unwrap().clone() }
            },
            Arc::clone(&metrics),
            rx,
        ))
    };
    tokio::time::sleep(Duration::from_millis(60)).await;
    let mut s = state("p", 0, 1);
    s.dead_letters = 1;
    *source.lock().unwrap() = Ok(vec![s.clone()]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while receiver.count("firing", "dead_letters") == 0 {
        assert!(Instant::now() < deadline, "no firing notification");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    s.dead_letters = 0;
    *source.lock().unwrap() = Ok(vec![s]);
    while receiver.count("resolved", "dead_letters") == 0 {
        assert!(Instant::now() < deadline, "no resolved notification");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("run returns on shutdown").unwrap();
    assert_eq!(receiver.bodies().len(), 2);
}

#[test]
fn repository_configuration_drives_the_alerter_and_the_endpoint() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(root.join("projections.yaml")).unwrap();
    let config = Config::from_yaml_str(&text, "projections.yaml", &["user-profile", "daily-activity"])
        .unwrap_or_else(|errors| panic!("{errors}"));
    let alerts = config.alerts.clone().expect("projections.yaml has alerts");
    assert_eq!(alerts.interval, Duration::from_secs(5));
    let alerter = Alerter::new(alerts.clone());
    assert_eq!(alerter.config(), &alerts);
    assert_eq!(config.observability.listen, Some("127.0.0.1:9464".parse().unwrap()));

    let fixture = root.join("tests/config/invalid/alerts-webhook-scheme.yaml");
    let text = std::fs::read_to_string(&fixture).unwrap();
    let errors = Config::from_yaml_str(&text, &fixture.display().to_string(), &["user-profile"]).unwrap_err();
    let message = errors.to_string();
    assert!(message.starts_with(&format!("{}:7:12: invalid `webhook` value", fixture.display())), "{message}");
}
