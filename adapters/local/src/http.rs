//! The observability endpoint of `projector run`: `GET /metrics` (Prometheus text
//! format 0.0.4) and `GET /health` (JSON [`Health`]; 200 when healthy, 503 when not).
//! Anything else is 404 (405 for another method on those two paths).
//!
//! The projection states are read on every request through the caller's `states`
//! source. When it fails (database down), `/health` answers 503 naming the error and
//! `/metrics` still serves the counters (with `projector_store_up 0`).
//!
//! Connections are served inside the returned future (no `tokio::spawn`), so the states
//! source need not be `Send`.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes_body::{full, Body};
use futures_util::stream::{FuturesUnordered, StreamExt};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use projector::ProjectionState;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics::{Health, Metrics, CONTENT_TYPE as METRICS_CONTENT_TYPE};

/// How long one request may wait for the states source before answering without them.
pub const STATES_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

mod bytes_body {
    use http_body_util::Full;
    use hyper::body::Bytes;

    pub type Body = Full<Bytes>;

    pub fn full(text: impl Into<Bytes>) -> Body {
        Full::new(text.into())
    }
}

/// Binds `addr` (port 0 picks a free port; see [`TcpListener::local_addr`]).
pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr} for /metrics and /health: {e}")))
}

/// Binds `addr` and serves until `shutdown` turns true (or its sender is dropped).
pub async fn serve<F, Fut>(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    states: F,
    health_interval: Duration,
    shutdown: watch::Receiver<bool>,
) -> io::Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Vec<ProjectionState>, String>>,
{
    let listener = bind(addr).await?;
    serve_listener(listener, metrics, states, health_interval, shutdown).await
}

/// Serves on an already bound listener until `shutdown` turns true (or its sender is
/// dropped). Sets `metrics`' health interval to `health_interval`.
pub async fn serve_listener<F, Fut>(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    states: F,
    health_interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Vec<ProjectionState>, String>>,
{
    metrics.set_health_interval(health_interval);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!("serving /metrics and /health on http://{addr}");
    }
    let context = Context { metrics, states, health_interval };
    let context = &context;
    let mut connections = FuturesUnordered::new();
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let service = hyper::service::service_fn(move |request| async move {
                        Ok::<_, Infallible>(context.answer(&request).await)
                    });
                    let connection = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_TIMEOUT)
                        .serve_connection(TokioIo::new(stream), service);
                    connections.push(connection);
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, keep serving.
                    tracing::warn!(error = %e, "observability endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(result) = connections.next(), if !connections.is_empty() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "observability endpoint: connection ended with an error");
                }
            }
            changed = shutdown.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

struct Context<F> {
    metrics: Arc<Metrics>,
    states: F,
    health_interval: Duration,
}

impl<F, Fut> Context<F>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Vec<ProjectionState>, String>>,
{
    async fn states(&self) -> Result<Vec<ProjectionState>, String> {
        match tokio::time::timeout(STATES_TIMEOUT, (self.states)()).await {
            Ok(result) => result,
            Err(_) => Err(format!("reading the projection states took more than {}s", STATES_TIMEOUT.as_secs())),
        }
    }

    async fn answer(&self, request: &Request<Incoming>) -> Response<Body> {
        let path = request.uri().path();
        if !matches!(path, "/metrics" | "/health") {
            return text(StatusCode::NOT_FOUND, "not found: try /metrics or /health\n");
        }
        let head = request.method() == Method::HEAD;
        if request.method() != Method::GET && !head {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed: use GET\n");
            response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        let mut response = if path == "/metrics" {
            let body = match self.states().await {
                Ok(states) => self.metrics.render(&states),
                Err(error) => {
                    tracing::warn!(%error, "/metrics: serving counters without the projection states");
                    self.metrics.render_without_states()
                }
            };
            let mut response = Response::new(full(body));
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
            response
        } else {
            let health = match self.states().await {
                Ok(states) => self.metrics.health(&states, self.health_interval),
                Err(error) => {
                    let known = self.metrics.health(&[], self.health_interval);
                    Health {
                        healthy: false,
                        error: Some(format!("cannot read the projection states: {error}")),
                        partitions: known.partitions,
                    }
                }
            };
            let status = if health.healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            let mut body = serde_json::to_string_pretty(&health).unwrap_or_else(|e| {
                format!("{{\"healthy\":false,\"error\":\"cannot encode the health report: {e}\",\"partitions\":[]}}")
            });
            body.push('\n');
            let mut response = Response::new(full(body));
            *response.status_mut() = status;
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        };
        // hyper leaves the body out of HEAD answers (keeping its Content-Length).
        response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}
