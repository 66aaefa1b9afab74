//! The `besterd` binary: parse the command line, set up logging, run the subcommand, exit with a
//! sysexits-style code (64 usage, 78 configuration, 1 runtime failure).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use log::{error, warn};

use besterd::cli::{Cli, Command, CtlArgs, HandlerTestArgs, ServeArgs, UserArgs};
use besterd::config::{Config, ConfigError, EMBEDDED_DEFAULT};
use besterd::server::Server;
use besterd::server::handover::{Inherited, Invocation};

const EX_USAGE: u8 = 64;
const EX_CONFIG: u8 = 78;

/// mimalloc rather than glibc's malloc: the loop thread and the delivery thread hand each other
/// every job and result, and glibc frees another thread's block under that thread's arena lock,
/// so the two threads waited on each other's locks (measured with perf on the durable path).
/// mimalloc frees a foreign block onto its page's own list without a lock: durable pushes went
/// from 130,935 to 165,545 a second (`scripts/bench.sh durable`, benches/RESULTS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (mimalloc.h, v3; the `libmimalloc-sys` bindings do not
/// name it): check the enum when the crate is upgraded.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> ExitCode {
    tune_allocators();
    // `besterd __man DIR`: the man pages, for the package build (not a subcommand: hidden).
    let args: Vec<_> = std::env::args_os().collect();
    if let Some(code) = besterd::manpage::from_args::<Cli>(&args) {
        return code;
    }
    let invocation = besterd::server::handover::Invocation::from_args(&args);
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
    init_logging();
    match cli.command {
        Command::Serve(args) => serve(&args, invocation),
        Command::CheckConfig { config } => check_config(config.as_deref()),
        Command::Config { default: _ } => {
            print!("{DEFAULT_HEADER}{EMBEDDED_DEFAULT}");
            ExitCode::SUCCESS
        }
        Command::User(args) => user(&args),
        Command::Ctl(args) => ctl(&args),
        Command::HandlerTest(args) => handler_test(args),
    }
}

/// Give freed memory back to the system. mimalloc returns free pages only after a delay (1 s),
/// and only when some thread next frees: a server that goes quiet after a burst of logins kept
/// 64 MB resident for 11 MB of live data (`scripts/bench.sh rest`); purged at once it keeps
/// what glibc kept, for no measured cost in throughput. (Huge pages are off at build time, the
/// `no_thp` feature: with them the same server kept 50 MB.) SQLite allocates with the C
/// library's malloc, whose large blocks stay in their own mappings, returned when freed:
/// otherwise glibc raises its mmap threshold after the first large free and keeps every later
/// one in the heap.
fn tune_allocators() {
    // SAFETY: both only change allocator tuning; called before any thread starts.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0);
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

/// The logger, less the lines that would carry message contents: tungstenite logs every
/// WebSocket frame and message it reads or writes at trace level, and a client's identify holds
/// its password. besterd itself logs no frame body at any level (README: "Logging"). rustls's
/// warnings are demoted to debug level (see `log`).
struct NoContents(env_logger::Logger);

impl log::Log for NoContents {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        let contents =
            metadata.level() == log::Level::Trace && metadata.target().starts_with("tungstenite");
        !contents && self.0.enabled(metadata)
    }

    fn log(&self, record: &log::Record) {
        // rustls warns about what a remote peer sent (e.g. an IP address as SNI): anyone who
        // can connect could fill the log, so those lines go to debug level (the server logs
        // handshake failures itself, rate-limited, and counts them).
        if record.level() < log::Level::Debug && record.target().starts_with("rustls") {
            let metadata = log::Metadata::builder()
                .level(log::Level::Debug)
                .target(record.target())
                .build();
            if self.0.enabled(&metadata) {
                self.0.log(
                    &log::Record::builder()
                        .metadata(metadata)
                        .args(*record.args())
                        .module_path(record.module_path())
                        .file(record.file())
                        .line(record.line())
                        .build(),
                );
            }
            return;
        }
        if self.enabled(record.metadata()) {
            self.0.log(record);
        }
    }

    fn flush(&self) {
        self.0.flush();
    }
}

/// `serve` holds peer secrets and sees passwords: no core dump of it, and no `ptrace` or
/// `/proc/PID/mem` from other processes of its user (its handlers run as that user).
fn forbid_core_dumps() {
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) only changes this process's dumpable flag.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        warn!(
            "cannot turn off core dumps (PR_SET_DUMPABLE): {}",
            std::io::Error::last_os_error()
        );
    }
}

/// env_logger on stderr, `info` unless `RUST_LOG` says otherwise. Under systemd (stderr goes to the
/// journal) lines carry `<N>` priority prefixes and no timestamps: the journal adds its own.
fn init_logging() {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.format(|buf, record| {
            let priority = match record.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info => 6,
                log::Level::Debug | log::Level::Trace => 7,
            };
            writeln!(buf, "<{priority}>{}", record.args())
        });
    }
    let logger = builder.build();
    let max = logger.filter();
    if log::set_boxed_logger(Box::new(NoContents(logger))).is_ok() {
        log::set_max_level(max);
    }
}

fn load(config: Option<&PathBuf>) -> Result<Config, ExitCode> {
    let loaded = match config {
        Some(path) => Config::load(path),
        None => Ok(Config::embedded()),
    };
    loaded.map_err(|e| {
        eprintln!("besterd: {e}");
        ExitCode::from(EX_CONFIG)
    })
}

fn serve(args: &ServeArgs, invocation: Invocation) -> ExitCode {
    // Before the configuration (and its peer secrets) is read.
    forbid_core_dumps();
    // The new process of a hot upgrade: what the old one hands over, and where to say why this
    // one cannot start.
    let (inherited, report) = match args.upgrade_fd.map(Inherited::receive) {
        None => (None, None),
        Some(Ok(inherited)) => {
            let report = inherited.link.try_clone().ok();
            (Some(inherited), report)
        }
        Some(Err(e)) => {
            error!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let fail = |code: ExitCode, why: &str| {
        if let Some(mut link) = report.as_ref() {
            let line = format!("error {}\n", why.replace('\n', " "));
            let _ = link.write_all(line.as_bytes());
        }
        code
    };
    let mut config = match args
        .config
        .as_ref()
        .map_or_else(|| Ok(Config::embedded()), |path| Config::load(path))
    {
        Ok(config) => config,
        Err(e) => {
            eprintln!("besterd: {e}");
            return fail(ExitCode::from(EX_CONFIG), &e.to_string());
        }
    };
    if let Err(e) = config.apply_flags(args) {
        eprintln!("besterd: {e}");
        return fail(ExitCode::from(EX_USAGE), &e.to_string());
    }
    for (key, problem) in config.program_problems() {
        warn!("{key}: {problem} (the handler will not start)");
    }
    for (key, warning) in config.secret_warnings(args.config.as_deref()) {
        warn!("{key}: {warning}");
    }
    let mut server = match Server::bind_with(config, inherited) {
        Ok(server) => server,
        Err(e) => {
            error!("cannot start: {e}");
            // A path refused as unsafe (e.g. another user's runtime directory) stays refused
            // until an administrator acts: a configuration error, not worth a restart.
            let code = if besterd::fsutil::refusal(&e).is_some() {
                ExitCode::from(EX_CONFIG)
            } else {
                ExitCode::FAILURE
            };
            return fail(code, &format!("cannot start: {e}"));
        }
    };
    drop(report);
    server.set_reload_source(args.config.clone(), args.clone());
    server.set_invocation(invocation);
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("event loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `besterd check-config [--config FILE]`: the file (else the embedded default) must parse, validate
/// and name handler programs that can be run.
/// What `besterd config --default` says before the configuration itself.
const DEFAULT_HEADER: &str = "\
# The built-in default configuration of `besterd serve` (no --config). Save it to a file, change
# it, and run `besterd serve --config FILE`. Placeholders besterd replaces when it starts:
#   {examples}  a private directory where besterd writes the example handlers built into it
#               (echo.py, chat.py, auth_keys.py, the Python package bester/ they import,
#               upper.jq, count.sh); with your
#               own handlers, give their own paths instead
#   {web}       (static_dir only) the web client built into besterd: the chat page, bester.js
#               and the protocol.js it imports
# Every section and key, with its default and what a reload does: CONFIG.md.

";

fn check_config(path: Option<&Path>) -> ExitCode {
    let (origin, loaded) = match path {
        Some(path) => (path.display().to_string(), Config::load(path)),
        None => (
            "(embedded default)".to_string(),
            Config::parse(EMBEDDED_DEFAULT, "(embedded default)"),
        ),
    };
    let config = match loaded {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let problems = config.program_problems();
    if !problems.is_empty() {
        eprintln!("{}", ConfigError { origin, problems });
        return ExitCode::from(EX_CONFIG);
    }
    for (key, warning) in config.warnings() {
        eprintln!("{origin}: warning: {key}: {warning}");
    }
    for (key, warning) in config.secret_warnings(path) {
        eprintln!("{origin}: warning: {key}: {warning}");
    }
    let handlers: Vec<&str> = config.handlers.keys().map(String::as_str).collect();
    println!(
        "{origin}: OK (server {:?} on {}, users {}, handlers: {})",
        config.name,
        config.listen,
        config.users.display(),
        if handlers.is_empty() {
            "none".to_string()
        } else {
            handlers.join(", ")
        }
    );
    ExitCode::SUCCESS
}

fn user(args: &UserArgs) -> ExitCode {
    let store = match (&args.users, &args.config) {
        (Some(path), _) => path.clone(),
        (None, Some(config)) => match load(Some(config)) {
            Ok(config) => config.users,
            Err(code) => return code,
        },
        (None, None) => Config::embedded().users,
    };
    match besterd::auth::admin::run(&store, &args.action) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("besterd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn ctl(args: &CtlArgs) -> ExitCode {
    let runtime_dir = match &args.config {
        Some(path) => match load(Some(path)) {
            Ok(config) => config.runtime_dir,
            Err(code) => return code,
        },
        None => None,
    };
    match besterd::ctl::run(args, runtime_dir.as_deref()) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("besterd ctl: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `besterd handler-test ... -- COMMAND`: the conformance kit (exit 0 all passed, 1 a check
/// failed, 64 usage).
fn handler_test(args: HandlerTestArgs) -> ExitCode {
    let options = besterd::conformance::Options {
        argv: args.command,
        kind: args.kind,
        connect: args.connect,
        correlate: args.correlate,
        timeout: std::time::Duration::from_millis(args.timeout_ms),
        request: args.request,
        expect: args.expect,
        login: args.login,
    };
    ExitCode::from(besterd::conformance::run_and_report(&options))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bindings do not name the option: its number is checked against its default, 1,000
    /// ms, which no neighbouring option has.
    #[test]
    fn the_purge_delay_is_the_option_set() {
        // SAFETY: reads an option.
        let delay = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(delay, 1000);
    }
}
