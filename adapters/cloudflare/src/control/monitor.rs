//! Reading a running Worker from outside: `GET /health` (its answer whether healthy or
//! not: 503 is a report, not a failure) and `GET /status` (every partition's state and
//! who holds the read horizon back), over HTTP(S).

use std::time::Duration;

use projector::{HorizonHold, ProjectionState};
use serde::{Deserialize, Serialize};

use super::ControlError;
use crate::pages::Health;

/// How long one request may take: a Worker's first request after a deployment (or a
/// cold `wrangler dev`) takes seconds.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// What a Worker said about itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerReport {
    /// The Worker's base URL.
    pub url: String,
    pub health: Health,
    pub projections: Vec<ProjectionState>,
    pub horizon_hold: Option<HorizonHold>,
}

#[derive(Deserialize)]
struct StatusPage {
    projections: Vec<ProjectionState>,
    horizon_hold: Option<HorizonHold>,
}

/// The URL of the Worker that runs `projection`: `template` with `{projection}` and
/// `{worker}` (the Worker's name) filled in, without a trailing `/`. A template without
/// them names one Worker serving every projection (as `wrangler dev` does).
pub fn worker_url(template: &str, projection: &str) -> String {
    let worker = projector::config::cloudflare::worker_name(projection);
    template.replace("{projection}", projection).replace("{worker}", &worker).trim_end_matches('/').to_owned()
}

/// An HTTP client for Workers.
#[derive(Debug, Clone)]
pub struct Monitor {
    client: reqwest::Client,
}

impl Monitor {
    pub fn new() -> Result<Monitor, ControlError> {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("projector/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ControlError::Http { url: String::new(), error: e.to_string() })?;
        Ok(Monitor { client })
    }

    /// `/health` of the runner at `url` (a Worker, or the local runner, which answers
    /// in the same shape), healthy or not.
    pub async fn health(&self, url: &str) -> Result<Health, ControlError> {
        self.get(url.trim_end_matches('/'), "/health", &[200, 503]).await
    }

    /// `/health` and `/status` of the Worker at `url`.
    pub async fn read(&self, url: &str) -> Result<WorkerReport, ControlError> {
        let url = url.trim_end_matches('/');
        let health = self.health(url).await?;
        let status: StatusPage = self.get(url, "/status", &[200]).await?;
        Ok(WorkerReport {
            url: url.to_owned(),
            health,
            projections: status.projections,
            horizon_hold: status.horizon_hold,
        })
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, base: &str, path: &str, ok: &[u16]) -> Result<T, ControlError> {
        let url = format!("{base}{path}");
        let failed = |error: String| ControlError::Http { url: url.clone(), error };
        let response = self.client.get(&url).send().await.map_err(|e| failed(describe(&e)))?;
        let status = response.status().as_u16();
        let body = response.text().await.map_err(|e| failed(describe(&e)))?;
        if !ok.contains(&status) {
            // The Worker answers errors as `{"error": "..."}`.
            let said = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or_else(|| body.chars().take(300).collect());
            return Err(failed(format!("HTTP {status}: {said}")));
        }
        serde_json::from_str(&body)
            .map_err(|e| failed(format!("not the Worker's {path} answer ({e}): {}", clip(&body))))
    }
}

fn clip(body: &str) -> String {
    body.chars().take(300).collect()
}

/// A request error with its causes (reqwest's own message leaves out why it failed).
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_template_names_each_projection_s_worker() {
        let template = "https://{worker}.team.workers.dev/";
        assert_eq!(worker_url(template, "user-profile"), "https://projector-user-profile.team.workers.dev");
        assert_eq!(worker_url("https://x.dev/{projection}", "daily-activity"), "https://x.dev/daily-activity");
        assert_eq!(worker_url("http://127.0.0.1:8787", "user-profile"), "http://127.0.0.1:8787");
    }
}
