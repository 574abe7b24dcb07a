//! projector-embedded
