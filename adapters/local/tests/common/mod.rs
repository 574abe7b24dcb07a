//! What the endpoint, alert and runner tests share: projection states to serve, a server
//! on a free port, raw HTTP requests, a webhook receiver, captured logs, and an event the
//! user-profile handler cannot apply.
#![allow(dead_code)] // each test file uses its own share of it

pub mod exposition;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use projector::{AppendRequest, EventStore, ExpectedVersion, NewEvent};
use projector::{Checkpoint, ProjectionState, RetryPolicy, Status};
use projector_local::http;
use projector_local::metrics::{Health, Metrics};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub fn state(projection: &str, partition: u32, partitions: u32) -> ProjectionState {
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

pub type StatesSource = Arc<Mutex<Result<Vec<ProjectionState>, String>>>;

/// Serves `/metrics` and `/health` on a free port; returns its address and the shutdown.
pub async fn start_server(
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

pub struct Answer {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

/// One request on a fresh connection, `Connection: close`, read to the end.
pub async fn request(addr: SocketAddr, method: &str, path: &str) -> Answer {
    request_with(addr, method, path, &[]).await
}

/// [`request`] with more headers.
pub async fn request_with(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let text = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n");
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

pub async fn get_health(addr: SocketAddr) -> (u16, Health) {
    let answer = request(addr, "GET", "/health").await;
    assert_eq!(answer.headers["content-type"], "application/json");
    let health: Health = serde_json::from_str(&answer.body).unwrap_or_else(|e| panic!("{e}: {}", answer.body));
    (answer.status, health)
}

/// Polls `/health` until it answers `status`, for at most `within`.
pub async fn wait_for_health(addr: SocketAddr, status: u16, within: Duration) -> Health {
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

/// A tiny webhook receiver: records each POSTed JSON body; answers 200.
pub struct Receiver {
    pub url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Receiver::on(listener)
    }

    pub fn on(listener: TcpListener) -> Receiver {
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

    pub fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }

    /// Bodies with this status and condition.
    pub fn count(&self, status: &str, condition: &str) -> usize {
        self.bodies().iter().filter(|b| b["status"] == status && b["condition"] == condition).count()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves requests on one connection until the client closes it.
pub async fn receive(mut stream: TcpStream, recorded: Arc<Mutex<Vec<Value>>>) -> std::io::Result<()> {
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
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    pub fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || logs.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    pub fn text(&self) -> String {
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

pub fn fast_retry(max_retries: u32) -> RetryPolicy {
    RetryPolicy { max_retries, base: Duration::from_millis(1), cap: Duration::from_millis(5) }
}

/// Polls `probe` until it finds something, for at most 30 seconds.
pub async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A registration, then an event the user-profile handler cannot read (`email` is not a
/// string), on one user.
pub async fn append_unreadable_event(store: &impl EventStore) {
    let user = uuid::Uuid::from_u128(0x5e7e);
    let events = vec![
        NewEvent::new("UserRegistered", json!({ "email": "e@x.io", "name": "E", "plan": "free" })),
        NewEvent::new("UserEmailChanged", json!({ "email": 42 })),
    ];
    let request = AppendRequest {
        aggregate_id: user,
        aggregate_type: "user".into(),
        expected_version: ExpectedVersion::Exact(0),
        events,
        idempotency_key: None,
    };
    store.append(request).await.expect("append");
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `GET path` over HTTP/1.0: the status and body, or `None` when nothing answers.
pub async fn get_status(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let code = response.split(' ').nth(1)?.parse().ok()?;
    Some((code, response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()))
}
