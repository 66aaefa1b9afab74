//! besterd: a plain-TCP message broker (architecture map filled in as modules land).
#![warn(missing_docs)]

pub mod auth;
pub mod cli;
pub mod config;
pub mod protocol;
pub mod router;
pub mod server;
