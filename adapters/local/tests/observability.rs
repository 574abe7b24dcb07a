//! `/metrics`, `/health` and alert webhooks over real sockets on 127.0.0.1.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use projector::config::{AlertsConfig, Config};
use projector::{Checkpoint, ProjectionState, RetryPolicy, Status};
use projector_local::alerts::Alerter;
use projector_local::http;
use projector_local::metrics::{Health, Metrics};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn state(projection: &str, partition: u32, partitions: u32) -> ProjectionState {
    ProjectionState {
        projection: projection.to_owned(),
        partition,
        partitions,
        checkpoint: Checkpoint { transaction_id: 10, position: 100 },
        last_event_at: None,
        lag_events: 0,
        lag_estimated: false,
        lag_seconds: 0.0,
        status: Status::CaughtUp,
        events_applied: 100,
        error_count: 0,
        last_error: None,
        lease_owner: Some("test".into()),
        lease_expires_at: None,
        updated_at: Utc::now(),
        dead_letters: 0,
        oldest_dead_letter_at: None,
        parked_aggregates: 0,
        parked_events: 0,
    }
}

type StatesSource = Arc<Mutex<Result<Vec<ProjectionState>, String>>>;

/// Serves `/metrics` and `/health` on a free port; returns its address and the shutdown.
async fn start_server(
    metrics: Arc<Metrics>,
    source: StatesSource,
    health_interval: Duration,
) -> (SocketAddr, watch::Sender<bool>) {
    let listener = http::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let states = move || {
            let source = Arc::clone(&source);
            async move { source.lock().unwrap().clone() }
        };
        http::serve_listener(listener, metrics, states, health_interval, rx).await.unwrap();
    });
    (addr, tx)
}

struct Answer {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

/// One request on a fresh connection, `Connection: close`, read to the end.
async fn request(addr: SocketAddr, method: &str, path: &str) -> Answer {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let text = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(text.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("the server answers and closes")
        .unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete answer");
    let mut lines = head.lines();
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect::<BTreeMap<_, _>>();
    if let Some(length) = headers.get("content-length").filter(|_| method != "HEAD") {
        assert_eq!(length.parse::<usize>().unwrap(), body.len(), "{raw}");
    }
    Answer { status, headers, body: body.to_owned() }
}

async fn get_health(addr: SocketAddr) -> (u16, Health) {
    let answer = request(addr, "GET", "/health").await;
    assert_eq!(answer.headers["content-type"], "application/json");
    let health: Health = serde_json::from_str(&answer.body).unwrap_or_else(|e| panic!("{e}: {}", answer.body));
    (answer.status, health)
}

/// Polls `/health` until it answers `status`, for at most `within`.
async fn wait_for_health(addr: SocketAddr, status: u16, within: Duration) -> Health {
    let deadline = Instant::now() + within;
    loop {
        let (got, health) = get_health(addr).await;
        if got == status {
            return health;
        }
        assert!(Instant::now() < deadline, "/health still {got}, expected {status}: {health:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

// A small parser of the Prometheus text format (0.0.4), strict enough to catch
// malformed output: HELP/TYPE before samples, well-formed names, labels and values.

#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

#[derive(Debug, Default)]
struct Exposition {
    types: BTreeMap<String, String>,
    helps: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

impl Exposition {
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.samples.iter().find(|s| s.name == name && s.labels == labels).map(|s| s.value)
    }

    fn get(&self, name: &str, projection: &str, partition: &str) -> f64 {
        self.value(name, &[("projection", projection), ("partition", partition)])
            .unwrap_or_else(|| panic!("no sample {name}{{{projection},{partition}}}"))
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text.parse().map_err(|e| format!("bad value {text:?}: {e}")),
    }
}

fn parse_prometheus(text: &str) -> Result<Exposition, String> {
    let mut out = Exposition::default();
    if !text.ends_with('\n') {
        return Err("the exposition must end with a line feed".into());
    }
    for (number, line) in text.lines().enumerate() {
        let fail = |what: &str| format!("line {}: {what}: {line:?}", number + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let keyword = parts.next().unwrap_or_default();
            let name = parts.next().ok_or_else(|| fail("missing metric name"))?;
            let tail = parts.next().unwrap_or_default();
            match keyword {
                "HELP" if out.helps.insert(name.into(), tail.into()).is_some() => {
                    return Err(fail("second HELP"));
                }
                "TYPE" => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&tail) {
                        return Err(fail("unknown type"));
                    }
                    if out.samples.iter().any(|s| family_of(&s.name, &out.types) == name) {
                        return Err(fail("TYPE after samples of the family"));
                    }
                    if out.types.insert(name.into(), tail.into()).is_some() {
                        return Err(fail("second TYPE"));
                    }
                }
                _ => {}
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => return Err(fail("no value")),
        };
        if !is_metric_name(name) {
            return Err(fail("bad metric name"));
        }
        let mut labels = BTreeMap::new();
        let rest = if let Some(mut rest) = rest.strip_prefix('{') {
            loop {
                if let Some(after) = rest.strip_prefix('}') {
                    rest = after;
                    break;
                }
                let eq = rest.find('=').ok_or_else(|| fail("label without ="))?;
                let label = &rest[..eq];
                if !is_metric_name(label) || label.contains(':') {
                    return Err(fail("bad label name"));
                }
                rest = rest[eq + 1..].strip_prefix('"').ok_or_else(|| fail("label value not quoted"))?;
                let mut value = String::new();
                let mut chars = rest.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((i, '"')) => break i,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, '\\')) => value.push('\\'),
                            Some((_, '"')) => value.push('"'),
                            Some((_, 'n')) => value.push('\n'),
                            _ => return Err(fail("bad escape in label value")),
                        },
                        Some((_, '\n')) | None => return Err(fail("unterminated label value")),
                        Some((_, c)) => value.push(c),
                    }
                };
                if labels.insert(label.to_owned(), value).is_some() {
                    return Err(fail("duplicate label"));
                }
                rest = &rest[end + 1..];
                if let Some(after) = rest.strip_prefix(',') {
                    rest = after;
                } else if !rest.starts_with('}') {
                    return Err(fail("expected , or }"));
                }
            }
            rest
        } else {
            rest
        };
        let mut fields = rest.strip_prefix(' ').ok_or_else(|| fail("no space before the value"))?.split(' ');
        let value = parse_value(fields.next().unwrap_or_default()).map_err(|e| fail(&e))?;
        if let Some(timestamp) = fields.next() {
            timestamp.parse::<i64>().map_err(|_| fail("bad timestamp"))?;
        }
        if fields.next().is_some() {
            return Err(fail("trailing fields"));
        }
        let family = family_of(name, &out.types);
        if !out.types.contains_key(&family) {
            return Err(fail("sample before its TYPE"));
        }
        if out.samples.iter().any(|s| s.name == name && s.labels == labels) {
            return Err(fail("duplicate sample"));
        }
        out.samples.push(Sample { name: name.to_owned(), labels, value });
    }
    Ok(out)
}

/// The family a sample belongs to (`x_bucket`, `x_sum`, `x_count` of histogram `x`).
fn family_of(name: &str, types: &BTreeMap<String, String>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types.get(base).is_some_and(|t| t == "histogram" || t == "summary") {
                return base.to_owned();
            }
        }
    }
    name.to_owned()
}

/// A tiny webhook receiver: records each POSTed JSON body; answers 200.
struct Receiver {
    url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Receiver::on(listener)
    }

    fn on(listener: TcpListener) -> Receiver {
        let addr = listener.local_addr().unwrap();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&bodies);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let recorded = Arc::clone(&recorded);
                tokio::spawn(async move {
                    let _ = receive(stream, recorded).await;
                });
            }
        });
        Receiver { url: format!("http://{addr}/hooks/projector"), bodies, task }
    }

    fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }

    /// Bodies with this status and condition.
    fn count(&self, status: &str, condition: &str) -> usize {
        self.bodies().iter().filter(|b| b["status"] == status && b["condition"] == condition).count()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves requests on one connection until the client closes it.
async fn receive(mut stream: TcpStream, recorded: Arc<Mutex<Vec<Value>>>) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buffer.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
        assert!(head.starts_with("POST /hooks/projector HTTP/1.1\r\n"), "{head}");
        assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{head}");
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse().unwrap())
            })
            .expect("a Content-Length");
        while buffer.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buffer.extend_from_slice(&chunk[..n]);
        }
        let body: Value = serde_json::from_slice(&buffer[head_end..head_end + length]).unwrap();
        recorded.lock().unwrap().push(body);
        buffer.drain(..head_end + length);
        stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await?;
    }
}

/// Log lines written while the guard lives (on this thread).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || logs.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn fast_retry(max_retries: u32) -> RetryPolicy {
    RetryPolicy { max_retries, base: Duration::from_millis(1), cap: Duration::from_millis(5) }
}

// ---------------------------------------------------------------------------------------
// /metrics
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_serves_the_fed_counters_as_prometheus_text() {
    let metrics = Metrics::new();
    for _ in 0..3 {
        metrics.batch_committed("user-profile", 0, 10, Duration::from_millis(20));
    }
    metrics.batch_committed("user-profile", 1, 5, Duration::from_secs(2));
    metrics.retried("user-profile", 0);
    metrics.retried("user-profile", 0);
    metrics.retried("user-profile", 1);
    metrics.dead_lettered("user-profile", 0, 4);
    // A label value that needs escaping.
    let odd = "we\"ird\\name\nx";
    metrics.batch_committed(odd, 0, 7, Duration::from_millis(1));
    metrics.heartbeat(odd, 0);

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
    let (addr, _shutdown) = start_server(Arc::clone(&metrics), Arc::clone(&source), Duration::from_secs(30)).await;

    let answer = request(addr, "GET", "/metrics").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.headers["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    let page = parse_prometheus(&answer.body).unwrap_or_else(|e| panic!("{e}\n{}", answer.body));

    for (family, kind) in [
        ("projector_events_processed_total", "counter"),
        ("projector_retries_total", "counter"),
        ("projector_dead_letters_total", "counter"),
        ("projector_dead_letters_open", "gauge"),
        ("projector_parked_aggregates", "gauge"),
        ("projector_lag_events", "gauge"),
        ("projector_lag_seconds", "gauge"),
        ("projector_lag_estimated", "gauge"),
        ("projector_batch_duration_seconds", "histogram"),
        ("projector_up", "gauge"),
    ] {
        assert_eq!(page.types.get(family).map(String::as_str), Some(kind), "{family}");
        assert!(page.helps.contains_key(family), "no HELP for {family}");
    }

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
    let age = get("projector_dead_letter_oldest_age_seconds", "0");
    assert!((89.0..120.0).contains(&age), "{age}");
    assert_eq!(get("projector_batch_duration_seconds_count", "0"), 3.0);
    assert!((get("projector_batch_duration_seconds_sum", "0") - 0.06).abs() < 1e-9);
    assert_eq!(get("projector_batch_duration_seconds_count", "1"), 1.0);
    assert_eq!(get("projector_up", "0"), 1.0);
    assert_eq!(get("projector_up", "1"), 1.0);
    assert_eq!(page.value("projector_store_up", &[]), Some(1.0));
    assert_eq!(page.get("projector_events_processed_total", odd, "0"), 7.0);

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
    let mut previous = 0.0;
    for sample in page
        .samples
        .iter()
        .filter(|s| s.name == "projector_batch_duration_seconds_bucket")
        .filter(|s| s.labels["projection"] == "user-profile" && s.labels["partition"] == "0")
    {
        assert!(sample.value >= previous, "buckets must be cumulative");
        previous = sample.value;
    }

    // The store is down: counters are still served.
    *source.lock().unwrap() = Err("connection refused".into());
    let answer = request(addr, "GET", "/metrics").await;
    assert_eq!(answer.status, 200);
    let page = parse_prometheus(&answer.body).unwrap_or_else(|e| panic!("{e}\n{}", answer.body));
    assert_eq!(page.get("projector_events_processed_total", "user-profile", "0"), 30.0);
    assert_eq!(page.value("projector_store_up", &[]), Some(0.0));

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

// ---------------------------------------------------------------------------------------
// /health
// ---------------------------------------------------------------------------------------

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
    let page = parse_prometheus(&request(addr, "GET", "/metrics").await.body).unwrap();
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

// ---------------------------------------------------------------------------------------
// Alerts
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

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
