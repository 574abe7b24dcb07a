//! The Cloudflare Workers provider: the Worker that runs projection handlers at the
//! edge (cron, queue and fetch entry points) and `CloudflareWorkerAdapter`, which
//! deploys, scales and monitors it from the operator's machine.
//!
//! Not built yet: `provider: cloudflare` in `projections.yaml` is validated against the
//! Workers limits, but only the local provider runs projections today.
