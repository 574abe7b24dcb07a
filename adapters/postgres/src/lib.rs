//! projector-postgres
