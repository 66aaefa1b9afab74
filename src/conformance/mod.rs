//! `besterd handler-test`: the conformance kit for handlers in any language. It runs a handler
//! program the way besterd runs it and plays the broker against it, checking what
//! `protocol/PROTOCOL.md` §1 and §6 ask of a handler:
//!
//! - every case of `protocol/vectors/handlers.json` for the type under test (a fresh program
//!   each, its `env` applied; frames compared as parsed JSON, in order);
//! - a request answered as the probe expects ([`cases::Probe`]: `--request`/`--expect`, else the
//!   type's first vector, else any answer besterd accepts); with `--login AUTH`, an auth
//!   handler's `kind:"login"` request answered with a `reply`;
//! - 64 requests pipelined in one write, each answered once with its own token, in any order;
//!   16 in flight with descending tokens;
//! - a request split at every byte, and sent one byte per write; five frames over two writes
//!   whose boundary cuts a frame;
//! - reports (a push's delivery report, an error report) never answered;
//! - odd request tokens (leading zeros, over 64 bits, unicode and escapes, 200 characters)
//!   echoed exactly; unknown header fields ignored;
//! - a frame over 1 MiB: not answered; the connection closed (or the frame skipped and the next
//!   request answered), the process not killed by a signal;
//! - end of stream: exit status 0 within the deadline (dialled handlers: a connection closed
//!   without a request leaves them serving, and SIGTERM stops them within 2 s).
//!
//! `--correlate order` plays a broker that keeps one request in flight and takes the next frame
//! for its answer (original-spec handlers without tokens); `--connect` one that dials per request.
//! Checks that need more in flight than besterd would send are skipped, saying so.
//!
//! Every frame the handler sends goes through besterd's own decoder and parser
//! ([`crate::protocol`]); one it would refuse fails the check, saying why. One line per check on
//! stdout (`ok  NAME`, `FAIL NAME: what the handler did`, `skip NAME: why`), then a summary. The
//! program's stdout and stderr go to the kit's stderr.
//!
//! A client-side tool: blocking I/O, a thread for the oversized write, no part of the daemon's
//! event loop. Layers: `protocol` (frames, messages) and `handler` (the dialler) below it, the CLI
//! above; nothing else depends on it.

pub mod cases;
pub mod checks;
pub mod instance;

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

use checks::{Kit, Outcome};
pub use instance::Program;

/// Requests pipelined in the pipelining check.
const PIPELINED: usize = 64;

/// What to test and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// `BESTER_TYPE` and the payload type of the requests.
    pub kind: String,
    /// The program listens there and is dialled per request (`connect = ...`).
    pub connect: Option<PathBuf>,
    /// `correlate`: `request` (default), `order`, or `connection` (with `connect`).
    pub correlate: Option<String>,
    /// Deadline of each wait.
    pub timeout: Duration,
    /// The probe's data (JSON).
    pub request: Option<String>,
    /// The data of the ok reply the probe must get (JSON).
    pub expect: Option<String>,
    /// An auth handler's check: the `authentication` object (JSON) of a login request.
    pub login: Option<String>,
}

/// Counts of a run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Checks passed.
    pub ok: usize,
    /// Checks failed.
    pub failed: usize,
    /// Checks that do not apply.
    pub skipped: usize,
}

/// Run every check, writing one line per check and a summary to `out`. `Err` is a usage error
/// (bad `--request`/`--expect`, no command, a type name besterd would refuse).
pub fn run(options: &Options, out: &mut dyn Write) -> Result<Summary, String> {
    if options.argv.is_empty() {
        return Err("give the handler's command after --".to_string());
    }
    crate::protocol::message::validate_type(&options.kind)
        .map_err(|e| format!("--type: {}", e.error))?;
    let order = match (options.correlate.as_deref(), &options.connect) {
        (None | Some("request"), None) => false,
        (Some("order"), None) => true,
        (None | Some("connection"), Some(_)) => false,
        (Some("connection"), None) => {
            return Err("--correlate connection needs --connect SOCKET".to_string());
        }
        (Some(mode @ ("request" | "order")), Some(_)) => {
            return Err(format!(
                "--connect dials a handler per request: it is correlated by connection, not {mode:?}"
            ));
        }
        (Some(other), _) => {
            return Err(format!(
                "--correlate {other:?}: expected \"request\", \"order\" or \"connection\""
            ));
        }
    };
    let probe = cases::Probe::new(
        &options.kind,
        options.request.as_deref(),
        options.expect.as_deref(),
    )?;
    if let Some(path) = &options.connect
        && std::os::unix::net::UnixStream::connect(path).is_ok()
    {
        return Err(format!(
            "something already listens on {}: give --connect a path of its own",
            path.display()
        ));
    }
    if let Some(login) = &options.login {
        crate::protocol::validate::check(login)
            .map_err(|e| format!("--login: not valid JSON: {e}"))?;
        if !login.trim_start().starts_with('{') {
            return Err("--login: the authentication must be a JSON object".to_string());
        }
    }
    let kit = Kit {
        program: Program {
            argv: options.argv.clone(),
            kind: options.kind.clone(),
            dial: options.connect.clone(),
            order,
        },
        timeout: options.timeout,
        probe,
    };
    let mut summary = Summary::default();
    let how = match &options.connect {
        Some(path) => format!("dialled at {}", path.display()),
        None if order => "connecting to BESTER_SOCKET, correlated by order".to_string(),
        None => "connecting to BESTER_SOCKET".to_string(),
    };
    let echo = if kit.probe.echo {
        " (echo-compatible)"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "# type {:?}, {how}; probe: {}{echo}",
        options.kind, kit.probe.source
    );
    let mut report = |name: &str, outcome: Outcome| {
        let line = match outcome {
            Outcome::Ok(detail) if detail.is_empty() => {
                summary.ok += 1;
                format!("ok  {name}")
            }
            Outcome::Ok(detail) => {
                summary.ok += 1;
                format!("ok  {name}: {detail}")
            }
            Outcome::Fail(why) => {
                summary.failed += 1;
                format!("FAIL {name}: {why}")
            }
            Outcome::Skip(why) => {
                summary.skipped += 1;
                format!("skip {name}: {why}")
            }
        };
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    for case in cases::cases_for(&options.kind) {
        report(
            &format!("vector {:?}", case.name),
            checks::vector(&kit, &case),
        );
    }
    report("a request is answered", checks::one_request(&kit));
    if let Some(login) = &options.login {
        report(
            "a login is answered with a reply",
            checks::login(&kit, login),
        );
    }
    let pipelined = if kit.program.dial.is_some() {
        format!("{PIPELINED} requests on connections open at once")
    } else {
        format!("{PIPELINED} pipelined requests in one write, answered in any order")
    };
    report(&pipelined, checks::pipelined(&kit, PIPELINED));
    report(
        "16 requests with descending tokens",
        checks::out_of_order(&kit),
    );
    report("a request split at every byte", checks::split_frames(&kit));
    report(
        "five frames in two writes, the boundary inside a frame",
        checks::several_per_write(&kit),
    );
    report("reports are not answered", checks::reports(&kit));
    report(
        "request tokens of odd shapes come back exactly",
        checks::odd_tokens(&kit),
    );
    report(
        "unknown header fields are ignored",
        checks::unknown_fields(&kit),
    );
    report("a frame over 1 MiB", checks::oversized(&kit));
    let eof = if kit.program.dial.is_some() {
        "SIGTERM after a connection without a request"
    } else {
        "exit status 0 at end of stream"
    };
    report(eof, checks::end_of_stream(&kit));
    let _ = writeln!(
        out,
        "{} ok, {} failed, {} skipped",
        summary.ok, summary.failed, summary.skipped
    );
    Ok(summary)
}

/// The `besterd handler-test` entry point: 0 when every check passes, 1 otherwise, 64 on a
/// usage error.
pub fn run_and_report(options: &Options) -> u8 {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match run(options, &mut out) {
        Ok(summary) if summary.failed == 0 => 0,
        Ok(_) => 1,
        Err(usage) => {
            eprintln!("besterd handler-test: {usage}");
            64
        }
    }
}
