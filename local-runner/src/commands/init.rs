//! `projector init`: creates or upgrades the schema and registers every configured
//! projection.

use anyhow::{Context, Result};
use projector::config::Config;
use projector_local::Connector;

use super::register_all;
use crate::say;

pub async fn execute<C: Connector>(config: &Config, connector: &C) -> Result<()> {
    let applied = connector.migrate().await.with_context(|| format!("migrating the {}", connector.describe()))?;
    for name in &applied {
        say!("applied migration {name}");
    }
    register_all(config, connector).await?;
    say!(
        "{} ready: {} projection(s) registered ({})",
        connector.describe(),
        config.projections.len(),
        config.projections.keys().cloned().collect::<Vec<_>>().join(", ")
    );
    Ok(())
}
