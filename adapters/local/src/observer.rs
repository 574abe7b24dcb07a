//! The one store connection behind `/metrics`, `/health` and the alerts, and what keeps
//! it open: a lost connection (server restart, pooler reset, terminated backend) is
//! reopened on the next read at once, then, while that fails, with full-jitter
//! exponential backoff. The store counts as down only while no connection can be had:
//! a read that reconnects and succeeds reports the states as usual.

use std::time::{Duration, Instant};

use projector::retry::Failure;
use projector::{ErrorClass, ProjectionState, ProjectionStore, RetryPolicy, StoreError};
use tokio::sync::Mutex;

use crate::http::STATES_TIMEOUT;
use crate::Connector;

/// Backoff between reconnection attempts while the store stays down; the cap bounds
/// how long `/health` may go on reporting a store that is back.
const RECONNECT: RetryPolicy =
    RetryPolicy { max_retries: 0, base: Duration::from_millis(250), cap: Duration::from_secs(5) };

/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

enum Link<S> {
    Up(S),
    Down {
        /// Why the last connection or attempt failed.
        error: String,
        /// Failed attempts since the connection was lost.
        attempts: u32,
        /// No new attempt before this.
        next_attempt: Instant,
    },
}

/// Reads the projection states through a connection it reopens when lost (see the
/// module docs). Reads are serialized: a store connection runs one statement at a time.
pub(crate) struct Observer<C: Connector> {
    connector: C,
    link: Mutex<Link<C::Store>>,
}

impl<C: Connector> Observer<C> {
    /// An observer that connects on its first read.
    pub fn new(connector: C) -> Self {
        let link = Link::Down { error: "not connected yet".into(), attempts: 0, next_attempt: Instant::now() };
        Observer { connector, link: Mutex::new(link) }
    }

    /// Every projection partition's state, or why they cannot be read now.
    ///
    /// Safe to cancel: the connection is out of the link while a read on it runs, so a
    /// read given up half-way leaves no connection in an unknown state behind, and the
    /// next read opens a new one.
    pub async fn states(&self) -> Result<Vec<ProjectionState>, String> {
        let mut link = self.link.lock().await;
        if matches!(*link, Link::Up(_)) {
            let interrupted =
                Link::Down { error: "a read was interrupted".into(), attempts: 0, next_attempt: Instant::now() };
            let Link::Up(store) = std::mem::replace(&mut *link, interrupted) else {
                unreachable!("matched above");
            };
            let error = match read(&store).await {
                Ok(states) => {
                    *link = Link::Up(store);
                    return Ok(states);
                }
                // The server answered: the connection works, the statement failed.
                Err(e) if e.class() == ErrorClass::Permanent => {
                    *link = Link::Up(store);
                    return Err(e.to_string());
                }
                Err(e) => e.to_string(),
            };
            tracing::warn!(%error, "the connection behind /metrics, /health and the alerts was lost; reconnecting");
            *link = Link::Down { error, attempts: 0, next_attempt: Instant::now() };
        }
        let Link::Down { error, attempts, next_attempt } = &mut *link else {
            unreachable!("the link is down unless a read succeeded above");
        };
        let now = Instant::now();
        if now < *next_attempt {
            return Err(format!(
                "{error} (reconnecting to the {}; next attempt in {:.1}s)",
                self.connector.describe(),
                next_attempt.duration_since(now).as_secs_f64()
            ));
        }
        let reconnected = async {
            let store = match tokio::time::timeout(CONNECT_TIMEOUT, self.connector.connect_observer()).await {
                Ok(connected) => connected?,
                Err(_) => {
                    let error = format!("connecting took more than {}s", CONNECT_TIMEOUT.as_secs());
                    return Err(StoreError::Unavailable(error));
                }
            };
            let states = read(&store).await?;
            Ok((store, states))
        };
        match reconnected.await {
            Ok((store, states)) => {
                if *attempts > 0 {
                    tracing::info!(
                        attempts = *attempts,
                        "the connection behind /metrics, /health and the alerts is back"
                    );
                }
                *link = Link::Up(store);
                Ok(states)
            }
            Err(e) => {
                *attempts += 1;
                *error = e.to_string();
                tracing::debug!(attempts = *attempts, %error, "the connection behind /metrics, /health and the alerts is still down");
                let delay =
                    RECONNECT.next_action(Failure::Store(ErrorClass::Transient), *attempts).delay(rand::random());
                *next_attempt = Instant::now() + delay;
                Err(format!("{error} (reconnecting to the {})", self.connector.describe()))
            }
        }
    }
}

/// One read of the states, given up after [`STATES_TIMEOUT`]: a connection that does not
/// answer in that time is treated as lost.
async fn read<S: ProjectionStore>(store: &S) -> Result<Vec<ProjectionState>, StoreError> {
    match tokio::time::timeout(STATES_TIMEOUT, store.states()).await {
        Ok(read) => read,
        Err(_) => Err(StoreError::Unavailable(format!(
            "reading the projection states took more than {}s",
            STATES_TIMEOUT.as_secs()
        ))),
    }
}
