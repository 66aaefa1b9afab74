//! The verifier pool (placeholder).
