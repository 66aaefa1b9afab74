//! Command-line interface: the `besterd` subcommands and their flags (clap derive).
//!
//! This module only describes the command line; `main.rs` maps each subcommand to the module that
//! does the work. Usage errors exit with 64 (`EX_USAGE`), configuration errors with 78 (`EX_CONFIG`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// besterd: a plain-TCP message broker that dispatches JSON messages to handler processes.
#[derive(Debug, Parser)]
#[command(name = "besterd", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `besterd`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broker in the foreground until SIGTERM or SIGINT.
    Serve(ServeArgs),
    /// Validate a configuration file and print what is wrong with it (exit 78 when invalid),
    /// including handler programs that cannot be found or are not executable.
    CheckConfig {
        /// The configuration file to check; without it the embedded default configuration.
        #[arg(long, short, env = "BESTERD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Manage the user store.
    User(UserArgs),
    /// Ask a running besterd over its control socket (root or the daemon's user only).
    Ctl(CtlArgs),
}

/// Flags of `besterd serve`; each one overrides the configuration file.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// TOML configuration file; without it the embedded default configuration is used.
    #[arg(long, short, env = "BESTERD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:2222 (port 0 picks a free port).
    #[arg(long)]
    pub listen: Option<String>,
    /// Path of the user store.
    #[arg(long)]
    pub users: Option<PathBuf>,
    /// This server's name.
    #[arg(long)]
    pub name: Option<String>,
    /// Directory for the handler sockets (default: `$RUNTIME_DIRECTORY`, else a private temp dir).
    #[arg(long)]
    pub runtime_dir: Option<PathBuf>,
    /// Once listening and every started handler has connected, write the bound address here.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
}

/// `besterd user ...`. `--users` and `--config` may come before or after the action
/// (`besterd user --users P list` and `besterd user list --users P` are the same).
#[derive(Debug, Args)]
pub struct UserArgs {
    /// Path of the user store (default: the one named in the configuration, else ./besterd-users.json).
    #[arg(long, global = true, env = "BESTERD_USERS")]
    pub users: Option<PathBuf>,
    /// Configuration file whose `[server] users` names the store.
    #[arg(long, short, global = true, env = "BESTERD_CONFIG")]
    pub config: Option<PathBuf>,
    /// What to do with the users.
    #[command(subcommand)]
    pub action: UserAction,
}

/// The user-store actions.
#[derive(Debug, Subcommand)]
pub enum UserAction {
    /// Add a user (fails if the user exists).
    Add {
        /// The user's name.
        name: String,
        /// Read the password from the first line of standard input instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a user's password.
    Passwd {
        /// The user's name.
        name: String,
        /// Read the password from the first line of standard input instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete a user.
    Del {
        /// The user's name.
        name: String,
    },
    /// List the users, one per line (an error if the store does not exist).
    List,
}

/// `besterd ctl ...`
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The control socket (default: `besterd.ctl` in the configuration's `runtime_dir`, else in
    /// `$RUNTIME_DIRECTORY`).
    #[arg(long, env = "BESTERD_CTL_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Configuration file whose `[server] runtime_dir` holds the control socket.
    #[arg(long, short, env = "BESTERD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the daemon's answer as JSON (for scripts) instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub action: CtlAction,
}

/// The control actions.
#[derive(Debug, Subcommand)]
pub enum CtlAction {
    /// Show the server's figures, handlers, peers and client connections.
    Status,
    /// Close a client connection (by id, e.g. `3.7`) or every connection of a user; each is told
    /// `kicked` first.
    Kick {
        /// The connection id, as `status` shows it.
        #[arg(required_unless_present = "user", conflicts_with = "user")]
        conn: Option<String>,
        /// Kick every connection of this user instead.
        #[arg(long)]
        user: Option<String>,
    },
    /// Reload, as SIGHUP does.
    Reload,
    /// Stop taking clients, answer what is in flight, and exit, as SIGTERM does.
    Drain,
}
