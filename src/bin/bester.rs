//! `bester`: the command-line client of besterd. `send` logs in, sends one message and prints the
//! reply; `listen` logs in and prints every message pushed to the user, one JSON line each, keeping
//! the connection alive with `bester.ping`.
//!
//! The password comes from the URI, else `BESTER_PASSWORD`, else the first line of standard input
//! with `--password-stdin` (and only then), else a prompt when standard input is a terminal. With
//! none of these it is a usage error, before connecting: a script never sends an empty password.
//! With `--token` (or `BESTER_TOKEN`) it logs in with that token instead (a JWT the application
//! issued, or a resume token), and the URI needs no user: `bester://host:port`.
//! With `--key FILE` no password is asked for: the login is by ed25519 signature (the server's
//! challenge nonce, signed for the server the challenge names, which must be `--server-name` if
//! that is given). `keygen` writes a key pair.
//!
//! A redirect (a handler sending the client to another server, PROTOCOL.md §6) is followed: at
//! most 3 of them, logging in at the new URL with the token the redirect carries and nothing else
//! (never the password, never a key's signature, and a redirect without a token is a failure),
//! then `send` sends its message again there. A redirect may not leave TLS; `--ca` and
//! `--timeout` cover every server of the exchange.
//!
//! Exit codes: 0 success; 1 an error reply, a refused login, a failed connection, or the server
//! closing first; 64 usage errors (bad arguments, DATA not JSON, no password); 75 (`EX_TEMPFAIL`)
//! when `--timeout` passes first. Messages go to stderr prefixed `bester: `; stdout only carries
//! frames from the server.

#[path = "bester/argv.rs"]
mod argv;
#[path = "bester/follow.rs"]
mod follow;
#[path = "bester/handle.rs"]
mod handle;

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use clap::{Parser, Subcommand};
use ed25519_dalek::{Signer, SigningKey};
use serde_json::Value;

use besterd::client::{Client, Uri};
use rustls::ClientConfig;

/// `EX_USAGE`: bad arguments, or no way to get a password.
const EX_USAGE: u8 = 64;
/// `EX_TEMPFAIL`: no answer within `--timeout`; trying again may work.
const EX_TEMPFAIL: u8 = 75;
/// Longest password line read with `--password-stdin` (the server accepts up to 1024 bytes).
const MAX_PASSWORD_LINE: u64 = 4096;
/// Largest DATA read from standard input (the server's default frame limit is 1 MiB).
const MAX_STDIN_DATA: u64 = 16 << 20;

/// bester: the command-line client of a besterd server
///
/// `bester send` logs in, sends one message and prints the reply as one JSON line; `bester listen`
/// prints every message pushed to the user. The server is named by a URI,
/// bester://user[:password]@host[:port] (port 2222 by default; bester+tls://, bester+ws:// and
/// bester+wss:// for TLS, WebSocket and WebSocket over TLS). Without a password in the URI it
/// comes from BESTER_PASSWORD, from standard input with --password-stdin, or from a prompt on a
/// terminal. Exit codes: 0 ok, 1 error reply or connection failure, 64 usage error, 75 timeout.
#[derive(Debug, Parser)]
#[command(name = "bester", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
    /// Read the password from the first line of standard input (it is never read otherwise).
    #[arg(long, global = true)]
    password_stdin: bool,
    /// Give up after this many seconds (exit 75): for `send` the whole exchange, for `listen`
    /// connecting, logging in and each keep-alive answer. 0 waits for ever. The default is longer
    /// than the server's own 30 s handler timeout, so that its `handler_timeout` answer comes first.
    #[arg(long, global = true, value_name = "SECONDS", default_value = "60", value_parser = seconds)]
    timeout: Duration,
    /// For bester+tls:// and bester+wss://: trust the CA certificates of this PEM file (default:
    /// the system's CAs). A certificate that cannot be verified is refused.
    #[arg(long, global = true, value_name = "FILE")]
    ca: Option<std::path::PathBuf>,
    /// Log in with this token (a JWT, or a resume token) instead of a password; the URI then
    /// needs no user. Overwritten in `ps` once bester starts; BESTER_TOKEN never shows there.
    #[arg(
        long,
        global = true,
        value_name = "TOKEN",
        env = "BESTER_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// Log in with this ed25519 private key (PKCS#8 PEM, as `bester keygen` writes it, readable
    /// by its owner only) instead of a password.
    #[arg(long, global = true, value_name = "FILE")]
    key: Option<PathBuf>,
    /// With --key: the server's name (its `[server] name`) that must be in its challenge; what is
    /// signed names it, so the signature is worth nothing at another server. Default: sign for
    /// the name the challenge gives.
    #[arg(long, global = true, value_name = "NAME", env = "BESTER_SERVER_NAME")]
    server_name: Option<String>,
}

/// The URI, with an empty user when a token logs in and the URI names none.
fn parse_uri(text: &str, token: bool) -> Result<Uri, Failure> {
    match Uri::parse(text) {
        Err(_) if token && !text.contains('@') => match text.split_once("://") {
            Some((scheme, rest)) => Uri::parse(&format!("{scheme}://@{rest}")),
            None => Uri::parse(text),
        },
        other => other,
    }
    .map_err(Failure::usage)
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Send one message of TYPE with JSON DATA and print the reply; an error reply exits 1 with
    /// its code and text on stderr.
    Send {
        /// bester[+tls|+ws|+wss]://user[:password]@host[:port]
        uri: String,
        /// The payload type, e.g. echo.
        #[arg(name = "TYPE")]
        kind: String,
        /// The payload data as JSON (default null); `-` reads it from standard input.
        data: Option<String>,
        /// The message id.
        #[arg(long, default_value = "1")]
        id: String,
    },
    /// Print every message pushed to this user, one JSON line each, until the connection closes.
    Listen {
        /// bester[+tls|+ws|+wss]://user[:password]@host[:port]
        uri: String,
        /// Exit 0 after this many pushes.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
        /// Send `bester.ping` after this many seconds without one (the server closes connections
        /// idle for its `idle_timeout_ms`, 300 s by default).
        #[arg(long, value_name = "SECONDS", default_value = "60", value_parser = positive_seconds)]
        ping: Duration,
    },
    /// Be a handler of TYPE that hands each request to COMMAND: by default one long-lived filter
    /// reading one JSON request per line and writing one JSON line per request, in order (`jq -c
    /// --unbuffered`, awk, a shell `while read` loop); with --per-request, one COMMAND per
    /// request with its data on standard input (CGI style). What COMMAND writes is the reply's
    /// data (with --answers, the whole answer). Connects to BESTER_SOCKET, as besterd starts a
    /// handler: use it as a handler's `command`. Exits 0 when the broker closes the socket.
    Handle {
        /// The handler type it serves (as configured in `[handlers.TYPE]`).
        #[arg(name = "TYPE")]
        kind: String,
        /// Run COMMAND once per request, with the request's data on its standard input and
        /// BESTER_USER, BESTER_SERVER, BESTER_SCOPE, BESTER_INFO, BESTER_REQUEST_KIND set.
        #[arg(long)]
        per_request: bool,
        /// COMMAND writes whole answers ({"header":{"status","command","commandData"},
        /// "payload":{"type","data"}}), not only the reply's data.
        #[arg(long)]
        answers: bool,
        /// How long COMMAND has to answer one request (handler_timeout after it); under the
        /// broker's request_timeout_ms (30 s by default), so this answer comes first.
        #[arg(long, value_name = "SECONDS", default_value = "25", value_parser = positive_seconds)]
        request_timeout: Duration,
        /// With --per-request: most processes at once (the other requests wait).
        #[arg(long, value_name = "N", default_value = "8", value_parser = clap::value_parser!(u64).range(1..=1024))]
        max_procs: u64,
        /// The broker's socket for this type (default: BESTER_SOCKET, which besterd sets).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// The program and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<std::ffi::OsString>,
    },
    /// Write a new ed25519 key pair: FILE (the private key, PKCS#8 PEM, mode 0600) and FILE.pub
    /// (the public key, SPKI PEM), never over an existing file; print the public key in base64
    /// (what `besterd user add-key` and `besterd user keys` show).
    Keygen {
        /// Where to write the private key.
        file: PathBuf,
    },
}

/// How `bester` logs in.
enum Secret {
    /// With a password.
    Password(String),
    /// By signing the challenge with this key, for the server the challenge names (which must
    /// be this one, if given).
    Key(Box<SigningKey>, Option<String>),
    /// With a token (a JWT, or a resume token).
    Token(String),
}

/// Why `bester` stops without success: the exit code and the line for stderr.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: EX_USAGE,
            message: message.into(),
        }
    }

    fn runtime(message: impl Into<String>) -> Failure {
        Failure {
            code: 1,
            message: message.into(),
        }
    }
}

fn seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{text:?} is not a number of seconds"))
}

fn positive_seconds(text: &str) -> Result<Duration, String> {
    match seconds(text)? {
        d if d.is_zero() => Err("must be more than 0".into()),
        d => Ok(d),
    }
}

fn main() -> ExitCode {
    // Our own copy of the arguments first, then the password out of what `ps` shows.
    let args: Vec<_> = std::env::args_os().collect();
    // `bester __man DIR`: the man pages, for the package build (not a subcommand: hidden).
    if let Some(code) = besterd::manpage::from_args::<Cli>(&args) {
        return code;
    }
    argv::hide_passwords();
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EX_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("bester: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    let timeout = (!cli.timeout.is_zero()).then_some(cli.timeout);
    match cli.command {
        Cmd::Handle {
            kind,
            per_request,
            answers,
            request_timeout,
            max_procs,
            socket,
            command,
        } => {
            let options = handle::Options {
                kind,
                command,
                per_request,
                answers,
                timeout: request_timeout,
                max_procs: max_procs as usize,
                socket,
            };
            handle::run(options).map_err(Failure::runtime)
        }
        Cmd::Send {
            ref uri,
            ref kind,
            ref data,
            ref id,
        } => {
            let from_stdin = data.as_deref() == Some("-");
            if from_stdin && cli.password_stdin {
                return Err(Failure::usage(
                    "DATA \"-\" and --password-stdin cannot both read standard input",
                ));
            }
            let data = match data.as_deref() {
                Some("-") | None => Value::Null,
                Some(text) => serde_json::from_str(text)
                    .map_err(|e| Failure::usage(format!("DATA is not JSON: {e}")))?,
            };
            let uri = parse_uri(uri, cli.token.is_some())?;
            let secret = secret(&uri, &cli)?;
            let data = if from_stdin { stdin_data()? } else { data };
            let tls = trust(&uri, cli.ca.as_deref())?;
            let mut hops = follow::Hops::new(&uri, cli.ca.as_deref(), timeout);
            let mut session = hops.reach(uri, &secret, tls)?;
            // A redirect answers the message: log in where it says and send it again there.
            while let Some(redirect) = session.send(id, kind, &data)? {
                let (uri, secret, tls) = hops.follow(redirect)?;
                session = hops.reach(uri, &secret, tls)?;
            }
            Ok(())
        }
        Cmd::Listen {
            ref uri,
            count,
            ping,
        } => {
            let uri = parse_uri(uri, cli.token.is_some())?;
            let secret = secret(&uri, &cli)?;
            let tls = trust(&uri, cli.ca.as_deref())?;
            let mut hops = follow::Hops::new(&uri, cli.ca.as_deref(), timeout);
            let mut session = hops.reach(uri, &secret, tls)?;
            let mut received = 0;
            while let Some(redirect) = session.listen(count, ping, &mut received)? {
                let (uri, secret, tls) = hops.follow(redirect)?;
                session = hops.reach(uri, &secret, tls)?;
            }
            Ok(())
        }
        Cmd::Keygen { ref file } => keygen(file),
    }
}

/// The token (with `--token` or `BESTER_TOKEN`), the key (with `--key`), else the password.
fn secret(uri: &Uri, cli: &Cli) -> Result<Secret, Failure> {
    if let Some(token) = cli.token.as_deref().filter(|t| !t.is_empty()) {
        if cli.key.is_some() {
            return Err(Failure::usage("--token and --key cannot both be given"));
        }
        return Ok(Secret::Token(token.to_string()));
    }
    let Some(file) = &cli.key else {
        if cli.server_name.is_some() {
            return Err(Failure::usage("--server-name only goes with --key"));
        }
        return password(uri, cli.password_stdin).map(Secret::Password);
    };
    if uri.password.is_some() {
        return Err(Failure::usage(
            "--key logs in without a password: take the password out of the URI",
        ));
    }
    let key = read_private_key(file).map_err(Failure::usage)?;
    Ok(Secret::Key(Box::new(key), cli.server_name.clone()))
}

/// An ed25519 private key from a PKCS#8 PEM file that only its owner can read.
fn read_private_key(file: &Path) -> Result<SigningKey, String> {
    use ed25519_dalek::pkcs8::DecodePrivateKey;
    use std::os::unix::fs::PermissionsExt;
    let shown = file.display();
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(file).map_err(|e| format!("cannot read the key {shown}: {e}"))?,
    );
    let mode = std::fs::metadata(file)
        .map_err(|e| format!("cannot read the key {shown}: {e}"))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "the private key {shown} can be read by others (mode {:04o}): chmod 600 it",
            mode & 0o7777
        ));
    }
    SigningKey::from_pkcs8_pem(&text)
        .map_err(|_| format!("{shown} is not an ed25519 private key in PKCS#8 PEM"))
}

/// `bester keygen FILE`: FILE (0600) and FILE.pub, both created anew, never over a file.
fn keygen(file: &Path) -> Result<(), Failure> {
    use ed25519_dalek::pkcs8::DecodePublicKey;
    use std::os::unix::fs::OpenOptionsExt;
    let mut public_path = file.as_os_str().to_owned();
    public_path.push(".pub");
    let public_path = std::path::PathBuf::from(public_path);
    let create = |path: &Path, mode: u32| {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true) // O_EXCL: never over a file, never through a symlink
            .mode(mode)
            .open(path)
            .map_err(|e| Failure::runtime(format!("cannot create {}: {e}", path.display())))
    };
    if std::fs::symlink_metadata(&public_path).is_ok() {
        return Err(Failure::runtime(format!(
            "cannot create {}: it exists already",
            public_path.display()
        )));
    }
    // As ssh-keygen makes ~/.ssh: a missing directory for the key is created, private (0700).
    if let Some(dir) = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Failure::runtime(format!("cannot create {}: {e}", dir.display())))?;
    }
    let (private, public) = besterd::auth::keys::generate();
    let private = zeroize::Zeroizing::new(private);
    let write = |mut out: std::fs::File, path: &Path, text: &str| {
        out.write_all(text.as_bytes())
            .and_then(|()| out.sync_all())
            .map_err(|e| Failure::runtime(format!("cannot write {}: {e}", path.display())))
    };
    write(create(file, 0o600)?, file, &private)?;
    let written = create(&public_path, 0o644).and_then(|out| write(out, &public_path, &public));
    if let Err(e) = written {
        let _ = std::fs::remove_file(file); // ours: created a moment ago
        return Err(e);
    }
    let key = ed25519_dalek::VerifyingKey::from_public_key_pem(&public)
        .map_err(|_| Failure::runtime("the new public key does not read back"))?;
    eprintln!(
        "bester: wrote {} (private, 0600) and {}",
        file.display(),
        public_path.display()
    );
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", besterd::auth::keys::encode_public_key(&key))
        .and_then(|()| out.flush())
        .map_err(|e| Failure::runtime(format!("cannot write to standard output: {e}")))
}

/// The password: URI, `BESTER_PASSWORD`, `--password-stdin`, a terminal prompt, in this order.
/// An empty one counts as none: no user can have it, so sending it would only burn a login.
fn password(uri: &Uri, from_stdin: bool) -> Result<String, Failure> {
    if let Some(p) = uri.password.as_ref().filter(|p| !p.is_empty()) {
        return Ok(p.clone());
    }
    if let Some(p) = std::env::var("BESTER_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty())
    {
        return Ok(p);
    }
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .take(MAX_PASSWORD_LINE)
            .read_line(&mut line)
            .map_err(|e| Failure::usage(format!("cannot read the password: {e}")))?;
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            return Err(Failure::usage(
                "--password-stdin: no password on the first line of standard input",
            ));
        }
        return Ok(line.to_string());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Failure::usage(format!(
            "no password for {:?}: standard input is not a terminal, so give it in the URI, \
             in BESTER_PASSWORD, or on standard input with --password-stdin",
            uri.user
        )));
    }
    rpassword::prompt_password(format!("password for {}: ", uri.user))
        .map_err(|e| Failure::usage(format!("cannot read the password: {e}")))
}

/// DATA given as `-`: all of standard input, as JSON.
fn stdin_data() -> Result<Value, Failure> {
    let mut text = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_STDIN_DATA + 1)
        .read_to_end(&mut text)
        .map_err(|e| Failure::usage(format!("cannot read DATA from standard input: {e}")))?;
    if text.len() as u64 > MAX_STDIN_DATA {
        return Err(Failure::usage(format!(
            "DATA on standard input is over {MAX_STDIN_DATA} bytes"
        )));
    }
    serde_json::from_slice(&text)
        .map_err(|e| Failure::usage(format!("DATA on standard input is not JSON: {e}")))
}

/// `code: text` of an error frame, else the frame's data.
fn describe(frame: &Value) -> String {
    let data = &frame["data"];
    match (data["code"].as_str(), data["error"].as_str()) {
        (Some(code), Some(text)) => format!("{code}: {text}"),
        _ => format!("error reply: {data}"),
    }
}

/// One frame as a JSON line on stdout, flushed (a listener's reader sees each push at once).
fn print_frame(frame: &Value) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{frame}")
        .and_then(|()| out.flush())
        .map_err(|e| Failure::runtime(format!("cannot write to standard output: {e}")))
}

fn is_ok(frame: &Value) -> bool {
    frame["header"]["status"] == "ok"
}

/// A logged-in connection and the time limit the exchange runs under.
struct Session {
    client: Client,
    address: String,
    timeout: Option<Duration>,
}

impl Session {
    /// Connect to the URI's server and log in, all within `timeout`. A refused login prints the
    /// server's answer on stdout and fails with its code.
    fn open(
        uri: &Uri,
        secret: &Secret,
        tls: Option<Arc<ClientConfig>>,
        timeout: Option<Duration>,
        deadline: Option<Instant>,
    ) -> Result<Opened, Failure> {
        let client = Client::connect_uri(uri, tls, deadline).map_err(|e| {
            if e.kind() == std::io::ErrorKind::TimedOut {
                timed_out(timeout, &format!("connecting to {}", uri.address))
            } else {
                Failure::runtime(format!("cannot connect to {}: {e}", uri.address))
            }
        })?;
        let mut session = Session {
            client,
            address: uri.address.clone(),
            timeout,
        };
        let authentication = match secret {
            Secret::Password(password) => {
                serde_json::json!({"username":uri.user,"password":password})
            }
            Secret::Token(token) => serde_json::json!({ "token": token }),
            Secret::Key(key, _) => {
                let public = besterd::auth::keys::encode_public_key(&key.verifying_key());
                serde_json::json!({"username":uri.user,"publicKey":public})
            }
        };
        let identify = serde_json::json!({"header":{"identify":{"type":"client",
            "authentication":authentication}}});
        session
            .client
            .send(&identify)
            .map_err(|e| session.io_failure(e, "logging in"))?;
        let mut reply = session.next("logging in")?;
        if let (Secret::Key(key, server), Some(challenge)) = (secret, &reply)
            && is_ok(challenge)
            && challenge["header"]["kind"] == "challenge"
        {
            let nonce = challenge["data"]["nonce"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let named = challenge["data"]["server"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            // With --server-name, sign only for that server: a relay names another.
            if let Some(expected) = server.as_deref().filter(|e| *e != named.as_str()) {
                return Err(Failure::runtime(format!(
                    "the server says it is {named:?}, not {expected:?} (--server-name): not signing"
                )));
            }
            let server = named;
            let message = besterd::auth::keys::login_message(&server, &uri.user, &nonce);
            let signature =
                base64::engine::general_purpose::STANDARD.encode(key.sign(&message).to_bytes());
            session
                .client
                .send(&serde_json::json!({"header":{"signature":signature}}))
                .map_err(|e| session.io_failure(e, "logging in"))?;
            reply = session.next("logging in")?;
            if let Some(refused) = reply.as_ref().filter(|r| !is_ok(r)) {
                print_frame(refused)?;
                return Err(Failure::runtime(format!(
                    "login refused: {} (signed for the server name {server:?})",
                    describe(refused)
                )));
            }
        }
        let Some(reply) = reply else {
            return Err(Failure::runtime(format!(
                "{} closed the connection during login",
                session.address
            )));
        };
        if let Some(redirect) = follow::Redirect::of(&reply) {
            return Ok(Opened::Redirect(redirect));
        }
        if !is_ok(&reply) {
            print_frame(&reply)?;
            return Err(Failure::runtime(format!(
                "login refused: {}",
                describe(&reply)
            )));
        }
        Ok(Opened::Session(session))
    }

    /// The next frame, `None` when the server closed; a timeout or I/O error is a failure.
    fn next(&mut self, doing: &str) -> Result<Option<Value>, Failure> {
        self.client.recv().map_err(|e| self.io_failure(e, doing))
    }

    fn io_failure(&self, e: std::io::Error, doing: &str) -> Failure {
        if e.kind() == std::io::ErrorKind::TimedOut {
            timed_out(self.timeout, doing)
        } else {
            Failure::runtime(format!("{}: {e} ({doing})", self.address))
        }
    }

    /// `bester send`: the reply goes to stdout; an error reply fails with its code and text.
    /// The one message sent is the only one a reply can answer, so a reply whose id the server
    /// could not read is taken as well. Pushes meanwhile are not printed.
    /// A redirect that answers the message is returned, not printed.
    fn send(
        &mut self,
        id: &str,
        kind: &str,
        data: &Value,
    ) -> Result<Option<follow::Redirect>, Failure> {
        let waiting = format!("waiting for the reply to message {id:?}");
        self.client
            .message(id, kind, data)
            .map_err(|e| self.io_failure(e, &waiting))?;
        let mut last = None;
        loop {
            let Some(frame) = self.next(&waiting)? else {
                return Err(self.closed(last.as_ref(), "before the reply"));
            };
            let header = &frame["header"];
            let answers = (header["kind"] == "reply" || header["kind"] == "redirect")
                && (header["id"] == id || header.get("id").is_none_or(Value::is_null));
            if !answers {
                last = Some(frame);
                continue;
            }
            if let Some(redirect) = follow::Redirect::of(&frame) {
                return Ok(Some(redirect));
            }
            print_frame(&frame)?;
            return if is_ok(&frame) {
                Ok(None)
            } else {
                Err(Failure::runtime(describe(&frame)))
            };
        }
    }

    /// The server closed the connection: print its last frame on stdout, if any, and say so.
    fn closed(&self, last: Option<&Value>, when: &str) -> Failure {
        let mut message = format!("{} closed the connection {when}", self.address);
        if let Some(frame) = last {
            if let Err(e) = print_frame(frame) {
                return e;
            }
            if !is_ok(frame) {
                message = format!("{message}: {}", describe(frame));
            }
        }
        Failure::runtime(message)
    }

    /// `bester listen`: pushes go to stdout as they come; a `bester.ping` goes out after `ping` of
    /// silence from this side and must be answered within the timeout. Ends with success after
    /// `count` pushes, with a failure when the server closes.
    /// A redirect ends this session's part: it is returned (with `received` counting on).
    fn listen(
        mut self,
        count: Option<u64>,
        ping: Duration,
        received: &mut u64,
    ) -> Result<Option<follow::Redirect>, Failure> {
        if *received == 0 {
            eprintln!("bester: listening (Ctrl-C to stop)");
        }
        let mut pings = 0u64;
        let mut next_ping = Instant::now() + ping;
        // The id of the ping in flight and when its answer is due.
        let mut pending: Option<(String, Option<Instant>)> = None;
        let mut last = None;
        loop {
            // By the clock, not by silence: pushes coming in do not keep the connection alive
            // (the server's idle timer counts what the client sends).
            let now = Instant::now();
            if let Some((_, Some(answer_by))) = &pending
                && now >= *answer_by
            {
                return Err(timed_out(
                    self.timeout,
                    "waiting for the answer to bester.ping",
                ));
            }
            if now >= next_ping {
                if pending.is_none() {
                    pings += 1;
                    let id = format!("bester-ping-{pings}");
                    let answer_by = self.timeout.map(|t| now + t);
                    self.client.set_deadline(answer_by);
                    self.client
                        .message(&id, "bester.ping", &Value::Null)
                        .map_err(|e| self.io_failure(e, "sending bester.ping"))?;
                    pending = Some((id, answer_by));
                }
                next_ping = now + ping;
            }
            let due = match &pending {
                Some((_, Some(answer_by))) => next_ping.min(*answer_by),
                _ => next_ping,
            };
            self.client.set_deadline(Some(due));
            match self.client.recv() {
                Ok(Some(frame)) => {
                    let header = &frame["header"];
                    if header["kind"] == "push" {
                        print_frame(&frame)?;
                        *received += 1;
                        if count == Some(*received) {
                            return Ok(None);
                        }
                    } else if let Some(redirect) = follow::Redirect::of(&frame) {
                        return Ok(Some(redirect));
                    } else if matches!(&pending, Some((id, _)) if header["id"] == id.as_str()) {
                        pending = None;
                    } else {
                        last = Some(frame);
                    }
                }
                Ok(None) => {
                    let mut message = format!("{} closed the connection", self.address);
                    if let Some(frame) = last.as_ref().filter(|f| !is_ok(f)) {
                        message = format!("{message}: {}", describe(frame));
                    }
                    return Err(Failure::runtime(message));
                }
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => return Err(self.io_failure(e, "listening")),
            }
        }
    }
}

/// What [`Session::open`] ended with.
enum Opened {
    Session(Session),
    /// The login was answered with a redirect.
    Redirect(follow::Redirect),
}

/// Open the connection the URI names. The one place a transport is chosen.
/// The TLS trust for a TLS URI: `--ca FILE`, else the system's CAs.
fn trust(uri: &Uri, ca: Option<&Path>) -> Result<Option<Arc<ClientConfig>>, Failure> {
    if !uri.scheme.tls() {
        if ca.is_some() {
            return Err(Failure::usage(format!(
                "--ca only goes with bester+tls:// or bester+wss:// (not {})",
                uri.scheme.prefix()
            )));
        }
        return Ok(None);
    }
    besterd::net::tls::client_trust(ca)
        .map(Some)
        .map_err(Failure::usage)
}

fn timed_out(timeout: Option<Duration>, doing: &str) -> Failure {
    let secs = timeout.map_or(0.0, |t| t.as_secs_f64());
    Failure {
        code: EX_TEMPFAIL,
        message: format!("timed out after {secs} s {doing} (--timeout)"),
    }
}
