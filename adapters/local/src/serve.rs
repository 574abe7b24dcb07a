//! What a runner does beside its workers while it serves: `LISTEN` wake-ups, the
//! `/metrics` and `/health` endpoint on `observability.listen` (bound before anything
//! runs, or the runner does not start), and the `alerts:` evaluator, all reading the
//! projections' state through one store connection of their own, reopened whenever it is
//! lost (see the `observer` module).

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use projector::ProjectionState;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::alerts::Alerter;
use crate::observer::Observer;
use crate::{http, Connector, LocalAdapter};

/// How often [`LocalAdapter::serve`] checks whether every worker has ended.
const FINISHED_CHECK: Duration = Duration::from_millis(500);

/// Why [`LocalAdapter::serve`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServeEnd {
    /// The shutdown future resolved.
    Shutdown,
    /// Every worker thread has ended on its own (failed or halted), or none was running.
    WorkersEnded,
}

impl<C: Connector> LocalAdapter<C> {
    /// Binds `observability.listen` for `/metrics` and `/health`; `None` when it is `off`.
    /// An address that cannot be bound is an error naming it: a runner that cannot be
    /// watched should not pass for a healthy one.
    pub async fn bind_observability(&self) -> io::Result<Option<TcpListener>> {
        match self.config.observability.listen {
            Some(addr) => http::bind(addr).await.map(Some),
            None => Ok(None),
        }
    }

    /// [`LocalAdapter::serve_on`] the listener of [`LocalAdapter::bind_observability`];
    /// fails, serving nothing, when its address cannot be bound.
    pub async fn serve(&self, shutdown: impl Future<Output = ()>) -> io::Result<ServeEnd> {
        let listener = self.bind_observability().await?;
        Ok(self.serve_on(listener, shutdown).await)
    }

    /// Serves the deployed projections until `shutdown` resolves or every worker has
    /// ended: keeps idle workers woken by `LISTEN` (PostgreSQL), serves `/metrics` and
    /// `/health` on `listener` (when there is one), and evaluates the `alerts:`
    /// conditions when configured. The endpoint and the alerts read the projection states
    /// through one connection, opened by [`Connector::connect_observer`] on the first read
    /// and reopened with backoff whenever it is lost.
    ///
    /// The workers keep running when this returns: [`LocalAdapter::stop_all`] drains them.
    pub async fn serve_on(&self, listener: Option<TcpListener>, shutdown: impl Future<Output = ()>) -> ServeEnd {
        let ours: Vec<String> = self.running.lock().expect("running map").keys().cloned().collect();
        let observer = Observer::new(self.connector.clone());
        let (observer, ours, me) = (&observer, ours.as_slice(), self.owner.as_str());
        let states = move || own_states(observer, ours, me);
        // Never set: the endpoint, the alerts and LISTEN end when this drops them.
        let (_stop, stop_rx) = watch::channel(false);
        let observability = &self.config.observability;
        let http = async {
            if let Some(listener) = listener {
                let served = http::serve_listener(
                    listener,
                    self.metrics(),
                    states,
                    observability.health_interval,
                    stop_rx.clone(),
                )
                .await;
                if let Err(e) = served {
                    tracing::error!("/metrics and /health stopped: {e}");
                }
            }
            std::future::pending::<()>().await
        };
        let alerts = async {
            if let Some(alerts) = &self.config.alerts {
                Alerter::new(alerts.clone()).run(states, self.metrics(), stop_rx.clone()).await;
            }
            std::future::pending::<()>().await
        };
        let listen = self.listen(stop_rx.clone());
        tokio::pin!(listen, shutdown, http, alerts);
        let mut listening = true;
        let mut check = tokio::time::interval(FINISHED_CHECK);
        loop {
            tokio::select! {
                _ = &mut shutdown => return ServeEnd::Shutdown,
                _ = &mut listen, if listening => listening = false,
                _ = &mut http => {}
                _ = &mut alerts => {}
                _ = check.tick() => if self.all_finished() { return ServeEnd::WorkersEnded },
            }
        }
    }

    /// Keeps idle workers woken by `LISTEN projector_events` until shutdown, on the
    /// connector's [`Connector::listen_url`]; without one (the embedded store, or a pooled
    /// database with no direct URL) no LISTEN is issued and workers poll only.
    pub async fn listen(&self, mut shutdown: watch::Receiver<bool>) {
        let Some(url) = self.connector.listen_url().map(str::to_owned) else {
            return;
        };
        let wake = Arc::clone(&self.wake);
        loop {
            if *shutdown.borrow() {
                return;
            }
            let mut stop = shutdown.clone();
            let stopped = async move {
                let _ = stop.changed().await;
            };
            if let Err(e) = projector_postgres::listen_for_appends(&url, || wake.notify_waiters(), stopped).await {
                tracing::debug!(error = %e, "LISTEN connection ended; polling until it is back");
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// The states this runner answers for: its projections' partitions that it leases, or
/// that nobody holds a live lease on (another runner reports its own).
async fn own_states<C: Connector>(
    observer: &Observer<C>,
    ours: &[String],
    me: &str,
) -> Result<Vec<ProjectionState>, String> {
    let all = observer.states().await?;
    let now = Utc::now();
    let mine = |s: &ProjectionState| {
        ours.contains(&s.projection)
            && match (&s.lease_owner, s.lease_expires_at) {
                (Some(owner), Some(until)) => owner == me || until < now,
                _ => true,
            }
    };
    Ok(all.into_iter().filter(mine).collect())
}
