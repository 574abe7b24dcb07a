//! The Worker's entry points (wasm32 only): the connection to PostgreSQL over
//! `worker::Socket`, the cron trigger and the HTTP routes.

use std::time::Duration;

use projector::{ProjectionState, ProjectionStore};
use projector_postgres::{redact, PgStore};
use serde_json::json;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::NoTls;
use worker::js_sys::{Date, Math};
use worker::{
    console_error, console_log, event, Context, Env, Headers, Method, Request, Response, ScheduleContext,
    ScheduledEvent, Socket,
};

use crate::budget::Clock;
use crate::settings::{var, Settings};
use crate::{auth, handlers, invocation, pages};

/// Milliseconds since this invocation started, by `Date.now()`.
struct JsClock(f64);

impl Clock for JsClock {
    fn elapsed(&self) -> Duration {
        Duration::from_secs_f64(((Date::now() - self.0) / 1000.0).max(0.0))
    }
}

/// A variable, from the secrets first.
fn lookup(env: &Env, name: &str) -> Option<String> {
    env.secret(name).ok().map(|s| s.to_string()).or_else(|| env.var(name).ok().map(|v| v.to_string()))
}

fn settings(env: &Env) -> Result<Settings, String> {
    Settings::from_vars(|name| lookup(env, name)).map_err(|e| e.to_string())
}

/// Connects to `DATABASE_URL` and runs `work` with the store, driving the connection in
/// this same task; the client is dropped before returning, so no socket outlives the
/// request (a connection left running after it breaks the next request).
async fn with_store<T>(env: &Env, work: impl AsyncFnOnce(&PgStore) -> T) -> Result<T, String> {
    let url = lookup(env, var::DATABASE_URL)
        .ok_or_else(|| format!("variable {} is not set: the PostgreSQL URL (a secret)", var::DATABASE_URL))?;
    let target = redact(&url);
    let config: tokio_postgres::Config =
        url.parse().map_err(|e| format!("variable {} = {target} is not a PostgreSQL URL: {e}", var::DATABASE_URL))?;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        _ => return Err(format!("{target}: a Worker connects over TCP only: the URL needs a host name")),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let socket = Socket::builder().connect(host, port).map_err(|e| format!("{target}: cannot open a socket: {e}"))?;
    let refused = |e: tokio_postgres::Error| format!("{target}: {e}");
    match config.get_ssl_mode() {
        SslMode::Disable | SslMode::Prefer => {
            let (client, connection) = config.connect_raw(socket, NoTls).await.map_err(refused)?;
            Ok(drive(client, connection, work).await)
        }
        _ => {
            let (client, connection) =
                config.connect_raw(socket, worker::postgres_tls::PassthroughTls).await.map_err(refused)?;
            Ok(drive(client, connection, work).await)
        }
    }
}

async fn drive<R>(
    client: tokio_postgres::Client,
    connection: impl std::future::Future<Output = Result<(), tokio_postgres::Error>>,
    work: impl AsyncFnOnce(&PgStore) -> R,
) -> R {
    let store = PgStore::new(client);
    let work = async move {
        let result = work(&store).await;
        drop(store);
        result
    };
    let (result, _) = futures_util::join!(work, connection);
    result
}

/// A runner id for this invocation's leases.
fn owner() -> String {
    format!("worker-{:012x}", (Math::random() * 2f64.powi(48)) as u64)
}

#[event(scheduled)]
async fn scheduled(event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    let started = Date::now();
    let settings = match settings(&env) {
        Ok(s) => s,
        Err(e) => return console_error!("scheduled ({}): not run: {e}", event.cron()),
    };
    let owner = owner();
    let ran =
        with_store(&env, async |store: &PgStore| invocation::run(store, &settings, &owner, JsClock(started)).await)
            .await;
    match ran {
        Ok(Ok(report)) => console_log!(
            "scheduled ({}): {}",
            event.cron(),
            serde_json::to_string(&report).unwrap_or_else(|e| format!("(report not encodable: {e})"))
        ),
        Ok(Err(e)) => console_error!("scheduled ({}): {e}", event.cron()),
        Err(e) => console_error!("scheduled ({}): cannot reach the store: {e}", event.cron()),
    }
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> worker::Result<Response> {
    let path = req.path();
    let method = req.method();
    match (method, path.as_str()) {
        (Method::Get, "/health") => health(&env).await,
        (Method::Get, "/status") => status(&env).await,
        (Method::Get, "/metrics") => metrics(&req, &env).await,
        (Method::Post, p) if p.starts_with("/rebuild/") => rebuild(&req, &env, &p["/rebuild/".len()..]).await,
        (_, "/health" | "/status" | "/metrics") => {
            let headers = Headers::new();
            headers.set("allow", "GET")?;
            Ok(Response::error("method not allowed: use GET\n", 405)?.with_headers(headers))
        }
        (_, p) if p.starts_with("/rebuild/") => {
            let headers = Headers::new();
            headers.set("allow", "POST")?;
            Ok(Response::error("method not allowed: use POST\n", 405)?.with_headers(headers))
        }
        _ => Response::error("not found: try /health, /status, /metrics or POST /rebuild/<projection>\n", 404),
    }
}

fn json_response(value: &impl serde::Serialize, status: u16) -> worker::Result<Response> {
    let headers = Headers::new();
    headers.set("cache-control", "no-store")?;
    Ok(Response::from_json(value)?.with_status(status).with_headers(headers))
}

async fn read_states(env: &Env) -> Result<Vec<ProjectionState>, String> {
    with_store(env, async |store: &PgStore| store.states().await.map_err(|e| e.to_string())).await?
}

async fn health(env: &Env) -> worker::Result<Response> {
    let report = match settings(env) {
        Err(e) => pages::Health { healthy: false, error: Some(e), partitions: vec![] },
        Ok(settings) => match read_states(env).await {
            Ok(states) => pages::health(&settings.projections, &states, settings.health_interval, chrono::Utc::now()),
            Err(e) => pages::unreachable(&e),
        },
    };
    json_response(&report, if report.healthy { 200 } else { 503 })
}

async fn status(env: &Env) -> worker::Result<Response> {
    let read = with_store(env, async |store: &PgStore| {
        let states = store.states().await.map_err(|e| e.to_string())?;
        let hold = store.horizon_hold().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((states, hold))
    })
    .await
    .and_then(|r| r);
    match read {
        Ok((states, hold)) => {
            json_response(&pages::StatusPage { projections: &states, horizon_hold: hold.as_ref() }, 200)
        }
        Err(e) => json_response(&json!({ "error": format!("cannot read the projection states: {e}") }), 503),
    }
}

async fn metrics(req: &Request, env: &Env) -> worker::Result<Response> {
    let now = chrono::Utc::now();
    let format = projector::metrics::Format::negotiate(req.headers().get("accept")?.as_deref());
    let (states, health) = match (settings(env), read_states(env).await) {
        (Ok(settings), Ok(states)) => {
            let health = pages::health(&settings.projections, &states, settings.health_interval, now);
            (Some(states), health)
        }
        (Err(e), _) | (_, Err(e)) => (None, pages::unreachable(&e)),
    };
    let body = match pages::metrics(states.as_deref(), &health, now, format) {
        Ok(body) => body,
        Err(e) => return Response::error(format!("cannot encode the metrics: {e}\n"), 500),
    };
    let headers = Headers::new();
    headers.set("content-type", format.content_type())?;
    headers.set("cache-control", "no-store")?;
    headers.set("vary", "accept")?;
    Ok(Response::ok(body)?.with_headers(headers))
}

async fn rebuild(req: &Request, env: &Env, projection: &str) -> worker::Result<Response> {
    let header = req.headers().get("authorization")?;
    if let Err(refusal) = auth::authorize(header.as_deref(), lookup(env, var::REBUILD_TOKEN).as_deref()) {
        let mut response = json_response(&json!({ "error": refusal.to_string() }), refusal.http_status())?;
        if refusal == auth::Refusal::Missing {
            response.headers_mut().set("www-authenticate", "Bearer")?;
        }
        return Ok(response);
    }
    let settings = match settings(env) {
        Ok(s) => s,
        Err(e) => return json_response(&json!({ "error": e }), 503),
    };
    if !settings.projections.contains(&projection) {
        let error = format!("unknown projection {projection:?}: this Worker runs {}", settings.projections.join(", "));
        return json_response(&json!({ "error": error }), 404);
    }
    let upcasters = settings.upcasters();
    let rebuilt = with_store(env, async |store: &PgStore| match handlers::rebuild(store, projection, &upcasters) {
        Some(rebuild) => rebuild.await.map_err(|e| e.to_string()),
        None => Err(format!("no handler for projection {projection}")),
    })
    .await
    .and_then(|r| r);
    match rebuilt {
        Ok(outcome) => json_response(
            &json!({
                "projection": projection,
                "events_read": outcome.events_read,
                "events_applied": outcome.events_applied,
                "rows_written": outcome.rows_written,
                "checkpoint": outcome.checkpoint,
            }),
            200,
        ),
        Err(e) => json_response(&json!({ "error": format!("rebuild of {projection} failed: {e}") }), 500),
    }
}
