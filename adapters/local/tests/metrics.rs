//! `/metrics` over real sockets on 127.0.0.1: the counters the workers feed and the
//! gauges of the states, in Prometheus text or in OpenMetrics as the scraper asks, each
//! read back by a strict parser of its format.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use common::exposition::Exposition;
use common::{request, request_with, start_server, state, StatesSource};
use projector_local::metrics::Metrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A projection name that needs escaping in a label value.
const ODD: &str = "we\"ird\\name\nx";

/// What Prometheus sends when OpenMetrics comes first in its `scrape_protocols`.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0;q=0.5,\
     application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";

/// A server whose workers reported on two partitions of `user-profile` (and one of
/// [`ODD`]), with states that lag, park and hold dead letters.
async fn fed_server() -> (SocketAddr, StatesSource, tokio::sync::watch::Sender<bool>) {
    let metrics = Metrics::new();
    for _ in 0..3 {
        metrics.batch_committed("user-profile", 0, 10, Duration::from_millis(20));
    }
    metrics.batch_committed("user-profile", 1, 5, Duration::from_secs(2));
    metrics.retried("user-profile", 0);
    metrics.retried("user-profile", 0);
    metrics.retried("user-profile", 1);
    metrics.dead_lettered("user-profile", 0, 4);
    metrics.batch_committed(ODD, 0, 7, Duration::from_millis(1));
    metrics.heartbeat(ODD, 0);

    let mut s0 = state("user-profile", 0, 2);
    s0.lag_events = 12;
    s0.lag_estimated = true;
    s0.lag_seconds = 3.5;
    s0.dead_letters = 2;
    s0.oldest_dead_letter_at = Some(Utc::now() - chrono::Duration::seconds(90));
    s0.parked_aggregates = 1;
    s0.parked_events = 6;
    let s1 = state("user-profile", 1, 2);
    let source: StatesSource = Arc::new(Mutex::new(Ok(vec![s0, s1])));
    let (addr, shutdown) = start_server(Arc::clone(&metrics), Arc::clone(&source), Duration::from_secs(30)).await;
    (addr, source, shutdown)
}

/// The values [`fed_server`] serves, whatever the format.
fn assert_fed_values(page: &Exposition) {
    let get = |name: &str, partition: &str| page.get(name, "user-profile", partition);
    assert_eq!(get("projector_events_processed_total", "0"), 30.0);
    assert_eq!(get("projector_events_processed_total", "1"), 5.0);
    assert_eq!(get("projector_retries_total", "0"), 2.0);
    assert_eq!(get("projector_retries_total", "1"), 1.0);
    assert_eq!(get("projector_dead_letters_total", "0"), 4.0);
    assert_eq!(get("projector_dead_letters_total", "1"), 0.0);
    assert_eq!(get("projector_dead_letters_open", "0"), 2.0);
    assert_eq!(get("projector_parked_aggregates", "0"), 1.0);
    assert_eq!(get("projector_parked_events", "0"), 6.0);
    assert_eq!(get("projector_lag_events", "0"), 12.0);
    assert_eq!(get("projector_lag_seconds", "0"), 3.5);
    assert_eq!(get("projector_lag_events", "1"), 0.0);
    assert_eq!(get("projector_lag_estimated", "0"), 1.0);
    assert_eq!(get("projector_lag_estimated", "1"), 0.0);
    assert_eq!(get("projector_events_applied", "0"), 100.0);
    let age = get("projector_dead_letter_oldest_age_seconds", "0");
    assert!((89.0..120.0).contains(&age), "{age}");
    assert_eq!(get("projector_batch_duration_seconds_count", "0"), 3.0);
    assert!((get("projector_batch_duration_seconds_sum", "0") - 0.06).abs() < 1e-9);
    assert_eq!(get("projector_batch_duration_seconds_count", "1"), 1.0);
    assert_eq!(get("projector_up", "0"), 1.0);
    assert_eq!(get("projector_up", "1"), 1.0);
    assert_eq!(page.value("projector_store_up", &[]), Some(1.0));
    assert_eq!(page.get("projector_events_processed_total", ODD, "0"), 7.0);
    let build = page.all("projector_build_info");
    assert_eq!(build.len(), 1, "{build:?}");
    assert_eq!(build[0].labels["provider"], "local");
    assert_eq!(build[0].labels["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(build[0].value, 1.0);
    assert!(page.value("process_resident_memory_bytes", &[]).is_some_and(|bytes| bytes > 0.0));
    assert!(page.value("process_cpu_seconds_total", &[]).is_some());

    // Buckets: cumulative, ending with +Inf = count.
    let bucket = |partition: &str, le: &str| {
        page.value(
            "projector_batch_duration_seconds_bucket",
            &[("projection", "user-profile"), ("partition", partition), ("le", le)],
        )
        .unwrap_or_else(|| panic!("no bucket le={le}"))
    };
    assert_eq!(bucket("0", "0.01"), 0.0);
    assert_eq!(bucket("0", "0.025"), 3.0);
    assert_eq!(bucket("0", "+Inf"), 3.0);
    assert_eq!(bucket("1", "1"), 0.0);
    assert_eq!(bucket("1", "2.5"), 1.0);
    let mut buckets: Vec<(f64, f64)> = page
        .all("projector_batch_duration_seconds_bucket")
        .into_iter()
        .filter(|s| s.labels["projection"] == "user-profile" && s.labels["partition"] == "0")
        .map(|s| (s.labels["le"].parse::<f64>().unwrap_or(f64::INFINITY), s.value))
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert_eq!(buckets.len(), 15, "14 bounds and +Inf");
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "buckets must be cumulative: {buckets:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_serves_the_fed_counters_as_prometheus_text() {
    let (addr, source, _shutdown) = fed_server().await;

    for accept in [None, Some("*/*"), Some("text/plain;version=0.0.4")] {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("Accept", a)).into_iter().collect();
        let answer = request_with(addr, "GET", "/metrics", &headers).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.headers["content-type"], "text/plain; version=0.0.4; charset=utf-8", "{accept:?}");
        assert_eq!(answer.headers["vary"], "accept");
        assert!(!answer.body.contains("# EOF"), "{}", answer.body);
        let page = Exposition::prometheus(&answer.body).unwrap_or_else(|e| panic!("{e}\n{}", answer.body));
        for (family, kind) in [
            ("projector_events_processed_total", "counter"),
            ("projector_retries_total", "counter"),
            ("projector_dead_letters_total", "counter"),
            ("projector_dead_letters_open", "gauge"),
            ("projector_dead_letter_oldest_age_seconds", "gauge"),
            ("projector_parked_aggregates", "gauge"),
            ("projector_parked_events", "gauge"),
            ("projector_lag_events", "gauge"),
            ("projector_lag_seconds", "gauge"),
            ("projector_lag_estimated", "gauge"),
            ("projector_events_applied", "gauge"),
            ("projector_batch_duration_seconds", "histogram"),
            ("projector_up", "gauge"),
            ("projector_store_up", "gauge"),
            ("projector_build_info", "gauge"),
            ("process_cpu_seconds_total", "counter"),
            ("process_resident_memory_bytes", "gauge"),
        ] {
            assert_eq!(page.types.get(family).map(String::as_str), Some(kind), "{family}");
            assert!(page.helps.get(family).is_some_and(|h| !h.is_empty()), "no HELP for {family}");
        }
        assert_fed_values(&page);
    }

    // The store is down: counters are still served.
    *source.lock().unwrap() = Err("connection refused".into());
    let answer = request(addr, "GET", "/metrics").await;
    assert_eq!(answer.status, 200);
    let page = Exposition::prometheus(&answer.body).unwrap_or_else(|e| panic!("{e}\n{}", answer.body));
    assert_eq!(page.get("projector_events_processed_total", "user-profile", "0"), 30.0);
    assert_eq!(page.value("projector_store_up", &[]), Some(0.0));
    assert!(page.all("projector_lag_events").is_empty(), "no state gauges without states");

    // Other paths and methods.
    assert_eq!(request(addr, "GET", "/").await.status, 404);
    assert_eq!(request(addr, "GET", "/metricsx").await.status, 404);
    let post = request(addr, "POST", "/metrics").await;
    assert_eq!(post.status, 405);
    assert_eq!(post.headers["allow"], "GET, HEAD");
    let head = request(addr, "HEAD", "/metrics").await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_serves_openmetrics_when_the_scraper_prefers_it() {
    let (addr, source, _shutdown) = fed_server().await;

    for accept in [PROMETHEUS_ACCEPT, "application/openmetrics-text"] {
        let answer = request_with(addr, "GET", "/metrics", &[("Accept", accept)]).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.headers["content-type"], "application/openmetrics-text; version=1.0.0; charset=utf-8");
        assert!(answer.body.ends_with("\n# EOF\n"), "{}", answer.body);
        let page = Exposition::openmetrics(&answer.body).unwrap_or_else(|e| panic!("{e}\n{}", answer.body));
        // OpenMetrics names a counter family without its `_total`, and gives units.
        for (family, kind) in [
            ("projector_events_processed", "counter"),
            ("projector_retries", "counter"),
            ("projector_dead_letters", "counter"),
            ("projector_lag_seconds", "gauge"),
            ("projector_batch_duration_seconds", "histogram"),
            ("projector_build", "info"),
            ("process_cpu_seconds", "counter"),
        ] {
            assert_eq!(page.types.get(family).map(String::as_str), Some(kind), "{family}");
        }
        for family in ["projector_lag_seconds", "projector_dead_letter_oldest_age_seconds", "process_cpu_seconds"] {
            assert_eq!(page.units.get(family).map(String::as_str), Some("seconds"), "{family}");
        }
        assert_fed_values(&page);
    }

    *source.lock().unwrap() = Err("connection refused".into());
    let answer = request_with(addr, "GET", "/metrics", &[("Accept", PROMETHEUS_ACCEPT)]).await;
    let page = Exposition::openmetrics(&answer.body).unwrap_or_else(|e| panic!("{e}\n{}", answer.body));
    assert_eq!(page.value("projector_store_up", &[]), Some(0.0));
    assert_eq!(page.get("projector_events_processed_total", "user-profile", "0"), 30.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_1_0_and_keep_alive_requests_are_answered() {
    let metrics = Metrics::new();
    metrics.batch_committed("p", 0, 1, Duration::from_millis(1));
    let source: StatesSource = Arc::new(Mutex::new(Ok(vec![state("p", 0, 1)])));
    let (addr, shutdown) = start_server(metrics, source, Duration::from_secs(30)).await;

    // HTTP/1.0 without Host: answered, then closed by the server.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET /health HTTP/1.0\r\n\r\n").await.unwrap();
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut raw))
        .await
        .expect("closed after the answer")
        .unwrap();
    assert!(raw.starts_with("HTTP/1.0 200 OK\r\n"), "{raw}");

    // Two requests on one keep-alive connection.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    for _ in 0..2 {
        stream.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut raw = Vec::new();
        while !String::from_utf8_lossy(&raw).contains("\"partitions\"") || !raw.ends_with(b"}\n") {
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk)).await.unwrap().unwrap();
            assert!(n > 0, "closed early");
            raw.extend_from_slice(&chunk[..n]);
        }
        assert!(raw.starts_with(b"HTTP/1.1 200 OK\r\n"));
    }

    // Shutdown stops accepting.
    shutdown.send(true).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = TcpStream::connect(addr).await;
    assert!(refused.is_err(), "still listening after shutdown");
}
