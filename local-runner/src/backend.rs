//! Which store the CLI talks to: PostgreSQL when a database URL is set, else the
//! embedded file store.

use std::path::PathBuf;

use anyhow::{Context, Result};
use projector::config::Config;
use projector_embedded::EmbeddedStore;
use projector_local::{EmbeddedConnector, PgConnector};

pub enum Backend {
    Postgres(PgConnector),
    Embedded(EmbeddedConnector),
}

impl Backend {
    /// The embedded store's path when it is the store in use and its file does not
    /// exist yet.
    pub fn missing_embedded_store(config: &Config, url: Option<&str>) -> Option<PathBuf> {
        let url = url.map(str::to_owned).or_else(|| config.database.url(|name| std::env::var(name).ok()));
        let path = &config.database.embedded_path;
        (url.is_none() && !path.exists()).then(|| path.clone())
    }

    pub fn open(config: &Config, url: Option<String>) -> Result<Backend> {
        match url.or_else(|| config.database.url(|name| std::env::var(name).ok())) {
            Some(url) => Ok(Backend::Postgres(PgConnector::new(url).pooled(config.database.pooled))),
            None => {
                let path = &config.database.embedded_path;
                let store = EmbeddedStore::open(path)
                    .with_context(|| format!("opening the embedded store at {}", path.display()))?;
                Ok(Backend::Embedded(EmbeddedConnector::new(store, path.display().to_string())))
            }
        }
    }
}

/// Runs a generic async block with the backend's connector bound to `$c`.
#[macro_export]
macro_rules! with_backend {
    ($backend:expr, |$c:ident| $body:expr) => {
        match $backend {
            $crate::backend::Backend::Postgres($c) => $body,
            $crate::backend::Backend::Embedded($c) => $body,
        }
    };
}
