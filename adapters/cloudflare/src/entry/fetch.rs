//! The HTTP routes: `/health`, `/status`, `/metrics`, and the token-guarded
//! `POST /rebuild/<projection>` and `POST /wake`.

use projector::{ProjectionState, ProjectionStore};
use projector_postgres::PgStore;
use serde_json::json;
use worker::{event, Context, Env, Headers, Method, Request, Response};

use super::{lookup, settings, with_store};
use crate::invocation::Retries;
use crate::queue::Message;
use crate::settings::var;
use crate::{auth, handlers, pages};

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> worker::Result<Response> {
    let path = req.path();
    let method = req.method();
    match (method, path.as_str()) {
        (Method::Get, "/health") => health(&env).await,
        (Method::Get, "/status") => status(&env).await,
        (Method::Get, "/metrics") => metrics(&req, &env).await,
        (Method::Post, p) if p.starts_with("/rebuild/") => rebuild(&req, &env, &p["/rebuild/".len()..]).await,
        (Method::Post, "/wake") => wake(&req, &env).await,
        (_, "/health" | "/status" | "/metrics") => {
            let headers = Headers::new();
            headers.set("allow", "GET")?;
            Ok(Response::error("method not allowed: use GET\n", 405)?.with_headers(headers))
        }
        (_, p) if p.starts_with("/rebuild/") || p == "/wake" => {
            let headers = Headers::new();
            headers.set("allow", "POST")?;
            Ok(Response::error("method not allowed: use POST\n", 405)?.with_headers(headers))
        }
        _ => Response::error(
            "not found: try /health, /status, /metrics, POST /rebuild/<projection> or POST /wake\n",
            404,
        ),
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

/// `Some(refusal)` unless the request carries the `REBUILD_TOKEN` bearer token.
fn refused(req: &Request, env: &Env) -> worker::Result<Option<Response>> {
    let header = req.headers().get("authorization")?;
    let Err(refusal) = auth::authorize(header.as_deref(), lookup(env, var::REBUILD_TOKEN).as_deref()) else {
        return Ok(None);
    };
    let mut response = json_response(&json!({ "error": refusal.to_string() }), refusal.http_status())?;
    if refusal == auth::Refusal::Missing {
        response.headers_mut().set("www-authenticate", "Bearer")?;
    }
    Ok(Some(response))
}

/// Queues a wake-up: the queue consumer catches up at once instead of at the next cron.
async fn wake(req: &Request, env: &Env) -> worker::Result<Response> {
    if let Some(refusal) = refused(req, env)? {
        return Ok(refusal);
    }
    let queue = match env.queue(var::WAKE_BINDING) {
        Ok(queue) => queue,
        Err(e) => {
            let error = format!("no {} queue binding: {e}", var::WAKE_BINDING);
            return json_response(&json!({ "error": error }), 503);
        }
    };
    match queue.send(Message::Wake).await {
        Ok(()) => json_response(&json!({ "queued": Message::Wake }), 202),
        Err(e) => json_response(&json!({ "error": format!("cannot queue the wake-up: {e}") }), 503),
    }
}

async fn rebuild(req: &Request, env: &Env, projection: &str) -> worker::Result<Response> {
    if let Some(refusal) = refused(req, env)? {
        return Ok(refusal);
    }
    let settings = match settings(env) {
        Ok(s) => s,
        Err(e) => return json_response(&json!({ "error": e }), 503),
    };
    if !settings.projections.contains(&projection) {
        let error = format!("unknown projection {projection:?}: this Worker runs {}", settings.projections.join(", "));
        return json_response(&json!({ "error": error }), 404);
    }
    let knobs = settings.knobs(&Retries::Configured);
    let rebuilt = with_store(env, async |store: &PgStore| match handlers::rebuild(store, projection, &knobs) {
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
