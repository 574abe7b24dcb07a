//! Support for driving the Worker in workerd: the `wrangler dev` process, a minimal HTTP
//! client, and the demo events.

pub mod events;
pub mod http;
pub mod wrangler;
