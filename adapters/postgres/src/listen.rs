//! Wake-ups on append: a connection of its own that `LISTEN`s on the channel the events
//! table's trigger notifies once per appending statement.
//!
//! Notifications only shorten the wait; runners poll as well, since a lost connection
//! drops them. The URL must be a direct connection: a transaction-mode pooler (PgBouncer
//! in transaction mode, Neon's pooled endpoint) hands each transaction whichever server
//! connection is free, so a session's LISTEN does not stay with it. Callers listen only
//! on a direct URL, and a pooled database without one is polled only.

use std::future::Future;

use futures_util::StreamExt;
use projector::StoreError;
use tokio_postgres::AsyncMessage;

use crate::error::map;

/// The channel `0003_notify.sql`'s trigger notifies after every statement that appends.
pub const APPENDS_CHANNEL: &str = "projector_events";

const LISTEN_FOR_APPENDS: &str = include_str!("../sql/listen_for_appends.sql");

/// Connects to `url`, listens on [`APPENDS_CHANNEL`] and calls `on_append` once per
/// notification (one per appending statement, fewer when the server folds duplicates).
/// Returns `Ok` when `stop` completes or the server closes the connection, and the error
/// when connecting, listening or the connection fails; a caller that wants to keep
/// listening calls again after a pause.
pub async fn listen_for_appends(
    url: &str,
    mut on_append: impl FnMut(),
    stop: impl Future<Output = ()>,
) -> Result<(), StoreError> {
    let (client, mut connection) = crate::connect::open(url).await?;
    // The connection delivers notifications only while polled; polling it also drives the
    // LISTEN below.
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    let listen = client.batch_execute(LISTEN_FOR_APPENDS);
    tokio::pin!(listen, stop);
    let mut listening = false;
    loop {
        tokio::select! {
            done = &mut listen, if !listening => {
                done.map_err(map)?;
                listening = true;
            }
            message = messages.next() => match message {
                Some(Ok(AsyncMessage::Notification(n))) if n.channel() == APPENDS_CHANNEL => on_append(),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(map(e)),
                None => return Ok(()),
            },
            () = &mut stop => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trigger_notifies_the_channel_listened_on() {
        let trigger = include_str!("../sql/migrations/0003_notify.sql");
        assert!(trigger.contains(&format!("pg_notify('{APPENDS_CHANNEL}'")), "{trigger}");
        assert_eq!(LISTEN_FOR_APPENDS.trim(), format!("LISTEN {APPENDS_CHANNEL}"));
    }
}
