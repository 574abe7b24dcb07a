//! Native connections: TCP or Unix socket, no TLS, the connection driven on tokio.

use projector::StoreError;
use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::{Client, Connection, NoTls, Socket};

use crate::{error, redact, PgStore};

/// Opens a connection; the caller drives it. A malformed URL is `InvalidInput`; a refused
/// or unreachable server is `Unavailable`, naming the host (never the password).
pub(crate) async fn open(url: &str) -> Result<(Client, Connection<Socket, NoTlsStream>), StoreError> {
    let config: tokio_postgres::Config =
        url.parse().map_err(|e| StoreError::InvalidInput(format!("database URL {}: {e}", redact(url))))?;
    config
        .connect(NoTls)
        .await
        .map_err(|e| StoreError::Unavailable(format!("{}: {}", redact(url), error::describe(&e))))
}

impl PgStore {
    /// Connects natively and drives the connection on a tokio task.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let (client, connection) = open(url).await?;
        tokio::spawn(async move {
            // Errors surface to the client as closed-connection errors.
            let _ = connection.await;
        });
        Ok(Self::new(client))
    }
}
