//! Support for driving the Worker in workerd: the `wrangler dev` process, a minimal HTTP
//! client, a webhook receiver, and the demo events.

pub mod events;
pub mod http;
pub mod webhook;
pub mod wrangler;
