//! besterd: a plain-TCP message broker (architecture map filled in as modules land).
#![warn(missing_docs)]

pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod handler;
pub mod net;
pub mod protocol;
pub mod router;
pub mod server;
