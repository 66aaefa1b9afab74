//! `besterd user add|passwd|del|list` (placeholder).
