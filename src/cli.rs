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
    /// Print a configuration: `--default` prints the built-in one `serve` uses without --config,
    /// to copy and extend (CONFIG.md lists every key).
    #[command(arg_required_else_help = true)]
    Config {
        /// The built-in default configuration, with its placeholders explained.
        #[arg(long)]
        default: bool,
    },
    /// Manage the user store.
    User(UserArgs),
    /// Ask a running besterd over its control socket (root or the daemon's user only).
    Ctl(CtlArgs),
    /// Check a handler program against the protocol: run it as besterd would, play the broker,
    /// print one line per check (exit 0 if all pass, 1 otherwise).
    HandlerTest(HandlerTestArgs),
}

/// `besterd handler-test [--type T] [--connect SOCKET] [--timeout-ms N] -- COMMAND ARGS...`
#[derive(Debug, Clone, Args)]
pub struct HandlerTestArgs {
    /// The payload type it serves (`BESTER_TYPE`); the vectors of that type are checked.
    #[arg(long = "type", value_name = "T", default_value = "echo")]
    pub kind: String,
    /// The handler listens on this socket and is dialled for every request (`connect = ...`).
    #[arg(long, value_name = "SOCKET")]
    pub connect: Option<PathBuf>,
    /// How answers are matched to requests, as `[handlers.T] correlate`: `request` (by token,
    /// the default), `order` (one request in flight, the next frame answers it), or `connection`
    /// (implied by --connect).
    #[arg(long, value_name = "MODE")]
    pub correlate: Option<String>,
    /// How long each check waits for the handler.
    #[arg(long, value_name = "N", default_value_t = 5000)]
    pub timeout_ms: u64,
    /// The data (JSON) of the request the generic checks send (default: from the type's vectors).
    #[arg(long, value_name = "JSON")]
    pub request: Option<String>,
    /// The data (JSON) of the ok reply that request must get (default: any valid answer).
    #[arg(long, value_name = "JSON", requires = "request")]
    pub expect: Option<String>,
    /// For an auth handler (`[auth] handler`): also send a login request with this
    /// `authentication` object (JSON) and check it is answered with a reply.
    #[arg(long, value_name = "JSON")]
    pub login: Option<String>,
    /// The handler's command and arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
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
    /// Set by a hot upgrade only: the descriptor of the socket pair to the old process.
    #[arg(long, hide = true, value_name = "FD")]
    pub upgrade_fd: Option<i32>,
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
        /// Give the user no password (a hash of a random one nobody knows): they log in by
        /// public key or client certificate only, until `passwd` sets one.
        #[arg(long, conflicts_with = "password_stdin")]
        no_password: bool,
        /// Pin the user's client certificate: only it logs in as this user by certificate.
        #[command(flatten)]
        pin: CertPin,
        /// Give the user this ed25519 public key (a PEM file as `bester keygen` writes, or one
        /// line of base64): it logs in as the user by signature.
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
    },
    /// List a user's ed25519 public keys, one per line, in base64.
    Keys {
        /// The user's name.
        name: String,
    },
    /// Give a user one more ed25519 public key (at most 16).
    AddKey {
        /// The user's name.
        name: String,
        /// The public key: a PEM file as `bester keygen` writes, or one line of base64.
        file: PathBuf,
    },
    /// Take an ed25519 public key from a user; sessions logged in with it are revoked.
    DelKey {
        /// The user's name.
        name: String,
        /// The key in base64, as `keys` lists it.
        key: String,
    },
    /// Pin a user's client certificate (only that certificate then logs in as the user by
    /// certificate), or remove the pin with --clear. Sessions standing on the old pin are revoked.
    Cert {
        /// The user's name.
        name: String,
        /// The certificate to pin.
        #[command(flatten)]
        pin: CertPin,
        /// Remove the pin: any certificate the CA issued for the name logs in again.
        #[arg(long, conflicts_with_all = ["cert_fingerprint", "cert"], required_unless_present_any = ["cert_fingerprint", "cert"])]
        clear: bool,
    },
    /// Give a user the gateway right (its sessions may attach other users with their
    /// credentials, `bester.attach`), or take it away with --clear. Taking it detaches the
    /// users its sessions hold.
    Gateway {
        /// The user's name.
        name: String,
        /// Take the right away.
        #[arg(long)]
        clear: bool,
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

/// A client certificate to pin, by fingerprint or from its PEM file.
#[derive(Debug, Clone, Default, Args)]
pub struct CertPin {
    /// SHA-256 fingerprint of the certificate's DER (64 hex digits; `:` between bytes and a
    /// `sha256:` prefix are accepted, as `openssl x509 -fingerprint -sha256` prints it).
    #[arg(long, value_name = "HEX", conflicts_with = "cert")]
    pub cert_fingerprint: Option<String>,
    /// The certificate's PEM file (its first certificate is pinned).
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
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
    /// Show the delivery store's queues: the deepest users' and every peer server's
    /// (store-and-forward), messages, bytes and the oldest's age.
    Queues {
        /// Only this user's queue.
        #[arg(long)]
        user: Option<String>,
        /// Show at most this many users' queues, deepest first (the server shows at most 1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Reload, as SIGHUP does.
    Reload,
    /// Stop taking clients, answer what is in flight, and exit, as SIGTERM does.
    Drain,
    /// Start the binary at the path the daemon was started from (with the same arguments) on
    /// the same listening sockets, wait until it is ready, then drain this one, as SIGUSR2 does.
    Upgrade,
}
