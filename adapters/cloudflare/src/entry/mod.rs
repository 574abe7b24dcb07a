//! The Worker's entry points (wasm32 only): the connection to PostgreSQL over
//! `worker::Socket`, the cron trigger ([`scheduled`]), the HTTP routes ([`fetch`]) and the
//! queue consumer ([`queue_event`]), with what every invocation does after it ran.

use std::time::Duration;

use projector_postgres::{redact, PgStore};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::NoTls;
use worker::js_sys::{Date, Math};
use worker::{
    console_error, console_log, event, Env, Fetch, Headers, MessageBuilder, Method, Request, RequestInit,
    ScheduleContext, ScheduledEvent, Socket,
};

use crate::budget::Clock;
use crate::invocation::{Report, Retries};
use crate::settings::{var, Settings};
use crate::{alerts, invocation, queue};

mod fetch;
mod queue_event;

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

/// Runs one invocation with `retries` patience; `Err` when it could not run at all.
async fn invoke(env: &Env, settings: &Settings, retries: &Retries) -> Result<Report, String> {
    let started = Date::now();
    let owner = owner();
    let ran = with_store(env, async |store: &PgStore| {
        invocation::run(store, settings, retries, &owner, JsClock(started)).await
    })
    .await;
    match ran {
        Ok(Ok(report)) => Ok(report),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("cannot reach the store: {e}")),
    }
}

/// What every invocation that ran does next: log its report, raise its alerts, queue a
/// retry for each partition it left waiting that no delivered message covers, and, for a
/// wake-up (`carry_on`), another wake-up while work is left.
async fn after(
    env: &Env,
    settings: &Settings,
    trigger: &str,
    report: &Report,
    messages: &[Option<queue::Message>],
    carry_on: bool,
) -> queue::Settled {
    console_log!(
        "{trigger}: {}",
        serde_json::to_string(report).unwrap_or_else(|e| format!("(report not encodable: {e})"))
    );
    notify(settings, alerts::from_report(report, trigger, chrono::Utc::now())).await;
    let settled = queue::settle(messages, report, |ending| queue::retry_delay(ending, settings, Math::random()));
    let more = if carry_on { queue::carry_on(report) } else { None };
    let send: Vec<_> = settled.send.iter().cloned().chain(more).collect();
    if !send.is_empty() {
        match env.queue(var::WAKE_BINDING) {
            Ok(wake) => {
                for (message, delay) in &send {
                    let built = MessageBuilder::new(message.clone()).delay_seconds(*delay).build();
                    if let Err(e) = wake.send(built).await {
                        console_error!("{trigger}: cannot queue {message:?}: {e}; the cron retries it instead");
                    }
                }
            }
            Err(e) => console_error!(
                "{trigger}: no {} queue binding ({e}): {} waiting partition(s) are retried by the cron only",
                var::WAKE_BINDING,
                send.len()
            ),
        }
    }
    settled
}

/// Logs each notification as an error and POSTs it to `ALERT_WEBHOOK`, if set.
async fn notify(settings: &Settings, notes: Vec<alerts::Notification>) {
    for note in notes {
        console_error!("alert {} {}: {}", note.condition, note.projection, note.message);
        let Some(url) = settings.alert_webhook.as_deref() else { continue };
        if let Err(e) = post_json(url, &note).await {
            console_error!("alert {} {}: the webhook {url} did not take it: {e}", note.condition, note.projection);
        }
    }
}

async fn post_json(url: &str, body: &impl serde::Serialize) -> Result<(), String> {
    let text = serde_json::to_string(body).map_err(|e| e.to_string())?;
    let headers = Headers::new();
    headers.set("content-type", "application/json").map_err(|e| e.to_string())?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_headers(headers).with_body(Some(text.into()));
    let request = Request::new_with_init(url, &init).map_err(|e| e.to_string())?;
    let response = Fetch::Request(request).send().await.map_err(|e| e.to_string())?;
    match response.status_code() {
        200..=299 => Ok(()),
        status => Err(format!("HTTP {status}")),
    }
}

#[event(scheduled)]
async fn scheduled(event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    let trigger = format!("cron ({})", event.cron());
    let settings = match settings(&env) {
        Ok(s) => s,
        Err(e) => return console_error!("{trigger}: not run: {e}"),
    };
    match invoke(&env, &settings, &Retries::Configured).await {
        Ok(report) => {
            after(&env, &settings, &trigger, &report, &[], false).await;
        }
        Err(e) => console_error!("{trigger}: {e}"),
    }
}
