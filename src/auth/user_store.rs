//! The user store (placeholder).
