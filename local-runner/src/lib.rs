//! projector-cli
