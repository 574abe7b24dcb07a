//! projector-local
