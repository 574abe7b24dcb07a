//! The observability endpoint of `projector run`, an `axum` router: `GET /metrics`
//! (Prometheus text format 0.0.4, or OpenMetrics 1.0 when the scraper's `Accept` prefers
//! `application/openmetrics-text`) and `GET /health` (JSON [`Health`]; 200 when healthy,
//! 503 when not). `HEAD` works on both; another method is 405, another path 404.
//!
//! The projection states are read on every request through the caller's `states`
//! source. When it fails (database down), `/health` answers 503 naming the error and
//! `/metrics` still serves the counters (with `projector_store_up 0`).
//!
//! The source is called inside the returned future only (concurrent requests share one
//! read), so it need not be `Send`; the router's handlers ask it through a channel.
//! Connections are served inside that future too, by hyper with a header-read timeout
//! (which `axum::serve` does not set), with no `tokio::spawn`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header::{HeaderValue, ACCEPT, ALLOW, CACHE_CONTROL, CONTENT_TYPE, VARY};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::stream::{FuturesUnordered, StreamExt};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use projector::ProjectionState;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use crate::metrics::{Format, Health, Metrics};

/// How long one request may wait for the states source before answering without them.
pub const STATES_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What one read of the states source gave.
type StatesRead = Result<Vec<ProjectionState>, String>;

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
    Fut: Future<Output = StatesRead>,
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
    Fut: Future<Output = StatesRead>,
{
    metrics.set_health_interval(health_interval);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!("serving /metrics and /health on http://{addr}");
    }
    let (asks, asked) = mpsc::channel(64);
    let router = router(Arc::new(Endpoint { metrics, asks, health_interval }));
    let reader = read_on_request(states, asked);
    tokio::pin!(reader);
    let mut connections = FuturesUnordered::new();
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let connection = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_TIMEOUT)
                        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(router.clone()));
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
            // Ends only when every handler is gone, which the router outlives.
            () = &mut reader => {}
            changed = shutdown.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

/// Answers the handlers' asks with reads of `states`: one read for every ask waiting
/// when it starts, so a burst of scrapes costs one query.
async fn read_on_request<F, Fut>(states: F, mut asked: mpsc::Receiver<oneshot::Sender<StatesRead>>)
where
    F: Fn() -> Fut,
    Fut: Future<Output = StatesRead>,
{
    while let Some(first) = asked.recv().await {
        let mut waiting = vec![first];
        while let Ok(more) = asked.try_recv() {
            waiting.push(more);
        }
        let read = match tokio::time::timeout(STATES_TIMEOUT, states()).await {
            Ok(read) => read,
            Err(_) => Err(format!("reading the projection states took more than {}s", STATES_TIMEOUT.as_secs())),
        };
        for reply in waiting {
            let _ = reply.send(read.clone());
        }
    }
}

/// What the handlers share.
struct Endpoint {
    metrics: Arc<Metrics>,
    asks: mpsc::Sender<oneshot::Sender<StatesRead>>,
    health_interval: Duration,
}

impl Endpoint {
    async fn states(&self) -> StatesRead {
        let (reply, answer) = oneshot::channel();
        let read = async {
            self.asks.send(reply).await.map_err(|_| "the endpoint is shutting down".to_owned())?;
            answer.await.map_err(|_| "the endpoint is shutting down".to_owned())?
        };
        match tokio::time::timeout(STATES_TIMEOUT, read).await {
            Ok(read) => read,
            Err(_) => Err(format!("reading the projection states took more than {}s", STATES_TIMEOUT.as_secs())),
        }
    }
}

fn router(endpoint: Arc<Endpoint>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_page).fallback(method_not_allowed))
        .route("/health", get(health_page).fallback(method_not_allowed))
        .fallback(not_found)
        .with_state(endpoint)
}

async fn metrics_page(State(endpoint): State<Arc<Endpoint>>, headers: HeaderMap) -> Response {
    let accept: Vec<&str> = headers.get_all(ACCEPT).iter().filter_map(|v| v.to_str().ok()).collect();
    let format = Format::negotiate((!accept.is_empty()).then(|| accept.join(",")).as_deref());
    let read = endpoint.states().await;
    if let Err(error) = &read {
        tracing::warn!(%error, "/metrics: serving counters without the projection states");
    }
    let body = match endpoint.metrics.encode(read.as_deref().ok(), format) {
        Ok(body) => body,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode the metrics: {e}\n")),
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    headers.insert(VARY, HeaderValue::from_static("accept"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn health_page(State(endpoint): State<Arc<Endpoint>>) -> Response {
    let health = match endpoint.states().await {
        Ok(states) => endpoint.metrics.health(&states, endpoint.health_interval),
        Err(error) => {
            let known = endpoint.metrics.health(&[], endpoint.health_interval);
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
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn method_not_allowed() -> Response {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed: use GET\n");
    response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
    response
}

async fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "not found: try /metrics or /health\n")
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    let mut response = (status, body.into()).into_response();
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}
