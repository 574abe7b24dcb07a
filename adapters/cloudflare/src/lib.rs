//! projector-cloudflare
